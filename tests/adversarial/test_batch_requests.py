"""A malicious coordinator packs requests into one ``query.batch`` message.

The batch exists for speed (one trip through the Fleet stack per partner for requests
the coordinator has at once, :mod:`common.batch`); it must give the coordinator
nothing it could not get by sending the same requests one by one. Through the real
partner code path (``client.client_app._serve``, real keys, grants, ledgers, trails),
each request of a batch is answered exactly as if it had come alone (its own run
contract, plan, purpose check and trail records), and a malformed envelope is refused
whole, logged, with nothing in it answered (the red team's envelopes with a
non-ASCII digit index or JSON nested deeper than the parser escaped the refusal and
were not logged).

What the attacker still learns from a batch: the same replies as from the requests
sent one by one, and that the partner answered them in the order given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from fedcollab.common import batch
from fedcollab.common.batch import BatchItem
from fedcollab.common.serde import Payload, decode, encode
from tests.support.adversarial import (
    CHANNELS,
    Attacker,
    job,
    layout_meta,
    preprocessor_dict,
)


def _moments(step: str = "moments") -> tuple[str, str, dict[str, Any], None]:
    return ("query.moments", step, layout_meta(channel=CHANNELS), None)


def _sent_steps(atk: Attacker, partner: str) -> list[str]:
    return [e["body"]["step"] for e in atk.trail(partner) if e["type"] == "data.sent"]


def test_a_batch_is_one_record() -> None:
    """Every request's (or reply's) ``common.serde`` record rides in the envelope's one
    record as "<i>/meta/<key>" entries: a batch is 2 Flower objects (RecordDict, the
    record), as a single request is, whatever it carries (it was 2 + one per request,
    each object an HTTPS call at every hop)."""
    first = encode({"a": 1}, np.arange(3.0), parts={"set": b"s"})
    second = encode({"b": 2}, ciphertext=b"c" * 100)
    content = batch.pack(
        [BatchItem("query.moments", "a", first), BatchItem("query.x", "b", second)]
    )
    assert sorted(content) == ["batch"]
    assert len(get_all_nested_objects(content)) == len(get_all_nested_objects(first)) == 2
    record = content["batch"]
    assert isinstance(record, ConfigRecord)
    assert {k.split("/")[0] for k in record if k != "json"} == {"0", "1"}
    a, b = batch.unpack(content)
    assert (a.action, a.step, b.action, b.step) == ("query.moments", "a", "query.x", "b")
    np.testing.assert_array_equal(decode(a.content, expect_length=3).array, np.arange(3.0))
    assert decode(a.content).parts == {"set": b"s"}
    assert decode(b.content).ciphertext == b"c" * 100 and decode(b.content).meta == {"b": 2}
    replies = batch.unpack_replies(batch.pack_replies([second, first]), 2)
    assert [decode(r).meta for r in replies] == [{"b": 2}, {"a": 1}]


def test_a_batch_is_answered_as_its_requests_would_be_alone(tmp_path: Path) -> None:
    alone = Attacker.against(tmp_path / "alone", job())
    assert alone.handshake("a").refused is None
    want = alone.send("a", "query.moments", step="moments", meta=layout_meta(channel=CHANNELS))

    atk = Attacker.against(tmp_path / "batched", job())
    handshake = ("query.handshake", "handshake", {}, None)
    replies = atk.send_batch("a", [handshake, _moments()])
    assert isinstance(replies, list) and len(replies) == 2
    assert replies[0].refused is None and replies[1].refused is None
    assert replies[1].vector is not None and want.vector is not None
    np.testing.assert_allclose(replies[1].vector, want.vector)
    # Each request has its own trail records, as if it had come alone.
    received = [
        (e["body"]["action"], e["body"]["step"])
        for e in atk.trail("a")
        if e["type"] == "request.received"
    ]
    assert received == [("query.handshake", "handshake"), ("query.moments", "moments")]
    assert _sent_steps(atk, "a") == ["handshake", "moments"]


def test_a_batch_does_not_repeat_a_step(tmp_path: Path) -> None:
    """Attack: the same step twice in one batch, hoping the once-per-step rule is checked
    per message. The second is answered as a repeat would be alone: refused."""
    atk = Attacker.against(tmp_path, job())
    atk.handshake("a")
    replies = atk.send_batch("a", [_moments(), _moments()])
    assert isinstance(replies, list)
    assert replies[0].refused is None and replies[0].vector is not None
    assert replies[1].refused == "ProtocolError" and replies[1].vector is None
    assert _sent_steps(atk, "a") == ["handshake", "moments"]


def test_a_batch_does_not_widen_the_purpose(tmp_path: Path) -> None:
    """Attack: a partner that granted only purchase-prediction gets segment profiles
    in a batch beside a planned request. The planned one is answered, the other refused."""
    atk = Attacker.against(tmp_path, job())
    atk.handshake("a")
    meta = {"preprocessor": preprocessor_dict(tmp_path), "centroids": [[0.0] * 5, [1.0] * 5]}
    profile = ("query.segment_profile", "segment-profiles", meta, None)
    replies = atk.send_batch("a", [profile, _moments()])
    assert isinstance(replies, list)
    assert replies[0].refused == "ProtocolError" and replies[0].vector is None
    assert replies[1].refused is None
    assert "segment-profiles" not in _sent_steps(atk, "a")


def _item(atk: Attacker, action: str, step: str) -> BatchItem:
    meta = {"job": atk.spec.to_json(), "run": atk.run, **layout_meta(channel=CHANNELS)}
    return BatchItem(action, step, encode(meta))


def _malformed(atk: Attacker, kind: str) -> RecordDict:
    two = [_item(atk, "query.moments", "moments"), _item(atk, "query.moments", "moments-2")]
    content = batch.pack(two)
    if kind == "nested":
        inner = batch.pack(two)
        return batch._join([inner, two[0].content], [
            {"action": batch.ACTION, "step": "x"}, {"action": "query.moments", "step": "m"}
        ])  # fmt: skip
    if kind == "too-many":
        items = [_item(atk, "query.moments", f"s{i}") for i in range(batch.MAX_ITEMS + 1)]
        heads = [{"action": i.action, "step": i.step} for i in items]
        return batch._join([i.content for i in items], heads)
    if kind == "one":
        return batch._join([two[0].content], [{"action": "query.moments", "step": "moments"}])
    if kind == "stray-record":
        content["7/meta"] = ConfigRecord({"json": "{}"})
        return content
    if kind == "stray-entry":  # an entry of a request the envelope does not list
        content["batch"]["7/meta/json"] = "{}"
        return content
    if kind == "entry-without-name":
        content["batch"]["0/meta"] = "{}"
        return content
    if kind == "bad-action":
        heads = [{"action": "train.fed-avg", "step": "round-1"}, {"action": "query.moments",
                 "step": "moments"}]  # fmt: skip
        return batch._join([two[0].content, two[1].content], heads)
    if kind == "extra-key":
        heads = [{"action": "query.moments", "step": "moments", "dp": "off"},
                 {"action": "query.moments", "step": "m2"}]  # fmt: skip
        return batch._join([two[0].content, two[1].content], heads)
    if kind == "missing-records":
        heads = [{"action": "query.moments", "step": "moments"},
                 {"action": "query.moments", "step": "m2"}]  # fmt: skip
        return batch._join([two[0].content], heads)
    if kind == "unicode-index":  # "²" is a digit to str.isdigit, not to int()
        content["batch"]["²/meta/json"] = "{}"
        return content
    if kind == "deep-json":  # under the envelope's length cap, deeper than the parser
        content["batch"] = ConfigRecord({"json": "[" * 3000})
        return content
    if kind == "json-not-text":  # 8 MB of bytes where the envelope's text goes
        content["batch"]["json"] = b"[" * 8_000_000
        return content
    if kind == "long-json":
        content["batch"] = ConfigRecord({"json": "[" * 200_000})
        return content
    assert kind == "no-envelope"
    del content["batch"]
    return content


@pytest.mark.parametrize(
    "kind",
    [
        "nested",
        "too-many",
        "one",
        "stray-record",
        "stray-entry",
        "entry-without-name",
        "bad-action",
        "extra-key",
        "missing-records",
        "no-envelope",
        "unicode-index",
        "deep-json",
        "long-json",
        "json-not-text",
    ],
)
def test_a_malformed_batch_is_refused_whole(tmp_path: Path, kind: str) -> None:
    atk = Attacker.against(tmp_path, job())
    atk.handshake("a")
    reply = atk.send_batch("a", [_moments(), _moments("moments-2")], content=_malformed(atk, kind))
    assert isinstance(reply, Payload), reply
    assert reply.refused == "ProtocolError" and reply.vector is None and not reply.parts
    assert set(reply.meta) == {"refused", "reason"}
    assert atk.refusals("a")[-1] == {"action": batch.ACTION, "error": "ProtocolError"}
    assert _sent_steps(atk, "a") == ["handshake"]  # nothing in the batch was answered
    # The planned moments are still answered afterwards: nothing was claimed.
    ok = atk.send("a", "query.moments", step="moments", meta=layout_meta(channel=CHANNELS))
    assert ok.refused is None and ok.vector is not None
