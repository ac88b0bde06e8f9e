"""A message the partner's executor will not answer no longer freezes the partner's node.

Found by a white-box review of the SuperNode loop (Flower 1.41): after each pull it waits
for a reply without a bound, and pulls nothing meanwhile. Two ways to leave it waiting:

* the partner's ClientApp raises: Flower's ``ClientApp`` raises ``ValueError`` for a
  message type no handler is registered for (``query.nosuch``, from a hostile or newer
  coordinator), and the executor finished the task as failed without a reply;
* the executor cannot pull the task's input or push its reply, and finishes the task
  as failed.

Flower's own ``_push_messages`` runs here on Flower's own node state, tasks and object
store; ``send`` stands for the Fleet connection and records what went out. The
partner's ClientApp is the real one (``client.client_app.app``).
"""

from __future__ import annotations

import threading
import time
import types
from typing import Any

import flwr.supernode.start_client_internal as flower_module
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message import remove_content_from_message
from flwr.app.metadata import Metadata
from flwr.common.constant import ErrorCode, Status, SubStatus
from flwr.common.serde import message_to_proto
from flwr.proto.runtime_pb2 import PushAppMessagesRequest, PushTaskOutputRequest
from flwr.proto.task_pb2 import Task
from flwr.supercore.constant import TaskType
from flwr.supercore.inflatable.inflatable_object import get_object_tree, iterate_object_tree
from flwr.supercore.object_store import ObjectStore, ObjectStoreFactory
from flwr.supernode.nodestate import NodeState, NodeStateFactory
from flwr.supernode.servicer.runtime import runtime_handlers

from fedcollab.client import unanswered
from fedcollab.client.client_app import app
from fedcollab.client.fleet_poll import PullClock, install, install_local_notice
from fedcollab.client.node_runtime import answer

RUN = 93951092262861617
NODE = 10773953620251404553
#: Long enough for a loaded machine, short against "forever".
PATIENCE_S = 60.0


def _message(action: str, step: str = "round-1") -> Message:
    metadata = Metadata(
        run_id=RUN, message_id="", src_node_id=1, dst_node_id=NODE, reply_to_message_id="",
        group_id=step, created_at=time.time(), ttl=300.0, message_type=action,
    )  # fmt: skip
    message = Message(RecordDict({"config": ConfigRecord({"step": step})}), metadata=metadata)
    message.metadata.__dict__["_message_id"] = message.object_id
    return message


def test_a_message_type_without_a_handler_gets_an_error_reply_from_the_executor() -> None:
    """Before: ``app`` raised, ``_serve_task`` only logged, and no reply was pushed."""
    message = _message("query.nosuch")
    context = Context(run_id=RUN, node_id=NODE, node_config={}, state=RecordDict(),
                      run_config={})  # fmt: skip
    reply, sub_status, details = answer(app, message, context)
    assert reply.has_error() and reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert reply.metadata.reply_to_message_id == message.metadata.message_id
    assert sub_status == SubStatus.FAILED and details == reply.error.reason
    assert reply.error.reason == "the partner's ClientApp raised ValueError"


class _Link:
    """The Fleet connection: records what went out; ``ask`` makes the SuperLink ask
    for every object of a reply (as it does for one it has not seen)."""

    def __init__(self, ask: bool = False) -> None:
        self.sent: list[Message] = []
        self.ask = ask

    def send(self, message: Message, tree: Any, _runtime: float) -> tuple[set[str], str]:
        self.sent.append(message)
        if not self.ask:
            return set(), "session"
        return {t.object_id for t in iterate_object_tree(tree)}, "session"

    def push_object(self, *_args: object) -> None:
        pass


def _node_with_a_task(
    task_type: str = TaskType.CLIENT_APP,
) -> tuple[NodeState, ObjectStore, Message, int]:
    """A node that pulled a message and created its task, as Flower's loop does."""
    stores = ObjectStoreFactory()
    state = NodeStateFactory(stores).state()
    state.set_node_id(NODE)
    store = stores.store()
    task_id = state.create_task(task_type=task_type, run_id=RUN, fab_hash="")
    assert task_id is not None
    message = _message("train.fedavg")
    flower_module._insert_message(message, state, store)
    return state, store, message, task_id


class _Node:
    """Flower's loop module and runtime handlers, patched as the launcher patches them,
    on Flower's node state: the SuperNode's side of one pulled message."""

    def __init__(self, task_type: str = TaskType.CLIENT_APP, ask: bool = False) -> None:
        self.state, self.store, self.message, self.task_id = _node_with_a_task(task_type)
        self.clock = PullClock(on_message=None)
        self.clock.local_wait_s = 0.05
        self.module = types.ModuleType("stand_in")
        self.module.time = time  # type: ignore[attr-defined]
        self.module._push_messages = flower_module._push_messages  # type: ignore[attr-defined]
        self.module._insert_message = flower_module._insert_message  # type: ignore[attr-defined]
        assert install(self.module, self.clock)
        self.handlers = types.ModuleType("handlers")
        for name in ("push_messages", "push_object", "push_task_output"):
            setattr(self.handlers, name, getattr(runtime_handlers, name))
        assert install_local_notice(self.handlers, self.clock)
        self.link = _Link(ask)

    def executor_takes_the_message(self) -> Task:
        token = self.state.claim_task(self.task_id)
        assert token and self.state.activate_task(self.task_id)
        (got,) = self.state.get_messages_legacy(is_reply=False)  # its PullMessages
        assert got.metadata.message_id == self.message.metadata.message_id
        task = self.state.get_task_by_token(token)
        assert task is not None
        return task

    def executor_fails_the_task(self, task: Task) -> None:
        """The executor's ``push_task_output`` (sub-status FAILED), through the runtime
        handler the SuperNode serves it with."""
        request = PushTaskOutputRequest(sub_status=SubStatus.FAILED, details="input pull timed out")
        self.handlers.push_task_output(request, self.state, task)  # type: ignore[attr-defined]

    def push(self) -> threading.Thread:
        """Flower's loop pushing (on this clock: the launcher patches Flower's module)."""
        kwargs = {"state": self.state, "object_store": self.store, "send": self.link.send,
                  "push_object": self.link.push_object}  # fmt: skip

        def run() -> None:
            original = flower_module.time
            flower_module.time = self.clock  # type: ignore[attr-defined]
            try:
                self.module._push_messages(**kwargs)  # type: ignore[attr-defined]
            finally:
                flower_module.time = original  # type: ignore[attr-defined]

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


def test_a_task_failed_without_a_reply_no_longer_freezes_the_node() -> None:
    """The executor took the message, then failed the task without a reply (its input
    pull timed out): the loop pushes an error reply and returns. On Flower alone the
    push waits forever (next test)."""
    node = _Node()
    task = node.executor_takes_the_message()
    pusher = node.push()
    pusher.join(0.5)
    assert pusher.is_alive(), "the loop waits while the task runs"
    node.executor_fails_the_task(task)
    pusher.join(PATIENCE_S)
    assert not pusher.is_alive(), "the loop still waits for a reply that never comes"
    (sent,) = node.link.sent
    assert sent.has_error() and sent.error.reason == unanswered.REASON
    assert sent.metadata.reply_to_message_id == node.message.metadata.message_id
    assert node.state.get_messages_legacy() == []  # both deleted, as after any reply


def test_a_run_whose_task_is_an_agent_app_gets_an_error_reply() -> None:
    """A run typed as an AgentApp (its FAB names an agent app) makes an AgentApp task,
    which the executor never takes (ClientApp tasks only): before, it stayed pending and
    the loop waited forever (red-team finding)."""
    node = _Node(TaskType.AGENT_APP)
    pusher = node.push()
    pusher.join(PATIENCE_S)
    assert not pusher.is_alive(), "the loop waits on a task nobody will take"
    (sent,) = node.link.sent
    assert sent.has_error() and sent.error.reason == unanswered.REASON


def test_a_reply_whose_objects_never_come_is_dropped() -> None:
    """The executor stored its reply (PushMessages), its object push failed, and it
    finished the task: Flower's push waited forever for the objects (red-team finding).
    Now the push of that reply fails ("Failed to send message"), Flower deletes it and
    its message, and the loop goes on."""
    node = _Node(ask=True)
    task = node.executor_takes_the_message()
    reply = Message(RecordDict({"w": ConfigRecord({"a": 1})}), reply_to=node.message)
    reply.metadata.__dict__["_message_id"] = reply.object_id
    request = PushAppMessagesRequest(
        messages_list=[message_to_proto(remove_content_from_message(reply))],
        message_object_trees=[get_object_tree(reply)],
    )
    node.handlers.push_messages(request, node.state, task)  # type: ignore[attr-defined]
    pusher = node.push()
    pusher.join(0.5)
    assert pusher.is_alive(), "the loop waits for the objects while the task runs"
    node.executor_fails_the_task(task)
    pusher.join(PATIENCE_S)
    assert not pusher.is_alive(), "the loop still waits for objects that never come"
    assert [m.metadata.message_id for m in node.link.sent] == [reply.metadata.message_id]
    assert node.state.get_messages_legacy() == []


def test_on_flower_alone_the_loop_waits_forever() -> None:
    """The cause (Flower 1.41). If this fails, Flower answers such a message itself and
    client/unanswered.py can go."""
    state, store, _message_, task_id = _node_with_a_task()
    state.get_messages_legacy(is_reply=False)
    assert state.finish_task(task_id, SubStatus.FAILED, "input pull timed out")
    link = _Link()
    kwargs = {"state": state, "object_store": store, "send": link.send,
              "push_object": link.push_object}  # fmt: skip
    pusher = threading.Thread(target=flower_module._push_messages, kwargs=kwargs, daemon=True)
    pusher.start()
    pusher.join(2.0)  # Flower checks every 0.5 s: four checks
    assert pusher.is_alive() and link.sent == []
    flower_module._insert_message(  # let the thread end: a reply arrives after all
        Message(RecordDict(), reply_to=_message_), state, store
    )
    pusher.join(PATIENCE_S)
    assert not pusher.is_alive()


def test_a_running_task_or_a_stored_reply_is_never_answered_for() -> None:
    state, store, message, task_id = _node_with_a_task()
    assert unanswered.unanswered(state) == []  # pending task
    assert state.claim_task(task_id) and state.activate_task(task_id)  # the executor's
    state.get_messages_legacy(is_reply=False)
    assert state.get_tasks(statuses=[Status.RUNNING])
    assert unanswered.unanswered(state) == []  # running task
    reply = Message(RecordDict(), reply_to=message)
    flower_module._insert_message(reply, state, store)
    assert state.finish_task(task_id, SubStatus.COMPLETED, "")
    assert unanswered.unanswered(state) == []  # the executor's own reply is there
    assert unanswered.answer_unanswered(state, store, flower_module._insert_message) == 0
    assert unanswered.unanswered(None) == []
