"""A grid whose partner dies while uploading its reply (tests/coordinator/test_broadcast.py).

Flower's HTTP grid looks ``pull_objects`` up in its module at call time; so does
:class:`UploadingGrid`, so the coordinator's bound on that pull applies here as there.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Error, Message
from flwr.supercore.inflatable.inflatable_utils import (
    ObjectPullError,
    ObjectUnavailableError,
)
from flwr.supercore.inflatable.inflatable_utils import pull_objects as flower_pull_objects

from fedcollab.common.serde import encode

__all__ = ["UploadingGrid", "flower_pull_objects", "pull_objects"]

#: Looked up at call time (see the module's docstring).
pull_objects = flower_pull_objects


class UploadingGrid:
    """Flower's HTTP grid and SuperLink as far as a pull goes: a pull lists the replies
    stored so far and pulls each one's objects (``pull_objects`` of this module); a
    message past its TTL is answered with an error (code 3) even if its reply is stored.
    Node ``dead`` registered its reply and died before uploading the objects: they stay
    unavailable until the SuperLink gives up after ``gives_up_s`` (its push session)."""

    def __init__(self, *, dead: int, replies_after_s: float, gives_up_s: float) -> None:
        self.dead, self.after, self.gives_up_s = dead, replies_after_s, gives_up_s
        self.sent: dict[str, tuple[Message, float]] = {}

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for i, msg in enumerate(messages):
            msg.metadata.__dict__["_message_id"] = f"m{i}"
            self.sent[f"m{i}"] = (msg, time.monotonic())
            ids.append(f"m{i}")
        return ids

    def _unavailable(self, msg: Message, why: str) -> Message:
        return Message(error=Error(code=3, reason=why), reply_to=msg)

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        out = []
        for msg_id in ids:
            msg, sent_at = self.sent[msg_id]
            if time.monotonic() > sent_at + msg.metadata.ttl:
                out.append(self._unavailable(msg, "Message TTL has expired"))
            elif msg.metadata.dst_node_id == self.dead:

                def never(object_id: str, sent_at: float = sent_at) -> bytes:
                    if time.monotonic() > sent_at + self.gives_up_s:
                        raise ObjectPullError(object_id, "push session expired")
                    raise ObjectUnavailableError(object_id)

                try:
                    pull_objects([f"{msg_id}-content"], pull_object_fn=never)
                except ObjectPullError:
                    out.append(self._unavailable(msg, "reply objects are unavailable"))
            elif time.monotonic() >= sent_at + self.after:
                out.append(Message(encode({"ok": True}), reply_to=msg))
        return out
