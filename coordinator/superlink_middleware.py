"""The SuperLink's HTTP middleware, each layer run only on the requests it acts on.

Flower 1.41's SuperLink sends every HTTP request (Fleet, runtime/ServerAppIo, Control)
through nine Starlette ``BaseHTTPMiddleware`` layers
(``flwr/superlink/main.py``, ``_get_middleware``). Each such layer costs, per request
and even when it does nothing, a task group, a memory object stream and a streaming
response wrapper (``starlette/middleware/base.py``). In a deployed plaintext job of 9
partners on 2 cores (``experiments/bench_deployment.py --encryption none``) the
SuperLink took 0.93 core-seconds per round, the largest share of the round's CPU, and
py-spy (``--gil``) put most of it in that machinery, not in Flower's handlers.

Six of the layers act on only some requests, and for every other request their
``dispatch`` is exactly ``return await call_next(request)``:

* ``ControlSensitiveResponseMiddleware``, ``ControlAuthenticationMiddleware``,
  ``ControlLicenseMiddleware``, ``ControlEventLogMiddleware``: paths under
  ``/v1/control/`` only (the sensitive routes are all Control routes; checked at
  :func:`install`);
* ``NodeAuthMiddleware``: paths under ``/v1/fleet/`` only;
* ``FleetEventLogMiddleware``: paths under ``/v1/fleet/`` when the app has a Fleet
  event-log plugin (``FLWR_ENABLE_EVENT_LOG=1``; fedcollab sets none);
* ``RuntimeTracingMiddleware``: only with ``FLWR_TRACING_ENABLED=1`` (read per request,
  as the layer does).

:func:`install` wraps each in :class:`~fedcollab.common.asgi_gate.Gated`, a pure ASGI
middleware that sends a request the layer would pass on straight to the next layer,
and every other request through the layer unchanged. Error translation, protobuf
translation and node authentication still run on every Fleet request, in Flower's
order (3 layers instead of 9); a Control API request (loopback only,
coordinator/fleet_gateway.py) goes through its six. A request with a non-empty
``root_path`` always goes through every layer. If Flower's module no
longer has the names this relies on, nothing is changed and the launcher says so.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from fedcollab.common.asgi_gate import Predicate, Scope, gate, path_under, tracing_enabled

__all__ = ["CONTROL", "FLEET", "applies_to", "install", "install_or_say"]

CONTROL = "/v1/control/"
FLEET = "/v1/fleet/"


def _fleet_event_log(scope: Scope) -> bool:
    if not path_under(FLEET)(scope):
        return False
    state = getattr(scope.get("app"), "state", None)
    return state is None or getattr(state, "fleet_event_log_plugin", None) is not None


def applies_to() -> dict[type, Predicate]:
    """Flower's gated middleware classes, and when each acts (see module notes)."""
    from flwr.supercore.routers.runtime.tracing import RuntimeTracingMiddleware
    from flwr.superlink.routers.control import middlewares as control
    from flwr.superlink.routers.fleet.middlewares import FleetEventLogMiddleware
    from flwr.superlink.routers.fleet.node_auth import NodeAuthMiddleware

    gates: dict[type, Predicate] = {
        control.ControlAuthenticationMiddleware: path_under(CONTROL),
        control.ControlLicenseMiddleware: path_under(CONTROL),
        control.ControlEventLogMiddleware: path_under(CONTROL),
        NodeAuthMiddleware: path_under(FLEET),
        FleetEventLogMiddleware: _fleet_event_log,
        RuntimeTracingMiddleware: tracing_enabled,
    }
    sensitive = getattr(control, "CONTROL_SENSITIVE_ROUTE_KEYS", None)
    if sensitive and all(str(path).startswith(CONTROL) for _, path in sensitive):
        gates[control.ControlSensitiveResponseMiddleware] = path_under(CONTROL)
    return gates


def install(module: types.ModuleType | None = None) -> bool:
    """Patch Flower's SuperLink app factory module (``flwr.superlink.main``) so its
    middleware list is gated; False, and nothing changed, if its shape differs."""
    target: types.ModuleType
    if module is None:
        try:
            from flwr.superlink import main as target
        except ImportError:
            return False
    else:
        target = module
    flower = getattr(target, "_get_middleware", None)
    if not callable(flower):
        return False
    if getattr(flower, "_fedcollab_gated", False):
        return True
    try:
        gates = applies_to()
    except (ImportError, AttributeError):
        return False

    def gated_middleware() -> list[Any]:
        return gate(list(flower()), gates)

    gated_middleware._fedcollab_gated = True  # type: ignore[attr-defined]
    setattr(target, "_get_middleware", gated_middleware)  # noqa: B010 - Flower's module
    return True


def install_or_say() -> None:
    """:func:`install`, or a line on stderr saying the SuperLink runs Flower's stack."""
    if not install():
        print(
            "fedcollab: flwr.superlink.main has changed; the SuperLink runs every "
            "request through all of Flower's middleware layers",
            file=sys.stderr,
        )
