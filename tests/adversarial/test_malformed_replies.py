"""A malicious partner's malformed handshake reply is refused at the handshake.

Three partners join an encrypted job over the in-memory grid (the real partner code
path, :mod:`federation.inmemory`); partner ``c`` rewrites its handshake reply so a field
no longer has the shape the partner code gives it. The coordinator refuses ``c`` at the
handshake, naming it and the field (common.messages.replies.HandshakeReply), and the
other two partners' job goes on: the key ceremony deals them the job key and their
encrypted moments are summed and decrypted.

On main before the reply models: an ``he_offer`` that is not a JSON object entered
``c``'s Partner unchecked, every dealer candidate refused the ceremony's request
(its ``offers`` do not fit KeygenRequest) and the job failed with "no partner could
run the key ceremony"; a ``vocab`` that is a string made discovery itself fail with a
ValueError (``dict("web")``).

A vertical job needs every party's every reply: a label holder whose ``intersect``
reply does not fit VerticalAlignmentReply fails the job with a ProtocolError naming
it (coordinator.vertical._read), as a missing PSI set size already did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flwr.app import ConfigRecord

from fedcollab.common.errors import NotEnoughPartnersError, ProtocolError
from fedcollab.common.schema import DatasetSchema
from fedcollab.common.serde import Payload
from fedcollab.coordinator.audit import JobAudit
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.coordinator.preprocess import federated_preprocessor
from fedcollab.coordinator.roster import Roster
from fedcollab.coordinator.vertical import drive
from fedcollab.federation.inmemory import InMemoryGrid, in_memory_federation, task_identity
from tests.support.adversarial import SCHEMA, job, write_partner
from tests.support.vertical import (
    LABEL,
    Requests,
    ServeRelay,
    VerticalWorld,
    spec_for,
    vertical_sources,
)


class LyingGrid(InMemoryGrid):
    """Partner ``liar`` answers the handshake with ``lie`` merged into its real reply."""

    def __init__(self, base: InMemoryGrid, liar: str, lie: dict[str, Any]) -> None:
        super().__init__(base.overrides, [n.name for n in base.nodes])
        self.liar, self.lie = liar, lie

    def push_messages(self, messages: Any) -> list[str]:
        messages = list(messages)
        ids = super().push_messages(messages)
        for msg_id, msg in zip(ids, messages, strict=True):
            if msg.metadata.group_id != "handshake":
                continue
            if self.nodes[msg.metadata.dst_node_id - 1].name != self.liar:
                continue
            record = self._replies[msg_id].content["meta"]
            assert isinstance(record, ConfigRecord)
            meta = json.loads(str(record["json"]))
            assert meta.get("refused") is None, meta
            record["json"] = json.dumps({**meta, **self.lie}, sort_keys=True)
        return ids


@pytest.mark.parametrize(
    ("lie", "field"),
    [({"he_offer": "not-an-offer"}, "he_offer"), ({"vocab": "web"}, "vocab")],
)
def test_a_malformed_handshake_reply_is_refused_and_the_job_goes_on(
    tmp_path: Path, lie: dict[str, Any], field: str
) -> None:
    names = ["a", "b", "c"]
    spec = job(privacy={"encryption": "ckks", "aggregation": "ckks", "key_dealer": "a"},
               min_partners=2)  # fmt: skip
    sources = [write_partner(tmp_path / "data", n, seed=i) for i, n in enumerate(names)]
    base, audit_config, policy = in_memory_federation(spec, sources, tmp_path)
    grid = LyingGrid(base, liar="c", lie=lie)
    roster = Roster(spec=spec, outputs=JobOutputs(tmp_path / "out"), audit=JobAudit(
        audit_config, spec), policy=policy, all_nodes_online=True)  # fmt: skip
    with task_identity():
        roster.discover(grid)  # type: ignore[arg-type]
        assert roster.names == ["a", "b"]
        [refusal] = roster.refused
        assert refusal["partner"] == "c"
        assert "malformed reply" in str(refusal["reason"]) and field in str(refusal["reason"])
        roster.setup_encryption(grid)  # type: ignore[arg-type]
        assert roster.he is not None and sorted(roster.he.sealed) == ["a", "b"]
        pre = federated_preprocessor(grid, roster, DatasetSchema.model_validate(SCHEMA))  # type: ignore[arg-type]
    assert roster.names == ["a", "b"] and roster.dropped == []
    assert pre.n_features > 0


class LyingRelay(ServeRelay):
    """The honest relay, except that ``liar``'s reply at ``step`` has ``lie`` merged in."""

    def __init__(self, world: VerticalWorld, step: str, liar: str, lie: dict[str, Any]) -> None:
        super().__init__(world)
        self.step, self.liar, self.lie = step, liar, lie

    def send(self, step: str, requests: Requests) -> dict[str, Payload]:
        replies = super().send(step, requests)
        if step == self.step:
            honest = replies[self.liar]
            replies[self.liar] = Payload({**honest.meta, **self.lie}, parts=honest.parts)
        return replies


def test_a_malformed_vertical_reply_fails_the_job_naming_the_party(tmp_path: Path) -> None:
    sources = vertical_sources(tmp_path / "data", rows=300)
    spec = spec_for(sources, iterations=1)
    world = VerticalWorld.create(tmp_path, spec, sources)
    world.handshake()
    relay = LyingRelay(world, "intersect", LABEL, {"alignment": {"intersection": "all"}})
    with pytest.raises(ProtocolError, match=f"vertical party {LABEL!r}: malformed "
                       r"VerticalAlignmentReply: alignment\.intersection"):  # fmt: skip
        drive(relay, spec, JobOutputs(tmp_path / "out"), run=world.run,
              offers=world.offers, masks=world.masks)  # fmt: skip
    assert "intersect" in relay.replies  # the PSI ran; the coordinator read its reply


def test_a_key_dealer_that_cannot_deal_stops_the_job_with_what_to_do(tmp_path: Path) -> None:
    """The spec's dealer is the only one partners take the key from (issue 14): when it
    offers no valid transport key, the coordinator asks no other partner to deal and
    the job stops, naming the dealer and what to do."""
    names = ["a", "b", "c"]
    spec = job(privacy={"encryption": "ckks", "aggregation": "ckks", "key_dealer": "c"},
               min_partners=2)  # fmt: skip
    sources = [write_partner(tmp_path / "data", n, seed=i) for i, n in enumerate(names)]
    base, audit_config, policy = in_memory_federation(spec, sources, tmp_path)
    grid = LyingGrid(base, liar="c", lie={"he_offer": "not-an-offer"})
    roster = Roster(spec=spec, outputs=JobOutputs(tmp_path / "out"), audit=JobAudit(
        audit_config, spec), policy=policy, all_nodes_online=True)  # fmt: skip
    with task_identity():
        roster.discover(grid)  # type: ignore[arg-type]
        assert roster.names == ["a", "b"]
        with pytest.raises(NotEnoughPartnersError, match="key dealer 'c' did not run") as err:
            roster.setup_encryption(grid)  # type: ignore[arg-type]
    assert "privacy.key_dealer" in str(err.value.hint)
    assert roster.he is None
