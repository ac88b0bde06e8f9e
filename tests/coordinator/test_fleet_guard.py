"""coordinator/fleet_guard.py: the public port's body limits and connection cap
(tests/adversarial/test_public_port_limits.py attacks a real coordinator with them)."""

from __future__ import annotations

import asyncio
import resource
from collections.abc import MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from fedcollab.coordinator.fleet_guard import (
    BodyRefused,
    max_connections,
    raise_open_file_limit,
    read_body,
)


def _run(coro: Any) -> Any:
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _chunks(*parts: bytes) -> Any:
    events = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
              for i, p in enumerate(parts)]  # fmt: skip
    it = iter(events)

    async def receive() -> MutableMapping[str, Any]:
        try:
            return next(it)
        except StopIteration:
            await asyncio.Event().wait()  # a sender that never finishes
            raise AssertionError("unreachable") from None

    return receive


def test_a_body_within_the_limit_is_read_whole() -> None:
    body = _run(read_body({"headers": []}, _chunks(b"ab", b"cd"), limit=4, timeout_s=5))
    assert body == b"abcd"


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    async def never(*_a: Any) -> MutableMapping[str, Any]:
        raise AssertionError("the body was read")

    scope = {"headers": [(b"content-length", b"5")]}
    with pytest.raises(BodyRefused) as refused:
        _run(read_body(scope, never, limit=4, timeout_s=5))
    assert refused.value.status == 413


def test_a_chunked_body_is_refused_once_it_passes_the_limit() -> None:
    with pytest.raises(BodyRefused) as refused:
        _run(read_body({"headers": []}, _chunks(b"abc", b"de", b"never read"), limit=4,
                       timeout_s=5))  # fmt: skip
    assert refused.value.status == 413


def test_a_body_that_never_ends_is_refused_at_its_deadline() -> None:
    with pytest.raises(BodyRefused) as refused:
        _run(read_body({"headers": []}, _slow(), limit=100, timeout_s=0.2))
    assert refused.value.status == 408


def _slow() -> Any:
    sent = False

    async def receive() -> MutableMapping[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"x", "more_body": True}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


def test_a_sender_that_left_gives_no_body() -> None:
    async def gone() -> MutableMapping[str, Any]:
        return {"type": "http.disconnect"}

    assert _run(read_body({"headers": []}, gone, limit=4, timeout_s=5)) is None


def test_the_cap_leaves_half_the_descriptors_and_the_limit_is_raised() -> None:
    assert max_connections(1024) == 512 and max_connections(10**7) == 4096
    soft = raise_open_file_limit()
    assert soft == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard == resource.RLIM_INFINITY or soft == hard


def test_a_reader_that_stalls_is_cut_after_the_deadline() -> None:
    """A peer that stops reading leaves uvicorn's send() waiting for a drain with no
    timer of its own: the connection, and its place under the cap, were held for good
    (red team of 2026-12-07). GuardedHttp cuts it after write_stall_s (0.3 s here)."""
    import socket
    import threading

    import uvicorn

    from fedcollab.coordinator.fleet_guard import GuardedHttp

    class QuickStall(GuardedHttp):
        write_stall_s = 0.3

    ended = threading.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for _ in range(400):  # 26 MB, far beyond the socket buffers of a stalled reader
                await send({"type": "http.response.body", "body": b"x" * 65536,
                            "more_body": True})  # fmt: skip
            await send({"type": "http.response.body", "body": b""})
        finally:
            ended.set()  # the response is done or the connection was cut

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(app, http=QuickStall, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=asyncio.run, args=(server.serve([listener]),), daemon=True)
    thread.start()
    client = socket.socket()
    try:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", port))
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
        # Before: the app's send() waited for good and this wait ran out.
        assert ended.wait(60.0)
    finally:
        client.close()
        server.should_exit = True
        thread.join(60.0)


def test_a_public_connection_sends_each_write_at_once() -> None:
    """The public port's accepted sockets have TCP_NODELAY. uvicorn writes a response's
    head and body separately; with Nagle's algorithm on, the body waited for the
    client's delayed ACK, about 40 ms per Fleet call (trace of 2026-12-07). asyncio sets
    the option only on sockets whose ``proto`` says TCP, which the listener from
    uvicorn's ``bind_socket`` does not: before the fix this socket had it off."""
    import socket

    import uvicorn

    from fedcollab.coordinator.fleet_guard import public_server

    _, [listener] = public_server(uvicorn.Config(app=None, host="127.0.0.1", port=0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname()[:2])
    try:
        conn, _ = listener.accept()
        try:
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            conn.close()
    finally:
        client.close()
        listener.close()
