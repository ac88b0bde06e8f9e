"""The Fleet calls of every round answered in the gateway, without FastAPI's layers.

A partner's node makes about ten Fleet calls per message it answers (pull the message,
pull its three objects, confirm it, push the reply and its three objects; sampled in
``experiments/bench_deployment.py``: 90 calls per round for 9 partners). Through
Flower's SuperLink app each call passes Starlette's error, protobuf-translation and
node-authentication layers (three ``BaseHTTPMiddleware`` task groups and streams),
FastAPI's routing and dependency injection and two thread-pool hops, before a
handler of ``flwr.superlink.servicer.fleet.fleet_handlers`` that is one function call
(``flwr/superlink/routers/fleet/router.py``).

:class:`FastFleet` answers the calls of :data:`ROUTES` with the same steps in one
place, using Flower's own functions for each:

1. the body parsed as the route's protobuf request
   (``ProtobufTranslationMiddleware._parse_request``'s type table,
   ``PROTOBUF_REQUEST_TYPES``);
2. the node authenticated by Flower's ``authenticate_node`` (signed timestamp within
   Flower's window, the public key registered for the claimed node id) on a Starlette
   request of this scope, as ``NodeAuthMiddleware`` does;
3. the handler of ``fleet_handlers`` called on the SuperLink's ``LinkState``
   (``get_linkstate``), steps 2 and 3 in one worker thread;
4. a handler's exception turned into Flower's answer by Flower's
   ``http_error_translator``; a result into ``application/protobuf`` bytes as
   ``ProtobufTranslationMiddleware._response_for`` does.

Anything else goes through the app unchanged (:meth:`FastFleet.answer` returns None
before acting): another path, a body that does not parse, a ``Content-Type`` other
than ``application/protobuf``, a request that fails authentication (Flower's own layers
then give its exact refusal). The fast path is off when the app has anything the
layers it skips would act on: an extension middleware (``flwr.superlink.extensions``),
a Fleet event-log plugin, Flower's tracing (``FLWR_TRACING_ENABLED=1``), or names
this relies on missing from Flower; ``FEDCOLLAB_FLEET_FAST=0`` turns it off by hand.
``tests/coordinator/test_fleet_fast.py`` checks every route's answers, refusals and
errors byte for byte against the app's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from anyio import to_thread

__all__ = ["ENV", "ROUTES", "FastFleet"]

log = logging.getLogger(__name__)

#: ``0`` turns the fast path off (every Fleet call through Flower's app).
ENV = "FEDCOLLAB_FLEET_FAST"

#: Path -> name of the ``fleet_handlers`` function and whether it takes ``store=``.
ROUTES: Mapping[str, tuple[str, bool]] = {
    "/v1/fleet/pull-messages": ("pull_messages", True),
    "/v1/fleet/push-messages": ("push_messages", False),
    "/v1/fleet/pull-object": ("pull_object", False),
    "/v1/fleet/push-object": ("push_object", False),
    "/v1/fleet/confirm-message-received": ("confirm_message_received", True),
    "/v1/fleet/send-node-heartbeat": ("send_node_heartbeat", False),
}

Reply = tuple[int, list[tuple[bytes, bytes]], bytes]


class FastFleet:
    """The fast path for one SuperLink app (see the module notes)."""

    def __init__(self, app: Any) -> None:
        from flwr.supercore.error import http_error_translator
        from flwr.supercore.protobuf.constants import PROTOBUF_MEDIA_TYPE
        from flwr.supercore.protobuf.translation import PROTOBUF_REQUEST_TYPES
        from flwr.superlink.dependencies.linkstate import get_linkstate
        from flwr.superlink.routers.fleet.node_auth import authenticate_node
        from flwr.superlink.servicer.fleet import fleet_handlers

        self.app = app
        self._types = {path: PROTOBUF_REQUEST_TYPES[("POST", path)] for path in ROUTES}
        self._handlers = fleet_handlers
        self._authenticate = authenticate_node
        self._linkstate = get_linkstate
        self._translate = http_error_translator
        self._media = PROTOBUF_MEDIA_TYPE

    @classmethod
    def for_app(cls, app: Any) -> FastFleet | None:
        """The fast path for ``app``, or None where it must stay off (module notes)."""
        if os.environ.get(ENV, "1") == "0":
            return None
        state = getattr(app, "state", None)
        if getattr(state, "linkstate_factory", None) is None:
            return None  # not Flower's SuperLink app (e.g. a test's stand-in)
        why = _unsupported(app)
        if why:
            log.warning("Fleet calls go through every layer of Flower's app: %s", why)
            return None
        try:
            return cls(app)
        except (ImportError, KeyError, AttributeError) as exc:
            log.warning("Fleet calls go through every layer of Flower's app: %r", exc)
            return None

    async def answer(
        self, scope: Mapping[str, Any], body: bytes, state: dict[str, Any]
    ) -> Reply | None:
        """Flower's answer to this Fleet call, or None: the caller sends it through the app."""
        from starlette.requests import Request

        path = str(scope.get("path", ""))
        route = ROUTES.get(path)
        if route is None or scope.get("method") != "POST" or _tracing():
            return None
        if self._media_type(scope) != self._media:
            return None
        message = self._types[path]()
        try:
            message.ParseFromString(body)
        except Exception:  # protobuf's DecodeError (the package ships no stubs)
            return None
        name, with_store = route
        request = Request({**scope, "app": self.app, "state": state, "root_path": ""})
        request.state.protobuf_request = message

        def work() -> Any:
            try:
                self._authenticate(request)
            except Exception:  # Flower's layers give the refusal
                return _REFUSED
            handler: Callable[..., Any] = getattr(self._handlers, name)
            linkstate = self._linkstate(request)
            if with_store:
                return handler(request=message, state=linkstate, store=linkstate.object_store)
            return handler(request=message, state=linkstate)

        try:
            result = await to_thread.run_sync(work)
        except Exception as exc:  # translated below, as the app would
            failed = exc

            async def fail(_request: Any) -> Any:
                raise failed

            response = await self._translate(request, fail)
            return response.status_code, list(response.raw_headers), bytes(response.body)
        if result is _REFUSED:
            return None
        content = result.SerializeToString()
        return 200, [(b"content-type", self._media.encode())], content

    @staticmethod
    def _media_type(scope: Mapping[str, Any]) -> str:
        for key, value in scope.get("headers", ()):
            if bytes(key).lower() == b"content-type":
                return bytes(value).decode("latin-1").partition(";")[0].strip().lower()
        return ""


_REFUSED = object()


def _tracing() -> bool:
    return os.getenv("FLWR_TRACING_ENABLED") == "1"


def _unsupported(app: Any) -> str:
    """Why the fast path cannot stand in for ``app``'s layers ("" if it can)."""
    try:
        from flwr.superlink import extensions
    except ImportError as exc:
        return repr(exc)
    if tuple(extensions.get_middleware()):
        return "a Flower extension adds middleware"
    if getattr(app.state, "fleet_event_log_plugin", None) is not None:
        return "a Fleet event-log plugin is configured"
    return ""
