"""The coordinator's public gateway forwards the Fleet API and nothing else, holds a
node's empty pull until the coordinator sends, and notices a partner's push."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator, MutableMapping
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


def test_control_request_gets_403_without_reaching_the_superlink(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws", name="gw")
    # The upstream is a closed port: a forwarded request would answer 502, not 403.
    app = make_gateway("https://127.0.0.1:9", ws.ca_cert)
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


class _Upstream:
    """A stand-in SuperLink Fleet API over real TLS: empty pulls until ``queued``."""

    def __init__(self) -> None:
        self.pulls = 0
        self.pushes = 0
        self.queued = False
        self.status = 200

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        from flwr.proto.fleet_pb2 import PullMessagesResponse, PushMessagesResponse
        from flwr.proto.message_pb2 import Message as ProtoMessage

        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                await send({"type": event["type"] + ".complete"})
                if event["type"] == "lifespan.shutdown":
                    return
        while (await receive()).get("more_body"):
            pass
        if scope["path"].endswith("pull-messages"):
            self.pulls += 1
            pulled = PullMessagesResponse()
            if self.queued:
                pulled.messages_list.append(ProtoMessage())
            body = pulled.SerializeToString()
        else:
            self.pushes += 1
            body = PushMessagesResponse().SerializeToString()
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": body})


Scope = MutableMapping[str, Any]


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[_Upstream, str, Workspace]]:
    import socket
    import threading

    import uvicorn

    ws = Workspace.create(tmp_path / "ws", name="gw")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = _Upstream()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            ssl_certfile=str(ws.server_cert),
            ssl_keyfile=str(ws.server_key),
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:  # uvicorn sets it once it listens
        thread.join(0.01)
        assert thread.is_alive(), "the stand-in SuperLink did not start"
    yield app, f"https://127.0.0.1:{port}", ws
    server.should_exit = server.force_exit = True  # the gateway's keep-alive link stays open
    thread.join(30)
    assert not thread.is_alive(), "the stand-in SuperLink did not stop"


async def _call(
    app: Any, path: str, headers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes, float]:
    """One request through the gateway (every call of a test on one event loop, as in
    uvicorn: the gateway's upstream client belongs to its loop)."""
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(event: MutableMapping[str, Any]) -> None:
        sent.append(event)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    t0 = time.monotonic()
    await app(scope, receive, send)
    return int(sent[0]["status"]), bytes(sent[1]["body"]), time.monotonic() - t0


_NODE = [(b"flwr-public-key", b"bm9kZS1rZXk=")]


def test_an_empty_pull_is_held_until_the_coordinator_sends(
    upstream: tuple[_Upstream, str, Workspace],
) -> None:
    """The long poll: the node's pull comes back with the request the coordinator
    queued while it was held, forwarded again at the outbox notice, not at a timer."""
    import threading

    from flwr.proto.fleet_pb2 import PullMessagesResponse

    superlink, url, ws = upstream
    notices = notice_dir(ws.state_dir)

    def coordinator_sends() -> None:
        superlink.queued = True
        Notice(notices / "outbox").bump()

    result: list[tuple[int, bytes, float]] = []

    async def scenario() -> None:
        app = make_gateway(url, ws.ca_cert, notices, hold_s=60.0)
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
    upstream: tuple[_Upstream, str, Workspace],
) -> None:
    superlink, url, ws = upstream

    async def scenario() -> None:
        app = make_gateway(url, ws.ca_cert, notice_dir(ws.state_dir), hold_s=0.3)
        status, _, seconds = await _call(app, "/v1/fleet/pull-messages", _NODE)
        assert status == 200 and superlink.pulls == 1 and seconds >= 0.3
        # A pull without a node key, or a refused one, is answered at once, never held.
        await _call(app, "/v1/fleet/pull-messages", [])
        superlink.status = 401
        status, _, _ = await _call(app, "/v1/fleet/pull-messages", _NODE)
        assert status == 401 and superlink.pulls == 3

    _run(scenario())


def test_a_partner_s_accepted_push_wakes_the_coordinator(
    upstream: tuple[_Upstream, str, Workspace],
) -> None:
    superlink, url, ws = upstream
    notices = notice_dir(ws.state_dir)
    inbox = Notice(notices / "inbox")

    async def scenario() -> None:
        app = make_gateway(url, ws.ca_cert, notices)
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
