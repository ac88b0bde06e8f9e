"""coordinator/fleet_fast.py against Flower's own SuperLink app, byte for byte.

Each request goes once through the app (as the gateway sends a call the fast path
leaves alone) and once through :func:`fleet_calls`' fast path, on the real SuperLink FastAPI app
(``flwr.superlink.main.create_app``) with a node registered under a real key: the
answers (status, Content-Type, body) must be equal, and every request the fast path
must not act on (unsigned, forged, expired, another node's id, another content type,
a body that does not parse, a path it does not serve) is left to the app. Message
and object traffic of real jobs runs through it in every deployed integration test.
"""

from __future__ import annotations

import datetime
import warnings
from base64 import b64encode
from collections.abc import Callable
from typing import Any

import flwr.superlink.main as flower_main
import pytest
from flwr.common.constant import TIMESTAMP_HEADER
from flwr.proto.fleet_pb2 import PullMessagesRequest, PushMessagesRequest
from flwr.proto.heartbeat_pb2 import SendNodeHeartbeatRequest
from flwr.proto.message_pb2 import (
    ConfirmMessageReceivedRequest,
    PullObjectRequest,
    PushObjectRequest,
)
from flwr.proto.node_pb2 import Node
from flwr.supercore.constant import FLEET_HTTP_PUBLIC_KEY_HEADER, FLEET_HTTP_SIGNATURE_HEADER
from flwr.supercore.date import now
from flwr.supercore.primitives.asymmetric import (
    generate_key_pairs,
    public_key_to_bytes,
    sign_message,
)

from fedcollab.common.protobuf_fast import ENV
from fedcollab.coordinator.fleet_fast import ROUTES, fleet_calls
from fedcollab.coordinator.fleet_gateway import _call_upstream
from tests.support.event_loop import run

warnings.filterwarnings("ignore", category=DeprecationWarning)

Reply = tuple[int, str, bytes]


class Node_:
    def __init__(self, app: Any) -> None:
        self.private, public = generate_key_pairs()
        self.public = public_key_to_bytes(public)
        self.node_id = app.state.linkstate_factory.state().create_node(
            "owner", "owner", self.public, 30.0
        )

    def headers(
        self, *, at: datetime.datetime | None = None, key: Any = None, public: bytes | None = None
    ) -> list[tuple[bytes, bytes]]:
        stamp = (at or now()).isoformat()
        signature = sign_message(key or self.private, stamp.encode("ascii"))
        return [
            (b"content-type", b"application/protobuf"),
            (FLEET_HTTP_PUBLIC_KEY_HEADER.encode(), b64encode(public or self.public)),
            (TIMESTAMP_HEADER.encode(), stamp.encode()),
            (FLEET_HTTP_SIGNATURE_HEADER.encode(), b64encode(signature)),
        ]


@pytest.fixture
def app() -> Any:
    return flower_main.create_app()


def scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("10.0.0.2", 40000),
        "server": ("10.0.0.1", 9092),
    }


def _media(headers: list[tuple[bytes, bytes]]) -> str:
    return next((v.decode() for k, v in headers if k.lower() == b"content-type"), "")


def through_app(app: Any, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> Reply:
    r = run(_call_upstream(app, scope(path, headers), body, {}))
    return r.status, _media(r.headers), r.content


def through_fast(
    app: Any, path: str, body: bytes, headers: list[tuple[bytes, bytes]]
) -> Reply | None:
    fast = fleet_calls(app)
    assert fast is not None
    r = run(fast.answer(scope(path, headers), body, {}))
    return None if r is None else (r[0], _media(r[1]), r[2])


def requests(node_id: int) -> dict[str, bytes]:
    """A signed call of every fast route: with no run (the node's first calls, and the
    answers to a coordinator that restarted mid-run) and without messages."""
    node = Node(node_id=node_id)
    return {
        "/v1/fleet/send-node-heartbeat": SendNodeHeartbeatRequest(
            node=node, heartbeat_interval=30.0
        ).SerializeToString(),
        "/v1/fleet/pull-messages": PullMessagesRequest(node=node).SerializeToString(),
        "/v1/fleet/push-messages": PushMessagesRequest(node=node).SerializeToString(),
        "/v1/fleet/pull-object": PullObjectRequest(
            node=node, run_id=77, object_id="ab" * 32
        ).SerializeToString(),
        "/v1/fleet/push-object": PushObjectRequest(
            node=node, run_id=77, object_id="ab" * 32, object_content=b"x"
        ).SerializeToString(),
        "/v1/fleet/confirm-message-received": ConfirmMessageReceivedRequest(
            node=node, run_id=77, message_object_id="ab" * 32
        ).SerializeToString(),
    }


@pytest.mark.parametrize("path", sorted(ROUTES))
def test_every_route_answers_as_flower_s_app(app: Any, path: str) -> None:
    node = Node_(app)
    body = requests(node.node_id)[path]
    flower = through_app(app, path, body, node.headers())
    ours = through_fast(app, path, body, node.headers())
    assert ours == flower
    assert flower[0] in (200, 400, 403, 404, 500)  # answered by the handler, not refused


def test_a_registered_node_s_calls_succeed(app: Any) -> None:
    node = Node_(app)
    calls = requests(node.node_id)
    for path in ("/v1/fleet/send-node-heartbeat", "/v1/fleet/pull-messages"):
        ours = through_fast(app, path, calls[path], node.headers())
        assert ours is not None and ours[:2] == (200, "application/protobuf")


def _forged(
    app: Any, node: Node_
) -> dict[str, Callable[[], tuple[str, bytes, list[tuple[bytes, bytes]]]]]:
    other = Node_(app)
    pull = "/v1/fleet/pull-messages"
    body = requests(node.node_id)[pull]
    old = now() - datetime.timedelta(hours=1)
    plain = [(b"content-type", b"application/protobuf")]
    return {
        "unsigned": lambda: (pull, body, plain),
        "signed by another key": lambda: (pull, body, node.headers(key=other.private)),
        "another node's id": lambda: (pull, requests(other.node_id)[pull], node.headers()),
        "an hour old": lambda: (pull, body, node.headers(at=old)),
        "json": lambda: (pull, body, [(b"content-type", b"application/json"), *node.headers()[1:]]),
        "not a protobuf": lambda: (pull, b"\xff\xff\xff", node.headers()),
        "a route it does not serve": lambda: ("/v1/fleet/get-run", b"", node.headers()),
    }


@pytest.mark.parametrize(
    "case",
    ["unsigned", "signed by another key", "another node's id", "an hour old", "json",
     "not a protobuf", "a route it does not serve"],
)  # fmt: skip
def test_what_it_must_not_answer_is_left_to_flower_s_app(app: Any, case: str) -> None:
    node = Node_(app)
    path, body, headers = _forged(app, node)[case]()
    assert through_fast(app, path, body, headers) is None
    status = through_app(app, path, body, headers)[0]
    assert status >= 400 or case == "a route it does not serve"
    if case in ("unsigned", "signed by another key", "another node's id", "an hour old"):
        assert status == 401


def test_it_stays_off_when_asked_or_when_a_layer_it_skips_would_act(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert fleet_calls(app) is not None
    monkeypatch.setenv(ENV, "0")
    assert fleet_calls(app) is None
    monkeypatch.delenv(ENV)
    app.state.fleet_event_log_plugin = object()
    assert fleet_calls(app) is None
    app.state.fleet_event_log_plugin = None
    from flwr.superlink import extensions

    monkeypatch.setattr(extensions, "get_middleware", lambda: (object(),))
    assert fleet_calls(app) is None
    monkeypatch.undo()
    assert fleet_calls(object()) is None  # not a SuperLink app


def test_tracing_sends_every_call_through_the_app(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flower reads FLWR_TRACING_ENABLED per request: so does the fast path."""
    node = Node_(app)
    path = "/v1/fleet/pull-messages"
    fast = fleet_calls(app)
    assert fast is not None
    monkeypatch.setenv("FLWR_TRACING_ENABLED", "1")
    call = scope(path, node.headers())
    assert run(fast.answer(call, requests(node.node_id)[path], {})) is None
    assert fleet_calls(app) is None


def test_a_customised_app_answers_every_call_itself(app: Any) -> None:
    app.dependency_overrides[fleet_calls] = lambda: None
    assert fleet_calls(app) is None
