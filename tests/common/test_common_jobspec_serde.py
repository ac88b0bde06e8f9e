"""Job specs and the wire format refuse bad input with typed errors."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

from fedcollab.common.errors import JobSpecError, ProtocolError
from fedcollab.common.jobspec import DEFAULT_AGGREGATION, JobSpec, load_job_spec
from fedcollab.common.serde import decode, encode, refusal

SCHEMA = {
    "version": 1,
    "dataset": "shop",
    "delimiter": ",",
    "id_column": "id",
    "label_column": "y",
    "features": [{"name": "x", "type": "numeric", "missing": "forbid"}],
}


def _job(tmp_path: Path, text: str) -> Path:
    (tmp_path / "s.json").write_text(json.dumps(SCHEMA))
    path = tmp_path / "job.toml"
    path.write_text(text)
    return path


def test_valid_job_round_trips_through_json(tmp_path: Path) -> None:
    spec = load_job_spec(
        _job(tmp_path, 'name="j"\ntask="segmentation"\npurpose="p"\nschema="s.json"\n')
    )
    assert JobSpec.from_json(spec.to_json()) == spec
    assert spec.digest().startswith("sha256:")
    assert spec.data_schema == SCHEMA


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('name="j"\ntask="x"\npurpose="p"\nschema="s.json"\n', "task"),
        ('name="j"\ntask="segmentation"\npurpose="p"\nschema="s.json"\nrounds=0\n', "rounds"),
        ('name="j"\ntask="segmentation"\npurpose="p"\nschema="s.json"\ncolour=1\n', "colour"),
        ('name="j"\ntask="segmentation"\npurpose="p"\n', "schema"),
        ('name="j"\ntask="segmentation"\npurpose="p"\nschema="missing.json"\n', "missing"),
        ('name = "j\n', "TOML"),
        (
            'name="j"\ntask="segmentation"\npurpose="p"\nschema="s.json"\n'
            'participants=["a"]\nmin_partners=2\n',
            "min_partners",
        ),
    ],
)
def test_bad_job_spec(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(JobSpecError, match=needle) as info:
        load_job_spec(_job(tmp_path, text))
    assert info.value.exit_code == 12
    assert info.value.hint


def test_serde_round_trip_and_refusal() -> None:
    vec = np.arange(5.0)
    payload = decode(encode({"a": 1}, vec), expect_length=5)
    assert payload.meta == {"a": 1}
    np.testing.assert_array_equal(payload.array, vec)
    refused = decode(refusal(ValueError("secret value 42"), reason="bad data"))
    assert refused.refused == "ValueError"
    assert "42" not in json.dumps(dict(refused.meta))


def test_serde_rejects_malformed() -> None:
    with pytest.raises(ProtocolError):
        decode(RecordDict({"meta": ConfigRecord({"json": "[1, 2]"})}))
    with pytest.raises(ProtocolError, match="expected 3"):
        decode(encode({}, np.zeros(4)), expect_length=3)
    with pytest.raises(ProtocolError, match="NaN"):
        decode(encode({}, np.array([1.0, np.nan])))


def test_serde_carries_ciphertext_bytes() -> None:
    blob = bytes(range(256)) * 3
    payload = decode(encode({"he": {"params": "wide"}}, ciphertext=blob), expect_length=7)
    assert payload.ciphertext == blob
    assert payload.vector is None


_VECTOR = np.array([0.0, -1.5, 1e300, 5e-324, np.pi])
_CIPHER = bytes(range(256)) * 3
#: Part names as the vertical jobs use them, and names of the record's own entries.
_PARTS = {"salt/a": b"\x00", "set": b"", "json": b"j", "vector": b"v", "cipher": b"c"}


@pytest.mark.parametrize(
    ("with_vector", "with_cipher", "with_parts"), list(itertools.product([False, True], repeat=3))
)
def test_serde_round_trips_every_combination_in_two_objects(
    with_vector: bool, with_cipher: bool, with_parts: bool
) -> None:
    """One ConfigRecord whatever the body carries: 2 Flower objects (RecordDict, record),
    each pushed and pulled in its own request; the former layout took up to 13."""
    meta = {"a": 1, "nested": {"b": [1, 2]}}
    content = encode(
        meta,
        _VECTOR.reshape(5, 1) if with_vector else None,  # flattened, as before
        ciphertext=_CIPHER if with_cipher else None,
        parts=_PARTS if with_parts else None,
    )
    assert list(content) == ["meta"] and isinstance(content["meta"], ConfigRecord)
    assert len(get_all_nested_objects(content)) == 2
    payload = decode(content, expect_length=5 if with_vector else None)
    assert payload.meta == meta
    if with_vector:
        np.testing.assert_array_equal(payload.array, _VECTOR)
        assert payload.array.dtype == np.float64 and payload.array.flags.writeable
        payload.array[0] = 7.0  # a copy, not a view of the message's bytes
        np.testing.assert_array_equal(decode(content).array, _VECTOR)
    else:
        assert payload.vector is None
    assert payload.ciphertext == (_CIPHER if with_cipher else None)
    assert payload.parts == (_PARTS if with_parts else {})
    assert json.loads(str(content["meta"]["json"])) == meta  # parts never shadow the meta


def test_serde_vector_wire_bytes_are_little_endian_float64() -> None:
    record = encode({}, np.array([1.0, 2.0], dtype=np.float32))["meta"]
    assert isinstance(record, ConfigRecord)
    assert record["vector"] == np.array([1.0, 2.0], dtype="<f8").tobytes()
    assert decode(RecordDict({"meta": record})).array.dtype == np.float64


def test_serde_body_with_everything_is_two_objects_after_a_flower_round_trip() -> None:
    """What a peer inflates from the pushed objects decodes to the same payload."""
    content = encode({"x": 1}, _VECTOR, ciphertext=_CIPHER, parts={"p": b"\xff" * 10})
    objects = get_all_nested_objects(content)
    assert len(objects) == 2
    pushed = {object_id: obj.deflate() for object_id, obj in objects.items()}
    again = inflate_object_from_contents(content.object_id, pushed)
    assert isinstance(again, RecordDict)
    payload = decode(again)
    np.testing.assert_array_equal(payload.array, _VECTOR)
    assert payload.ciphertext == _CIPHER and payload.parts == {"p": b"\xff" * 10}


def test_serde_refuses_an_empty_part_name_it_would_send() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        encode({}, parts={"": b"x"})


def _body(**entries: Any) -> RecordDict:
    return RecordDict({"meta": ConfigRecord({"json": "{}", **entries})})


_OLD_VECTOR = ArrayRecord({"v": Array(np.zeros(3))})

#: Every malformed body a peer can send, and what the ProtocolError says.
_MALFORMED: dict[str, tuple[Any, str, int | None]] = {
    "no-meta": (lambda: RecordDict(), "no valid 'meta' record", None),
    "meta-array-record": (lambda: RecordDict({"meta": ArrayRecord()}), "not a ConfigRecord", None),
    "meta-metric-record": (
        lambda: RecordDict({"meta": MetricRecord({"json": 1})}),
        "not a ConfigRecord",
        None,
    ),
    "no-json": (lambda: RecordDict({"meta": ConfigRecord({"vector": b""})}), "'json'", None),
    "json-bytes": (lambda: RecordDict({"meta": ConfigRecord({"json": b"{}"})}), "bytes", None),
    "json-list": (lambda: RecordDict({"meta": ConfigRecord({"json": ["{}"]})}), "list", None),
    "json-int": (lambda: RecordDict({"meta": ConfigRecord({"json": 1})}), "int", None),
    "json-not-object": (lambda: _body(json="[1, 2]"), "not a JSON object", None),
    "json-invalid": (lambda: _body(json="{"), "no valid 'meta' record", None),
    "json-deep": (lambda: _body(json="[" * 100_000), "no valid 'meta' record", None),
    "former-layout": (
        lambda: RecordDict({"meta": ConfigRecord({"json": "{}"}), "vector": _OLD_VECTOR}),
        "former layout",
        None,
    ),
    "former-layout-no-meta": (lambda: RecordDict({"cipher": ArrayRecord()}), "former", None),
    "other-record": (
        lambda: RecordDict({"meta": ConfigRecord({"json": "{}"}), "x": ConfigRecord()}),
        "records 'x' beside 'meta'",
        None,
    ),
    "many-records": (
        lambda: RecordDict(
            {"meta": ConfigRecord({"json": "{}"})} | {f"r{i}": ConfigRecord() for i in range(50)}
        ),
        "and 45 more",
        None,
    ),
    "unknown-key": (lambda: _body(parts=b"x"), "unknown entry 'parts'", None),
    "unknown-key-case": (lambda: _body(Vector=b""), "unknown entry 'Vector'", None),
    "vector-str": (lambda: _body(vector="abcdefgh"), "'vector' is of type str", None),
    "vector-list": (lambda: _body(vector=[b"abcdefgh"]), "'vector' is of type list", None),
    "vector-int": (lambda: _body(vector=8), "'vector' is of type int", None),
    "vector-float": (lambda: _body(vector=1.0), "'vector' is of type float", None),
    "vector-bool": (lambda: _body(vector=True), "'vector' is of type bool", None),
    "vector-partial": (lambda: _body(vector=b"\x00" * 9), "9 bytes", None),
    "vector-one-byte": (lambda: _body(vector=b"\x00"), "1 bytes", None),
    "vector-nan": (lambda: _body(vector=np.array([np.nan]).tobytes()), "NaN", None),
    "vector-inf": (lambda: _body(vector=np.array([1.0, -np.inf]).tobytes()), "infinite", None),
    "vector-length": (lambda: _body(vector=np.zeros(4).tobytes()), "expected 3", 3),
    "vector-missing": (lambda: _body(), "no vector", 3),
    "cipher-str": (lambda: _body(cipher="c"), "'cipher' is of type str", None),
    "cipher-list": (lambda: _body(cipher=[1, 2]), "'cipher' is of type list", None),
    "part-str": (lambda: _body(**{"part:set": "s"}), "part 'set' is of type str", None),
    "part-int": (lambda: _body(**{"part:set": 0}), "part 'set' is of type int", None),
    "part-list": (lambda: _body(**{"part:set": [b"a"]}), "part 'set' is of type list", None),
    "part-empty-name": (lambda: _body(**{"part:": b"x"}), "empty name", None),
}


@pytest.mark.parametrize("kind", list(_MALFORMED))
def test_serde_refuses_every_malformed_body_with_a_protocol_error(kind: str) -> None:
    """The body is the peer's: nothing in it may raise anything but ProtocolError (a red
    team's finding: a malformed array once failed the whole job)."""
    build, needle, expect_length = _MALFORMED[kind]
    with pytest.raises(ProtocolError, match=needle):
        decode(build(), expect_length=expect_length)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ('min_partners=1\n[privacy]\nencryption="ckks"\n', "min_partners >= 2"),
        ('[privacy]\nencryption="ckks"\n[segmentation]\nseeding="kfed"\n', "kfed"),
        ('participants=["a","b"]\n[privacy]\nencryption="ckks"\nkey_dealer="c"\n', "key_dealer"),
        ('[privacy]\nencryption="paillier"\n', "encryption"),
        ('[privacy]\naggregation="ckks+masked"\n', "encryption = 'ckks'"),
        ('[privacy]\nencryption="ckks"\naggregation="masked"\n', "does not go with"),
        ('[privacy]\nencryption="ckks"\naggregation="plaintext"\n', "does not go with"),
        ('[privacy]\naggregation="secagg"\n', "aggregation"),
        ('min_partners=1\n[privacy]\naggregation="masked"\n', "min_partners >= 2"),
        ('[privacy]\naggregation="masked"\n[segmentation]\nseeding="kfed"\n', "kfed"),
    ],
)
def test_encryption_options_are_validated(tmp_path: Path, extra: str, needle: str) -> None:
    head = 'name="j"\ntask="segmentation"\npurpose="p"\nschema="s.json"\n'
    with pytest.raises(JobSpecError, match=needle):
        load_job_spec(_job(tmp_path, head + extra))


def test_encrypted_job_picks_summed_seeding(tmp_path: Path) -> None:
    head = 'name="j"\ntask="segmentation"\npurpose="p"\nschema="s.json"\nparticipants=["a","b"]\n'
    spec = load_job_spec(_job(tmp_path, head + '[privacy]\nencryption="ckks"\n'))
    assert spec.privacy.encrypted
    assert spec.segmentation.seeding_for(encrypted=True) == "summed"
    assert spec.segmentation.seeding_for(encrypted=False) == "kfed"


@pytest.mark.parametrize(
    ("privacy", "expected"),
    [
        ("", "plaintext"),
        ('[privacy]\naggregation="masked"\n', "masked"),
        ('[privacy]\nencryption="ckks"\n', "ckks+masked"),
        ('[privacy]\nencryption="ckks"\naggregation="ckks"\n', "ckks"),
    ],
)
def test_aggregation_is_resolved_and_pinned_in_the_digest(
    tmp_path: Path, privacy: str, expected: str
) -> None:
    head = 'name="j"\ntask="segmentation"\npurpose="p"\nschema="s.json"\nparticipants=["a","b"]\n'
    spec = load_job_spec(_job(tmp_path, head + privacy))
    assert spec.privacy.aggregation == expected
    assert json.loads(spec.to_json())["privacy"]["aggregation"] == expected
    again = JobSpec.from_json(spec.to_json())
    assert again.digest() == spec.digest()
    other = JobSpec.from_json(
        spec.to_json().replace(f'"aggregation":"{expected}"', '"aggregation":""')
    )
    # An empty mode resolves to the encryption's default, so it is never left open.
    assert other.privacy.aggregation == DEFAULT_AGGREGATION[spec.privacy.encryption]
    if spec.privacy.encrypted:
        flipped = "ckks" if expected == "ckks+masked" else "ckks+masked"
        changed = JobSpec.from_json(
            spec.to_json().replace(f'"aggregation":"{expected}"', f'"aggregation":"{flipped}"')
        )
        assert changed.digest() != spec.digest()


def test_the_key_dealer_is_pinned_in_every_encrypted_spec(tmp_path: Path) -> None:
    """Issue 14: partners accept the job key from the spec's dealer only, so an encrypted
    horizontal spec always names one: left empty, the first participant by name,
    resolved at validation and pinned in the digest; without participants, refused."""
    head = 'name="j"\ntask="segmentation"\npurpose="p"\nschema="s.json"\n'
    spec = load_job_spec(
        _job(tmp_path, head + 'participants=["c","a","b"]\n[privacy]\nencryption="ckks"\n')
    )
    assert spec.privacy.key_dealer == "a"
    assert json.loads(spec.to_json())["privacy"]["key_dealer"] == "a"
    other = JobSpec.from_json(spec.to_json().replace('"key_dealer":"a"', '"key_dealer":"b"'))
    assert other.privacy.key_dealer == "b" and other.digest() != spec.digest()
    with pytest.raises(JobSpecError, match="names the partner that deals its CKKS key"):
        load_job_spec(_job(tmp_path, head + '[privacy]\nencryption="ckks"\n'))
    named = load_job_spec(_job(tmp_path, head + '[privacy]\nencryption="ckks"\nkey_dealer="z"\n'))
    assert named.privacy.key_dealer == "z"
    # Unencrypted jobs deal no key.
    plain = load_job_spec(_job(tmp_path, head + 'participants=["a","b"]\n'))
    assert plain.privacy.key_dealer == ""


def test_client_level_dp_defaults_to_ckks_with_masks() -> None:
    """A client-level DP job runs under masks: "ckks+masked" by default when encrypted,
    "masked" without CKKS; plaintext (one partner's noise share in the clear) is refused."""
    from fedcollab.common.jobspec import PrivacySpec

    eps = {"target_epsilon": 8.0}
    assert PrivacySpec(encryption="ckks", dp="client", **eps).aggregation == "ckks+masked"
    assert PrivacySpec(encryption="ckks", dp="sample", **eps).aggregation == "ckks+masked"
    for mode, encryption in (("ckks+masked", "ckks"), ("masked", "none"), ("ckks", "ckks")):
        assert PrivacySpec(encryption=encryption, dp="client", aggregation=mode, **eps).dp == (
            "client"
        )
    with pytest.raises(ValueError, match="needs encryption = 'ckks' or aggregation = 'masked'"):
        PrivacySpec(encryption="none", dp="client", **eps)
    # Plain "ckks" has one decryptor, the dealer: a sampled round without it could not be
    # decrypted (red team, 2026-12-06), so partner sampling needs the masked modes.
    with pytest.raises(ValueError, match="needs a decryptor in every sampled round"):
        PrivacySpec(
            encryption="ckks", dp="client", aggregation="ckks", client_sample_rate=0.5, **eps
        )
    for mode, encryption in (("ckks+masked", "ckks"), ("masked", "none")):
        sampled = PrivacySpec(
            encryption=encryption, dp="client", aggregation=mode, client_sample_rate=0.5, **eps
        )
        assert sampled.client_sample_rate == 0.5
