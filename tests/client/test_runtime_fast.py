"""client/runtime_fast.py against Flower's own SuperNode runtime app, byte for byte.

The real runtime app (``flwr.supernode.main.create_app``, Flower's in-memory node
state, a SuperExec secret) answers each request once through its own layers and
once through :class:`FastRuntimeApp`'s fast path: same status, Content-Type and body,
and every request that fails a check (no or two task tokens, an unknown token, an
unsigned ``acquire-task``, another content type) is left to Flower's app. The
executor serving a whole task through the fast path is
``tests/client/test_node_runtime_serve.py``.
"""

from __future__ import annotations

import types
import warnings
from typing import Any

import pytest
from flwr.proto.message_pb2 import PullObjectRequest
from flwr.proto.runtime_pb2 import (
    AcquireTaskRequest,
    PullTaskInputRequest,
    SendTaskHeartbeatRequest,
)
from flwr.supercore.constant import TASK_TOKEN_HEADER, TaskType
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supernode.main import create_app
from flwr.supernode.nodestate import NodeStateFactory

from fedcollab.client import runtime_fast
from fedcollab.client.runtime_fast import ROUTES, FastRuntimeApp
from tests.support.event_loop import run
from tests.support.runtime_calls import Reply, call, headers

warnings.filterwarnings("ignore", category=DeprecationWarning)

RUN = 93951092262861618


class Node:
    def __init__(self) -> None:
        self.factory = NodeStateFactory(ObjectStoreFactory())
        self.state = self.factory.state()
        self.state.set_node_id(7)
        self.flower = create_app(state_factory=self.factory, superexec_auth_secret=b"s" * 32)
        self.fast = FastRuntimeApp(self.flower)

    def token(self) -> str:
        task_id = self.state.create_task(task_type=TaskType.CLIENT_APP, run_id=RUN, fab_hash="")
        assert task_id is not None
        token = self.state.claim_task(task_id)
        assert token
        return str(token)


def both(node: Node, path: str, body: bytes, h: list[tuple[bytes, bytes]]) -> tuple[Reply, Any]:
    """Flower's answer, and what the fast path does with the same request."""
    scope = {"type": "http", "method": "POST", "path": path, "root_path": "", "headers": h}
    fast = run(node.fast.fast.answer(scope, body))
    return call(node.flower, path, body, h), fast


def test_calls_with_a_task_token_answer_as_flower_s_app() -> None:
    node = Node()
    token = node.token()
    for path, body in [
        ("/v1/runtime/send-task-heartbeat", SendTaskHeartbeatRequest().SerializeToString()),
        ("/v1/runtime/pull-object", PullObjectRequest(run_id=RUN, object_id="ab" * 32)
         .SerializeToString()),
        ("/v1/runtime/pull-task-input", PullTaskInputRequest().SerializeToString()),
    ]:  # fmt: skip
        flower, fast = both(node, path, body, headers(token))
        assert fast is not None, path
        assert (fast[0], fast[2]) == (flower[0], flower[2]), path
        assert call(node.fast, path, body, headers(token)) == flower, path


@pytest.mark.parametrize(
    "case", ["no token", "two tokens", "unknown token", "json", "unsigned acquire-task"]
)
def test_calls_failing_a_check_are_left_to_flower_s_app(case: str) -> None:
    node = Node()
    token = node.token()
    path, body = "/v1/runtime/pull-task-input", PullTaskInputRequest().SerializeToString()
    h = {
        "no token": headers(None),
        "two tokens": [*headers(token), (TASK_TOKEN_HEADER.encode(), token.encode())],
        "unknown token": headers("f" * 64),
        "json": headers(token, media=b"application/json"),
        "unsigned acquire-task": headers(None),
    }[case]
    if case == "unsigned acquire-task":
        path, body = "/v1/runtime/acquire-task", AcquireTaskRequest().SerializeToString()
    flower, fast = both(node, path, body, h)
    assert fast is None
    assert flower[0] in (401, 403, 415)
    assert call(node.fast, path, body, h) == flower  # the wrapper hands it to Flower's app


def test_other_requests_and_the_lifespan_go_to_flower_s_app() -> None:
    node = Node()
    assert "/v1/runtime/create-task" not in ROUTES
    h = headers(node.token())
    assert call(node.fast, "/v1/runtime/create-task", b"", h) == call(
        node.flower, "/v1/runtime/create-task", b"", h
    )
    assert node.fast.state is node.flower.state  # what uvicorn and Flower read through


def test_install_wraps_the_factory_once() -> None:
    module = types.ModuleType("supernode_main")
    module.create_app = create_app  # type: ignore[attr-defined]
    assert runtime_fast.install(module)
    assert runtime_fast.install(module)  # idempotent
    app = module.create_app(state_factory=NodeStateFactory(ObjectStoreFactory()))
    assert isinstance(app, FastRuntimeApp) and not isinstance(app.app, FastRuntimeApp)
    assert not runtime_fast.install(types.ModuleType("changed"))


def test_a_customised_app_answers_every_call_itself() -> None:
    from flwr.supercore.error import FlowerError

    app = create_app(state_factory=NodeStateFactory(ObjectStoreFactory()))
    app.exception_handlers[FlowerError] = lambda _r, _e: None
    assert FastRuntimeApp(app).fast is None
