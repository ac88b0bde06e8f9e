"""The coordinator's public face: a TLS gateway that forwards only the Fleet API.

Flower 1.41 serves the Fleet, Control and Runtime APIs from one HTTP server
(``--control-api-address`` and ``--fleet-api-address`` are no-ops for HTTP). Its Control
API has no authentication outside Flower Enterprise (``load_control_authn_plugin``
returns a no-op plugin): anyone who reaches that port could ``flwr run`` their own app.

So the SuperLink binds **loopback only** (``127.0.0.1``, a port picked free at
start and written to the workspace's ``flwr-home/config.toml``, which
``fedcollab job submit`` and the operator's ``flwr`` CLI use), and this
gateway listens on the federation's public address with the same TLS
certificate. It passes on exactly ``POST /v1/fleet/*`` (the SuperNode
protocol: register/activate node, heartbeat, pull/push messages and objects,
get run/FAB; node authentication is checked by Flower's own code, the
signed headers are passed on untouched) and answers everything else, above
all ``/v1/control/*`` and ``/v1/runtime/*``, with 403 and a log line.

The gateway runs inside the SuperLink's process, on the same event loop
(:func:`fedcollab.coordinator.superlink_launch.serve`, in place of Flower's
``uvicorn.run``): a Fleet request that passes the check is handed to
the SuperLink's own ASGI app as uvicorn would hand it over had it arrived on the
loopback port (the scope the ASGI spec defines [1], the lifespan state Flower's
app expects), except the calls of every round, which :mod:`.fleet_fast` answers with
Flower's parsing, node authentication and handlers minus the app's layers.

Two things besides forwarding, both about time, neither about content
(:mod:`fedcollab.coordinator.fleet_notice`): a SuperNode's ``pull-messages``
that finds nothing is held here for up to ``HOLD_S`` and forwarded again as soon
as the coordinator's ServerApp pushed requests (a long poll: at most one held pull
per node key, at most :data:`MAX_HELD` in all, the node's signed headers forwarded
unchanged, which Flower accepts for 300 s); and a partner's accepted
``push-messages`` or ``push-object`` that completes a reply (:mod:`.fleet_uploads`)
bumps the ServerApp's reply notice: it pulls when a reply is whole, not every 0.05 s.

Run as ``python -m fedcollab.coordinator.fleet_gateway --workspace WS``: the
process first ends the Flower processes a previous run of the coordinator left
running and closes the jobs it left unfinished (:mod:`fedcollab.coordinator.recovery`),
then starts ``flower-superlink`` as its child (same process group, killed with it),
which opens the public port only once the whole coordinator is up.

What still holds for someone on the coordinator host: the loopback Control
API is unauthenticated, so any local account there can submit runs. The
coordinator host is trusted infrastructure of the operator; partner nodes do
not rely on it (they run only their installed ClientApp, see
:mod:`fedcollab.client.node_runtime`).

[1] ASGI 3.0 specification, https://asgi.readthedocs.io/en/latest/specs/main.html
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcollab.common.child_process import die_with_parent, stop_child
from fedcollab.common.errors import FederationError
from fedcollab.coordinator.fleet_fast import fleet_calls
from fedcollab.coordinator.fleet_guard import (
    BODY_TIMEOUT_S,
    MAX_BODY_BYTES,
    BodyRefused,
    answer,
    read_body,
)
from fedcollab.coordinator.fleet_notice import HOLD_S, NOTICE_ENV, Notice, NoticeWatch, notice_dir
from fedcollab.coordinator.fleet_uploads import Uploads
from fedcollab.coordinator.recovery import (
    hold_coordinator_lock,
    recover_interrupted_jobs,
    stop_leftover_runtime,
)
from fedcollab.coordinator.workspace import Workspace

__all__ = ["FLEET_PREFIX", "is_forwarded", "main", "make_gateway"]

log = logging.getLogger(__name__)

#: The only path prefix the public address serves (Flower's Fleet router).
FLEET_PREFIX = "/v1/fleet/"

#: The Fleet calls the gateway treats specially (see the module notes).
PULL_PATH = FLEET_PREFIX + "pull-messages"
PUSH_PATHS = frozenset({FLEET_PREFIX + "push-messages", FLEET_PREFIX + "push-object"})
#: Flower's SuperNode authentication header carrying the node's public key.
_NODE_KEY = b"flwr-public-key"
#: At most this many pulls held at once (one per node key); more are forwarded at once.
MAX_HELD = 512

#: Hop-by-hop headers (RFC 9110 section 7.6.1) and the ones httpx recomputes.
_DROP = {
    b"host",
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"te",
    b"trailer",
    b"upgrade",
    b"content-length",
}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_forwarded(method: str, path: str) -> bool:
    """Whether the public address forwards this request (Fleet API only)."""
    return method == "POST" and path.startswith(FLEET_PREFIX) and ".." not in path


def empty_pull(status: int, content: bytes) -> bool:
    """Whether a ``pull-messages`` answer is a plain "nothing for you" (200, no message,
    no reconnect instruction): only those are held."""
    from flwr.proto.fleet_pb2 import PullMessagesResponse

    if status != 200:
        return False
    parsed = PullMessagesResponse()
    try:
        parsed.ParseFromString(content)
    except Exception:
        return False
    return not parsed.messages_list and not parsed.HasField("reconnect")


@dataclass
class _Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    content: bytes


async def _call_upstream(
    upstream: ASGIApp, scope: Scope, body: bytes, state: dict[str, Any]
) -> _Reply:
    """One request through the SuperLink's own ASGI app, in this process (what uvicorn
    would do with it had it come in on the loopback port)."""
    inner: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": scope.get("http_version", "1.1"),
        "method": scope["method"],
        "scheme": "https",
        "path": scope["path"],
        "raw_path": scope.get("raw_path") or str(scope["path"]).encode(),
        "query_string": scope.get("query_string", b""),
        "root_path": "",
        "headers": list(scope.get("headers", [])),
        "client": scope.get("client"),
        "server": scope.get("server"),
        "state": state,
    }
    answered = asyncio.Event()
    delivered = False
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = []
    parts: list[bytes] = []

    async def receive() -> MutableMapping[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await answered.wait()  # the client stays connected until the answer is out
        return {"type": "http.disconnect"}

    async def send(event: MutableMapping[str, Any]) -> None:
        nonlocal status, headers
        if event["type"] == "http.response.start":
            status = int(event["status"])
            headers = [(bytes(k), bytes(v)) for k, v in event.get("headers", [])]
        elif event["type"] == "http.response.body":
            parts.append(bytes(event.get("body", b"")))

    try:
        await upstream(inner, receive, send)
    except Exception:
        # Starlette's error layer has sent its 500 before re-raising; anything else is ours.
        log.exception("the SuperLink failed on %s", scope["path"])
        if status is None:
            return _Reply(502, [], b"")
    finally:
        answered.set()
    if status is None:
        log.error("the SuperLink sent no answer to %s", scope["path"])
        return _Reply(502, [], b"")
    return _Reply(status, headers, b"".join(parts))


def make_gateway(
    upstream: ASGIApp,
    notices: Path | None = None,
    *,
    hold_s: float = HOLD_S,
    state: Callable[[], Mapping[str, Any]] | None = None,
    max_body: int = MAX_BODY_BYTES,
    body_timeout_s: float = BODY_TIMEOUT_S,
) -> ASGIApp:
    """An ASGI app passing Fleet API requests to ``upstream`` (the SuperLink's app in this
    process, whose lifespan ``state`` a request sees as it would through uvicorn); with
    ``notices`` (the coordinator's notice directory) empty pulls are held and pushes
    noticed (module notes). A body over ``max_body`` bytes gets 413, one not whole within
    ``body_timeout_s`` 408 (:mod:`.fleet_guard`), before the SuperLink sees either."""
    outbox = NoticeWatch(Notice(notices / "outbox")) if notices is not None else None
    inbox = Notice(notices / "inbox") if notices is not None else None
    holding: set[bytes] = set()
    fast, uploads = fleet_calls(upstream), Uploads()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif event["type"] == "lifespan.shutdown":
                    if outbox is not None:
                        await outbox.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # refused at the handshake
            return
        if scope["type"] != "http":
            return
        method, path = str(scope["method"]), str(scope["path"])
        if not is_forwarded(method, path) or scope.get("root_path"):
            peer = scope.get("client") or ("?", 0)
            # %r: a path is the sender's text (a decoded %0a would forge a log line).
            log.warning(
                "refused %r %r from %r: only the Fleet API is served here", method, path, peer[0]
            )
            await answer(send, 403, b'{"detail":"only the Fleet API is served on this address"}')
            return
        try:
            body = await read_body(scope, receive, limit=max_body, timeout_s=body_timeout_s)
        except BodyRefused as refused:
            await answer(send, refused.status, refused.detail)
            return
        if body is None:
            return  # the sender went away
        held = _hold_key(scope, path) if outbox is not None else None
        if held is not None and (held in holding or len(holding) >= MAX_HELD):
            held = None  # a second pull of the same node, or too many: no hold
        try:
            if held is not None:
                holding.add(held)
            woken = outbox.event() if held is not None and outbox is not None else None

            async def forward() -> _Reply:
                inner = dict(state()) if state is not None else {}
                quick = await fast.answer(scope, body, inner) if fast is not None else None
                if quick is not None:
                    return _Reply(*quick)
                return await _call_upstream(upstream, scope, body, inner)

            resp = await forward()
            deadline = time.monotonic() + hold_s
            while (
                woken is not None and outbox is not None and empty_pull(resp.status, resp.content)
            ):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(woken.wait(), left)
                except TimeoutError:
                    break
                woken = outbox.event()
                resp = await forward()
        finally:
            if held is not None:
                holding.discard(held)
        pushed = inbox is not None and path in PUSH_PATHS and resp.status == 200
        if pushed and inbox is not None and uploads.complete(path, body, resp.content):
            inbox.bump()  # a reply may be whole now
        out = [(k, v) for k, v in resp.headers if k.lower() not in _DROP]
        out.append((b"content-length", str(len(resp.content)).encode()))
        await send({"type": "http.response.start", "status": resp.status, "headers": out})
        await send({"type": "http.response.body", "body": resp.content})

    return app


def _hold_key(scope: Scope, path: str) -> bytes | None:
    """The node key of a pull that may be held (None: not a pull, or no key)."""
    if path != PULL_PATH:
        return None
    for key, value in scope["headers"]:
        if key.lower() == _NODE_KEY:
            return bytes(value)
    return None


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_tls(
    host: str, port: int, ca: Path, proc: subprocess.Popen[bytes], timeout_s: float
) -> None:
    ctx = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FederationError(
                f"the SuperLink exited with code {proc.returncode} during start-up",
                hint="see the coordinator log",
            )
        try:
            with (
                socket.create_connection((host, port), timeout=1.0) as raw,
                ctx.wrap_socket(raw, server_hostname=host),
            ):
                return
        except OSError:
            time.sleep(0.2)
    raise FederationError(
        f"the loopback SuperLink did not come up within {timeout_s:g} s",
        hint="see the coordinator log",
    )


def main(argv: list[str] | None = None) -> int:
    """Close what a previous coordinator left, then run the SuperLink, which serves the
    Fleet-only gateway on the public address too (blocks until it stops)."""
    from fedcollab.coordinator import superlink as sl

    parser = argparse.ArgumentParser(prog="fedcollab-coordinator")
    parser.add_argument("--workspace", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ws = Workspace.open(args.workspace)
    fed = ws.federation
    # Before the SuperLink serves, no job of this workspace may still run: end what the
    # last coordinator run left running (its ServerApps outlive a killed coordinator),
    # then close the jobs it left unfinished (it stopped mid-job).
    lock = hold_coordinator_lock(ws)  # noqa: F841 - held until this process ends
    for pid in stop_leftover_runtime(ws.flwr_home):
        log.warning("stopped Flower process %d left running by the previous coordinator", pid)
    recovered = recover_interrupted_jobs(ws)
    for run in recovered.audit_runs:
        log.warning("job run %s was cut short by a coordinator restart: recorded as failed", run)
    for out_dir in recovered.out_dirs:
        log.warning("job outputs in %s: recorded as failed (coordinator restart)", out_dir)
    sl.check_node_journal(ws)  # the registered nodes the SuperLink replays (fail closed)
    internal = _free_loopback_port()
    sl.write_flwr_config(ws, internal)
    notices = notice_dir(ws.state_dir)
    proc = subprocess.Popen(
        sl.superlink_command(ws, internal_port=internal, public=(fed.host, fed.port)),
        # The ServerApps (Flower's SuperExec children) inherit it: coordinator.broadcast.
        env={**sl.flwr_env(ws), NOTICE_ENV: str(notices.resolve())},
        preexec_fn=die_with_parent,
    )

    def _stop(signum: int, _frame: object) -> None:
        # A group-wide SIGTERM already reached the child: a second one would cut
        # its graceful shutdown short (the finally block below signals it if needed).
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _stop)
    try:
        _wait_tls("127.0.0.1", internal, ws.ca_cert, proc, timeout_s=60.0)
        log.info(
            "SuperLink on 127.0.0.1:%d (Control API loopback only); its Fleet gateway on %s",
            internal,
            fed.address,
        )
        code = proc.wait()
        if code:
            log.error("the SuperLink exited with code %d", code)
    except KeyboardInterrupt:  # Ctrl-C reached the whole group: the SuperLink stops too
        code = 130
    finally:
        stop_child(proc)
    return 0 if not code else 130 if code == 130 else 1


if __name__ == "__main__":
    sys.exit(main())
