"""A contributor decrypts an encrypted step's sum: who is asked, in which exchange, and
what a silent or refusing decryptor costs (coordinator.decryption). Any key holder may
decrypt a "ckks+masked" sum (one-time padded); only the dealer a plain "ckks" one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from fedcollab.common.errors import CiphertextError, NotEnoughPartnersError
from fedcollab.common.serde import decode, encode, refusal
from fedcollab.coordinator.broadcast import Outcome, Request
from fedcollab.coordinator.decryption import EncryptedAggregate, decrypt
from fedcollab.coordinator.encryption import HeSession
from fedcollab.coordinator.membership import Membership
from fedcollab.federation.inmemory import task_identity
from fedcollab.privacy.ckks import SecretKeys
from tests.support.scripted_grid import ScriptedGrid, audit_events, scripted_members


@pytest.fixture
def members(tmp_path: Path) -> Membership:
    return scripted_members(tmp_path, privacy={"encryption": "ckks", "aggregation": "ckks+masked"})


@pytest.fixture
def plain_members(tmp_path: Path) -> Membership:
    return scripted_members(tmp_path, privacy={"encryption": "ckks", "aggregation": "ckks"})


#: "a" dealt the key and "b" installed it; "c" contributed without holding it.
HE = HeSession(public=SecretKeys.generate().public(), dealer="a", sealed={}, installed={"a", "b"})
AGGREGATE = EncryptedAggregate(
    b"sum",
    contributors=["a", "b", "c"],
    bindings=[{"s": "a"}, {"s": "b"}, None],
    ciphertexts={"a": b"ca", "b": b"cb", "c": b"cc"},
)


def _decrypt(
    members: Membership, grid: ScriptedGrid, *, alongside: Sequence[Request] = ()
) -> tuple[np.ndarray, list[Outcome] | None]:
    """Step "s" of :data:`AGGREGATE`: 3 values, "wide" parameters."""
    on = cast(Grid, grid)
    return decrypt(
        members, on, HE, AGGREGATE, step="s", params="wide", length=3, alongside=alongside
    )


def test_a_silent_decryptor_is_dropped_and_the_next_key_holder_decrypts(
    members: Membership, tmp_path: Path
) -> None:
    grid = ScriptedGrid(lambda node, _m: encode({}, np.arange(3.0)) if node == 2 else None)
    with task_identity():
        values, other = _decrypt(members, grid)
    assert values.tolist() == [0.0, 1.0, 2.0] and other is None
    assert grid.pushes == [["s.decrypt"], ["s.decrypt"]]
    assert [m.metadata.dst_node_id for m in grid.sent] == [1, 2]  # the dealer first, never c
    asked = decode(grid.sent[1].content)
    # The contributions only: the decryptor sums them itself (the sum would be a copy).
    assert asked.ciphertext is None and dict(asked.parts) == AGGREGATE.ciphertexts
    assert asked.meta["bindings"] == AGGREGATE.bindings
    assert asked.meta["he"]["contributors"] == ["a", "b", "c"]
    assert [(d["partner"], d["step"]) for d in members.dropped] == [("a", "s.decrypt")]
    (released,) = [e for e in audit_events(tmp_path) if e["type"] == "round.aggregated"]
    assert released["body"]["protection"] == "ckks-decrypted"
    assert list(released["body"]["contributions"]) == ["b"]


def test_a_decryptor_refusing_the_contributions_stops_the_step(
    members: Membership, tmp_path: Path
) -> None:
    refused = refusal(CiphertextError("altered"), reason="a contribution does not verify")
    grid = ScriptedGrid(lambda _n, _m: refused)
    with task_identity(), pytest.raises(CiphertextError, match="refused to decrypt"):
        _decrypt(members, grid)
    assert grid.pushes == [["s.decrypt"]]  # b is not asked in turn
    (event,) = [e for e in audit_events(tmp_path) if e["type"] == "aggregate.refused"]
    assert event["body"]["decryptor"] == "a"
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
        _values, others = _decrypt(members, grid, alongside=[sign])
    assert grid.pushes == [["s.decrypt", "s.secagg-sign"], ["s.decrypt"]]
    assert others is not None and others[0].replied == [3] and signed == [3]


def test_no_key_holder_left_stops_the_step(members: Membership) -> None:
    grid = ScriptedGrid(lambda _n, _m: None)
    with task_identity(), pytest.raises(NotEnoughPartnersError, match="could decrypt"):
        _decrypt(members, grid)
    assert [d["partner"] for d in members.dropped] == ["a", "b"]


def test_only_the_dealer_decrypts_a_plain_ckks_sum(
    plain_members: Membership, tmp_path: Path
) -> None:
    """Two key holders decrypting two subsets of one step would give a partner's vector
    by difference (tests/adversarial/test_ckks_one_decryptor.py): a silent dealer stops
    the step, and no other key holder is asked."""
    grid = ScriptedGrid(lambda node, _m: encode({}, np.arange(3.0)) if node == 2 else None)
    with task_identity(), pytest.raises(NotEnoughPartnersError, match="no other partner may"):
        _decrypt(plain_members, grid)
    assert [m.metadata.dst_node_id for m in grid.sent] == [1]  # the dealer, never b
    answered = ScriptedGrid(lambda node, _m: encode({}, np.arange(3.0)) if node == 1 else None)
    fresh = scripted_members(
        tmp_path / "again", privacy={"encryption": "ckks", "aggregation": "ckks"}
    )
    with task_identity():
        values, _ = _decrypt(fresh, answered)
    assert values.tolist() == [0.0, 1.0, 2.0]
