"""The coordinator's public gateway forwards the Fleet API and nothing else, holds a
node's empty pull until the coordinator sends, and notices a partner's push."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from fedcollab.coordinator.fleet_gateway import is_forwarded, make_gateway
from fedcollab.coordinator.fleet_notice import Notice, notice_dir
from fedcollab.coordinator.workspace import Workspace


@pytest.mark.parametrize(
    ("method", "path", "forwarded"),
    [
        ("POST", "/v1/fleet/pull-messages", True),
        ("POST", "/v1/fleet/activate-node", True),
        ("POST", "/v1/control/start-run", False),
        ("POST", "/v1/control/list-runs", False),
        ("POST", "/v1/runtime/acquire-task", False),
        ("GET", "/v1/fleet/pull-messages", False),
        ("POST", "/v1/fleet/../control/start-run", False),
        ("GET", "/docs", False),
        ("POST", "/v1/fleetx/start-run", False),
    ],
)
def test_only_fleet_posts_are_forwarded(method: str, path: str, forwarded: bool) -> None:
    assert is_forwarded(method, path) is forwarded


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run the ASGI call on its own thread's event loop: earlier tests in the same
    process (Playwright's sync API) may leave a loop running on this thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coro).result()


async def _broken(scope: Scope, receive: Any, send: Any) -> None:
    """A SuperLink app that fails before answering."""
    raise RuntimeError("no SuperLink here")


def test_control_request_gets_403_without_reaching_the_superlink() -> None:
    # The SuperLink's app fails: a request passed on would answer 502, not 403.
    app = make_gateway(_broken)
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(event: MutableMapping[str, Any]) -> None:
        sent.append(event)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/control/start-run",
        "headers": [],
        "client": ("203.0.113.7", 5000),
    }
    _run(app(scope, receive, send))
    assert sent[0]["status"] == 403
    assert b"only the Fleet API" in sent[1]["body"]
    sent.clear()
    _run(app({**scope, "path": "/v1/fleet/pull-messages"}, receive, send))
    assert sent[0]["status"] == 502
    sent.clear()  # a Fleet path under another root path is not the SuperLink's route
    _run(app({**scope, "path": "/v1/fleet/pull-messages", "root_path": "/x"}, receive, send))
    assert sent[0]["status"] == 403


class _Upstream:
    """A stand-in SuperLink app: empty pulls until ``queued``; it records the scopes and
    bodies it was handed."""

    def __init__(self) -> None:
        self.pulls = 0
        self.pushes = 0
        self.queued = False
        self.status = 200
        self.seen: list[tuple[Scope, bytes]] = []
        #: What a push-messages answer asks for: the objects still to push, the session.
        self.to_push: list[str] = []
        self.session = ""

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        from flwr.proto.fleet_pb2 import PullMessagesResponse, PushMessagesResponse
        from flwr.proto.message_pb2 import Message as ProtoMessage

        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                await send({"type": event["type"] + ".complete"})
                if event["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        self.seen.append((scope, body))
        if scope["path"].endswith("pull-messages"):
            self.pulls += 1
            pulled = PullMessagesResponse()
            if self.queued:
                pulled.messages_list.append(ProtoMessage())
            body = pulled.SerializeToString()
        else:
            self.pushes += 1
            answer = PushMessagesResponse(session_id=self.session)
            if scope["path"].endswith("push-messages"):
                answer.objects_to_push.extend(self.to_push)
            body = answer.SerializeToString()
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": body})


Scope = MutableMapping[str, Any]


@pytest.fixture
def upstream(tmp_path: Path) -> tuple[_Upstream, Workspace]:
    return _Upstream(), Workspace.create(tmp_path / "ws", name="gw")


async def _call(
    app: Any, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> tuple[int, bytes, float]:
    """One request through the gateway (every call of a test on one event loop, as in
    uvicorn: the gateway's notice watch belongs to its loop)."""
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(event: MutableMapping[str, Any]) -> None:
        sent.append(event)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": headers,
        "client": ("203.0.113.7", 5000),
    }
    t0 = time.monotonic()
    await app(scope, receive, send)
    return int(sent[0]["status"]), bytes(sent[1]["body"]), time.monotonic() - t0


_NODE = [(b"flwr-public-key", b"bm9kZS1rZXk=")]


def test_an_empty_pull_is_held_until_the_coordinator_sends(
    upstream: tuple[_Upstream, Workspace],
) -> None:
    """The long poll: the node's pull comes back with the request the coordinator
    queued while it was held, forwarded again at the outbox notice, not at a timer."""
    import threading

    from flwr.proto.fleet_pb2 import PullMessagesResponse

    superlink, ws = upstream
    notices = notice_dir(ws.state_dir)

    def coordinator_sends() -> None:
        superlink.queued = True
        Notice(notices / "outbox").bump()

    result: list[tuple[int, bytes, float]] = []

    async def scenario() -> None:
        app = make_gateway(superlink, notices, hold_s=60.0)
        threading.Timer(0.3, coordinator_sends).start()
        result.append(await _call(app, "/v1/fleet/pull-messages", _NODE))

    _run(scenario())
    status, body, seconds = result[0]
    pulled = PullMessagesResponse()
    pulled.ParseFromString(body)
    assert status == 200 and len(pulled.messages_list) == 1
    assert superlink.pulls == 2  # the held pull, then once at the notice
    assert seconds < 30.0  # the notice ended the hold, not the 60 s bound


def test_a_pull_without_news_comes_back_empty_after_the_hold(
    upstream: tuple[_Upstream, Workspace],
) -> None:
    superlink, ws = upstream

    async def scenario() -> None:
        app = make_gateway(superlink, notice_dir(ws.state_dir), hold_s=0.3)
        status, _, seconds = await _call(app, "/v1/fleet/pull-messages", _NODE)
        assert status == 200 and superlink.pulls == 1 and seconds >= 0.3
        # A pull without a node key, or a refused one, is answered at once, never held.
        await _call(app, "/v1/fleet/pull-messages", [])
        superlink.status = 401
        status, _, _ = await _call(app, "/v1/fleet/pull-messages", _NODE)
        assert status == 401 and superlink.pulls == 3

    _run(scenario())


def test_a_partner_s_accepted_push_wakes_the_coordinator(
    upstream: tuple[_Upstream, Workspace],
) -> None:
    superlink, ws = upstream
    notices = notice_dir(ws.state_dir)
    inbox = Notice(notices / "inbox")

    async def scenario() -> None:
        app = make_gateway(superlink, notices)
        before = inbox.token()
        await _call(app, "/v1/fleet/push-messages", _NODE)
        assert inbox.token() != before
        seen = inbox.token()
        await _call(app, "/v1/fleet/push-object", _NODE)
        assert inbox.token() != seen
        seen = inbox.token()
        superlink.status = 401  # refused by the SuperLink: nothing arrived
        await _call(app, "/v1/fleet/push-messages", _NODE)
        await _call(app, "/v1/fleet/pull-messages", _NODE)
        assert inbox.token() == seen and superlink.pushes == 3

    _run(scenario())


def test_the_coordinator_is_woken_when_a_reply_is_whole(
    upstream: tuple[_Upstream, Workspace],
) -> None:
    """A reply is its push-messages, then one push-object per object the SuperLink asked
    for: the coordinator is woken at the last one, not before (its pull would find the
    objects missing and back off). An object of a session the gateway does not know
    wakes it at once, as every push did before."""
    from flwr.proto.message_pb2 import PushObjectRequest

    superlink, ws = upstream
    notices = notice_dir(ws.state_dir)
    inbox = Notice(notices / "inbox")
    superlink.to_push, superlink.session = ["obj-a", "obj-b"], "session-1"

    def obj(object_id: str, session: str = "session-1") -> bytes:
        return PushObjectRequest(
            object_id=object_id, object_content=b"x", session_id=session
        ).SerializeToString()

    async def scenario() -> None:
        app = make_gateway(superlink, notices)
        seen = inbox.token()
        await _call(app, "/v1/fleet/push-messages", _NODE)
        await _call(app, "/v1/fleet/push-object", _NODE, obj("obj-b"))
        assert inbox.token() == seen  # obj-a is still missing
        await _call(app, "/v1/fleet/push-object", _NODE, obj("obj-a"))
        assert inbox.token() != seen
        seen = inbox.token()
        await _call(app, "/v1/fleet/push-object", _NODE, obj("obj-c", "unknown"))
        assert inbox.token() != seen
        seen = inbox.token()
        await _call(app, "/v1/fleet/push-object", _NODE, b"\xff not protobuf")
        assert inbox.token() != seen

    _run(scenario())


def test_the_superlink_gets_the_request_as_uvicorn_would_hand_it(
    upstream: tuple[_Upstream, Workspace],
) -> None:
    """The gateway calls the SuperLink's app in its own process: same path, body and
    signed headers, the caller's address, and the lifespan state Flower's app reads."""
    superlink, _ = upstream
    state = {"linkstate": "shared"}
    headers = [*_NODE, (b"flwr-signature", b"c2ln"), (b"content-length", b"5")]

    async def scenario() -> None:
        app = make_gateway(superlink, state=lambda: state)
        sent: list[MutableMapping[str, Any]] = []
        parts = iter([b"he", b"llo"])

        async def receive() -> MutableMapping[str, Any]:
            chunk = next(parts, None)
            if chunk is None:
                raise AssertionError("the gateway read past the request's body")
            return {"type": "http.request", "body": chunk, "more_body": chunk == b"he"}

        async def send(event: MutableMapping[str, Any]) -> None:
            sent.append(event)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/fleet/push-messages",
            "query_string": b"a=1",
            "headers": headers,
            "client": ("203.0.113.7", 5000),
        }
        await app(scope, receive, send)
        assert sent[0]["status"] == 200
        assert dict(sent[0]["headers"])[b"content-length"] == str(len(sent[1]["body"])).encode()

    _run(scenario())
    ((scope, body),) = superlink.seen
    assert body == b"hello" and scope["path"] == "/v1/fleet/push-messages"
    assert scope["headers"] == headers and scope["query_string"] == b"a=1"
    assert scope["client"] == ("203.0.113.7", 5000) and scope["root_path"] == ""
    assert scope["state"] == state and scope["state"] is not state  # a copy per request
