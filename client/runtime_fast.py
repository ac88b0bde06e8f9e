"""The executor's calls to its SuperNode's runtime API, answered without FastAPI's layers.

For each message a partner's executor (``client/node_runtime.py``) makes about ten
calls to its SuperNode's runtime API (take the task, pull its input and three objects,
push three objects and the output, ...). Flower serves them with a FastAPI app
(``flwr.supernode.main.create_app``) whose layers cost more than the handlers behind
them; :func:`install` makes that factory return :class:`FastRuntimeApp`, which answers
the calls of :data:`ROUTES` through :class:`fedcollab.common.protobuf_fast.FastCalls`
and hands every other request (and the lifespan) to Flower's app unchanged.

Each fast call does what Flower's route does (``flwr/supercore/routers/runtime/
router.py``), with Flower's functions: the router's ``VersionDependency`` (the
caller's runtime version, incompatible refused), then ``acquire-task``'s SuperExec
authentication (``SuperExecAuthDependency``: the HMAC of the node's own secret) or
every other route's task token (``authenticate_task``: exactly one token header, a
task this node issued), then the handler the app's ``runtime_handlers`` names (the
SuperNode's, with :func:`fedcollab.client.fleet_poll.install_local_notice`'s wrappers),
or Flower's core heartbeat handler. A call that fails any check goes to Flower's app,
whose layers give Flower's exact refusal. ``tests/client/test_runtime_fast.py``
compares the answers byte for byte.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from fedcollab.common.protobuf_fast import REFUSED, FastCalls, Work, customised

__all__ = ["ROUTES", "FastRuntimeApp", "install", "runtime_routes"]

PREFIX = "/v1/runtime/"
#: Path -> the ``runtime_handlers`` function it calls (None: Flower's core heartbeat).
ROUTES: Mapping[str, str | None] = {
    PREFIX + "acquire-task": "acquire_task",
    PREFIX + "pull-task-input": "pull_task_input",
    PREFIX + "push-task-output": "push_task_output",
    PREFIX + "pull-object": "pull_object",
    PREFIX + "push-object": "push_object",
    PREFIX + "confirm-message-received": "confirm_message_received",
    PREFIX + "send-task-heartbeat": None,
}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def runtime_routes(component: str = "SuperNode") -> dict[str, Work]:
    """The work of each route of :data:`ROUTES` (module notes)."""
    from flwr.supercore.constant import TASK_TOKEN_HEADER
    from flwr.supercore.dependencies.runtime import (
        SuperExecAuthDependency,
        get_runtime_handlers,
        get_runtime_state,
    )
    from flwr.supercore.dependencies.task import authenticate_task
    from flwr.supercore.dependencies.version import VersionDependency
    from flwr.supercore.servicer.runtime import runtime_handlers as core

    version = VersionDependency(
        component_name=component, connection_name=f"Caller <-> {component} Runtime API"
    )
    superexec = SuperExecAuthDependency("/flwr.proto.Runtime/AcquireTask")

    def route(path: str, name: str | None) -> Work:
        def work(request: Any, message: Any) -> Any:
            try:
                version(request)
                state = get_runtime_state(request)
                if name == "acquire_task":
                    superexec(request, state)
                else:
                    task = authenticate_task(request, request.headers.get(TASK_TOKEN_HEADER), state)
            except Exception:  # Flower's app gives the refusal
                return REFUSED
            if name == "acquire_task":
                return get_runtime_handlers(request).acquire_task(message, state)
            if name is None:
                return core.send_task_heartbeat(message, state, task)
            return getattr(get_runtime_handlers(request), name)(message, state, task)

        work.__name__ = f"fast_{path.rsplit('/', 1)[-1]}"
        return work

    return {path: route(path, name) for path, name in ROUTES.items()}


class FastRuntimeApp:
    """Flower's runtime API app with the calls of :data:`ROUTES` answered fast."""

    def __init__(self, app: Any) -> None:
        self.app = app
        #: None where the app may answer otherwise than Flower's handlers (customised).
        self.fast = None if customised(app) else FastCalls(app, runtime_routes())

    def __getattr__(self, name: str) -> Any:  # app.state, app.routes, ...
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast is None or scope["type"] != "http" or scope.get("path") not in ROUTES:
            await self.app(scope, receive, send)
            return
        parts: list[bytes] = []
        while True:
            event = await receive()
            if event["type"] != "http.request":
                return  # the caller went away
            parts.append(bytes(event.get("body", b"")))
            if not event.get("more_body", False):
                break
        body = b"".join(parts)
        reply = await self.fast.answer(scope, body)
        if reply is None:
            await self.app(scope, _replay(body, receive), send)
            return
        status, headers, content = reply
        headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def again() -> MutableMapping[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


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
