"""ConfigRecord deflated once per content (common/flower_records.py), with real Flower
records and messages: same bytes as Flower's own code, afresh after any change."""

from __future__ import annotations

import os

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, RecordDict

import fedcollab.common.serde  # noqa: F401 - installs the memo, as every fedcollab process does
from fedcollab.common import flower_records
from fedcollab.federation.inmemory import task_identity


def _flower_deflate(record: ConfigRecord) -> bytes:
    """Flower's own deflate (the wrapped function), for comparison."""
    from flwr.common.serde_utils import record_value_dict_to_proto
    from flwr.proto.recorddict_pb2 import ConfigRecord as ProtoConfigRecord
    from flwr.proto.recorddict_pb2 import ConfigRecordValue
    from flwr.supercore.inflatable.inflatable_object import add_header_to_object_body

    protos = record_value_dict_to_proto(record, [bool, int, float, str, bytes], ConfigRecordValue)
    body = ProtoConfigRecord(
        items=[ProtoConfigRecord.Item(key=k, value=v) for k, v in protos.items()]
    ).SerializeToString()
    return add_header_to_object_body(object_body=body, obj=record)


def test_install_is_idempotent_and_the_bytes_are_flower_s() -> None:
    assert flower_records.install() and flower_records.install()
    record = ConfigRecord({"json": "{}", "cipher": os.urandom(1 << 20), "n": 3, "x": 0.5})
    first = record.deflate()
    assert first == _flower_deflate(record)
    assert record.deflate() is first  # served from the memo
    assert ConfigRecord.inflate(first) == record


def test_every_change_deflates_afresh() -> None:
    blob = os.urandom(4096)
    record = ConfigRecord({"json": "{}", "cipher": blob})
    before = record.deflate()
    record["cipher"] = bytes(blob[:-1]) + bytes([blob[-1] ^ 1])  # same length, new object
    assert record.deflate() != before and record.deflate() == _flower_deflate(record)
    record["extra"] = True
    assert record.deflate() == _flower_deflate(record)
    del record["extra"]
    value = record.pop("json")
    record["json"] = value  # same objects, another order: other bytes
    assert record.deflate() == _flower_deflate(record)
    assert record.deflate() != before


def test_a_record_with_a_list_is_never_memoised() -> None:
    ids = [1, 2, 3]
    record = ConfigRecord({"ids": ids})
    first = record.deflate()
    ids.append(4)  # mutated in place: the record holds the same list object
    assert record["ids"] is ids
    assert record.deflate() != first and record.deflate() == _flower_deflate(record)


def test_a_message_id_is_unchanged_and_its_body_deflated_once() -> None:
    """The object id of a real fedcollab message body (a 3 MB ciphertext) is the same as
    Flower computes it, and repeated lookups reuse one deflation."""
    from fedcollab.common.serde import encode

    content: RecordDict = encode({"run": "r"}, np.arange(4.0), ciphertext=os.urandom(3 << 20))
    with task_identity():
        msg = Message(content=content, dst_node_id=1, message_type="train.fedavg")
    record = content["meta"]
    assert isinstance(record, ConfigRecord)
    ids = {msg.object_id for _ in range(3)}
    assert len(ids) == 1
    deflated = record.deflate()
    assert deflated is record.deflate() and deflated == _flower_deflate(record)


def test_the_object_id_is_flower_s_and_hashed_once_per_content(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Flower recomputes a ConfigRecord's id (SHA-256 of its deflated bytes) at every
    lookup; with the memo it is hashed once per content, and is always the SHA-256 of
    Flower's own bytes, across changes too."""
    import hashlib

    from flwr.supercore.inflatable import inflatable_object

    hashed: list[int] = []
    real = inflatable_object.get_object_id

    def counting(content: bytes) -> str:
        hashed.append(len(content))
        return real(content)

    monkeypatch.setattr(inflatable_object, "get_object_id", counting)
    big = os.urandom(1 << 20)
    record = ConfigRecord({"cipher": big, "n": 1})
    first = {record.object_id for _ in range(5)}
    assert first == {hashlib.sha256(_flower_deflate(record)).hexdigest()}
    assert sum(n > len(big) for n in hashed) == 1  # the big body hashed once
    record["n"] = 2
    second = record.object_id
    assert second != first.pop() and second == hashlib.sha256(_flower_deflate(record)).hexdigest()
    ids = [1]
    listed = ConfigRecord({"ids": ids})  # a list: never memoised, Flower's own path
    before = listed.object_id
    ids.append(2)
    assert listed.object_id != before
    assert listed.object_id == hashlib.sha256(_flower_deflate(listed)).hexdigest()
