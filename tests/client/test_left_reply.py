"""client/fleet_poll.py: a reply Flower's SuperNode loop left behind is pushed.

Flower's own ``_push_messages`` and ``_pull_and_store_message`` run here, in the order
its loop (``start_client_internal``) calls them, on Flower's own node state and object
store. ``send`` stands for the Fleet connection: it answers as the SuperLink answers a
reply for a finished run (``RunNotRunningException``) and records what went out.

The case (fresh-clone CI of 5b254de, node log "Run ID ... is not in `RUNNING` status.
Ignoring reply message", then the next run's handshake served and never sent): the node
held a reply to a message of the run a coordinator restart ended; it pulled the next
run's first message; Flower's push found the stale reply, pushed it and returned; the
executor's reply to the new message then stayed in the node's state.
"""

from __future__ import annotations

import time
import types
from typing import Any

import flwr.supernode.start_client_internal as flower_module
import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.app.metadata import Metadata
from flwr.supercore.object_store import ObjectStore, ObjectStoreFactory
from flwr.supercore.run import RunNotRunningException
from flwr.supernode.nodestate import NodeState, NodeStateFactory

from fedcollab.client import run_ended
from fedcollab.client.fleet_poll import PullClock, install, reply_waiting

ENDED_RUN = 93951092262861615
NEW_RUN = 93951092262861616
NODE = 10773953620251404553


class Link:
    """What the node sent; a reply of the ended run is refused as the SuperLink does."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []

    def send(self, message: Message, _tree: object, _runtime: float) -> tuple[set[str], str]:
        self.sent.append((message.metadata.run_id, message.metadata.reply_to_message_id))
        if message.metadata.run_id == ENDED_RUN:
            raise RunNotRunningException
        return set(), "session"

    def push_object(self, *_args: object) -> None:
        raise AssertionError("no object is asked for")


def _instruction(run_id: int, step: str) -> Message:
    metadata = Metadata(
        run_id=run_id, message_id="", src_node_id=1, dst_node_id=NODE, reply_to_message_id="",
        group_id=step, created_at=time.time(), ttl=300.0, message_type="query",
    )  # fmt: skip
    message = Message(RecordDict({"config": ConfigRecord({"step": step})}), metadata=metadata)
    message.metadata.__dict__["_message_id"] = message.object_id
    return message


def _reply(to: Message) -> Message:
    return Message(RecordDict({"answer": ConfigRecord({"ok": True})}), reply_to=to)


def _node() -> tuple[NodeState, ObjectStore]:
    stores = ObjectStoreFactory()
    state = NodeStateFactory(stores).state()
    state.set_node_id(NODE)
    return state, stores.store()


def _store(message: Message, state: NodeState, store: ObjectStore) -> None:
    flower_module._insert_message(message, state, store)


def _loop_step(module: Any, state: NodeState, store: ObjectStore, link: Link) -> None:
    """One turn of Flower's loop after it pulled a message: push, then pull (nothing)."""
    module._push_messages(
        state=state, object_store=store, send=link.send, push_object=link.push_object
    )
    got = module._pull_and_store_message(
        state=state, object_store=store, node_config={}, receive=lambda: None,
        get_run=lambda _r: pytest.fail("no run is fetched"),
        get_fab=lambda _h, _r: pytest.fail("no FAB is fetched"),
        pull_object=lambda _r, _o: pytest.fail("no object is pulled"),
        confirm_message_received=lambda _r, _m: pytest.fail("nothing is confirmed"),
        trusted_entities=None,
    )  # fmt: skip
    assert got is None


def _stale_then_new(module: Any) -> tuple[NodeState, Link, Message]:
    """The node holds the executor's late reply to the ended run's message (the message
    itself is gone), pulls the new run's first message, and its executor takes it; the
    executor stores its reply after Flower's push already returned."""
    state, store = _node()
    link = Link()
    old = _instruction(ENDED_RUN, "round-2")
    _store(_reply(old), state, store)
    new = _instruction(NEW_RUN, "handshake")
    _store(new, state, store)
    assert [m.metadata.message_id for m in state.get_messages_legacy(is_reply=False)] == [
        new.metadata.message_id
    ]  # the executor took it (Flower's runtime API marks it so)

    real_push = module._push_messages

    def push_then_executor_replies(**kwargs: Any) -> None:
        real_push(**kwargs)
        if not any(run == NEW_RUN for run, _ in link.sent):
            _store(_reply(new), state, store)

    module._push_messages = push_then_executor_replies
    try:
        _loop_step(module, state, store, link)
    finally:
        module._push_messages = real_push
    return state, link, new


def _stand_in() -> types.ModuleType:
    module = types.ModuleType("stand_in")
    module.time = time  # type: ignore[attr-defined]
    module._push_messages = flower_module._push_messages  # type: ignore[attr-defined]
    module._pull_and_store_message = flower_module._pull_and_store_message  # type: ignore[attr-defined]
    return module


def test_flower_leaves_the_new_reply_behind_after_pushing_a_stale_one() -> None:
    """The cause (Flower 1.41). If this fails, Flower pushes every reply on its own now
    and the pre-pull push in fleet_poll.install can go."""
    state, link, new = _stale_then_new(_stand_in())
    assert link.sent == [(ENDED_RUN, link.sent[0][1])]  # the stale one only, refused
    assert reply_waiting(state)
    (left,) = state.get_messages_legacy(is_reply=True)
    assert left.metadata.reply_to_message_id == new.metadata.message_id


@pytest.mark.parametrize("with_run_ended", [False, True], ids=["alone", "as-main-installs"])
def test_installed_the_new_reply_is_pushed_before_the_next_pull(with_run_ended: bool) -> None:
    """As :func:`fleet_poll.main` installs it (run_ended wraps the pull on top, passing
    its arguments positionally): the reply to the new run's message goes out at the
    loop's next pull, without another message arriving."""
    module = _stand_in()
    assert install(module, PullClock(on_message=None))
    if with_run_ended:
        assert run_ended.install(module)
    state, link, new = _stale_then_new(module)
    assert [run for run, _ in link.sent] == [ENDED_RUN, NEW_RUN]
    assert link.sent[1][1] == new.metadata.message_id
    assert not reply_waiting(state) and state.get_messages_legacy() == []


def test_nothing_is_pushed_or_awaited_when_no_reply_waits() -> None:
    """A pull with no reply in the state pushes nothing (and never waits for one: a
    message whose reply never comes does not stall the loop)."""
    module = _stand_in()
    assert install(module, PullClock(on_message=None))
    state, store = _node()
    link = Link()
    first = _instruction(NEW_RUN, "round-1")
    _store(first, state, store)
    _store(_reply(first), state, store)
    _loop_step(module, state, store, link)  # Flower's push sends the one reply
    assert [run for run, _ in link.sent] == [NEW_RUN]
    waiting = _instruction(NEW_RUN, "round-2")  # pulled, its executor still at work
    _store(waiting, state, store)
    state.get_messages_legacy(is_reply=False)
    assert not reply_waiting(state)
    module._pull_and_store_message(  # returns at once: nothing pushed, nothing awaited
        state=state, object_store=store, node_config={}, receive=lambda: None,
        get_run=None, get_fab=None, pull_object=None, confirm_message_received=None,
        trusted_entities=None,
    )  # fmt: skip
    assert [run for run, _ in link.sent] == [NEW_RUN]


def test_a_state_of_another_shape_is_never_read() -> None:
    assert not reply_waiting(None)
    assert not reply_waiting(types.SimpleNamespace(msg_store=[], lock_msg_store=None))
