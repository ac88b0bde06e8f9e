"""The coordinator's masked rounds (coordinator.secagg_round): one ``query.secagg`` stage
over a scripted grid, and the checks before a masked reply counts.

The rounds end to end against real partners, with dropouts at each stage:
tests/adversarial/test_secagg_node.py; the exchanges of whole masked jobs:
tests/coordinator/test_coordinator_masked.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.app import Message, RecordDict

from fedcollab.common.errors import CiphertextError, NotEnoughPartnersError
from fedcollab.common.serde import Payload, decode, encode
from fedcollab.coordinator.broadcast import Outcome
from fedcollab.coordinator.secagg import MaskedSum
from fedcollab.coordinator.secagg_round import add_masked_input
from fedcollab.coordinator.secagg_setup import Stage, registered_peers
from fedcollab.federation.inmemory import task_identity
from fedcollab.privacy.secagg_session import SecAggRefusal
from tests.support.scripted_grid import ScriptedGrid, audit_events, scripted_members

MASKED = {"aggregation": "masked"}


def test_a_stage_drops_who_did_not_answer_and_logs_the_sealed_shares(tmp_path: Path) -> None:
    members = scripted_members(tmp_path, privacy=MASKED)
    seen: list[str] = []

    def answer(node: int, _msg: Message) -> RecordDict | None:
        if node == 3:
            return None  # c never answers
        return encode({}, parts={"b": b"sealed for b"} if node == 1 else None)

    grid = ScriptedGrid(answer)
    stage = Stage(members, "s", "share", nodes=[1, 2, 3], meta={"cohort": ["a", "b", "c"]},
                  on_reply=lambda name, _payload: seen.append(name))  # fmt: skip
    with task_identity():
        assert stage.run(grid) == ["a", "b"]
    assert seen == ["a", "b"] and grid.pushes == [["s.secagg-share"] * 3]
    assert {m.metadata.message_type for m in grid.sent} == {"query.secagg"}
    asked = decode(grid.sent[0].content).meta
    assert asked["secagg"] == {"cohort": ["a", "b", "c"]} and asked["run"] == members.audit.run_id
    assert [(d["partner"], d["step"]) for d in members.dropped] == [("c", "s.secagg-share")]
    # Only the sealed envelopes are logged, as the partner that sent them logs them.
    (logged,) = [e for e in audit_events(tmp_path) if e["type"] == "round.aggregated"]
    assert logged["body"]["step"] == "s.secagg-share"
    assert logged["body"]["protection"] == "secagg-sealed-shares"
    assert list(logged["body"]["contributions"]) == ["a"]


def test_a_refused_stage_reply_drops_its_sender_below_the_quorum(tmp_path: Path) -> None:
    members = scripted_members(tmp_path, privacy=MASKED, min_partners=3)

    def on_advert(name: str, _payload: Payload) -> None:
        if name == "a":
            raise SecAggRefusal("'a' sent 'b''s advertisement")

    grid = ScriptedGrid(lambda _node, _msg: encode({}))
    stage = Stage(members, "s", "advertise", nodes=[1, 2, 3], meta={}, on_reply=on_advert)
    with task_identity(), pytest.raises(NotEnoughPartnersError, match=r"after s\.secagg-advertise"):
        stage.run(grid)
    (dropped,) = members.dropped
    assert dropped["partner"] == "a" and "'b''s advertisement" in str(dropped["reason"])


def test_a_stage_as_a_request_for_a_shared_exchange(tmp_path: Path) -> None:
    members = scripted_members(tmp_path, privacy=MASKED)
    stage = Stage(members, "s", "sign", nodes=[2, 3], meta={}, on_reply=lambda _n, _p: None)
    request, finish = stage.request()
    assert (request.group_id, request.message_type, list(request.node_ids)) == (
        "s.secagg-sign",
        "query.secagg",
        [2, 3],
    )
    assert finish(Outcome(replied=[2], dropped={3: "no reply"})) == ["b"]
    assert [(d["partner"], d["step"]) for d in members.dropped] == [("c", "s.secagg-sign")]


def test_a_masked_reply_without_masked_words_is_refused(tmp_path: Path) -> None:
    members = scripted_members(tmp_path, privacy=MASKED)
    acc = MaskedSum(4)
    with pytest.raises(CiphertextError, match="no masked input"):
        add_masked_input(members, acc, "a", Payload({}))
    assert acc.masked == {}


def test_masked_rounds_need_the_partners_registered_audit_keys(tmp_path: Path) -> None:
    members = scripted_members(tmp_path, privacy=MASKED)  # no partner keys, no policy
    with pytest.raises(CiphertextError) as refused:
        registered_peers(members)
    assert "fedcollab federation register" in refused.value.hint
