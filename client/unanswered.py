"""A message the node's executor will never answer gets an error reply at the SuperNode.

Flower 1.41's SuperNode loop, after every message it pulls, waits for a reply without
a bound (``flwr/supernode/start_client_internal.py``, ``_push_messages``: ``while not
replies: time.sleep(0.5)``), then for each object of the reply to be stored (``while
object_store.get(id) == b"": time.sleep(0.5)``), and pulls nothing meanwhile. Flower's
own ClientApp process pushes an error reply when its app raises, and the node state
stores one when a task's token expires. But nothing answers:

* a message whose task its executor *finished* as failed without a reply
  (``InMemoryNodeState.finish_task`` replies only for AgentApp tasks, and the token is
  revoked, so it never expires either). Our executor (``client/node_runtime.py``)
  ends a task that way when it cannot pull the task's input or push its reply; a
  ClientApp that raised gets an error reply from the executor itself;
* a message of a run whose task is an AgentApp task: the executor takes ClientApp
  tasks only (a partner runs only its installed ClientApp), so that task stays pending;
* a reply whose objects never come (its executor stored the reply, then its object
  push failed and it finished the task).

The loop then waited forever and answered nothing more until the node was restarted.

:func:`check` handles all three. It is called at the SuperNode loop's local waits while
it pushes (by :mod:`fedcollab.client.fleet_poll`, at the first wait and after each
push of the executor, not on a timer). It stores an error reply
(``CLIENT_APP_RAISED_EXCEPTION``, a fixed reason that names no data) for every message
that has no reply and no ClientApp task of its run still pending, starting or running
(the executor stores a reply before it finishes the task, so a finished task without
a stored reply has none coming). And it raises :class:`ReplyIncomplete` while the loop
waits for the objects of replies that no live task will complete: Flower's push
catches it (``except Exception``: "Failed to send message"), deletes that reply and its
message, and goes on. The coordinator counts the partner out of that step, as for any
error reply or a reply that never came.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["REASON", "ReplyIncomplete", "answer_unanswered", "check", "unanswered"]

#: The error reply's reason: fixed, so that it carries nothing of the partner's data.
REASON = "the partner's node ended this message's task without a reply (see its node log)"


class ReplyIncomplete(Exception):
    """The reply being pushed lacks objects that no live task will store."""


def _live_runs(state: Any) -> set[int]:
    """Runs with a ClientApp task the executor may still answer (one scan of the tasks)."""
    from flwr.common.constant import Status
    from flwr.supercore.constant import TaskType

    live = (Status.PENDING, Status.STARTING, Status.RUNNING)
    return {t.run_id for t in state.get_tasks(statuses=live) if t.type == TaskType.CLIENT_APP}


def _entries(state: Any) -> tuple[dict[str, Any], Any] | None:
    store = getattr(state, "msg_store", None)
    lock = getattr(state, "lock_msg_store", None)
    if not isinstance(store, dict) or lock is None:
        return None
    return store, lock


def unanswered(state: Any) -> list[Any]:
    """The messages in Flower's in-memory node ``state`` that no task will answer (see
    module notes); [] if the state is not Flower 1.41's ``InMemoryNodeState``."""
    found = _entries(state)
    if found is None:
        return []
    store, lock = found
    with lock:
        entries = [entry.message for entry in store.values()]
    replied = {m.metadata.reply_to_message_id for m in entries if m.metadata.reply_to_message_id}
    waiting = [
        m
        for m in entries
        if not m.metadata.reply_to_message_id and m.metadata.message_id not in replied
    ]
    if not waiting:
        return []
    live = _live_runs(state)
    out = []
    for message in waiting:
        if message.metadata.run_id in live:
            continue
        # No live task: a reply the executor pushed was stored before it finished its
        # task (push_message, then push_task_output), so this second look sees it.
        message_id = message.metadata.message_id
        with lock:
            gone = message_id not in store or any(
                entry.message.metadata.reply_to_message_id == message_id for entry in store.values()
            )
        if not gone:
            out.append(message)
    return out


def answer_unanswered(state: Any, object_store: Any, insert: Callable[..., None]) -> int:
    """Store an error reply for each :func:`unanswered` message with ``insert`` (Flower's
    ``_insert_message``, as Flower stores its own generated replies); how many."""
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.common.constant import ErrorCode

    messages = unanswered(state)
    for message in messages:
        reply = Message(
            Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=REASON), reply_to=message
        )
        state.record_message_processing_end(message.metadata.message_id)
        insert(reply, state, object_store)
    return len(messages)


def incomplete(state: Any, object_store: Any) -> tuple[list[str], bool]:
    """The replies the loop has taken (retrieved) whose objects are not all stored, and
    whether every one of them is of a run with no live task (none will complete)."""
    found = _entries(state)
    if found is None:
        return [], False
    store, lock = found
    with lock:
        taken = [e.message for e in store.values() if e.is_retrieved]
    taken = [m for m in taken if m.metadata.reply_to_message_id]
    missing = []
    for message in taken:
        tree = object_store.get_object_tree(message.metadata.message_id)
        from flwr.supercore.inflatable.inflatable_object import iterate_object_tree

        if any(object_store.get(t.object_id) == b"" for t in iterate_object_tree(tree)):
            missing.append(message)
    if not missing:
        return [], False
    live = _live_runs(state)
    dead = all(m.metadata.run_id not in live for m in missing)
    return [m.metadata.message_id for m in missing], dead


def check(state: Any, object_store: Any, insert: Callable[..., None]) -> int:
    """What the SuperNode runs at a local wait while it pushes (see module notes): the
    number of error replies stored; raises :class:`ReplyIncomplete` when every reply
    the loop waits on lacks objects that no live task will store."""
    answered = answer_unanswered(state, object_store, insert)
    missing, dead = incomplete(state, object_store)
    if missing and dead:
        raise ReplyIncomplete(
            f"reply {', '.join(missing)} lacks objects its finished task will never push"
        )
    return answered
