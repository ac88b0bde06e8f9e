"""Signed dataset grants: models, signing, tamper detection, files."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import fedcollab.compliance.grants as grants_module
from fedcollab.common.errors import ComplianceError, PolicyRefusal
from fedcollab.common.keys import Signer
from fedcollab.compliance.events import canonical_json
from fedcollab.compliance.grants import (
    GRANT_DOMAIN,
    ConsentRecord,
    Grant,
    SignedGrant,
    grant_signing_payload,
    load_signed_grant,
    parse_signed_grant,
    save_signed_grant,
    sign_grant,
    verify_grant,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2027, 1, 1, tzinfo=UTC)
SIGNER = Signer.from_private_bytes(bytes(range(32)))
OTHER = Signer.from_private_bytes(bytes(range(1, 33)))


def make_grant(**changes: Any) -> Grant:
    fields: dict[str, Any] = {
        "partner": "brand-a",
        "dataset": "online-shoppers-region-1",
        "dataset_hash": "sha256:" + "ab" * 32,
        "purposes": ("purchase-prediction", "user-segmentation"),
        "valid_from": T0,
        "valid_until": T1,
        "consents": (
            ConsentRecord(
                purpose="purchase-prediction",
                kind="separate-provision",
                evidence_ref="crm-consent:campaign-2026-03",
                subjects_covered=12330,
                valid_until=T1,
            ),
        ),
        "issued_at": T0,
    }
    fields.update(changes)
    return Grant(**fields)


def test_public_surface() -> None:
    assert set(grants_module.__all__) >= {
        "ConsentRecord",
        "Grant",
        "SignedGrant",
        "load_signed_grant",
        "sign_grant",
        "verify_grant",
    }


def test_sign_and_verify() -> None:
    signed = sign_grant(make_grant(), SIGNER)
    assert signed.signer_name == "brand-a"
    assert len(base64.b64decode(signed.signature)) == 64
    verify_grant(signed, SIGNER.public_key)  # returns None, raises on failure


def test_signature_is_deterministic_and_domain_separated() -> None:
    grant = make_grant()
    assert sign_grant(grant, SIGNER) == sign_grant(grant, SIGNER)
    payload = grant_signing_payload(grant, "brand-a")
    assert payload.startswith(GRANT_DOMAIN)
    body = canonical_json({"grant": grant.model_dump(mode="json"), "signer_name": "brand-a"})
    assert payload == GRANT_DOMAIN + body
    # A signature over the same JSON without the prefix (another use of the key) is refused.
    forged = SignedGrant(
        grant=grant,
        signer_name="brand-a",
        signature=base64.b64encode(SIGNER.sign(body)).decode(),
    )
    with pytest.raises(PolicyRefusal, match="does not verify"):
        verify_grant(forged, SIGNER.public_key)


def test_flipped_signature_byte_is_refused() -> None:
    signed = sign_grant(make_grant(), SIGNER)
    raw = bytearray(base64.b64decode(signed.signature))
    raw[10] ^= 0x01
    bad = signed.model_copy(update={"signature": base64.b64encode(bytes(raw)).decode()})
    with pytest.raises(PolicyRefusal, match="does not verify") as info:
        verify_grant(bad, SIGNER.public_key)
    assert info.value.exit_code == 32 and "re-issue" in info.value.hint


def test_changed_purpose_is_refused() -> None:
    signed = sign_grant(make_grant(), SIGNER)
    doc = signed.model_dump(mode="json")
    doc["grant"]["purposes"][1] = "payment-risk-scoring"
    tampered = parse_signed_grant(json.dumps(doc))
    with pytest.raises(PolicyRefusal, match="brand-a"):
        verify_grant(tampered, SIGNER.public_key)


def test_other_key_is_refused() -> None:
    signed = sign_grant(make_grant(), OTHER)
    with pytest.raises(PolicyRefusal, match="does not verify"):
        verify_grant(signed, SIGNER.public_key)
    with pytest.raises(PolicyRefusal):
        verify_grant(signed, b"\x00" * 31)  # malformed key: fail closed


def test_non_base64_signature_is_refused() -> None:
    signed = sign_grant(make_grant(), SIGNER)
    bad = signed.model_copy(update={"signature": "!" * 88})
    with pytest.raises(PolicyRefusal, match="base64"):
        verify_grant(bad, SIGNER.public_key)


def test_times_are_normalised_to_utc() -> None:
    shanghai = timezone(timedelta(hours=8))
    grant = make_grant(valid_from=T0.astimezone(shanghai), valid_until=T1.astimezone(shanghai))
    assert grant.valid_from.tzinfo == UTC
    assert grant.model_dump(mode="json")["valid_from"] == "2026-01-01T00:00:00Z"
    assert grant == make_grant()
    assert grant.digest() == make_grant().digest()


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        make_grant(valid_until=datetime(2027, 1, 1))


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"purposes": ()}, "purposes is empty"),
        ({"purposes": ("a", "a")}, "twice"),
        ({"purposes": ("Not A Slug",)}, "purposes"),
        ({"valid_until": T0}, "after valid_from"),
        ({"dataset_hash": "sha256:XYZ"}, "dataset_hash"),
        ({"dataset_hash": "md5:" + "0" * 32}, "dataset_hash"),
        ({"partner": "brand a"}, "partner"),
        ({"purposes": ("user-segmentation",)}, "does not allow"),
    ],
)
def test_invalid_grants(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        make_grant(**changes)


def test_duplicate_consent_kind_is_refused() -> None:
    record = make_grant().consents[0]
    with pytest.raises(ValidationError, match="two 'separate-provision'"):
        make_grant(consents=(record, record))


@pytest.mark.parametrize(
    "ref",
    [
        "alice@example.com",  # e-mail address
        "13800138000",  # a mainland mobile number
        "acct-6222021234567890123",  # a bank card number
        "Zhang San",  # a name with a space
        "",
    ],
)
def test_evidence_ref_refuses_what_looks_like_personal_data(ref: str) -> None:
    with pytest.raises(ValidationError, match="evidence_ref"):
        ConsentRecord(
            purpose="purchase-prediction",
            kind="general",
            evidence_ref=ref,
            subjects_covered=1,
            valid_until=T1,
        )


def test_consent_validity_boundary() -> None:
    record = make_grant().consents[0]
    assert record.is_valid_at(T1 - timedelta(microseconds=1))
    assert not record.is_valid_at(T1)


def test_file_roundtrip(tmp_path: Path) -> None:
    signed = sign_grant(make_grant(), SIGNER)
    path = tmp_path / "grant.json"
    save_signed_grant(signed, path)
    loaded = load_signed_grant(path)
    assert loaded == signed
    verify_grant(loaded, SIGNER.public_key)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d["grant"].update(subjects=1), "grant.subjects"),
        (lambda d: d.update(signature="short"), "signature"),
        (lambda d: d["grant"]["consents"][0].update(subjects_covered="12"), "subjects_covered"),
        (lambda d: d["grant"].update(valid_until="2027-01-01T00:00:00"), "timezone"),
    ],
)
def test_load_is_strict(tmp_path: Path, mutate: Any, fragment: str) -> None:
    doc = sign_grant(make_grant(), SIGNER).model_dump(mode="json")
    mutate(doc)
    path = tmp_path / "grant.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ComplianceError, match=fragment) as info:
        load_signed_grant(path)
    assert str(path) in info.value.message


def test_load_refuses_duplicate_keys(tmp_path: Path) -> None:
    text = json.dumps(sign_grant(make_grant(), SIGNER).model_dump(mode="json"))
    path = tmp_path / "grant.json"
    path.write_text(text.replace('{"version": 1,', '{"version": 1, "version": 1,', 1))
    with pytest.raises(ComplianceError, match="twice"):
        load_signed_grant(path)


# --- property: any single-field edit breaks verification ---------------------------

_SIGNED_DOC = sign_grant(make_grant(), SIGNER).model_dump(mode="json")
_token = st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True)
_times = st.datetimes(
    min_value=datetime(2020, 1, 1),
    max_value=datetime(2035, 1, 1),
    timezones=st.just(UTC),
).map(lambda t: t.isoformat().replace("+00:00", "Z"))
_EDITS = st.one_of(
    st.tuples(st.just(("signer_name",)), _token),
    st.tuples(st.just(("grant", "partner")), _token),
    st.tuples(st.just(("grant", "dataset")), _token),
    st.tuples(
        st.just(("grant", "dataset_hash")),
        st.none() | st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True),
    ),
    st.tuples(
        st.just(("grant", "purposes")),
        st.lists(_token, min_size=1, max_size=3, unique=True).map(
            lambda extra: ["purchase-prediction", *extra]
        ),
    ),
    st.tuples(st.just(("grant", "valid_from")), _times),
    st.tuples(st.just(("grant", "valid_until")), _times),
    st.tuples(st.just(("grant", "issued_at")), _times),
    st.tuples(
        st.just(("grant", "consents", 0, "kind")),
        st.sampled_from(["sensitive-data", "explicit", "general"]),
    ),
    st.tuples(
        st.just(("grant", "consents", 0, "evidence_ref")),
        st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,20}", fullmatch=True),
    ),
    st.tuples(st.just(("grant", "consents", 0, "subjects_covered")), st.integers(0, 10**9)),
    st.tuples(st.just(("grant", "consents", 0, "valid_until")), _times),
    st.tuples(st.just(("grant", "consents")), st.just([])),
)


@settings(max_examples=150, deadline=None)
@given(_EDITS)
def test_any_single_field_edit_breaks_verification(edit: tuple[tuple[Any, ...], Any]) -> None:
    path, value = edit
    doc = copy.deepcopy(_SIGNED_DOC)
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    if target[path[-1]] == value:
        return  # not an edit
    target[path[-1]] = value
    try:
        tampered = parse_signed_grant(json.dumps(doc))
    except ComplianceError:
        event("refused by the model")
        return  # refused at the door (e.g. valid_until before valid_from): also fails closed
    with pytest.raises(PolicyRefusal):
        verify_grant(tampered, SIGNER.public_key)
    event("refused by the signature")
