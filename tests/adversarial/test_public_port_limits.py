"""Strangers on the coordinator's public port cannot starve the SuperLink's loopback APIs.

Attacks (red team of 2026-12-06, against the gateway in the SuperLink's process, a real
coordinator over TLS):

1. TLS connections that send half a request line and then nothing stayed open for good
   and took every file descriptor of the process: the loopback Control API (``flwr``,
   ``fedcollab job submit``, the ServerApps' runtime API) stopped answering.
2. An unauthenticated 300 MiB ``push-object`` body was read whole (1.2 GB of memory)
   before node authentication refused it.
3. A path with ``%0a`` wrote a forged line into the coordinator log.
4. TCP connections that never start their TLS handshake (2026-12-07): the cap counted a
   connection only once its handshake was done, and asyncio keeps an unfinished one for
   60 s, so 600 bare connects took every descriptor of a process limited to 512 and the
   loopback Control API stopped answering again.

Defences: :mod:`fedcollab.coordinator.fleet_guard` (a connection cap at half the
descriptor limit, counted from the accept, a deadline for each TLS handshake and each
request's head, a body limit and deadline) and
``%r`` in the gateway's refusal line. Every wait is on an event (a socket's answer or
close, a process exit), never a fixed sleep.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedcollab.coordinator.fleet_guard import (
    HANDSHAKE_TIMEOUT_S,
    HEAD_TIMEOUT_S,
    MAX_BODY_BYTES,
    MAX_PIPELINED,
)
from fedcollab.coordinator.superlink import start_superlink
from fedcollab.coordinator.workspace import Workspace
from tests.support.integration import BIN, free_port

pytestmark = pytest.mark.integration


class _Coordinator:
    def __init__(self, ws: Workspace, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.ws, self.proc, self.log = ws, proc, log
        config = (ws.flwr_home / "config.toml").read_text()
        self.loopback_port = int(config.split('address = "127.0.0.1:')[1].split('"')[0])
        self.ctx = ssl.create_default_context(cafile=str(ws.ca_cert))

    def superlink_pid(self) -> int:
        out = subprocess.run(
            ["pgrep", "-g", str(self.proc.pid), "-f", "superlink_launch"],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout.split()[0])

    def public(self, timeout_s: float = 30.0) -> ssl.SSLSocket:
        fed = self.ws.federation
        raw = socket.create_connection((fed.host, fed.port), timeout=timeout_s)
        return self.ctx.wrap_socket(raw, server_hostname=fed.host)

    def bare(self) -> socket.socket:
        """A TCP connection to the public port that never starts its TLS handshake."""
        fed = self.ws.federation
        return socket.create_connection((fed.host, fed.port), timeout=10.0)

    def loopback_status(self) -> str:
        """The status line of a Control API call on the SuperLink's own loopback port."""
        raw = socket.create_connection(("127.0.0.1", self.loopback_port), timeout=60)
        with self.ctx.wrap_socket(raw, server_hostname=self.ws.federation.host) as s:
            s.sendall(
                b"POST /v1/control/list-runs HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/protobuf\r\nContent-Length: 0\r\n"
                b"Connection: close\r\n\r\n"
            )
            return s.recv(200).split(b"\r\n")[0].decode()


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Coordinator]:
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    root = tmp_path_factory.mktemp("public-port")
    ws = Workspace.create(root / "ws", name="limits", port=free_port())
    log = root / "coordinator.log"
    proc = start_superlink(ws, log=log.open("ab"))
    try:
        yield _Coordinator(ws, proc, log)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(60)


def _answer(sock: ssl.SSLSocket) -> bytes:
    """What the server sends before it closes (b"" if it closed without a word)."""
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    return data


def test_idle_public_connections_are_capped_and_the_loopback_api_keeps_answering(
    coordinator: _Coordinator,
) -> None:
    pid = coordinator.superlink_pid()
    # A small descriptor limit keeps the flood small; the cap follows the limit in force.
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (512, 512))
    assert coordinator.loopback_status() == "HTTP/1.1 200 OK"
    held: list[ssl.SSLSocket] = []
    closed_at_once = 0
    try:
        for _ in range(600):  # beyond the 512 descriptors the process has
            try:
                s = coordinator.public(timeout_s=10.0)
                s.sendall(b"POST /v1/fleet/pull-messages HTTP/1.1\r\nHost: x\r\n")  # never ends
            except OSError:
                closed_at_once += 1
                continue
            held.append(s)
        open_fds = len(os.listdir(f"/proc/{pid}/fd"))
        assert open_fds < 512, f"the SuperLink holds {open_fds} of its 512 descriptors"
        # The loopback Control API still answers, at once, while the flood is held.
        assert coordinator.loopback_status() == "HTTP/1.1 200 OK"
        # Beyond the cap (256 here) connections are closed as they come.
        refused = sum(1 for s in held[300:] if _closed_now(s)) + closed_at_once
        assert refused >= 100
    finally:
        for s in held:
            s.close()


def _closed_now(sock: socket.socket, within_s: float = 30.0) -> bool:
    sock.settimeout(within_s)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


def test_connections_that_never_start_tls_are_capped_and_the_loopback_api_keeps_answering(
    coordinator: _Coordinator,
) -> None:
    pid = coordinator.superlink_pid()
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (512, 512))
    assert coordinator.loopback_status() == "HTTP/1.1 200 OK"
    held: list[socket.socket] = []
    try:
        for _ in range(600):  # beyond the 512 descriptors the process has
            try:
                held.append(coordinator.bare())
            except OSError:
                continue  # the kernel's backlog was full for a moment: nothing held
        open_fds = len(os.listdir(f"/proc/{pid}/fd"))
        # Before: every bare connection held a descriptor for asyncio's 60 s handshake
        # timeout, 600 > 512, and the loopback call below failed.
        assert open_fds < 512, f"the SuperLink holds {open_fds} of its 512 descriptors"
        assert coordinator.loopback_status() == "HTTP/1.1 200 OK"
        # Beyond the cap (256 here) connections are closed as they are accepted.
        assert sum(1 for s in held[300:] if _closed_now(s)) >= 100
    finally:
        for s in held:
            s.close()


def test_a_tls_handshake_that_never_starts_is_closed_after_its_deadline(
    coordinator: _Coordinator,
) -> None:
    with coordinator.bare() as s:
        # Before: asyncio's 60 s; this wait ran out first.
        assert _closed_now(s, within_s=HANDSHAKE_TIMEOUT_S + 30.0)


def test_a_request_head_that_never_ends_is_closed_after_the_deadline(
    coordinator: _Coordinator,
) -> None:
    with coordinator.public(timeout_s=HEAD_TIMEOUT_S + 60.0) as s:
        s.sendall(b"POST /v1/fleet/pull-messages HTTP/1.1\r\nHost: x\r\n")
        # Before: the connection stayed open for good (this recv timed out).
        assert _answer(s) == b""


def test_an_oversized_body_is_refused_before_it_is_read(coordinator: _Coordinator) -> None:
    too_big = MAX_BODY_BYTES + 1
    with coordinator.public(timeout_s=60.0) as s:
        s.sendall(
            b"POST /v1/fleet/push-object HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/protobuf\r\n"
            + f"Content-Length: {too_big}\r\n\r\n".encode()
        )
        # Before: the gateway waited for all of it (this recv timed out); now 413 at once,
        # without one byte of the body sent.
        assert _answer(s).split(b"\r\n")[0] == b"HTTP/1.1 413 Request Entity Too Large"


def test_pipelined_requests_beyond_the_bound_cut_the_connection(
    coordinator: _Coordinator,
) -> None:
    """Attack (red team of 2026-12-07): one TLS connection pipelined 200,000 tiny requests
    and the SuperLink grew by 329 MB (uvicorn queues every request of a read). Now more
    than MAX_PIPELINED queued requests cut the connection: 50 sent at once get at most
    MAX_PIPELINED + 2 answers (before: all 50)."""
    request = b"POST /v1/fleet/get-run HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    with coordinator.public(timeout_s=60.0) as s:
        s.sendall(request * 50)
        answers = _answer(s).count(b"HTTP/1.1 ")
    assert answers <= MAX_PIPELINED + 2, answers


def test_a_path_cannot_forge_a_coordinator_log_line(coordinator: _Coordinator) -> None:
    forged = "2026-12-06T10:00:00.000Z INFO [fedcollab.coordinator.audit] FORGED by an outsider"
    target = "/v1/x%0a" + forged.replace(" ", "%20")
    with coordinator.public() as s:
        s.sendall(f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        assert _answer(s).split(b"\r\n")[0] == b"HTTP/1.1 403 Forbidden"
    lines = coordinator.log.read_text(errors="replace").splitlines()
    assert any("FORGED by an outsider" in line for line in lines)  # logged, quoted
    assert not any(line.startswith(forged[:24]) for line in lines)


def _hostile(coordinator: _Coordinator, how: int) -> None:
    """One connection that ends in one of the ways a stranger can end it (or is closed at
    the accept, if the cap is full for a moment: an end too)."""
    fed = coordinator.ws.federation
    raw = socket.create_connection((fed.host, fed.port), timeout=30.0)
    try:
        if how == 1:  # garbage where a ClientHello belongs
            raw.sendall(b"GET / HTTP/1.1\r\n\r\n" * 4)
        elif how == 2:  # reset (RST) in the middle of nowhere
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        elif how == 3:  # a whole handshake, half a request, then gone
            s = coordinator.ctx.wrap_socket(raw, server_hostname=fed.host)
            s.sendall(b"POST /v1/fleet/pull-messages HTTP/1.1\r\n")
            s.close()
        # how == 0: a bare connect, then gone
    except OSError:
        pass  # closed at the accept
    finally:
        raw.close()


def test_connections_that_end_badly_give_their_place_back(coordinator: _Coordinator) -> None:
    """The cap counts a connection until its socket closes, however it ends: were a
    place never given back, the port would end up refusing every node for good."""
    pid = coordinator.superlink_pid()
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (128, 128))  # a cap of 64
    for i in range(400):
        _hostile(coordinator, i % 4)
    # Every place comes back: 60 connections at once finish their TLS handshake (one over
    # the cap is closed at the accept, before it) and are all served (a 403 each for a
    # path outside the Fleet API). A connection refused while the server has not yet seen
    # all the ends above is tried again, until a deadline; a place never given back
    # stays taken, and the 60 never fit.
    held: list[ssl.SSLSocket] = []
    deadline = time.monotonic() + 60.0
    try:
        while len(held) < 60 and time.monotonic() < deadline:
            try:
                held.append(coordinator.public(timeout_s=30.0))
            except OSError:
                continue  # closed at the accept: the cap is full for now
        assert len(held) == 60
        for s in held:
            s.sendall(
                b"POST /v1/control/list-runs HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
            )
        assert [_answer_line(s) for s in held] == ["HTTP/1.1 403 Forbidden"] * 60
    finally:
        for s in held:
            s.close()


def _answer_line(sock: ssl.SSLSocket) -> str:
    sock.settimeout(60.0)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n")[0].decode()
