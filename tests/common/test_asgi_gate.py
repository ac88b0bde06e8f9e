"""common/asgi_gate.py: a middleware layer runs only on the requests it acts on."""

from __future__ import annotations

import warnings

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from fedcollab.common.asgi_gate import Gated, gate, path_under, tracing_enabled

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

SEEN: list[str] = []


class Tagging(BaseHTTPMiddleware):
    """A layer that acts on every request it sees: records it and tags the response."""

    def __init__(self, app: object, tag: str = "x") -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self.tag = tag

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        SEEN.append(f"{self.tag}:{request.url.path}")
        response = await call_next(request)
        response.headers["x-layer"] = self.tag
        return response


async def endpoint(request: Request) -> Response:
    return PlainTextResponse(f"served {request.url.path}")


def client(middleware: list[Middleware]) -> TestClient:
    app = Starlette(
        routes=[Route("/{rest:path}", endpoint, methods=["POST"])], middleware=middleware
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TestClient(app)


def test_a_gated_layer_sees_only_the_requests_its_predicate_accepts() -> None:
    SEEN.clear()
    gated = gate([Middleware(Tagging, tag="control")], {Tagging: path_under("/v1/control/")})
    assert gated[0].cls is Gated
    web = client(gated)
    inside = web.post("/v1/control/list-runs")
    outside = web.post("/v1/fleet/pull-messages")
    assert SEEN == ["control:/v1/control/list-runs"]
    assert inside.headers["x-layer"] == "control" and "x-layer" not in outside.headers
    assert outside.text == "served /v1/fleet/pull-messages"  # served all the same


def test_layers_not_named_are_left_as_they_are_in_their_order() -> None:
    class Other(Tagging):
        pass

    entries = [Middleware(Other, tag="a"), Middleware(Tagging, tag="b"), Middleware(Other)]
    gated = gate(entries, {Tagging: path_under("/v1/control/")})
    assert gated[0] is entries[0] and gated[2] is entries[2]
    assert gated[1].cls is Gated and gated[1].kwargs["layer"] is Tagging
    assert gated[1].kwargs["layer_kwargs"] == {"tag": "b"}  # the layer's own arguments kept


def test_a_root_path_or_a_non_http_scope_always_goes_through_the_layer() -> None:
    accepts = path_under("/v1/control/")
    assert accepts({"type": "http", "path": "/v1/control/x", "root_path": ""})
    assert not accepts({"type": "http", "path": "/v1/fleet/x", "root_path": ""})
    assert accepts({"type": "http", "path": "/v1/fleet/x", "root_path": "/mounted"})
    seen: list[str] = []

    async def nxt(scope: dict[str, object], receive: object, send: object) -> None:
        seen.append("next")

    def layer(app: object) -> object:
        async def run(scope: dict[str, object], receive: object, send: object) -> None:
            seen.append("layer")

        return run

    import asyncio
    import threading

    def run_alone(scope: dict[str, object]) -> None:
        # On its own thread: an earlier test of the session may have left this thread
        # with a running event loop (seen in CI: asyncio.run refused to start).
        failed: list[BaseException] = []

        def target() -> None:
            try:
                asyncio.run(wrapped(scope, None, None))
            except BaseException as exc:  # re-raised below
                failed.append(exc)

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        if failed:
            raise failed[0]

    wrapped = Gated(nxt, layer=layer, applies=lambda scope: False)
    run_alone({"type": "lifespan"})
    run_alone({"type": "http", "path": "/"})
    assert seen == ["layer", "next"]


def test_tracing_is_read_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLWR_TRACING_ENABLED", raising=False)
    assert not tracing_enabled({"type": "http"})
    monkeypatch.setenv("FLWR_TRACING_ENABLED", "1")
    assert tracing_enabled({"type": "http"})
