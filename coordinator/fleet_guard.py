"""Limits on the coordinator's public port, so strangers cannot starve the SuperLink.

The Fleet gateway (:mod:`fedcollab.coordinator.fleet_gateway`) runs in the SuperLink's
process (:func:`fedcollab.coordinator.superlink_launch.serve`), so whatever a
connection to the public port holds, file descriptors and memory, the loopback Control
and runtime APIs (``flwr``, ``fedcollab job submit``, the ServerApps) lose. A red team
(2026-12-06) showed it: 1,015 TLS connections that sent half a request line and then
nothing stayed open for good (uvicorn arms its keep-alive timer only after a response)
and took all 1,024 descriptors of the process; the loopback ``list-runs`` then timed
out. A 300 MiB unauthenticated ``push-object`` body grew the process by 1.2 GB before
node authentication refused it. And (2026-12-07) TCP connections that never start
their TLS handshake did the same: the cap below counted a connection only once asyncio
handed it over, after the handshake, and asyncio keeps an unfinished handshake for 60 s.

So, on the public port only:

* **At most** :func:`max_connections` **connections at once, counted from the
  accept** (:class:`PublicSockets`: the listening socket's ``accept`` closes one more at
  once, before any TLS; a connection counts until its socket is closed). The soft
  ``RLIMIT_NOFILE`` of the process is raised to its hard limit at start
  (:func:`raise_open_file_limit`), and the cap is half of the limit in force at each
  accept (at most :data:`MAX_CONNECTIONS`), so the loopback server always has
  descriptors left.
* **A TLS handshake within** :data:`HANDSHAKE_TIMEOUT_S` of the accept (asyncio's
  ``ssl_handshake_timeout``, :func:`public_server`), not asyncio's 60 s.
* **A request's head within** :data:`HEAD_TIMEOUT_S` of the connection being made or
  of the previous response: a connection that has not sent a whole request line and
  headers by then is closed (a slow sender gains nothing by trickling bytes).
* **A reader that keeps up**: a connection whose peer leaves the server's send buffer
  full for :data:`WRITE_STALL_S` is cut (uvicorn's ``send`` waits for a drain with no
  timer of its own), and a closing connection's TLS shutdown gets
  :data:`SHUTDOWN_TIMEOUT_S`.
* **At most** :data:`MAX_PIPELINED` **requests queued** behind the one being answered
  (uvicorn parses a whole read into queued requests of about 2.5 kB each).
* **A body of at most** :data:`MAX_BODY_BYTES`, whole within :data:`BODY_TIMEOUT_S`
  (:mod:`.fleet_gateway`: 413 as soon as the declared or received length is over it,
  408 at the deadline). A partner's largest push, a CKKS reply of a 1M-parameter
  model, is about 33 MB.

A registered node holds one connection (its pull is held for at most ``HOLD_S``
between requests), so the cap is far above what a federation needs. What remains for
an attacker: holding up to the cap's connections, each for at most
:data:`HANDSHAKE_TIMEOUT_S` plus :data:`HEAD_TIMEOUT_S` (or :data:`WRITE_STALL_S`, a
reader that stalls) at a time, keeps registered
nodes from connecting while it lasts (a denial of service of the federation, not of the
coordinator host, and no data); each connection may make the process buffer up to
:data:`MAX_BODY_BYTES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import resource
import socket
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = [
    "BODY_TIMEOUT_S",
    "HEAD_TIMEOUT_S",
    "MAX_BODY_BYTES",
    "MAX_CONNECTIONS",
    "MAX_PIPELINED",
    "SHUTDOWN_TIMEOUT_S",
    "WRITE_STALL_S",
    "BodyRefused",
    "GuardedHttp",
    "PublicSockets",
    "answer",
    "max_connections",
    "public_server",
    "raise_open_file_limit",
    "read_body",
]

log = logging.getLogger(__name__)

#: A request's line and headers must arrive within this many seconds.
HEAD_TIMEOUT_S = 10.0
#: A TLS handshake must be done within this many seconds of the accept.
HANDSHAKE_TIMEOUT_S = 10.0
#: A closing TLS connection's shutdown (close_notify) gets this long (asyncio: 30 s).
SHUTDOWN_TIMEOUT_S = 5.0
#: A connection whose reader lets the server's send buffer stay full this long is cut.
WRITE_STALL_S = 30.0
#: At most this many requests queued behind the one being answered (SuperNodes never
#: pipeline); one more and the connection is cut.
MAX_PIPELINED = 8
#: At most this many connections are accepted (or refused) per readiness event.
_ACCEPT_BATCH = 100
#: A request's body must arrive within this many seconds of its head.
BODY_TIMEOUT_S = 300.0
#: The largest request body the public port takes (bytes).
MAX_BODY_BYTES = 128 * 1024 * 1024
#: Never more public connections than this, whatever the descriptor limit.
MAX_CONNECTIONS = 4096


def raise_open_file_limit() -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # the soft limit stands; the cap below follows it
    return int(soft)


def max_connections(open_file_limit: int) -> int:
    """Public connections allowed with ``open_file_limit`` descriptors: half of them,
    at most :data:`MAX_CONNECTIONS`, at least 16.

    >>> max_connections(1024), max_connections(1 << 20), max_connections(10)
    (512, 4096, 16)
    """
    return max(16, min(MAX_CONNECTIONS, open_file_limit // 2))


def current_cap(limit: int) -> int:
    """The connection cap now: ``limit``, or less if the descriptor limit in force was
    lowered since the start (an operator may lower it with ``prlimit``)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return limit if soft == resource.RLIM_INFINITY else min(limit, max_connections(soft))


class PublicSockets:
    """The public port's open connections, counted from the accept to the socket's close.

    :meth:`listener` wraps the listening socket: its ``accept`` (which asyncio calls for
    each incoming connection) closes a connection at once while :attr:`open` is at the
    cap, before any TLS, and otherwise hands it over as a socket whose ``close``
    (asyncio's, when the connection ends for any reason, a failed handshake included)
    gives its place back; a socket dropped without ``close`` gives it back when
    collected."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self._refused_logged = False

    def listener(self, sock: socket.socket) -> socket.socket:
        """``sock`` (bound and listening; detached here) as a capped listener."""
        capped = _Listener(sock.family, sock.type, sock.proto, fileno=sock.detach())
        capped.sockets = self
        return capped

    def admit(self, conn: socket.socket) -> bool:
        if self.open >= current_cap(self.limit):
            if not self._refused_logged:
                self._refused_logged = True
                log.warning("public port: %d connections open, closing new ones until some end",
                            self.open)  # fmt: skip
            return False
        self._refused_logged = False
        self.open += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.open -= 1

        conn.release = release  # type: ignore[attr-defined]
        weakref.finalize(conn, release)
        return True


def _no_delay(conn: socket.socket) -> None:
    """Send each write at once (``TCP_NODELAY``), as asyncio does for its own sockets.

    uvicorn writes a response's head and body as two writes, two TLS records. Under
    Nagle's algorithm the body waits until the head is acknowledged, and the client
    acknowledges late (Linux's delayed ACK, about 40 ms). asyncio turns Nagle off only
    on sockets whose ``proto`` is ``IPPROTO_TCP`` (``base_events._set_nodelay``), and
    the listener from uvicorn's ``Config.bind_socket`` has ``proto`` 0, as have its
    accepted sockets (uvicorn issue #3149, the same bug in its ``--workers`` path).
    Traced on 2026-12-07: most Fleet calls through the public port took 43-53 ms, their
    response head after 1-10 ms and the body 40 ms later, about four such calls in a row
    per message a partner received or answered."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Connection(socket.socket):
    """An accepted public connection: gives its place back when closed."""

    def close(self) -> None:
        try:
            super().close()
        finally:
            release = getattr(self, "release", None)
            if release is not None:
                release()


class _Listener(socket.socket):
    """The public listening socket; ``accept`` as :meth:`socket.socket.accept`, except
    for connections over the cap, closed at once (:class:`PublicSockets`)."""

    sockets: PublicSockets

    def accept(self) -> tuple[socket.socket, Any]:
        for _ in range(_ACCEPT_BATCH):  # then back to the event loop, whatever is pending
            fd, addr = self._accept()  # type: ignore[attr-defined]  # BlockingIOError: none left
            conn = _Connection(self.family, self.type, self.proto, fileno=fd)
            if socket.getdefaulttimeout() is None and self.gettimeout():
                conn.setblocking(True)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                # asyncio sets TCP_NODELAY only on sockets whose ``proto`` says TCP;
                # uvicorn's ``bind_socket`` leaves it 0 (see _no_delay).
                _no_delay(conn)
            if self.sockets.admit(conn):
                return conn, addr
            conn.close()
        raise BlockingIOError("accept: the rest waits for the next event loop turn")


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's HTTP protocol with a deadline for each request's head, for a stalled
    reader, and a bound on pipelined requests (module notes)."""

    head_timeout_s = HEAD_TIMEOUT_S
    write_stall_s = WRITE_STALL_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._arm_head_timer()

    def pause_writing(self) -> None:
        # The peer stopped reading: uvicorn's send() now waits for a drain with no timer
        # armed (red team of 2026-12-07: a stranger held a connection for good by sending
        # requests and never reading the answers).
        super().pause_writing()
        if getattr(self, "_stall_timer", None) is None:
            self._stall_timer = self.loop.call_later(self.write_stall_s, self._stalled)

    def resume_writing(self) -> None:
        self._cancel_timer("_stall_timer")
        super().resume_writing()

    def _cancel_timer(self, name: str) -> None:
        """Cancel the timer in attribute ``name`` (``_head_timer``, ``_stall_timer``)."""
        timer = getattr(self, name, None)
        if timer is not None:
            timer.cancel()
            setattr(self, name, None)

    def _stalled(self) -> None:
        self._stall_timer = None
        self.transport.abort()  # not close(): that would wait on the TLS shutdown

    def _arm_head_timer(self) -> None:
        self._cancel_timer("_head_timer")
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def on_headers_complete(self) -> None:
        self._cancel_timer("_head_timer")
        super().on_headers_complete()
        if len(self.pipeline) > MAX_PIPELINED:
            # uvicorn parses a whole read into queued requests (red team: 200,000 tiny
            # pipelined requests grew the process by 329 MB); SuperNodes never pipeline.
            self.transport.abort()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()  # the next request's head, from now

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer("_head_timer")
        self._cancel_timer("_stall_timer")
        super().connection_lost(exc)


class _PublicServer(uvicorn.Server):
    """uvicorn's server on a :class:`PublicSockets` listener, with a TLS handshake
    deadline; the loopback server owns the process's signal handling."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn passes no handshake timeout to create_server: asyncio's 60 s. Give
        # it ours for this call only (nothing else creates a server meanwhile: one loop).
        loop = asyncio.get_running_loop()
        create = loop.create_server
        loop.create_server = functools.partial(  # type: ignore[method-assign]
            create,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
            ssl_shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        )
        try:
            await super().startup(sockets)
        finally:
            del loop.create_server  # the loop's own method again


def public_server(config: uvicorn.Config) -> tuple[uvicorn.Server, list[socket.socket]]:
    """The public port's server for ``config`` (TLS, host and port) and the capped
    listening socket to pass to its ``serve``: the connection cap, the handshake and
    head deadlines of the module notes."""
    config.http = GuardedHttp
    sockets = PublicSockets(max_connections(raise_open_file_limit()))
    listener = sockets.listener(config.bind_socket())
    listener.set_inheritable(False)  # uvicorn made it inheritable; no child needs it
    return _PublicServer(config), [listener]


class BodyRefused(Exception):
    """A request body the public port does not take (413 or 408)."""

    def __init__(self, status: int, detail: bytes) -> None:
        super().__init__(status)
        self.status, self.detail = status, detail


async def read_body(
    scope: Mapping[str, Any],
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    *,
    limit: int,
    timeout_s: float,
) -> bytes | None:
    """The request's body (None if the sender disconnected), refused as soon as its
    declared or received length is over ``limit`` or it is not whole in ``timeout_s``."""
    for key, value in scope.get("headers", []):
        if key.lower() == b"content-length" and value.strip().isdigit() and int(value) > limit:
            raise BodyRefused(413, b'{"detail":"request body too large"}')
    chunks: list[bytes] = []
    size = 0
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            event = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise BodyRefused(408, b'{"detail":"request body not received in time"}') from None
        if event["type"] == "http.disconnect":
            return None
        chunk = event.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyRefused(413, b'{"detail":"request body too large"}')
        chunks.append(chunk)
        if not event.get("more_body", False):
            return b"".join(chunks)


async def answer(
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]], status: int, body: bytes
) -> None:
    """A short JSON answer of the gateway's own (the connection is closed after it)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
