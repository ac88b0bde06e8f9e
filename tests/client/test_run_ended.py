"""client/run_ended.py: a message whose run ends while the node receives it is dropped.

Flower's own ``_pull_and_store_message`` runs here on Flower's own node state and
object store; the object pull goes through Flower's own HTTP retry invoker to a real
HTTP server that answers 403, as the SuperLink answers a pull for a finished run
("Run is finished.", seen in the coordinator's log after a coordinator restart).
"""

from __future__ import annotations

import http.server
import inspect
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import flwr.supernode.start_client_internal as flower_module
import httpx
import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.app.metadata import Metadata
from flwr.common.constant import Status, SubStatus
from flwr.supercore.fab import Fab
from flwr.supercore.inflatable.inflatable_object import get_object_tree
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.run import Run
from flwr.supernode.nodestate import NodeState, NodeStateFactory

from fedcollab.client import run_ended

RUN = 93951092262861615
NODE = 10773953620251404553


class _FinishedRunFleet:
    """Answers every call as Flower's SuperLink answers one about a finished run."""

    def __init__(self) -> None:
        self.calls = 0
        # Flower pulls a message's objects on several threads and returns at the first
        # failure without waiting for the others: the server outlives every pull.
        self._in_flight = 0
        self._idle = threading.Condition()

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.calls += 1
                body = b'{"detail": "Run is finished."}'
                self.send_response(403)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/fleet/pull-object"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def pull_object(self, run_id: int, object_id: str) -> bytes:
        """As the SuperNode's Fleet connection pulls an object: through Flower's invoker."""

        def call() -> bytes:
            with httpx.Client() as client:
                response = client.post(self.url, json={"run_id": run_id, "object_id": object_id})
                response.raise_for_status()
                return response.content

        with self._idle:
            self._in_flight += 1
        try:
            result: bytes = make_simple_http_retry_invoker().invoke(call)
            return result
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def close(self) -> None:
        with self._idle:
            assert self._idle.wait_for(lambda: self._in_flight == 0, timeout=60.0)
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fleet() -> Iterator[_FinishedRunFleet]:
    server = _FinishedRunFleet()
    try:
        yield server
    finally:
        server.close()


def _node_knowing_the_run() -> tuple[NodeState, ObjectStoreFactory]:
    """A node that served earlier messages of the run (run and FAB in its state)."""
    stores = ObjectStoreFactory()
    state = NodeStateFactory(stores).state()
    state.set_node_id(NODE)
    fab = Fab(hash_str="", content=b"fab", verifications={})
    fab_hash = state.store_fab(fab)
    run = Run.create_empty(RUN)
    run.fab_hash = fab_hash
    state.store_run(run)
    return state, stores


def _round_message() -> tuple[Message, object]:
    """The killed run's next-round message, as the node receives it (metadata as the
    SuperLink set it; the content is what the object pull would bring)."""
    metadata = Metadata(
        run_id=RUN, message_id="", src_node_id=1, dst_node_id=NODE, reply_to_message_id="",
        group_id="round-2", created_at=time.time(), ttl=300.0, message_type="train",
    )  # fmt: skip
    message = Message(RecordDict({"config": ConfigRecord({"round": 2})}), metadata=metadata)
    message.metadata.__dict__["_message_id"] = message.object_id
    return message, get_object_tree(message)


def _receive(fn: Callable[..., Any], fleet: _FinishedRunFleet) -> tuple[NodeState, str]:
    state, stores = _node_knowing_the_run()
    message, tree = _round_message()
    received: list[tuple[Message, object]] = [(message, tree)]

    def confirm(_run_id: int, _message_id: str) -> None:
        raise AssertionError("a message whose objects were not pulled was confirmed")

    out = fn(
        state=state,
        object_store=stores.store(),
        node_config={},
        receive=lambda: received.pop() if received else None,
        get_run=lambda _run_id: pytest.fail("the run is known to the node"),
        get_fab=lambda _hash, _run_id: pytest.fail("the FAB is known to the node"),
        pull_object=fleet.pull_object,
        confirm_message_received=confirm,
        trusted_entities=None,
    )
    assert out is None and fleet.calls >= 1
    return state, message.metadata.message_id


def test_flower_leaves_a_pending_task_whose_objects_never_come(fleet: _FinishedRunFleet) -> None:
    """The cause (Flower 1.41): the 403 becomes RunNotRunningException, a BaseException
    that skips the clean-up; the task stays pending (the executor takes it first) and
    the message's objects stay preregistered and empty. If this fails, Flower cleans up
    on its own now and client/run_ended.py can go."""
    state, message_id = _receive(flower_module._pull_and_store_message, fleet)
    pending = state.get_tasks(statuses=[Status.PENDING])
    assert [t.run_id for t in pending] == [RUN]
    assert [m.metadata.message_id for m in state.get_messages_legacy(run_ids=[RUN])] == [message_id]
    assert state.object_store.get(message_id) == b""  # found, never available


def test_installed_the_message_is_dropped_and_its_task_failed(fleet: _FinishedRunFleet) -> None:
    module = types.ModuleType("stand_in")
    module._pull_and_store_message = flower_module._pull_and_store_message  # type: ignore[attr-defined]
    assert run_ended.install(module)
    state, message_id = _receive(module._pull_and_store_message, fleet)  # type: ignore[attr-defined]
    assert state.get_tasks(statuses=[Status.PENDING]) == []
    (task,) = state.get_tasks(run_ids=[RUN])
    assert task.status.status == Status.FINISHED and task.status.sub_status == SubStatus.FAILED
    assert "ended at the coordinator" in task.status.details
    assert state.get_messages_legacy(run_ids=[RUN]) == []
    assert state.object_store.get(message_id) is None and len(state.object_store) == 0


def test_other_failures_and_successes_pass_through() -> None:
    """Only RunNotRunningException is converted; the wrapped callables return as before."""
    seen: dict[str, object] = {}

    def fake(*, pull_object: object, confirm_message_received: object, **rest: object) -> str:
        assert callable(pull_object) and callable(confirm_message_received)
        seen["pulled"] = pull_object(RUN, "a" * 64)
        with pytest.raises(KeyError):
            confirm_message_received(RUN, "b" * 64)
        return "ok"

    def pull(_run_id: int, _object_id: str) -> bytes:
        return b"content"

    def confirm(_run_id: int, _message_id: str) -> None:
        raise KeyError("other")

    module = types.ModuleType("stand_in")
    module._pull_and_store_message = fake  # type: ignore[attr-defined]
    assert run_ended.install(module)
    assert run_ended.install(module)  # once only
    call = module._pull_and_store_message  # type: ignore[attr-defined]
    assert call(pull_object=pull, confirm_message_received=confirm, state=None) == "ok"
    assert seen["pulled"] == b"content"


def test_install_fits_the_installed_flower_and_refuses_a_changed_one() -> None:
    """Flower 1.41 (pinned) passes both callables by these names; if an upgrade renames
    them or the function, install refuses (the launcher then says so on stderr)."""
    params = inspect.signature(flower_module._pull_and_store_message).parameters
    assert {"pull_object", "confirm_message_received"} <= set(params)
    assert "_pull_and_store_message(" in inspect.getsource(flower_module.start_client_internal)
    assert not run_ended.install(types.ModuleType("changed"))
    changed = types.ModuleType("changed")
    changed._pull_and_store_message = lambda *, pull_object: None  # type: ignore[attr-defined]
    assert not run_ended.install(changed)
