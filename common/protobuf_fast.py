"""Answer a Flower protobuf-over-HTTP call without the app's middleware and routing.

Flower 1.41 serves its SuperLink's Fleet API and each SuperNode's runtime API as
FastAPI apps. A call passes Starlette ``BaseHTTPMiddleware`` layers (error
translation, protobuf translation, and per app node authentication or tracing: each a
task group, a memory object stream and a streaming response per request), FastAPI's
routing and dependency injection, and one or two thread-pool hops, before a handler
that is one function call. For the calls every message makes, that machinery was most
of the CPU the SuperLink and the SuperNodes spent per round
(``experiments/bench_deployment.py``).

:class:`FastCalls` answers the calls of a route table with the steps those layers
take, using Flower's own functions for each (the tables, and which functions, are in
:mod:`fedcollab.coordinator.fleet_fast` and :mod:`fedcollab.client.runtime_fast`):

1. the body parsed as the route's protobuf request (Flower's
   ``PROTOBUF_REQUEST_TYPES``), only with ``Content-Type: application/protobuf``;
2. the route's ``work``: the caller's authentication as Flower's dependency or
   middleware does it, then Flower's handler. Flower runs it in a worker thread (a
   sync route); here it runs in the event loop itself (``inline``, the default): the
   handlers are operations on Flower's in-memory state, microseconds under its locks,
   and the hop to a worker and back (a queue put, a thread wake-up, the GIL handed
   over twice) cost more than they did. py-spy (``--gil``) of the SuperLink in a
   deployed ``ckks+masked`` round put 24% of its busy samples in that hop, 17% in
   ``Condition.notify`` alone. A body over :data:`INLINE_MAX_BYTES` still goes to a
   worker: storing an object hashes its content (SHA-256, which releases the GIL), and
   an authenticated node pushing 128 MiB objects must not stall every other call in
   the loop while it is hashed;
3. an exception turned into Flower's answer by Flower's ``http_error_translator``; a
   result into ``application/protobuf`` bytes as ``ProtobufTranslationMiddleware``
   does.

A call it does not answer is left to the app (:meth:`FastCalls.answer` returns None
before acting): another path or method, another content type, a body that does not
parse, a call whose authentication fails (the app's layers then give Flower's exact
refusal), a call carrying a ``traceparent``, and every call while Flower's tracing is
on (``FLWR_TRACING_ENABLED=1``). ``FEDCOLLAB_FAST_CALLS=0`` turns it off.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "ENV",
    "INLINE_MAX_BYTES",
    "REFUSED",
    "FastCalls",
    "Reply",
    "Work",
    "customised",
    "enabled",
]

#: ``0`` sends every call through the apps' layers.
ENV = "FEDCOLLAB_FAST_CALLS"

#: Largest request body whose work runs in the event loop (module notes, step 2).
INLINE_MAX_BYTES = 1 << 20

#: What a route's work returns when the caller's authentication fails.
REFUSED = object()

Reply = tuple[int, list[tuple[bytes, bytes]], bytes]
#: A route's work: (the call's Starlette request, its parsed protobuf) -> the
#: handler's protobuf result, or :data:`REFUSED`; runs in a worker thread.
Work = Callable[[Any, Any], Any]


def enabled() -> bool:
    """Whether fast calls may be used at all (not turned off, Flower's tracing off)."""
    return os.environ.get(ENV, "1") != "0" and os.getenv("FLWR_TRACING_ENABLED") != "1"


def customised(app: Any) -> str:
    """Why ``app`` may answer otherwise than its routes' handlers and Flower's error
    translation ("" if it cannot): dependency overrides or exception handlers beyond
    FastAPI's three defaults, as an extension's ``configure_app`` could add."""
    if getattr(app, "dependency_overrides", None):
        return "the app overrides dependencies"
    defaults = {"HTTPException", "RequestValidationError", "WebSocketRequestValidationError"}
    extra = [
        k
        for k in getattr(app, "exception_handlers", {})
        if getattr(k, "__name__", k) not in defaults
    ]
    return f"the app has its own exception handlers ({extra})" if extra else ""


class FastCalls:
    """The fast path of one app for the calls of ``routes`` (path -> work)."""

    def __init__(self, app: Any, routes: Mapping[str, Work], *, inline: bool = True) -> None:
        from flwr.supercore.error import http_error_translator
        from flwr.supercore.protobuf.constants import PROTOBUF_MEDIA_TYPE
        from flwr.supercore.protobuf.translation import PROTOBUF_REQUEST_TYPES

        self.app = app
        self.inline = inline
        self.routes = dict(routes)
        self._types = {path: PROTOBUF_REQUEST_TYPES[("POST", path)] for path in routes}
        self._translate = http_error_translator
        self._media = PROTOBUF_MEDIA_TYPE

    async def answer(
        self, scope: Mapping[str, Any], body: bytes, state: dict[str, Any] | None = None
    ) -> Reply | None:
        """Flower's answer to this call, or None: the caller sends it through the app."""
        from anyio import to_thread
        from starlette.requests import Request

        path = str(scope.get("path", ""))
        work = self.routes.get(path)
        if work is None or scope.get("method") != "POST" or scope.get("root_path"):
            return None
        if not enabled() or _header(scope, b"traceparent") is not None:
            return None
        media = (_header(scope, b"content-type") or "").partition(";")[0].strip().lower()
        if media != self._media:
            return None
        message = self._types[path]()
        try:
            message.ParseFromString(body)
        except Exception:  # protobuf's DecodeError (the package ships no stubs)
            return None
        # A state of its own: a call declined after parsing reaches the app exactly as
        # it came, never with this parsed, unauthenticated body in the state the app
        # reads its protobuf request from (found by a red team: with Starlette < 1.0.1
        # a forged Host header skipped the app's parsing and authentication).
        own = dict(state if state is not None else scope.get("state") or {})
        request = Request({**scope, "app": self.app, "state": own})
        request.state.protobuf_request = message
        try:
            if self.inline and len(body) <= INLINE_MAX_BYTES:
                result = work(request, message)
            else:
                result = await to_thread.run_sync(work, request, message)
        except Exception as exc:  # translated as the app's outermost layer would
            failed = exc

            async def fail(_request: Any) -> Any:
                raise failed

            response = await self._translate(request, fail)
            return response.status_code, list(response.raw_headers), bytes(response.body)
        if result is REFUSED:
            return None
        return 200, [(b"content-type", self._media.encode())], result.SerializeToString()


def _header(scope: Mapping[str, Any], name: bytes) -> str | None:
    """The first ``name`` header, as Starlette reads it (ASGI servers send names in
    lower case; Starlette matches them as sent)."""
    for key, value in scope.get("headers", ()):
        if bytes(key) == name:
            return bytes(value).decode("latin-1")
    return None
