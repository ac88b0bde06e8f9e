"""coordinator/superlink_middleware.py: Flower's SuperLink app, its layers gated.

The real SuperLink FastAPI app (``flwr.superlink.main.create_app``) answers the same
requests the same way with and without the gating, runs node authentication on every
Fleet request, and sends a Fleet request through 3 ``BaseHTTPMiddleware`` layers
instead of 9. (The real SuperLink process runs gated in every integration test.)"""

from __future__ import annotations

import types
import warnings
from collections.abc import Iterator

import flwr.superlink.main as flower_main
import pytest
from starlette.middleware.base import BaseHTTPMiddleware

from fedcollab.common.asgi_gate import Gated
from fedcollab.coordinator import superlink_middleware

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

#: (path, body): a Fleet call without node authentication, a malformed Fleet call, a
#: Control call, a sensitive Control route, a runtime call without a token.
REQUESTS = [
    ("/v1/fleet/pull-messages", b""),
    ("/v1/fleet/push-messages", b"\x00not a protobuf"),
    ("/v1/control/list-runs", b""),
    ("/v1/control/get-login-details", b""),
    ("/v1/serverappio/pull-messages", b""),
]


def answers(app: object) -> list[tuple[int, str | None, str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        web = TestClient(app, raise_server_exceptions=False)  # type: ignore[arg-type]
    out = []
    for path, body in REQUESTS:
        r = web.post(path, content=body, headers={"content-type": "application/protobuf"})
        text = r.text if "list-runs" not in path else ""  # list-runs carries a timestamp
        out.append((r.status_code, r.headers.get("cache-control"), text))
    return out


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Restored after the test: other tests build Flower's app unpatched.
    monkeypatch.setattr(flower_main, "_get_middleware", flower_main._get_middleware)
    assert superlink_middleware.install()
    yield


def test_the_gated_app_answers_exactly_as_flower_s(monkeypatch: pytest.MonkeyPatch) -> None:
    flower = answers(flower_main.create_app())
    monkeypatch.setattr(flower_main, "_get_middleware", flower_main._get_middleware)
    assert superlink_middleware.install()
    ours = answers(flower_main.create_app())
    assert ours == flower
    assert ours[0][0] == 401  # node authentication still refuses an unsigned Fleet call
    assert ours[3][1] == "no-store"  # a sensitive Control answer is still not cached


def count_layers(monkeypatch: pytest.MonkeyPatch, app: object, path: str) -> int:
    calls = 0
    flower_call = BaseHTTPMiddleware.__call__

    async def counted(
        self: BaseHTTPMiddleware, scope: object, receive: object, send: object
    ) -> None:
        nonlocal calls
        if isinstance(scope, dict) and scope.get("type") == "http":
            calls += 1
        await flower_call(self, scope, receive, send)  # type: ignore[arg-type]

    with monkeypatch.context() as patch:
        patch.setattr(BaseHTTPMiddleware, "__call__", counted)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            TestClient(app, raise_server_exceptions=False).post(  # type: ignore[arg-type]
                path, content=b"", headers={"content-type": "application/protobuf"}
            )
    return calls


def test_a_fleet_request_goes_through_three_layers_not_eight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unsigned Fleet call (refused by node authentication, the 8th of Flower's 9
    layers) and a Control call (all 9), before and after; a runtime (ServerAppIo) call
    after."""
    app = flower_main.create_app()
    flower_fleet = count_layers(monkeypatch, app, "/v1/fleet/pull-messages")
    flower_control = count_layers(monkeypatch, app, "/v1/control/list-runs")
    monkeypatch.setattr(flower_main, "_get_middleware", flower_main._get_middleware)
    assert superlink_middleware.install()
    app = flower_main.create_app()
    fleet = count_layers(monkeypatch, app, "/v1/fleet/pull-messages")
    control = count_layers(monkeypatch, app, "/v1/control/list-runs")
    runtime = count_layers(monkeypatch, app, "/v1/serverappio/pull-messages")
    assert (flower_fleet, flower_control) == (8, 9)
    assert fleet == 3  # error translation, protobuf translation, node authentication
    assert control == 6  # every Control layer; not tracing, node auth, Fleet event log
    assert runtime == 2  # error and protobuf translation


def test_install_is_idempotent_and_keeps_flower_s_order(gated: None) -> None:
    assert superlink_middleware.install()  # a second install changes nothing
    entries = flower_main._get_middleware()
    layers = [e.kwargs["layer"] if e.cls is Gated else e.cls for e in entries]
    assert [getattr(x, "__name__", "") for x in layers] == [
        "ControlSensitiveResponseMiddleware",
        "BaseHTTPMiddleware",
        "ControlAuthenticationMiddleware",
        "ControlLicenseMiddleware",
        "ProtobufTranslationMiddleware",
        "RuntimeTracingMiddleware",
        "ControlEventLogMiddleware",
        "NodeAuthMiddleware",
        "FleetEventLogMiddleware",
    ]
    assert sum(e.cls is Gated for e in entries) == 7


def test_a_changed_flower_module_is_left_alone() -> None:
    module = types.ModuleType("changed")
    assert not superlink_middleware.install(module)
    assert not hasattr(module, "_get_middleware")
