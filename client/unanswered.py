"""A message the node's executor will never answer gets an error reply at the SuperNode.

Flower 1.41's SuperNode loop, after every message it pulls, waits for a reply without
a bound (``flwr/supernode/start_client_internal.py``, ``_push_messages``: ``while not
replies: time.sleep(0.5)``) and pulls nothing meanwhile. Flower's own ClientApp
process pushes an error reply when its app raises (``flwr/supernode/runtime/
run_clientapp.py``), and the node state stores one when a task's token expires. But a
task that its executor *finishes* as failed without a reply gets none
(``InMemoryNodeState.finish_task`` replies only for AgentApp tasks), and its token is
revoked, so it never expires either: the node then waited forever and answered
nothing more until restarted. Our executor (``client/node_runtime.py``) ends a task
that way when it cannot pull the task's input (its object pulls are bounded) or
cannot push its reply; a ClientApp that raised (e.g. a message type no handler is
registered for: Flower's ``ClientApp`` raises ``ValueError``) now gets an error reply
from the executor itself.

:func:`answer_unanswered` stores an error reply (``CLIENT_APP_RAISED_EXCEPTION``, a
fixed reason that names no data) for every message in the node's state that has no
reply and no task of its run still pending, starting or running. The executor stores a
reply before it finishes the task (``push_message`` then ``push_task_output``), so a
finished task without a stored reply has none coming. The launcher
(:mod:`fedcollab.client.fleet_poll`) calls it at each of Flower's local waits while the
loop waits for a reply; Flower's loop then pushes that error reply and goes on, and
the coordinator counts the partner out of that step as for any error reply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["REASON", "answer_unanswered", "unanswered"]

#: The error reply's reason: fixed, so that it carries nothing of the partner's data.
REASON = "the partner's node ended this message's task without a reply (see its node log)"


def unanswered(state: Any) -> list[Any]:
    """The messages in Flower's in-memory node ``state`` that no task will answer (see
    module notes); [] if the state is not Flower 1.41's ``InMemoryNodeState``."""
    from flwr.common.constant import Status

    store = getattr(state, "msg_store", None)
    lock = getattr(state, "lock_msg_store", None)
    if not isinstance(store, dict) or lock is None:
        return []
    with lock:
        entries = [entry.message for entry in store.values()]
    replied = {m.metadata.reply_to_message_id for m in entries if m.metadata.reply_to_message_id}
    waiting = [
        m
        for m in entries
        if not m.metadata.reply_to_message_id and m.metadata.message_id not in replied
    ]
    live = (Status.PENDING, Status.STARTING, Status.RUNNING)
    out = []
    for message in waiting:
        if state.get_tasks(run_ids=[message.metadata.run_id], statuses=live):
            continue
        # Its task is finished: a reply the executor pushed was stored before that
        # (push_message, then push_task_output), so this second look sees it.
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
        insert(reply, state, object_store)
    return len(messages)
