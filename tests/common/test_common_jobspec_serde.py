"""Job specs and the wire format refuse bad input with typed errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict

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
    head = 'name="j"\ntask="segmentation"\npurpose="p"\nschema="s.json"\n'
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
    head = 'name="j"\ntask="segmentation"\npurpose="p"\nschema="s.json"\n'
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
