"""``flower-supernode`` with a pull interval that follows the job: fast while it runs.

    python -m fedcollab.client.fleet_poll <flower-supernode options>

Long module: one launcher, and the changes fedcollab makes to Flower's SuperNode loop
(pull timing, local notices, the executor's notice, the runtime API's layers), each
installed by :func:`main` with its own fallback when Flower's module differs; the Fleet
link's retries are their own module (:mod:`fedcollab.client.fleet_link`).

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

* the idle wait (Flower's 3 s): :data:`HELD_NEXT_S` after a pull the coordinator's
  gateway held (it answered after :data:`HELD_MIN_S` to :data:`HELD_MAX_S`: the gateway waits for
  the coordinator's next request itself, ``coordinator/fleet_notice.py``, so the next
  pull may start at once and the node still pulls about once per hold, 2 s);
  otherwise :data:`ACTIVE_S` while a message arrived in the last
  :data:`ACTIVE_WINDOW_S` seconds (a job is running), then Flower's 3 s again, so an
  idle node costs a coordinator without held pulls what it costs with Flower;
* the local waits (reply ready, object content ready; Flower's 0.5 s) end as soon as
  the node's executor pushed a reply message or object to this SuperNode's runtime API
  (:func:`install_local_notice`: Flower's runtime handlers, wrapped, set an event the
  wait is on), at the latest after :data:`LOCAL_S`. They used to be a 0.01 s poll of
  the node's state: measured in a deployed plaintext job (9 nodes on 2 cores), the
  nine SuperNodes' polling while their executors trained took 0.45 of a core, beside
  the executors it slowed;
* the first retry of a message's objects (:data:`OBJECT_BACKOFF_S` instead of
  Flower's ``PULL_INITIAL_BACKOFF``, 1 s, then doubling as Flower does, to at most
  :data:`OBJECT_BACKOFF_CAP_S`): the SuperLink lists a message as soon as the
  coordinator registered it, before its objects are uploaded, so a node that pulls
  right then found its objects missing and waited a full second.

Its runtime API (what the executor talks to) runs Flower's tracing middleware only
when tracing is on (:func:`install_runtime_gate`, :mod:`fedcollab.common.asgi_gate`).

And it tells the node's executor (``client/node_runtime.py``, its parent) when a
message is stored, so the executor takes the task at once instead of at its next poll
(:func:`notify_executor`: one byte on a pipe the executor passed down).

Nothing else changes: same TLS, same node authentication, same messages. The
pull rate this adds is bounded: at most ``1 / ACTIVE_S`` pulls per second per
node while its job runs. If Flower's module no longer has the names this relies
on, the SuperNode runs unpatched (Flower's own timing) and says so on stderr.

*Transient Fleet API errors* are retried (:mod:`fedcollab.client.fleet_link`, installed
by :func:`main`, which exits with its typed error when the link stays down).

*A reply Flower's loop left behind* (:func:`install`, :func:`reply_waiting`): after a
pull, Flower pushes whatever replies it finds first and pulls again; a stale reply (to
a message of a run a coordinator restart ended) found first left the reply to the
message just pulled unsent until another message came. Before each pull, a reply
already in the node's state is pushed; nothing waits for one that is not there.

*A message no task will answer* (:mod:`fedcollab.client.unanswered`): while Flower's
loop waits for a reply, a pulled message whose task ended without one gets an error
reply, instead of the loop waiting forever.

*A message whose run ended while the node received it* (403 on its objects, e.g. the
killed run's next round after a coordinator restart) is dropped with its task instead
of staying queued with objects that never come: :mod:`fedcollab.client.run_ended`,
installed by :func:`main`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from fedcollab.client import unanswered
from fedcollab.common.asgi_gate import Gated, tracing_enabled
from fedcollab.common.third_party_noise import plain_flower_logs

__all__ = [
    "ACTIVE_S",
    "ACTIVE_WINDOW_S",
    "HELD_MIN_S",
    "HELD_NEXT_S",
    "LOCAL_S",
    "OBJECT_BACKOFF_S",
    "PullClock",
    "install",
    "install_local_notice",
    "install_runtime_gate",
    "main",
    "notify_executor",
    "reply_waiting",
]

log = logging.getLogger("flwr")  # the SuperNode's own log (stderr, the node log)

#: The environment variable naming the fd of the executor's notice pipe (:func:`notify_executor`).
NOTIFY_FD_ENV = "FEDCOLLAB_TASK_NOTIFY_FD"

#: Idle pull interval while a job is running (a message arrived recently); the
#: environment variable FEDCOLLAB_ACTIVE_PULL_S overrides it (3 = Flower's own pace,
#: what experiments/bench_deployment.py compares against). Every message of a job
#: waits half of it on average before its partner sees it.
ACTIVE_S = 0.2
#: A pull that took between these was held by the coordinator's gateway (its hold is
#: 2 s, coordinator/fleet_notice.HOLD_S; a longer one is a stall, not a hold); the
#: next one starts after HELD_NEXT_S.
HELD_MIN_S = 1.0
HELD_MAX_S = 6.0
HELD_NEXT_S = 0.02
#: How long after the last message the node keeps pulling at ACTIVE_S.
ACTIVE_WINDOW_S = 120.0
#: Longest wait on the node's own state (reply ready, object content available) when
#: no push to the runtime API ends it first (a backstop: the push ends it at once).
LOCAL_S = 0.1
#: First retry of a message's objects not yet uploaded to the SuperLink, and the cap
#: of its doubling (Flower: 1 s and 10 s).
OBJECT_BACKOFF_S = 0.05
OBJECT_BACKOFF_CAP_S = 2.0
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
        on_message: Callable[[], None] | None = None,
    ) -> None:
        self.on_message = on_message
        self._monotonic = monotonic
        self._sleep = sleep
        self._lock = threading.Lock()
        self._last_message = float("-inf")
        self._woke = monotonic()  # when the last sleep ended: a pull's start, roughly
        self.active_s = _active_from_env()
        #: Set by :meth:`local_change` (the executor pushed a reply or an object).
        self.changed = threading.Event()
        self.local_wait_s = LOCAL_S
        #: Called after each local wait while Flower's loop pushes (set by :func:`install`:
        #: client/unanswered.py's check, which decides itself whether to run).
        self.while_waiting: Callable[[], None] | None = None
        #: Set by :meth:`local_task_end` (the executor finished a task).
        self.task_ended = threading.Event()

    def message_seen(self) -> None:
        """A message was pulled: pull fast for the next ACTIVE_WINDOW_S seconds, and tell
        the node's executor (:func:`notify_executor`)."""
        with self._lock:
            self._last_message = self._monotonic()
        if self.on_message is not None:
            self.on_message()

    def interval(self, requested: float) -> float:
        """What ``sleep(requested)`` from Flower's SuperNode loop sleeps instead."""
        if requested == _FLOWER_IDLE_S:
            now = self._monotonic()
            if HELD_MIN_S <= now - self._woke <= HELD_MAX_S:
                return HELD_NEXT_S  # that empty pull was held: the gateway waits for us
            with self._lock:
                active = now - self._last_message < ACTIVE_WINDOW_S
            return self.active_s if active else float(requested)
        if requested == _FLOWER_LOCAL_S:
            return LOCAL_S
        return requested

    def local_task_end(self) -> None:
        """The node's executor finished a task (pushed its task output)."""
        self.task_ended.set()
        self.changed.set()

    def local_change(self) -> None:
        """The node's executor stored something in this SuperNode (a reply message or
        one of its objects): a local wait ends now, and Flower's loop checks again."""
        self.changed.set()

    def sleep(self, seconds: float) -> None:
        if seconds == _FLOWER_LOCAL_S:
            # Only Flower's main loop waits here (one waiter). Cleared after the wait and
            # before the caller checks its state again, so no change is missed: one that
            # comes before the wait ends it at once, one after it is seen by the check.
            self.changed.wait(self.local_wait_s)
            self.changed.clear()
            if self.while_waiting is not None:
                self.while_waiting()
        else:
            self._sleep(self.interval(seconds))
        self._woke = self._monotonic()

    def __getattr__(self, name: str) -> Any:  # time.time, time.monotonic, ...
        return getattr(time, name)


def notify_executor(environ: Mapping[str, str] = os.environ) -> Callable[[], None] | None:
    """What tells the node's executor (client/node_runtime.py, this process's parent) that
    a message is stored and its task can be taken now: one byte on the pipe whose fd it
    passed in ``FEDCOLLAB_TASK_NOTIFY_FD`` (None: no such pipe; the executor polls)."""
    raw = environ.get(NOTIFY_FD_ENV, "")
    if not raw.isdigit():
        return None
    fd = int(raw)
    try:
        os.set_blocking(fd, False)
    except OSError:
        return None

    def notify() -> None:
        # A full pipe already holds a notice; a closed one: the executor is gone.
        with contextlib.suppress(OSError):
            os.write(fd, b"m")

    return notify


def reply_waiting(state: Any) -> bool:
    """Whether the node's state holds a reply its loop has not taken yet (what Flower's
    ``_push_messages`` would push at once). Reads Flower's in-memory ``msg_store`` under
    its lock without marking anything retrieved (``get_messages_legacy`` would); False
    if the state is not Flower 1.41's ``InMemoryNodeState``."""
    store = getattr(state, "msg_store", None)
    lock = getattr(state, "lock_msg_store", None)
    if not isinstance(store, dict) or lock is None:
        return False
    with lock:
        return any(
            entry.message.metadata.reply_to_message_id and not entry.is_retrieved
            for entry in store.values()
        )


#: While Flower's loop pushes, the unanswered-message check runs at its first local
#: wait, after each task the executor finishes, and at least this often otherwise.
CHECK_EVERY_S = 5.0


@contextlib.contextmanager
def _checking(
    clock: PullClock, state: Any, store: Any, insert: Callable[..., None] | None
) -> Iterator[None]:
    """Run :func:`fedcollab.client.unanswered.check` at the local waits of one push."""
    if state is None or store is None or not callable(insert):
        yield
        return
    last = [float("-inf")]

    def run() -> None:
        now = time.monotonic()
        if not clock.task_ended.is_set() and now - last[0] < CHECK_EVERY_S:
            return
        clock.task_ended.clear()
        last[0] = now
        try:
            answered = unanswered.check(state, store, insert)
        except unanswered.ReplyIncomplete:
            raise  # Flower's push catches it and drops that reply (see that module)
        except Exception:
            log.exception("fedcollab: the unanswered-message check failed")
            return
        if answered:
            log.warning(
                "fedcollab: %d message(s) whose task ended without a reply answered "
                "with an error reply",
                answered,
            )

    clock.while_waiting = run
    try:
        yield
    finally:
        clock.while_waiting = None


def install(module: types.ModuleType, clock: PullClock) -> bool:
    """Patch Flower's SuperNode ``module``; False (and nothing changed) if its shape differs.

    Besides the clock, it pushes a reply that Flower's loop left behind (see
    :func:`reply_waiting`): Flower's ``_push_messages`` waits for *any* reply after a
    pull, pushes every reply it finds, and returns. When a reply to an earlier message
    is there first (one the executor stored after Flower had already given up on that
    message, e.g. a message of a run a coordinator restart ended), Flower pushes that
    one (the SuperLink refuses it), returns, and pulls again; the reply to the message
    just pulled then waited in the node's state until another message came to the node.
    A job's first message (its handshake) was lost that way and the coordinator waited
    out its start-up without the partner. Now, before each pull, a reply waiting in the
    state is pushed (through Flower's own ``_push_messages``, which then does not wait).
    Nothing blocks on a reply that never comes: only a reply already there is pushed.
    """
    push = getattr(module, "_push_messages", None)
    if getattr(module, "time", None) is not time or not callable(push):
        return False
    link: dict[str, Any] = {}  # the connection's send callables, from Flower's last push

    insert = getattr(module, "_insert_message", None)

    def push_messages(*args: Any, **kwargs: Any) -> Any:
        # Flower calls this only after it pulled a message (start_client_internal).
        clock.message_seen()
        if not args:
            link.update(kwargs)
        with _checking(clock, kwargs.get("state"), kwargs.get("object_store"), insert):
            return push(*args, **kwargs)

    module.time = clock  # type: ignore[attr-defined]
    module._push_messages = push_messages  # type: ignore[attr-defined]
    pull_and_store = getattr(module, "_pull_and_store_message", None)
    if callable(pull_and_store):
        try:
            signature: inspect.Signature | None = inspect.signature(pull_and_store)
        except (TypeError, ValueError):
            signature = None

        @functools.wraps(pull_and_store)
        def pull_after_leftovers(*args: Any, **kwargs: Any) -> Any:
            # By keyword from Flower's loop; positionally too once run_ended wrapped this.
            state = kwargs.get("state")
            if state is None and args and signature is not None:
                with contextlib.suppress(TypeError):
                    state = signature.bind_partial(*args, **kwargs).arguments.get("state")
            if link and reply_waiting(state):
                log.info("fedcollab: pushing a reply the SuperNode's loop left behind")
                with _checking(clock, link.get("state"), link.get("object_store"), insert):
                    push(**link)
            return pull_and_store(*args, **kwargs)

        module._pull_and_store_message = pull_after_leftovers  # type: ignore[attr-defined]
    pull = getattr(module, "pull_objects", None)
    if callable(pull) and not isinstance(pull, functools.partial):
        module.pull_objects = functools.partial(  # type: ignore[attr-defined]
            pull, initial_backoff=OBJECT_BACKOFF_S, backoff_cap=OBJECT_BACKOFF_CAP_S
        )
    return True


def install_local_notice(handlers: types.ModuleType, clock: PullClock) -> bool:
    """Wrap Flower's SuperNode runtime handlers ``push_messages``, ``push_object`` and
    ``push_task_output`` (what the executor's reply and task end go through; the runtime
    router looks them up on this module at every call) so that each push ends the
    SuperNode's local wait (:meth:`PullClock.local_change`; a task end also sets
    :attr:`PullClock.task_ended`). False, and nothing changed, if the module lacks them."""
    names = ("push_messages", "push_object", "push_task_output")
    originals = {name: getattr(handlers, name, None) for name in names}
    if not all(callable(fn) for fn in originals.values()):
        return False

    def wrap(fn: Callable[..., Any], notice: Callable[[], None]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def pushed(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            finally:
                notice()

        return pushed

    for name, fn in originals.items():
        assert fn is not None
        ended = name == "push_task_output"
        setattr(handlers, name, wrap(fn, clock.local_task_end if ended else clock.local_change))
    return True


def install_runtime_gate(module: types.ModuleType) -> bool:
    """Make the runtime API app that Flower's ``create_app`` (``flwr.supernode.main``)
    builds run ``RuntimeTracingMiddleware`` only with ``FLWR_TRACING_ENABLED=1``
    (:func:`~fedcollab.common.asgi_gate.tracing_enabled`): one ``BaseHTTPMiddleware``
    layer fewer on each of the executor's requests. False, and nothing changed, if the
    module lacks the names; the app must be created after this (``flower-supernode``
    creates it at start)."""
    layer = getattr(module, "RuntimeTracingMiddleware", None)
    if not isinstance(layer, type) or not callable(getattr(module, "create_app", None)):
        return False
    module.RuntimeTracingMiddleware = functools.partial(  # type: ignore[attr-defined]
        Gated, layer=layer, applies=tracing_enabled
    )
    return True


def main() -> int:
    from flwr.supernode import fleet_http_connection, start_client_internal
    from flwr.supernode import main as supernode_app
    from flwr.supernode.cli import flower_supernode
    from flwr.supernode.servicer.runtime import runtime_handlers

    from fedcollab.client import run_ended, runtime_fast
    from fedcollab.client.fleet_link import LinkWatch, install_link_retry
    from fedcollab.common.errors import FleetLinkError

    clock = PullClock(on_message=notify_executor())
    if not install(start_client_internal, clock):
        print(
            "fedcollab: flwr.supernode.start_client_internal has changed; "
            "the SuperNode runs with Flower's own pull interval (3 s)",
            file=sys.stderr,
        )
    if not install_local_notice(runtime_handlers, clock):
        print(
            "fedcollab: flwr.supernode.servicer.runtime.runtime_handlers has changed; the "
            f"SuperNode checks for its executor's reply every {LOCAL_S} s",
            file=sys.stderr,
        )
    watch = LinkWatch()
    if not install_link_retry(fleet_http_connection, watch):
        print(
            "fedcollab: flwr.supernode.fleet_http_connection has changed; the SuperNode "
            "retries only what Flower retries (a SuperLink error 500 ends it)",
            file=sys.stderr,
        )
    if not run_ended.install(start_client_internal):
        print(
            "fedcollab: flwr.supernode.start_client_internal has changed; a message whose "
            "run ends while the node receives it may stay queued (client/run_ended.py)",
            file=sys.stderr,
        )
    if not runtime_fast.install(supernode_app):
        print(
            "fedcollab: flwr.supernode.main has changed; every runtime API call goes "
            "through Flower's app layers",
            file=sys.stderr,
        )
    if not install_runtime_gate(supernode_app):
        print(
            "fedcollab: flwr.supernode.main has changed; the runtime API runs Flower's "
            "tracing layer on every request",
            file=sys.stderr,
        )
    plain_flower_logs()
    sys.argv[0] = "flower-supernode"
    flower_supernode()
    if watch.down is not None:
        err = FleetLinkError(
            f"the coordinator's Fleet API kept failing ({watch.down}) after "
            f"{watch.retried} retried error(s) within the node's retry window",
            hint="check that the coordinator runs (`fedcollab federation nodes`, its log: "
            "HTTP 500 errors?), then restart this node (`fedcollab node start`); "
            "a longer retry window: `fedcollab node start --connect-timeout`",
        )
        print(err.diagnostics(), file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
