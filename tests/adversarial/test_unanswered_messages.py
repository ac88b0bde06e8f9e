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
from flwr.app.metadata import Metadata
from flwr.common.constant import ErrorCode, Status, SubStatus
from flwr.supercore.constant import TaskType
from flwr.supercore.object_store import ObjectStore, ObjectStoreFactory
from flwr.supernode.nodestate import NodeState, NodeStateFactory

from fedcollab.client import unanswered
from fedcollab.client.client_app import app
from fedcollab.client.fleet_poll import PullClock, install
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
    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, message: Message, _tree: object, _runtime: float) -> tuple[set[str], str]:
        self.sent.append(message)
        return set(), "session"

    def push_object(self, *_args: object) -> None:
        raise AssertionError("no object is asked for")


def _node_with_a_task() -> tuple[NodeState, ObjectStore, Message, int]:
    """A node that pulled a message and created its task, as Flower's loop does."""
    stores = ObjectStoreFactory()
    state = NodeStateFactory(stores).state()
    state.set_node_id(NODE)
    store = stores.store()
    task_id = state.create_task(task_type=TaskType.CLIENT_APP, run_id=RUN, fab_hash="")
    assert task_id is not None
    message = _message("train.fedavg")
    flower_module._insert_message(message, state, store)
    return state, store, message, task_id


def _push_in_thread(
    module: Any, state: NodeState, store: ObjectStore, link: _Link
) -> threading.Thread:
    kwargs = {"state": state, "object_store": store, "send": link.send,
              "push_object": link.push_object}  # fmt: skip
    thread = threading.Thread(target=module._push_messages, kwargs=kwargs, daemon=True)
    thread.start()
    return thread


def _stand_in() -> types.ModuleType:
    module = types.ModuleType("stand_in")
    module.time = time  # type: ignore[attr-defined]
    module._push_messages = flower_module._push_messages  # type: ignore[attr-defined]
    module._insert_message = flower_module._insert_message  # type: ignore[attr-defined]
    return module


def test_a_task_failed_without_a_reply_no_longer_freezes_the_node() -> None:
    """The executor took the message, then failed the task without a reply (its input
    pull timed out): the loop pushes an error reply and returns. On Flower alone the
    push waits forever (checked below with Flower's own module)."""
    module = _stand_in()
    clock = PullClock(on_message=None)
    clock.local_wait_s = 0.05
    assert install(module, clock)
    # Flower's own loop module is patched for its clock too: run its wait on this one.
    original = flower_module.time
    flower_module.time = clock  # type: ignore[attr-defined]
    try:
        state, store, message, task_id = _node_with_a_task()
        assert state.claim_task(task_id) and state.activate_task(task_id)  # the executor's
        state.get_messages_legacy(is_reply=False)  # the executor's pull of the message
        link = _Link()
        pusher = _push_in_thread(module, state, store, link)
        pusher.join(0.5)
        assert pusher.is_alive(), "the loop waits while the task runs"
        assert state.finish_task(task_id, SubStatus.FAILED, "input pull timed out")
        pusher.join(PATIENCE_S)
        assert not pusher.is_alive(), "the loop still waits for a reply that never comes"
    finally:
        flower_module.time = original  # type: ignore[attr-defined]
    (sent,) = link.sent
    assert sent.has_error() and sent.error.reason == unanswered.REASON
    assert sent.metadata.reply_to_message_id == message.metadata.message_id
    assert state.get_messages_legacy() == []  # both deleted, as after any reply


def test_on_flower_alone_the_loop_waits_forever() -> None:
    """The cause (Flower 1.41). If this fails, Flower answers such a message itself and
    client/unanswered.py can go."""
    state, store, _message_, task_id = _node_with_a_task()
    state.get_messages_legacy(is_reply=False)
    assert state.finish_task(task_id, SubStatus.FAILED, "input pull timed out")
    link = _Link()
    pusher = _push_in_thread(flower_module, state, store, link)
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
