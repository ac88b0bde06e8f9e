"""The SuperNode's Fleet API link: answers Flower gives up on, retried.

Flower 1.41 retries a Fleet call only on 502/503/504 and transport errors
(``flwr/supercore/retry/http_retry.py``, ``make_simple_http_retry_invoker``). Its
SuperLink answers **500** on any unexpected error; it did so when its SQLite state was
locked for longer than its 5 s busy timeout ("database is locked"; seen on a loaded
machine in a ``ckks+masked`` demo at round 12, before the SuperLink kept its state in
memory, coordinator/superlink_launch.py). A 500 from ``PullMessages`` escaped the
SuperNode's loop
(``start_client_internal``) and the node exited; one from ``PushMessages`` lost the
reply; one from the heartbeat killed the heartbeat thread, so the SuperLink soon
counted the node offline. :func:`install_link_retry` replaces, in Flower's Fleet HTTP
module:

* the retry invoker factory by one that also retries :data:`TRANSIENT_STATUS`
  (500, 429) with Flower's own exponential backoff (1 s doubling to 20 s, full
  jitter), logged at WARNING, for at most ``--max-wait-time`` seconds and
  ``--max-retries`` tries per call (``fedcollab node start --connect-timeout``,
  300 s by default): the same bound Flower puts on reaching the SuperLink at start;
* the heartbeat sender by one that retries a transient error (as Flower retries a
  refused connection) instead of letting it end the thread.

A call that still fails after that window ends the node as Flower does (recorded in
:attr:`LinkWatch.down`), and the launcher, :func:`fedcollab.client.fleet_poll.main`, then
exits with :class:`~common.errors.FleetLinkError` (exit 17) and
says why, instead of exit 0. Retrying is safe for "database is locked": the
SuperLink's transaction was rolled back, so the retried call is the first to take.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["TRANSIENT_STATUS", "LinkWatch", "install_link_retry", "transient"]

log = logging.getLogger("flwr")  # the SuperNode's own log (stderr, the node log)

#: Fleet API answers retried besides Flower's own 502/503/504 (see module notes).
TRANSIENT_STATUS = frozenset({429, 500})


def transient(exc: BaseException) -> bool:
    """A Fleet API answer worth retrying that Flower gives up on (see module notes)."""
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in TRANSIENT_STATUS


@dataclass
class LinkWatch:
    """The node's view of its Fleet API link: how many transient errors it retried, and
    the error of the last call that gave up (None once a later call succeeded)."""

    retried: int = 0
    down: BaseException | None = None

    def invoker_factory(self, make: Callable[[], Any]) -> Callable[[], Any]:
        """Wrap Flower's ``make_simple_http_retry_invoker``: same invoker, same backoff and
        bounds, but :func:`transient` answers are retried and the outcome is recorded."""

        def factory() -> Any:
            invoker = make()
            flower_giveup = invoker.should_giveup
            flower_success, flower_gaveup = invoker.on_success, invoker.on_giveup

            def should_giveup(exc: Exception) -> bool:
                if transient(exc):
                    self.retried += 1
                    assert isinstance(exc, httpx.HTTPStatusError)
                    log.warning(
                        "fedcollab: the Fleet API answered %s to %s (%s); retrying",
                        exc.response.status_code,
                        exc.request.url.path,
                        exc.response.text[:200].strip() or "no detail",
                    )
                    return False
                return bool(flower_giveup(exc)) if flower_giveup is not None else False

            def on_success(state: Any) -> None:
                self.down = None
                if flower_success is not None:
                    flower_success(state)

            def on_giveup(state: Any) -> None:
                self.down = state.exception
                if flower_gaveup is not None:
                    flower_gaveup(state)

            invoker.should_giveup = should_giveup
            invoker.on_success = on_success
            invoker.on_giveup = on_giveup
            return invoker

        return factory

    def heartbeat_sender(self, base: type) -> type:
        """Flower's ``HeartbeatSender`` whose heartbeats retry :func:`transient` answers."""
        from flwr.supercore.heartbeat import HeartbeatFailure

        watch = self

        class ResilientHeartbeatSender(base):  # type: ignore[misc]
            def _heartbeat(self) -> None:
                try:
                    super()._heartbeat()
                except httpx.HTTPStatusError as exc:
                    if not transient(exc):
                        raise
                    watch.retried += 1
                    log.warning(
                        "fedcollab: heartbeat answered %s; retrying", exc.response.status_code
                    )
                    raise HeartbeatFailure from exc

        return ResilientHeartbeatSender


def install_link_retry(module: types.ModuleType, watch: LinkWatch) -> bool:
    """Patch Flower's Fleet HTTP ``module``; False (and nothing changed) if its shape differs."""
    make = getattr(module, "make_simple_http_retry_invoker", None)
    sender = getattr(module, "HeartbeatSender", None)
    if not callable(make) or not isinstance(sender, type) or not hasattr(sender, "_heartbeat"):
        return False
    module.make_simple_http_retry_invoker = watch.invoker_factory(make)  # type: ignore[attr-defined]
    module.HeartbeatSender = watch.heartbeat_sender(sender)  # type: ignore[attr-defined]
    return True
