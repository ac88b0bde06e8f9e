"""A contributor decrypts an encrypted step's sum: who is asked, in which exchange, and
what a silent or refusing decryptor costs (coordinator.decryption)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Message, RecordDict

from fedcollab.common.errors import CiphertextError, NotEnoughPartnersError
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.serde import decode, encode, refusal
from fedcollab.compliance.trail import Trail, create_party_key
from fedcollab.coordinator.audit import AuditConfig, JobAudit
from fedcollab.coordinator.broadcast import Request
from fedcollab.coordinator.decryption import EncryptedAggregate, decrypt
from fedcollab.coordinator.encryption import HeSession
from fedcollab.coordinator.membership import Membership, Partner
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.federation.inmemory import task_identity
from fedcollab.privacy.ckks import SecretKeys
from tests.coordinator.test_coordinator_encryption import SCHEMA

#: A node's answer to one message: its reply content, or None to stay silent.
Answer = Callable[[int, Message], RecordDict | None]


class ScriptedGrid:
    """Each node answers from ``answer``; records the group ids of every push."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.pushes: list[list[str]] = []
        self.sent: list[Message] = []
        self._replies: dict[str, Message] = {}

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        messages = list(messages)
        self.pushes.append([m.metadata.group_id for m in messages])
        ids = []
        for msg in messages:
            msg_id = f"m{len(self.sent)}"
            msg.metadata.__dict__["_message_id"] = msg_id
            self.sent.append(msg)
            content = self.answer(msg.metadata.dst_node_id, msg)
            if content is not None:
                self._replies[msg_id] = Message(content, reply_to=msg)
            ids.append(msg_id)
        return ids

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        return [self._replies.pop(i) for i in ids if i in self._replies]


@pytest.fixture
def members(tmp_path: Path) -> Membership:
    spec = JobSpec.model_validate(
        {"name": "j", "task": "segmentation", "purpose": "p", "schema": SCHEMA,
         "round_timeout_s": 0.2, "privacy": {"encryption": "ckks", "aggregation": "ckks"}},
        strict=False,
    )  # fmt: skip
    key, _ = create_party_key(tmp_path / "coordinator", "coordinator")
    audit = JobAudit(AuditConfig(db=tmp_path / "audit.db", key=key), spec)
    m = Membership(spec=spec, outputs=JobOutputs(tmp_path / "out"), audit=audit)
    m.active = {i: Partner(i, name, "h", None) for i, name in enumerate("abc", start=1)}
    return m


#: "a" dealt the key and "b" installed it; "c" contributed without holding it.
HE = HeSession(public=SecretKeys.generate().public(), dealer="a", sealed={}, installed={"a", "b"})
AGGREGATE = EncryptedAggregate(
    b"sum",
    contributors=["a", "b", "c"],
    bindings=[{"s": "a"}, {"s": "b"}, None],
    ciphertexts={"a": b"ca", "b": b"cb", "c": b"cc"},
)


def _events(tmp_path: Path) -> list[dict[str, object]]:
    db = tmp_path / "audit.db"
    with Trail.open(db, tmp_path / "coordinator" / "audit.key", actor="coordinator") as trail:
        return [json.loads(raw) for raw in trail.log.entries()]


def test_a_silent_decryptor_is_dropped_and_the_next_key_holder_decrypts(
    members: Membership, tmp_path: Path
) -> None:
    grid = ScriptedGrid(lambda node, _m: encode({}, np.arange(3.0)) if node == 2 else None)
    with task_identity():
        values, other = decrypt(
            members,
            grid,
            HE,
            AGGREGATE,
            step="s",
            params="wide",
            length=3,  # type: ignore[arg-type]
        )
    assert values.tolist() == [0.0, 1.0, 2.0] and other is None
    assert grid.pushes == [["s.decrypt"], ["s.decrypt"]]
    assert [m.metadata.dst_node_id for m in grid.sent] == [1, 2]  # the dealer first, never c
    asked = decode(grid.sent[1].content)
    assert asked.ciphertext == b"sum" and dict(asked.parts) == AGGREGATE.ciphertexts
    assert asked.meta["bindings"] == AGGREGATE.bindings
    assert asked.meta["he"]["contributors"] == ["a", "b", "c"]
    assert [(d["partner"], d["step"]) for d in members.dropped] == [("a", "s.decrypt")]
    (released,) = [e for e in _events(tmp_path) if e["type"] == "round.aggregated"]
    assert released["body"]["protection"] == "ckks-decrypted"  # type: ignore[index]
    assert list(released["body"]["contributions"]) == ["b"]  # type: ignore[index]


def test_a_decryptor_refusing_the_contributions_stops_the_step(
    members: Membership, tmp_path: Path
) -> None:
    refused = refusal(CiphertextError("altered"), reason="a contribution does not verify")
    grid = ScriptedGrid(lambda _n, _m: refused)
    with task_identity(), pytest.raises(CiphertextError, match="refused to decrypt"):
        decrypt(members, grid, HE, AGGREGATE, step="s", params="wide", length=3)  # type: ignore[arg-type]
    assert grid.pushes == [["s.decrypt"]]  # b is not asked in turn
    (event,) = [e for e in _events(tmp_path) if e["type"] == "aggregate.refused"]
    assert event["body"]["decryptor"] == "a"  # type: ignore[index]
    assert members.dropped == []


def test_the_alongside_request_rides_in_the_first_decryption_exchange(
    members: Membership,
) -> None:
    signed: list[int] = []

    def answer(node: int, msg: Message) -> RecordDict | None:
        if msg.metadata.group_id == "s.secagg-sign":
            return encode({})
        return encode({}, np.zeros(3)) if node == 2 else None

    sign = Request(
        node_ids=[3],
        message_type="query.secagg",
        content_for=lambda _n: encode({}),
        on_reply=lambda node, _p: signed.append(node),
        group_id="s.secagg-sign",
        timeout_s=0.2,
    )
    grid = ScriptedGrid(answer)
    with task_identity():
        _values, other = decrypt(
            members,
            grid,
            HE,
            AGGREGATE,
            step="s",
            params="wide",
            length=3,
            alongside=sign,  # type: ignore[arg-type]
        )
    assert grid.pushes == [["s.decrypt", "s.secagg-sign"], ["s.decrypt"]]
    assert other is not None and other.replied == [3] and signed == [3]


def test_no_key_holder_left_stops_the_step(members: Membership) -> None:
    grid = ScriptedGrid(lambda _n, _m: None)
    with task_identity(), pytest.raises(NotEnoughPartnersError, match="could decrypt"):
        decrypt(members, grid, HE, AGGREGATE, step="s", params="wide", length=3)  # type: ignore[arg-type]
    assert [d["partner"] for d in members.dropped] == ["a", "b"]
