"""coordinator/serverappio_fast.py against Flower's own SuperLink app, byte for byte.

The real SuperLink app (``flwr.superlink.main.create_app``, Flower's in-memory
LinkState, a run with a ServerApp task and its token) answers each ServerApp call
once through its own layers and once through the fast path: same status,
Content-Type and body. A call that fails a check (no, two or an unknown task token,
an unsigned ``acquire-task``, another content type) is left to Flower's app, and so is
every call when the fast path is off. Every deployed integration test's ServerApp
talks to its SuperLink through this path (``coordinator/superlink_launch.serve``).
"""

from __future__ import annotations

import warnings
from typing import Any

import flwr.superlink.main as flower_main
import pytest
from flwr.proto.message_pb2 import (
    ConfirmMessageReceivedRequest,
    PullObjectRequest,
    PushObjectRequest,
)
from flwr.proto.runtime_pb2 import (
    AcquireTaskRequest,
    GetNodesRequest,
    PullAppMessagesRequest,
    PullTaskInputRequest,
    PushAppMessagesRequest,
    SendTaskHeartbeatRequest,
)
from flwr.supercore.constant import TASK_TOKEN_HEADER, TaskType

from fedcollab.common.protobuf_fast import ENV
from fedcollab.common.runtime_fast import FastRuntimeApp
from fedcollab.coordinator.serverappio_fast import ROUTES, serverappio_app
from tests.support import runtime_calls
from tests.support.event_loop import run
from tests.support.runtime_calls import Reply, headers

warnings.filterwarnings("ignore", category=DeprecationWarning)


class Link:
    """Flower's SuperLink app with one run and the token of its ServerApp task."""

    def __init__(self) -> None:
        self.flower = flower_main.create_app()
        self.flower.state.superexec_auth_secret = b"s" * 32  # as --superexec-auth-secret-file
        self.fast = serverappio_app(self.flower)
        assert isinstance(self.fast, FastRuntimeApp)
        self.state = self.flower.state.linkstate_factory.state()
        self.run_id = self.state.create_run(
            None, None, "hash", {}, "default", None, "owner", "owner"
        )

    def token(self) -> str:
        task_id = self.state.create_task(
            task_type=TaskType.SERVER_APP, run_id=self.run_id, fab_hash=""
        )
        assert task_id is not None
        token = self.state.claim_task(task_id)
        assert token
        return str(token)


def call(app: Any, path: str, body: bytes, h: list[tuple[bytes, bytes]]) -> Reply:
    """As the ServerApp calls the SuperLink's loopback runtime API."""
    return runtime_calls.call(app, path, body, h, scheme="http", port=9091)


def fast_answer(link: Link, path: str, body: bytes, h: list[tuple[bytes, bytes]]) -> Any:
    scope = {"type": "http", "method": "POST", "path": path, "root_path": "", "headers": h}
    return run(link.fast.fast.answer(scope, body))


def requests(run_id: int) -> dict[str, Any]:
    """A call of every fast route but ``acquire-task`` (the SuperExec's, signed)."""
    obj = "ab" * 32
    return {
        "/v1/runtime/pull-task-input": PullTaskInputRequest(),
        "/v1/runtime/push-task-output": None,
        "/v1/runtime/push-messages": PushAppMessagesRequest(),
        "/v1/runtime/pull-messages": PullAppMessagesRequest(),
        "/v1/runtime/push-object": PushObjectRequest(
            run_id=run_id, object_id=obj, object_content=b"x"
        ),
        "/v1/runtime/pull-object": PullObjectRequest(run_id=run_id, object_id=obj),
        "/v1/runtime/confirm-message-received": ConfirmMessageReceivedRequest(
            run_id=run_id, message_object_id=obj
        ),
        "/v1/runtime/get-nodes": GetNodesRequest(),
        "/v1/runtime/send-task-heartbeat": SendTaskHeartbeatRequest(),
    }


@pytest.mark.parametrize("path", sorted(set(ROUTES) - {"/v1/runtime/acquire-task"}))
def test_every_route_answers_as_flower_s_app(path: str) -> None:
    link = Link()
    message = requests(link.run_id)[path]
    if message is None:  # push-task-output: its request type from Flower's table
        from flwr.supercore.protobuf.translation import PROTOBUF_REQUEST_TYPES

        message = PROTOBUF_REQUEST_TYPES[("POST", path)]()
    body = message.SerializeToString()
    h = headers(link.token())
    flower = call(link.flower, path, body, h)
    fast = fast_answer(link, path, body, h)
    assert fast is not None, path
    assert (fast[0], fast[2]) == (flower[0], flower[2]), path
    assert call(link.fast, path, body, h) == flower, path
    assert flower[0] in (200, 400, 404, 409, 412, 500), flower  # the handler answered


@pytest.mark.parametrize(
    "case", ["no token", "two tokens", "unknown token", "json", "unsigned acquire-task"]
)
def test_calls_failing_a_check_are_left_to_flower_s_app(case: str) -> None:
    link = Link()
    token = link.token()
    path = "/v1/runtime/pull-messages"
    body = PullAppMessagesRequest().SerializeToString()
    h = {
        "no token": headers(None),
        "two tokens": [*headers(token), (TASK_TOKEN_HEADER.encode(), token.encode())],
        "unknown token": headers("f" * 64),
        "json": headers(token, media=b"application/json"),
        "unsigned acquire-task": headers(None),
    }[case]
    if case == "unsigned acquire-task":
        path, body = "/v1/runtime/acquire-task", AcquireTaskRequest().SerializeToString()
    assert fast_answer(link, path, body, h) is None
    flower = call(link.flower, path, body, h)
    assert flower[0] in (401, 403, 415), flower
    assert call(link.fast, path, body, h) == flower  # the wrapper hands it to Flower's app


def test_other_requests_and_the_lifespan_go_to_flower_s_app() -> None:
    link = Link()
    assert "/v1/runtime/create-task" not in ROUTES
    h = headers(link.token())
    assert call(link.fast, "/v1/runtime/create-task", b"", h) == call(
        link.flower, "/v1/runtime/create-task", b"", h
    )
    assert link.fast.state is link.flower.state  # what uvicorn and Flower read through


def test_off_when_turned_off_or_customised(monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.supercore.error import FlowerError

    app = flower_main.create_app()
    monkeypatch.setenv(ENV, "0")
    assert serverappio_app(app) is app
    monkeypatch.delenv(ENV)
    monkeypatch.setenv("FLWR_TRACING_ENABLED", "1")
    assert serverappio_app(app) is app
    monkeypatch.delenv("FLWR_TRACING_ENABLED")
    assert serverappio_app(object()) is not None  # not Flower's app: returned as it is
    app.exception_handlers[FlowerError] = lambda _r, _e: None
    assert serverappio_app(app) is app
