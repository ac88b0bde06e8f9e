"""The partner executor: bounded task pulls, revoked tokens, one connection, warm-up."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_task_message_pull_is_bounded() -> None:
    """The executor serves one task at a time: Flower's pull of a task's message objects
    (default: up to 7200 s) is bounded, once, so a message whose objects never arrive
    fails its task instead of blocking the node for every later job."""
    import functools

    from flwr.supernode.runtime import run_clientapp

    from fedcollab.client import node_runtime

    node_runtime._bound_object_pulls()
    node_runtime._bound_object_pulls()
    pull = getattr(run_clientapp, "pull_and_inflate_object_from_tree")  # noqa: B009
    assert isinstance(pull, functools.partial)
    assert pull.keywords["max_time"] == node_runtime._PULL_MAX_S
    # A task can be acquired before its SuperNode has all of its objects: the first
    # retry comes soon (Flower: after 1 s).
    assert pull.keywords["initial_backoff"] == node_runtime._PULL_BACKOFF_S <= 0.1
    assert node_runtime._PULL_MAX_S <= 300.0
    assert not isinstance(pull.func, functools.partial)


def test_a_revoked_task_token_fails_the_task_not_the_node() -> None:
    """The SuperNode revokes a task's token when it finishes the task itself (a message
    whose run ended, client/run_ended.py); the executor's next runtime call gets 401.
    Flower's invoker then SIGINTs its own process (the node exited, seen in a probe run);
    the executor's invoker gives up on that call instead, so only the task fails."""
    import http.server
    import threading

    import httpx

    from fedcollab.client.node_runtime import _task_retry_invoker

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/runtime/pull-object"

    def call() -> None:
        with httpx.Client() as client:
            client.post(url).raise_for_status()

    try:
        with pytest.raises(httpx.HTTPStatusError) as err:
            _task_retry_invoker().invoke(call)
        assert err.value.response.status_code == 401
    finally:
        server.shutdown()
        server.server_close()


def test_tasks_share_one_connection_and_each_call_carries_its_task_token(tmp_path: Path) -> None:
    """The executor keeps one runtime connection for every task (not one TLS connection
    per message); each task's client fixes its own token, so a request of a finished task
    still in flight (a leftover object-pull thread, a retry) carries that task's revoked
    token, never the next task's (red-team finding against a token swapped between
    tasks). The first heartbeat of a task, which Flower sends at once, is skipped (the
    claim keeps the task alive for 30 s; the next beat comes within ~22.5 s)."""
    import http.server
    import ssl
    import threading

    from flwr.proto.runtime_pb2 import PullTaskInputRequest, SendTaskHeartbeatResponse

    from fedcollab.client.node_runtime import _for_task, _later_heartbeats, _task_client
    from fedcollab.client.runtime_folder import NodeState, runtime_tls

    state = NodeState(tmp_path)
    runtime_tls(state)  # the node-local runtime CA and certificate, as at a node's start
    seen: list[tuple[str, str | None, int]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen.append((self.path, self.headers.get("flwr-task-token"), self.client_address[1]))
            body = b""
            if self.path.endswith("/send-task-heartbeat"):
                body = SendTaskHeartbeatResponse(success=True).SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/protobuf")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(state.tls_cert, state.tls_key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    shared = _task_client(f"127.0.0.1:{server.server_address[1]}", state.tls_ca.read_bytes())
    try:
        shared.PullTaskInput(PullTaskInputRequest())  # outside any task: no token at all
        first = _for_task(shared, "task-1")
        first.PullTaskInput(PullTaskInputRequest())
        beat = _later_heartbeats(first)
        assert beat() is True  # skipped: nothing sent
        assert beat() is True
        second = _for_task(shared, "task-2")
        second.PullTaskInput(PullTaskInputRequest())
        first.PullTaskInput(PullTaskInputRequest())  # task 1's leftover call, after task 2 began
        assert [(path.rsplit("/", 1)[1], tok) for path, tok, _ in seen] == [
            ("pull-task-input", None),
            ("pull-task-input", "task-1"),
            ("send-task-heartbeat", "task-1"),
            ("pull-task-input", "task-2"),
            ("pull-task-input", "task-1"),
        ]
        assert len({port for *_, port in seen}) == 1  # one connection for every task
    finally:
        shared.close()
        server.shutdown()
        server.server_close()


def test_the_start_up_warm_up_imports_the_accountants_library() -> None:
    """privacy/accounting.py imports dp_accounting where it computes (so the command
    line starts without it); a node pays that import at start, not in a DP request."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from fedcollab.client.node_runtime import warm_up\n"
        "assert 'dp_accounting' not in sys.modules\n"
        "warm_up()\n"
        "assert 'dp_accounting' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_the_start_up_warm_up_trains_without_partner_data() -> None:
    """node_runtime.serve runs this before its first task: it must keep working with the
    training code it warms (a broken warm-up would stop every node at start)."""
    from fedcollab.client.node_runtime import warm_up

    assert warm_up() >= 0.0
