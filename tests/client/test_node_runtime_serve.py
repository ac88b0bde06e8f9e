"""The partner executor serves a task through Flower's own SuperNode runtime API.

Flower's runtime app (``flwr.supernode.main.create_app``) runs here under uvicorn with
the node's own runtime TLS, as ``flower-supernode`` serves it, on Flower's own node
state; :func:`node_runtime._serve_task` takes the task with its token, as the
executor does: over the runtime API (HTTPS, Flower's app or fedcollab's fast path),
or in the SuperNode's process with :class:`LocalRuntimeClient` (client/runtime_local.py,
the default). What the SuperNode's loop would push is then read from that state.
"""

from __future__ import annotations

import io
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flwr.supernode.start_client_internal as flower_module
import pytest
import tomli_w
import uvicorn
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.metadata import Metadata
from flwr.common.constant import ErrorCode, Status, SubStatus
from flwr.supercore.constant import TaskType
from flwr.supercore.fab import Fab
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supernode.main import create_app
from flwr.supernode.nodestate import NodeState as FlowerNodeState
from flwr.supernode.nodestate import NodeStateFactory

from fedcollab.client.node_runtime import _for_task, _serve_task, _task_client
from fedcollab.client.runtime_fast import FastRuntimeApp
from fedcollab.client.runtime_folder import NodeState, runtime_tls
from fedcollab.client.runtime_local import LocalRuntimeClient, TaskTokenRevoked
from fedcollab.common.job_fab import JOB_FAB_MODULE, JOB_FAB_MODULE_TEXT
from fedcollab.coordinator.submit import _APP_PYPROJECT

RUN = 93951092262861618
NODE = 10773953620251404553


def _job_fab() -> bytes:
    """The FAB a fedcollab coordinator submits (the executor serves only that one)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("pyproject.toml", tomli_w.dumps(_APP_PYPROJECT))
        zf.writestr(JOB_FAB_MODULE, JOB_FAB_MODULE_TEXT)
        zf.writestr(".info/CONTENT", "pyproject.toml,abc,1")
    return buf.getvalue()


class _SuperNode:
    """Flower's runtime API over the node's TLS, on Flower's in-memory node state."""

    def __init__(self, root: Path, *, fast: bool = False, local: bool = False) -> None:
        self.dir = NodeState(root)
        runtime_tls(self.dir)
        self.factory = NodeStateFactory(ObjectStoreFactory())
        self.state: FlowerNodeState = self.factory.state()
        self.state.set_node_id(NODE)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        app = create_app(state_factory=self.factory, superexec_auth_secret=b"s" * 32)
        self.flower_app = app
        self.local = local
        #: The calls the fast path answered (the others went to Flower's app).
        self.fast_calls: list[str] = []
        self.fast = fast
        if fast:
            app = FastRuntimeApp(app)
            answer = app.fast.answer

            async def counted(scope: Any, body: bytes, state: Any = None) -> Any:
                reply = await answer(scope, body, state)
                if reply is not None:
                    self.fast_calls.append(str(scope["path"]).rsplit("/", 1)[-1])
                return reply

            app.fast.answer = counted  # type: ignore[method-assign]
        self.server = uvicorn.Server(
            uvicorn.Config(
                app=app,
                host="127.0.0.1",
                port=self.port,
                ssl_certfile=str(self.dir.tls_cert),
                ssl_keyfile=str(self.dir.tls_key),
                log_level="warning",
                ws="none",
                workers=1,
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:  # uvicorn's own start flag, set once it listens
            assert self.thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.05)

    def run_known(self) -> None:
        """The run, its FAB and its context, as Flower's loop stores them at a message."""
        fab_hash = self.state.store_fab(Fab(hash_str="", content=_job_fab(), verifications={}))
        run = Run.create_empty(RUN)
        run.fab_hash = fab_hash
        self.state.store_run(run)
        context = Context(run_id=RUN, node_id=NODE, node_config={}, state=RecordDict(),
                          run_config={}, series_id=run.series_id)  # fmt: skip
        self.state.set_run_series_context(run.series_id, context)

    def deliver(self, action: str) -> tuple[Message, str]:
        """A message stored with its task, and the task's token (the executor's claim)."""
        task_id = self.state.create_task(task_type=TaskType.CLIENT_APP, run_id=RUN,
                                         fab_hash="")  # fmt: skip
        assert task_id is not None
        metadata = Metadata(
            run_id=RUN, message_id="", src_node_id=1, dst_node_id=NODE,
            reply_to_message_id="", group_id="round-1", created_at=time.time(), ttl=300.0,
            message_type=action,
        )  # fmt: skip
        message = Message(RecordDict({"c": ConfigRecord({"x": 1})}), metadata=metadata)
        message.metadata.__dict__["_message_id"] = message.object_id
        flower_module._insert_message(message, self.state, self.state.object_store)
        token = self.state.claim_task(task_id)
        assert token
        return message, token

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(params=["flower", "fast", "local"])
def supernode(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[_SuperNode]:
    """Flower's app as ``flower-supernode`` builds it, with fedcollab's fast path
    (client/runtime_fast.py), and the executor in the SuperNode's process
    (client/runtime_local.py: no HTTP at all)."""
    node = _SuperNode(tmp_path, fast=request.param == "fast", local=request.param == "local")
    try:
        yield node
    finally:
        node.close()


def serve(supernode: _SuperNode, token: str) -> None:
    """The executor's serving of the task ``token``, as the node runs it."""
    if supernode.local:
        _serve_task(LocalRuntimeClient(supernode.flower_app).for_task(token), {})
        return
    client = _task_client(f"127.0.0.1:{supernode.port}", supernode.dir.tls_ca.read_bytes())
    try:
        _serve_task(_for_task(client, token), {})
    finally:
        client.close()


def test_a_message_type_without_a_handler_is_answered_with_an_error(
    supernode: _SuperNode,
) -> None:
    """Before: the ClientApp raised, the executor finished the task as failed with no
    reply, and the SuperNode's loop waited for one forever (client/unanswered.py)."""
    supernode.run_known()
    message, token = supernode.deliver("query.nosuch")
    serve(supernode, token)
    (reply,) = supernode.state.get_messages_legacy(is_reply=True)
    assert reply.metadata.reply_to_message_id == message.metadata.message_id
    assert reply.has_error() and reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert reply.error.reason == "the partner's ClientApp raised ValueError"
    (task,) = supernode.state.get_tasks(run_ids=[RUN])
    assert task.status.status == Status.FINISHED
    assert task.status.sub_status == SubStatus.FAILED
    if supernode.fast:  # the fast path served the task's calls, not Flower's app
        assert {
            "pull-task-input",
            "pull-messages",
            "push-messages",
            "push-object",
            "push-task-output",
        } <= set(supernode.fast_calls), supernode.fast_calls


def test_a_finished_task_s_calls_act_on_nothing(tmp_path: Path) -> None:
    """In the SuperNode's process as over HTTP (a 401): a call under the token of a task
    the SuperNode finished fails and changes nothing, and one without a token too."""
    from flwr.proto.message_pb2 import PullObjectRequest
    from flwr.proto.runtime_pb2 import AcquireTaskRequest, PullTaskInputRequest

    node = _SuperNode(tmp_path, local=True)
    try:
        node.run_known()
        _, token = node.deliver("query.nosuch")
        local = LocalRuntimeClient(node.flower_app)
        serve(node, token)  # the task ends: its token is revoked
        (task,) = node.state.get_tasks(run_ids=[RUN])
        assert task.status.status == Status.FINISHED
        for client in (local.for_task(token), local.for_task("f" * 64), local):
            with pytest.raises(TaskTokenRevoked):
                client.PullTaskInput(PullTaskInputRequest())
            with pytest.raises(TaskTokenRevoked):
                client.PullObject(PullObjectRequest(run_id=RUN, object_id="ab" * 32))
        assert not local.AcquireTask(
            AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
        ).HasField("task")  # nothing left to take
    finally:
        node.close()
