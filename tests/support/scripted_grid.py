"""A scripted Flower Grid for one coordinator stage in a unit test, without partner nodes.

:class:`ScriptedGrid` answers each message from a function of the node and the
message (or stays silent, so the node misses the deadline) and records what went out
in each push. :func:`scripted_members` is a job's membership for it (partners a, b, c
on nodes 1-3), :func:`audit_events` that job's coordinator audit entries. Whole jobs
against the partners' real code run over :mod:`fedcollab.federation.inmemory` instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from flwr.app import Message, RecordDict

from fedcollab.common import batch
from fedcollab.common.jobspec import JobSpec
from fedcollab.compliance.trail import Trail, create_party_key
from fedcollab.coordinator.audit import AuditConfig, JobAudit
from fedcollab.coordinator.membership import Membership, Partner
from fedcollab.coordinator.outputs import JobOutputs

#: A node's answer to one message: its reply content, or None to stay silent.
Answer = Callable[[int, Message], RecordDict | None]


#: A one-column dataset: what a membership needs, no data is read.
SCHEMA = {
    "version": 1,
    "dataset": "shop",
    "delimiter": ",",
    "id_column": "id",
    "features": [{"name": "x", "type": "numeric", "missing": "forbid"}],
}


class ScriptedGrid:
    """Each node answers from ``answer``; records the group ids of every push."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.pushes: list[list[str]] = []
        self.sent: list[Message] = []
        self._replies: dict[str, Message] = {}

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        messages = list(messages)
        self.pushes.append([step for m in messages for step in batch.steps(m)])
        ids = []
        for msg in messages:
            msg_id = f"m{len(self.sent)}"
            msg.metadata.__dict__["_message_id"] = msg_id
            self.sent.append(msg)
            content = self._answer(msg)
            if content is not None:
                self._replies[msg_id] = Message(content, reply_to=msg)
            ids.append(msg_id)
        return ids

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        return [self._replies.pop(i) for i in ids if i in self._replies]

    def _answer(self, msg: Message) -> RecordDict | None:
        """``answer`` for a message; a batch's requests each as if alone (silent if
        any is: the node died while answering it)."""
        node = msg.metadata.dst_node_id
        if msg.metadata.message_type != batch.ACTION:
            return self.answer(node, msg)
        replies = []
        for item in batch.unpack(msg.content):
            alone = Message(item.content, node, item.action, group_id=item.step)
            reply = self.answer(node, alone)
            if reply is None:
                return None
            replies.append(reply)
        return batch.pack_replies(replies)


def scripted_members(root: Path, *, privacy: dict[str, str], min_partners: int = 2) -> Membership:
    """A job's membership for a :class:`ScriptedGrid`: partners a, b, c on nodes 1-3,
    requests that time out after 0.2 s, the audit trail in ``root`` (:func:`audit_events`);
    an encrypted job's key dealer is a unless ``privacy`` names another."""
    if privacy.get("encryption") == "ckks":
        privacy = {"key_dealer": "a", **privacy}
    spec = JobSpec.model_validate(
        {"name": "j", "task": "segmentation", "purpose": "p", "schema": SCHEMA,
         "round_timeout_s": 0.2, "min_partners": min_partners, "privacy": privacy},
        strict=False,
    )  # fmt: skip
    key, _ = create_party_key(root / "coordinator", "coordinator")
    audit = JobAudit(AuditConfig(db=root / "audit.db", key=key), spec)
    members = Membership(spec=spec, outputs=JobOutputs(root / "out"), audit=audit)
    members.active = {i: Partner(i, name, "h", None) for i, name in enumerate("abc", start=1)}
    return members


def audit_events(root: Path) -> list[dict[str, Any]]:
    """The coordinator's audit entries of :func:`scripted_members`' job, in order."""
    db = root / "audit.db"
    with Trail.open(db, root / "coordinator" / "audit.key", actor="coordinator") as trail:
        return [json.loads(raw) for raw in trail.log.entries()]
