"""``flower-supernode`` with a pull interval that follows the job: fast while it runs.

    python -m fedcollab.client.fleet_poll <flower-supernode options>

Flower 1.41's SuperNode pulls the Fleet API for a message, and when none is
waiting it sleeps a fixed 3 s (``flwr/supernode/start_client_internal.py``,
``start_client_internal``: ``time.sleep(3)``); after handing a message to the
ClientApp it checks for the reply every 0.5 s (``_push_messages``). In a job,
every message the coordinator sends therefore waits 0 to 3 s before a partner
even sees it, and a round that needs two messages in series (train, then the
decryption of the aggregate) pays that twice, on the slowest of its partners.

This launcher runs Flower's own ``flower-supernode`` entry point unchanged
except for those waits: the SuperNode module's ``time`` is replaced by
:class:`PullClock`, which passes every call through to :mod:`time` but
answers ``sleep``:

* the idle wait (Flower's 3 s): :data:`ACTIVE_S` while a message arrived in the
  last :data:`ACTIVE_WINDOW_S` seconds (a job is running), then Flower's 3 s
  again, so an idle node costs the coordinator what it costs with Flower;
* the local waits (reply ready, object content ready; Flower's 0.5 s) become
  :data:`LOCAL_S`: they only read the node's own in-memory state.

Nothing else changes: same TLS, same node authentication, same messages. The
pull rate this adds is bounded: at most ``1 / ACTIVE_S`` pulls per second per
node while its job runs. If Flower's module no longer has the names this relies
on, the SuperNode runs unpatched (Flower's own timing) and says so on stderr.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import types
from collections.abc import Callable
from typing import Any

__all__ = ["ACTIVE_S", "ACTIVE_WINDOW_S", "LOCAL_S", "PullClock", "install", "main"]

#: Idle pull interval while a job is running (a message arrived recently); the
#: environment variable FEDCOLLAB_ACTIVE_PULL_S overrides it (3 = Flower's own pace,
#: what experiments/bench_deployment.py compares against).
ACTIVE_S = 0.5
#: How long after the last message the node keeps pulling at ACTIVE_S.
ACTIVE_WINDOW_S = 120.0
#: Waits on the node's own state (reply ready, object content available).
LOCAL_S = 0.05
_FLOWER_IDLE_S = 3
_FLOWER_LOCAL_S = 0.5


def _active_from_env() -> float:
    raw = os.environ.get("FEDCOLLAB_ACTIVE_PULL_S", "")
    try:
        value = float(raw) if raw else ACTIVE_S
    except ValueError:
        value = ACTIVE_S
    return value if 0.05 <= value <= _FLOWER_IDLE_S else ACTIVE_S


class PullClock:
    """Stands in for :mod:`time` inside Flower's SuperNode module (see module notes)."""

    def __init__(
        self,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._monotonic = monotonic
        self._sleep = sleep
        self._lock = threading.Lock()
        self._last_message = float("-inf")
        self.active_s = _active_from_env()

    def message_seen(self) -> None:
        """A message was pulled: pull fast for the next ACTIVE_WINDOW_S seconds."""
        with self._lock:
            self._last_message = self._monotonic()

    def interval(self, requested: float) -> float:
        """What ``sleep(requested)`` from Flower's SuperNode loop sleeps instead."""
        if requested == _FLOWER_IDLE_S:
            with self._lock:
                active = self._monotonic() - self._last_message < ACTIVE_WINDOW_S
            return self.active_s if active else float(requested)
        if requested == _FLOWER_LOCAL_S:
            return LOCAL_S
        return requested

    def sleep(self, seconds: float) -> None:
        self._sleep(self.interval(seconds))

    def __getattr__(self, name: str) -> Any:  # time.time, time.monotonic, ...
        return getattr(time, name)


def install(module: types.ModuleType, clock: PullClock) -> bool:
    """Patch Flower's SuperNode ``module``; False (and nothing changed) if its shape differs."""
    push = getattr(module, "_push_messages", None)
    if getattr(module, "time", None) is not time or not callable(push):
        return False

    def push_messages(*args: Any, **kwargs: Any) -> Any:
        # Flower calls this only after it pulled a message (start_client_internal).
        clock.message_seen()
        return push(*args, **kwargs)

    module.time = clock  # type: ignore[attr-defined]
    module._push_messages = push_messages  # type: ignore[attr-defined]
    return True


def main() -> int:
    from flwr.supernode import start_client_internal
    from flwr.supernode.cli import flower_supernode

    if not install(start_client_internal, PullClock()):
        print(
            "fedcollab: flwr.supernode.start_client_internal has changed; "
            "the SuperNode runs with Flower's own pull interval (3 s)",
            file=sys.stderr,
        )
    sys.argv[0] = "flower-supernode"
    flower_supernode()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
