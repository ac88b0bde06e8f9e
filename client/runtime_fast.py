"""The executor's calls to its SuperNode's runtime API, answered without FastAPI's layers.

For each message a partner's executor (``client/node_runtime.py``) makes about ten
calls to its SuperNode's runtime API (take the task, pull its input and three objects,
push three objects and the output, ...). Flower serves them with a FastAPI app
(``flwr.supernode.main.create_app``) whose layers cost more than the handlers behind
them; :func:`install` makes that factory return a
:class:`~fedcollab.common.runtime_fast.FastRuntimeApp` for the calls of :data:`ROUTES`
(Flower's checks and handlers, the SuperNode's ``runtime_handlers`` with
:func:`fedcollab.client.fleet_poll.install_local_notice`'s wrappers; the module notes
of :mod:`fedcollab.common.runtime_fast`), and every other request goes to Flower's app
unchanged. ``tests/client/test_runtime_fast.py`` compares the answers byte for byte.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any

from fedcollab.common import runtime_fast
from fedcollab.common.protobuf_fast import Work
from fedcollab.common.runtime_fast import PREFIX

__all__ = ["ROUTES", "FastRuntimeApp", "install", "runtime_routes"]

#: Path -> the ``runtime_handlers`` function it calls (None: Flower's core heartbeat).
ROUTES: Mapping[str, str | None] = {
    PREFIX + "acquire-task": "acquire_task",
    PREFIX + "pull-task-input": "pull_task_input",
    PREFIX + "push-task-output": "push_task_output",
    PREFIX + "pull-messages": "pull_messages",
    PREFIX + "push-messages": "push_messages",
    PREFIX + "pull-object": "pull_object",
    PREFIX + "push-object": "push_object",
    PREFIX + "confirm-message-received": "confirm_message_received",
    PREFIX + "send-task-heartbeat": None,
}


def runtime_routes(component: str = "SuperNode") -> dict[str, Work]:
    """The work of each route of :data:`ROUTES`."""
    return runtime_fast.runtime_routes(component, ROUTES)


class FastRuntimeApp(runtime_fast.FastRuntimeApp):
    """The SuperNode's runtime API app with the calls of :data:`ROUTES` answered fast."""

    def __init__(self, app: Any) -> None:
        super().__init__(app, "SuperNode", ROUTES)


def install(module: types.ModuleType) -> bool:
    """Make ``module.create_app`` (``flwr.supernode.main``) return a
    :class:`FastRuntimeApp`; False, and nothing changed, if it lacks the factory. The app
    must be created after this (``flower-supernode`` creates it at start)."""
    create = getattr(module, "create_app", None)
    if not callable(create) or getattr(create, "fedcollab_fast", False):
        return callable(create)

    def create_app(*args: Any, **kwargs: Any) -> Any:
        return FastRuntimeApp(create(*args, **kwargs))

    create_app.fedcollab_fast = True  # type: ignore[attr-defined]
    module.create_app = create_app  # type: ignore[attr-defined]
    return True
