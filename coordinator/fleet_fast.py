"""The Fleet calls of every round answered in the gateway, without FastAPI's layers.

A partner's node makes about ten Fleet calls per message it answers (pull the message,
pull its three objects, confirm it, push the reply and its three objects; counted in
``experiments/bench_deployment.py``'s plaintext job: 90 calls per round for 9
partners). Through Flower's SuperLink app each passes its error, protobuf-translation
and node-authentication layers, FastAPI's routing and dependency injection and two
thread-pool hops, before a handler of ``flwr.superlink.servicer.fleet.fleet_handlers``
that is one function call (``flwr/superlink/routers/fleet/router.py``).

:func:`fleet_calls` answers the calls of :data:`ROUTES` through
:class:`fedcollab.common.protobuf_fast.FastCalls`: the node authenticated by Flower's
``authenticate_node`` (a signed timestamp within Flower's window, the public key
registered for the claimed node id; what ``NodeAuthMiddleware`` runs on every Fleet
call), then the route's handler on the SuperLink's ``LinkState`` (``get_linkstate``).
A call that fails authentication goes through the app, whose layers give Flower's
refusal. The fast path is off (None) when the app has something the skipped layers
would act on: an extension middleware (``flwr.superlink.extensions``), a Fleet
event-log plugin, dependency overrides or exception handlers of its own
(:func:`~fedcollab.common.protobuf_fast.customised`).
``tests/coordinator/test_fleet_fast.py`` compares the answers byte for byte.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fedcollab.common.protobuf_fast import REFUSED, FastCalls, Work, customised, enabled

__all__ = ["ROUTES", "fleet_calls", "off_reason"]

log = logging.getLogger(__name__)

#: Path -> name of the ``fleet_handlers`` function and whether it takes ``store=``.
ROUTES: Mapping[str, tuple[str, bool]] = {
    "/v1/fleet/pull-messages": ("pull_messages", True),
    "/v1/fleet/push-messages": ("push_messages", False),
    "/v1/fleet/pull-object": ("pull_object", False),
    "/v1/fleet/push-object": ("push_object", False),
    "/v1/fleet/confirm-message-received": ("confirm_message_received", True),
    "/v1/fleet/send-node-heartbeat": ("send_node_heartbeat", False),
}


def _routes() -> dict[str, Work]:
    from flwr.superlink.dependencies.linkstate import get_linkstate
    from flwr.superlink.routers.fleet.node_auth import authenticate_node
    from flwr.superlink.servicer.fleet import fleet_handlers

    def route(name: str, with_store: bool) -> Work:
        def work(request: Any, message: Any) -> Any:
            try:
                authenticate_node(request)
            except Exception:  # Flower's layers give the refusal
                return REFUSED
            linkstate = get_linkstate(request)
            handler = getattr(fleet_handlers, name)  # looked up per call: patches apply
            if with_store:
                return handler(request=message, state=linkstate, store=linkstate.object_store)
            return handler(request=message, state=linkstate)

        return work

    return {path: route(*spec) for path, spec in ROUTES.items()}


def off_reason(app: Any, *, fleet: bool) -> str:
    """Why the SuperLink ``app`` must answer every call through its own layers ("" if
    nothing the fast path skips would act): a Flower extension's middleware, dependency
    overrides or exception handlers of the app's own, and for Fleet calls
    (``fleet``) a Fleet event-log plugin."""
    try:
        from flwr.superlink import extensions

        if tuple(extensions.get_middleware()):
            return "a Flower extension adds middleware"
        if fleet and getattr(app.state, "fleet_event_log_plugin", None) is not None:
            return "a Fleet event-log plugin is configured"
        return customised(app)
    except (ImportError, AttributeError) as exc:
        return repr(exc)


def fleet_calls(app: Any) -> FastCalls | None:
    """The fast path for the SuperLink ``app``, or None where it must stay off."""
    if not enabled() or getattr(getattr(app, "state", None), "linkstate_factory", None) is None:
        return None  # turned off, or not Flower's SuperLink app (e.g. a test's stand-in)
    why = off_reason(app, fleet=True)
    if not why:
        try:
            return FastCalls(app, _routes())
        except (ImportError, KeyError, AttributeError) as exc:
            why = repr(exc)
    log.warning("every Fleet call goes through Flower's app layers: %s", why)
    return None
