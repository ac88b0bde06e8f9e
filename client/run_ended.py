"""A message whose run ends while the SuperNode receives it: dropped, not left half-stored.

Flower 1.41's SuperNode receives a message in three steps
(``flwr/supernode/start_client_internal.py``, ``_pull_and_store_message``): it
creates a ClientApp task for the message's run, stores the message and
preregisters the message's object tree in its in-memory ObjectStore (every object
empty, "not available"), then pulls the objects from the SuperLink and confirms the
receipt. If a pull fails, an ``except Exception`` block undoes the first two steps:
message deleted, objects deleted, task finished as failed.

The SuperLink answers a Fleet call about a run that is no longer running with 403,
which Flower's retry invoker turns into ``RunNotRunningException``
(``flwr/supercore/retry/http_retry.py``, ``_should_giveup``). That class derives from
``BaseException`` (``flwr/supercore/run.py``), so ``except Exception`` misses it; the
outer ``except RunNotRunningException`` only logs "Run ID ... is not in `RUNNING`
status. Ignoring message ...". The task stays pending, the message stays stored and
its objects stay preregistered and empty, and nothing will ever fill them. The
node's executor takes the *oldest* pending task first
(``flwr/supercore/servicer/runtime/runtime_handlers.py``, ``acquire_task``) and
serves one task at a time (:mod:`fedcollab.client.node_runtime`), so it waits on
those objects (Flower's default: 2 h; ours: ``_PULL_MAX_S``, 120 s) while the next
job's messages queue behind it.

After a coordinator restart this hits every node that had not yet pulled its
message of the killed run's next round: the SuperLink keeps that message in its
database and delivers it after the restart, but marks the run failed once the dead
ServerApp's task token expires (60 s: ``HEARTBEAT_PATIENCE`` x
``HEARTBEAT_DEFAULT_INTERVAL``), so a node that pulls it later gets 403 on its
objects. The first message of the next job (its handshake) then waited 120 s at
each such node, and the job failed with too few partners (docs/deployment.md,
"Restarts").

:func:`install` wraps ``_pull_and_store_message`` so that, during its object pulls
and the receipt confirmation, ``RunNotRunningException`` becomes
:class:`RunEndedError` (an ``Exception``): Flower's own clean-up block then runs
(message and objects deleted, task finished as failed, "Failed to receive message
...: ... run ... ended" in the node log). Nothing else changes. If Flower's function
no longer takes those two callables by those names, nothing is installed and
:func:`install` returns False (the launcher says so on stderr).
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from typing import Any

__all__ = ["RunEndedError", "install"]

#: The callables of ``_pull_and_store_message`` that run after the task and the
#: message are stored (Flower 1.41): the object pull and the receipt confirmation.
_WRAPPED = ("pull_object", "confirm_message_received")


class RunEndedError(Exception):
    """The SuperLink refused a call for a message's run: the run is no longer running."""


def _converting(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    from flwr.supercore.run import RunNotRunningException

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RunNotRunningException:
            run = args[0] if args else kwargs.get("run_id", "?")
            raise RunEndedError(
                f"{name}: run {run} ended at the coordinator; the message is dropped"
            ) from None

    return call


def install(module: types.ModuleType) -> bool:
    """Wrap ``module._pull_and_store_message`` (see module notes); False (and nothing
    changed) if it is missing or does not take the callables this relies on."""
    original = getattr(module, "_pull_and_store_message", None)
    if not callable(original):
        return False
    if getattr(original, "_fedcollab_run_ended", False):
        return True
    try:
        signature = inspect.signature(original)
    except (TypeError, ValueError):
        return False
    if not all(name in signature.parameters for name in _WRAPPED):
        return False

    @functools.wraps(original)
    def pull_and_store_message(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        for name in _WRAPPED:
            bound.arguments[name] = _converting(bound.arguments[name], name)
        return original(*bound.args, **bound.kwargs)

    pull_and_store_message._fedcollab_run_ended = True  # type: ignore[attr-defined]
    module._pull_and_store_message = pull_and_store_message  # type: ignore[attr-defined]
    return True
