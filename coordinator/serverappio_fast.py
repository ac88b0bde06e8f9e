"""The ServerApp's calls to the SuperLink answered without FastAPI's layers.

The coordinator's ServerApp talks to the SuperLink through Flower's runtime API
(ServerAppIo, on the SuperLink's loopback address): for each message to a partner it
pushes the message and its objects, and for each reply it pulls the message and its
objects, about eight calls per partner per exchange, besides its heartbeats. Each
went through the SuperLink app's error and protobuf-translation layers, FastAPI's
routing and dependency injection and a thread hop (py-spy of the SuperLink during a
deployed `ckks+masked` round: the runtime calls' FastAPI dependency solving and
protobuf translation alone were 30% of the process's busy samples, while the Fleet
calls already took the fast path of :mod:`fedcollab.coordinator.fleet_fast`).

:func:`serverappio_app` wraps the SuperLink's app in a
:class:`~fedcollab.common.runtime_fast.FastRuntimeApp` for the calls of :data:`ROUTES`:
Flower's ``VersionDependency`` for the SuperLink, the task token (or, for
``acquire-task``, the SuperExec's HMAC) checked by Flower's functions, then the
SuperLink's ``runtime_handlers``. A call failing a check and every other request go
through Flower's app. The fast path stays off where the app's skipped layers could act
(:func:`fedcollab.coordinator.fleet_fast.off_reason`), when ``FEDCOLLAB_FAST_CALLS=0``
and while Flower's tracing is on. ``tests/coordinator/test_serverappio_fast.py``
compares the answers byte for byte.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fedcollab.common.protobuf_fast import enabled
from fedcollab.common.runtime_fast import PREFIX, FastRuntimeApp
from fedcollab.coordinator.fleet_fast import off_reason

__all__ = ["ROUTES", "serverappio_app"]

log = logging.getLogger(__name__)

#: Path -> the SuperLink ``runtime_handlers`` function it calls (None: Flower's core
#: heartbeat). The calls a ServerApp, and the SuperExec that starts it, make.
ROUTES: Mapping[str, str | None] = {
    PREFIX + "acquire-task": "acquire_task",
    PREFIX + "pull-task-input": "pull_task_input",
    PREFIX + "push-task-output": "push_task_output",
    PREFIX + "push-messages": "push_messages",
    PREFIX + "pull-messages": "pull_messages",
    PREFIX + "push-object": "push_object",
    PREFIX + "pull-object": "pull_object",
    PREFIX + "confirm-message-received": "confirm_message_received",
    PREFIX + "get-nodes": "get_nodes",
    PREFIX + "send-task-heartbeat": None,
}


def serverappio_app(app: Any) -> Any:
    """``app`` (Flower's SuperLink app) with the calls of :data:`ROUTES` answered
    fast, or ``app`` itself where the fast path must stay off."""
    state = getattr(app, "state", None)
    if not enabled() or getattr(state, "runtime_handlers", None) is None:
        return app  # turned off, or not Flower's SuperLink app (e.g. a test's stand-in)
    why = off_reason(app, fleet=False)
    if not why:
        try:
            wrapped = FastRuntimeApp(app, "SuperLink", ROUTES)
        except (ImportError, KeyError, AttributeError) as exc:
            why = repr(exc)
        else:
            if wrapped.fast is not None:
                return wrapped
            why = "the app is customised"
    log.warning("every ServerApp call goes through Flower's app layers: %s", why)
    return app
