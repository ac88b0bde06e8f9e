"""common/protobuf_fast.py: what a fast call answers, and what it leaves to the app.

A route whose work echoes Flower's heartbeat answer stands for a handler here; the
answers of the real Fleet and runtime routes are compared with Flower's apps in
``tests/coordinator/test_fleet_fast.py`` and ``tests/client/test_runtime_fast.py``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from flwr.proto.heartbeat_pb2 import SendNodeHeartbeatRequest, SendNodeHeartbeatResponse
from flwr.supercore.error import ApiErrorCode, FlowerError

from fedcollab.common.protobuf_fast import ENV, REFUSED, FastCalls, customised, enabled
from tests.support.event_loop import run

PATH = "/v1/fleet/send-node-heartbeat"
BODY = SendNodeHeartbeatRequest(heartbeat_interval=5.0).SerializeToString()


def scope(**change: Any) -> dict[str, Any]:
    base = {"type": "http", "method": "POST", "path": PATH, "root_path": "",
            "headers": [(b"content-type", b"application/protobuf")]}  # fmt: skip
    return {**base, **change}


def fast(work: Any) -> FastCalls:
    return FastCalls(object(), {PATH: work})


def ok(_request: Any, message: Any) -> Any:
    assert message.heartbeat_interval == 5.0  # the body, parsed as the route's type
    return SendNodeHeartbeatResponse(success=True)


def test_a_call_is_answered_with_the_handler_s_protobuf() -> None:
    status, headers, body = run(fast(ok).answer(scope(), BODY))
    assert (status, headers) == (200, [(b"content-type", b"application/protobuf")])
    assert SendNodeHeartbeatResponse.FromString(body).success


@pytest.mark.parametrize(
    "change",
    [
        {"method": "GET"},
        {"path": "/v1/fleet/get-run"},
        {"root_path": "/prefix"},
        {"headers": [(b"content-type", b"application/json")]},
        {"headers": []},
        {"headers": [(b"content-type", b"application/protobuf"), (b"traceparent", b"00-x")]},
    ],
)
def test_calls_it_does_not_serve_are_left_to_the_app(change: dict[str, Any]) -> None:
    assert run(fast(ok).answer(scope(**change), BODY)) is None


def test_a_body_that_does_not_parse_and_a_refused_caller_are_left_to_the_app() -> None:
    assert run(fast(ok).answer(scope(), b"\xff\xff\xff")) is None
    assert run(fast(lambda _r, _m: REFUSED).answer(scope(), BODY)) is None


def test_a_handler_s_error_becomes_flower_s_answer() -> None:
    def missing(_request: Any, _message: Any) -> Any:
        raise FlowerError(ApiErrorCode.RUN_ID_NOT_FOUND, "no such run")

    status, headers, body = run(fast(missing).answer(scope(), BODY))
    assert status == 404 and (b"content-type", b"application/json") in headers
    assert json.loads(body)["detail"] == "Run ID not found."  # Flower's public message

    def broken(_request: Any, _message: Any) -> Any:
        raise RuntimeError("internal detail")

    status, _, body = run(fast(broken).answer(scope(), BODY))
    assert status == 500 and b"internal detail" not in body


def test_it_can_be_turned_off_and_stays_off_while_flower_traces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert enabled()
    monkeypatch.setenv(ENV, "0")
    assert not enabled()
    assert run(fast(ok).answer(scope(), BODY)) is None
    monkeypatch.delenv(ENV)
    monkeypatch.setenv("FLWR_TRACING_ENABLED", "1")
    assert not enabled()
    assert run(fast(ok).answer(scope(), BODY)) is None


def test_a_declined_call_leaves_the_app_s_state_as_it_was() -> None:
    """Red team: the parsed, unauthenticated body was left in the state dict the app
    then read its protobuf request from; with a Starlette whose ``url.path`` could be
    forged (< 1.0.1) the app skipped its own parsing and authentication and ran the
    handler on it."""
    state: dict[str, Any] = {"lifespan": 1}
    call = scope(state={"uvicorn": 2})
    assert run(fast(lambda _r, _m: REFUSED).answer(call, BODY, state)) is None
    assert state == {"lifespan": 1}
    assert run(fast(lambda _r, _m: REFUSED).answer(call, BODY)) is None
    assert call["state"] == {"uvicorn": 2}


def test_header_names_are_matched_as_starlette_matches_them() -> None:
    """ASGI servers send header names in lower case; an upper-case name (possible only
    in-process) is not the content type for Starlette, so not for the fast path."""
    upper = scope(headers=[(b"Content-Type", b"application/protobuf")])
    assert run(fast(ok).answer(upper, BODY)) is None


def test_an_app_with_its_own_overrides_or_error_handlers_counts_as_customised() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from flwr.supernode.main import create_app

    app = create_app()
    assert customised(app) == ""  # Flower's app as built
    app.exception_handlers[FlowerError] = lambda _r, _e: None
    assert "exception handlers" in customised(app)
    app = create_app()
    app.dependency_overrides[enabled] = lambda: True
    assert "overrides" in customised(app)


@pytest.mark.parametrize(("inline", "big"), [(True, False), (False, False), (True, True)])
def test_the_work_runs_in_the_event_loop_or_in_a_worker_thread(inline: bool, big: bool) -> None:
    """Inline by default; in a worker when asked, and for a body over INLINE_MAX_BYTES
    (an object to hash must not stall the loop)."""
    import asyncio
    import threading

    from fedcollab.common.protobuf_fast import INLINE_MAX_BYTES

    seen: dict[str, Any] = {}

    def where(request: Any, message: Any) -> Any:
        seen["thread"] = threading.get_ident()
        return ok(request, message)

    async def call() -> Any:
        seen["loop"] = threading.get_ident()
        asyncio.get_running_loop()
        return await FastCalls(object(), {PATH: where}, inline=inline).answer(scope(), payload)

    payload = BODY
    if big:  # an unknown field the parser keeps: the body's size is what counts
        payload = BODY + b"\xfa\x3f" + _varint(INLINE_MAX_BYTES + 1) + b"x" * (INLINE_MAX_BYTES + 1)
    status, _, body = run(call())
    assert status == 200 and SendNodeHeartbeatResponse.FromString(body).success
    assert (seen["thread"] == seen["loop"]) is (inline and not big)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)
