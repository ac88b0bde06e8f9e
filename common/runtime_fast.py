"""A Flower runtime API app with its hot calls answered without FastAPI's layers.

Flower 1.41 serves one runtime API router (``flwr/supercore/routers/runtime/
router.py``) in two places: at each partner's SuperNode, where the node's executor
takes its task, pulls the input and pushes the output (``client/runtime_fast.py``), and
at the coordinator's SuperLink, where the ServerApp (Flower's ServerAppIo) pushes
every message to the partners and pulls their replies (``coordinator/
superlink_launch.py``). Each call passes the app's error and protobuf-translation
layers, FastAPI's routing and dependency injection and a thread-pool hop before a
handler that is one function call.

:class:`FastRuntimeApp` answers the calls of a route table through
:class:`fedcollab.common.protobuf_fast.FastCalls`, doing what the router does with
Flower's functions (:func:`runtime_routes`): the router's ``VersionDependency`` (the
caller's runtime version for that component, incompatible refused), then
``acquire-task``'s SuperExec authentication (``SuperExecAuthDependency``: the HMAC of
the component's own secret) or every other route's task token
(``authenticate_task``: exactly one token header, a task this component issued), then
the handler the app's ``runtime_handlers`` names, or Flower's core heartbeat handler.
A call that fails any check, and every other request (and the lifespan), goes to
Flower's app unchanged, whose layers give Flower's exact refusal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from fedcollab.common.protobuf_fast import REFUSED, FastCalls, Work, customised

__all__ = ["PREFIX", "FastRuntimeApp", "runtime_routes"]

PREFIX = "/v1/runtime/"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def runtime_routes(component: str, routes: Mapping[str, str | None]) -> dict[str, Work]:
    """The work of each route of ``routes`` (path -> the ``runtime_handlers`` function
    it calls; None: Flower's core heartbeat) for the runtime API of ``component``
    ("SuperNode" or "SuperLink", as Flower's router names it)."""
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

    return {path: route(path, name) for path, name in routes.items()}


class FastRuntimeApp:
    """Flower's runtime API ``app`` of ``component`` with the calls of ``routes``
    answered fast (module notes)."""

    def __init__(self, app: Any, component: str, routes: Mapping[str, str | None]) -> None:
        self.app = app
        self.paths = frozenset(routes)
        #: None where the app may answer otherwise than Flower's handlers (customised).
        self.fast = None if customised(app) else FastCalls(app, runtime_routes(component, routes))

    def __getattr__(self, name: str) -> Any:  # app.state, app.routes, ...
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast is None or scope["type"] != "http" or scope.get("path") not in self.paths:
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
