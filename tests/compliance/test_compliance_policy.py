"""The job policy decision: every refusal path, boundaries, and the partner-side check."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import fedcollab.compliance.policy as policy_module
from fedcollab.common.errors import ComplianceError, PolicyRefusal
from fedcollab.common.keys import Signer
from fedcollab.compliance.events import canonical_json
from fedcollab.compliance.grants import ConsentKind, ConsentRecord, Grant, SignedGrant, sign_grant
from fedcollab.compliance.policy import (
    ParticipantFacts,
    PolicyDecision,
    check_job_policy,
    check_partner_grant,
    required_consents,
)
from fedcollab.compliance.registry import Purpose, Registry, load_registry

REPO = Path(__file__).resolve().parents[2]
REGISTRY = load_registry(REPO / "data" / "registry.example.json")
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
G_FROM = datetime(2026, 1, 1, tzinfo=UTC)
G_UNTIL = datetime(2027, 1, 1, tzinfo=UTC)
HASH_A = "sha256:" + "aa" * 32
KEYS = {name: Signer.from_private_bytes(bytes([i]) * 32) for i, name in enumerate("ab", 1)}
PARTNERS = {"a": "brand-a", "b": "brand-b"}


def consent(purpose: str, kind: ConsentKind, **changes: Any) -> ConsentRecord:
    fields: dict[str, Any] = {
        "purpose": purpose,
        "kind": kind,
        "evidence_ref": f"crm:{kind}-2026",
        "subjects_covered": 1000,
        "valid_until": G_UNTIL,
    }
    fields.update(changes)
    return ConsentRecord(**fields)


def grant_for(partner: str, **changes: Any) -> Grant:
    fields: dict[str, Any] = {
        "partner": partner,
        "dataset": f"shop-{partner}",
        "dataset_hash": None,
        "purposes": ("purchase-prediction",),
        "valid_from": G_FROM,
        "valid_until": G_UNTIL,
        "consents": (consent("purchase-prediction", "separate-provision"),),
        "issued_at": G_FROM,
    }
    fields.update(changes)
    return Grant(**fields)


def setup(
    **grant_changes: Any,
) -> tuple[dict[str, ParticipantFacts], dict[str, SignedGrant], dict[str, bytes]]:
    """Two partners; ``grant_changes`` apply to brand-a's grant only."""
    participants = {
        "brand-a": ParticipantFacts("brand-a", "shop-brand-a", HASH_A),
        "brand-b": ParticipantFacts("brand-b", "shop-brand-b", None),
    }
    grants = {
        "brand-a": sign_grant(grant_for("brand-a", **grant_changes), KEYS["a"]),
        "brand-b": sign_grant(grant_for("brand-b"), KEYS["b"]),
    }
    keys = {"brand-a": KEYS["a"].public_key, "brand-b": KEYS["b"].public_key}
    return participants, grants, keys


def decide(
    purpose_id: str = "purchase-prediction",
    *,
    now: datetime = NOW,
    registry: Registry = REGISTRY,
    setup_: tuple[Any, Any, Any] | None = None,
) -> PolicyDecision:
    participants, grants, keys = setup_ or setup()
    return check_job_policy(
        purpose_id=purpose_id,
        participants=participants,
        registry=registry,
        grants=grants,
        partner_keys=keys,
        now=now,
    )


def refusal(**kwargs: Any) -> PolicyRefusal:
    with pytest.raises(PolicyRefusal) as info:
        decide(**kwargs)
    assert info.value.exit_code == 32
    assert info.value.hint, "every refusal says what to do"
    return info.value


def test_public_surface() -> None:
    assert set(policy_module.__all__) == {
        "ConsentUse",
        "GrantUse",
        "ParticipantFacts",
        "PolicyDecision",
        "check_job_policy",
        "check_partner_grant",
        "required_consents",
    }


def test_allowed_job_records_what_was_checked() -> None:
    participants, grants, keys = setup()
    decision = decide(setup_=(participants, grants, keys))
    assert decision.purpose_id == "purchase-prediction"
    assert (decision.legal_basis_pipl, decision.legal_basis_gdpr) == ("consent", "consent")
    assert decision.impact_assessment_ref == "PIPIA-2026-007"
    assert [g.partner for g in decision.grants] == ["brand-a", "brand-b"]
    assert decision.grants[0].grant_digest == grants["brand-a"].grant.digest()
    assert decision.grants[0].grant_digest.startswith("sha256:")
    assert [(c.partner, c.kind) for c in decision.consents] == [
        ("brand-a", "separate-provision"),
        ("brand-b", "separate-provision"),
    ]
    body = decision.to_json_value()
    canonical_json(body)  # loggable as an audit event body
    assert body["consents"][0]["evidence_ref"] == "crm:separate-provision-2026"
    assert body["checked_at"] == "2026-06-01T12:00:00Z"


# --- the purpose -------------------------------------------------------------------


def test_unregistered_purpose() -> None:
    exc = refusal(purpose_id="ad-targeting")
    assert "'ad-targeting' is not registered" in exc.message


def test_purpose_validity_boundaries() -> None:
    p = REGISTRY.purpose("purchase-prediction")
    last = datetime.combine(p.valid_until, datetime.max.time(), tzinfo=UTC)
    first = datetime.combine(p.valid_from, datetime.min.time(), tzinfo=UTC)
    # Grants must be valid at those instants too, to isolate the purpose check.
    wide = {"valid_from": first - timedelta(days=1), "valid_until": last + timedelta(days=1)}
    wide_consent = (
        consent("purchase-prediction", "separate-provision", valid_until=last + timedelta(days=1)),
    )
    participants, grants, keys = setup(**wide, consents=wide_consent)
    grants["brand-b"] = sign_grant(grant_for("brand-b", **wide, consents=wide_consent), KEYS["b"])
    s = (participants, grants, keys)
    decide(now=first, setup_=s)
    decide(now=last, setup_=s)
    assert "expired on" in refusal(now=last + timedelta(microseconds=1), setup_=s).message
    assert "only from" in refusal(now=first - timedelta(microseconds=1), setup_=s).message


def test_naive_now_is_misuse() -> None:
    with pytest.raises(ComplianceError, match="naive") as info:
        decide(now=datetime(2026, 6, 1))
    assert not isinstance(info.value, PolicyRefusal)


def test_no_participants() -> None:
    _, grants, keys = setup()
    exc = refusal(setup_=({}, grants, keys))
    assert "no participants" in exc.message


def test_participants_mapping_must_be_keyed_by_partner() -> None:
    participants, grants, keys = setup()
    participants["brand-a"] = ParticipantFacts("brand-x", "shop-brand-a", HASH_A)
    with pytest.raises(ComplianceError, match="brand-x"):
        decide(setup_=(participants, grants, keys))


# --- grants and keys ---------------------------------------------------------------


def test_missing_grant() -> None:
    participants, grants, keys = setup()
    del grants["brand-b"]
    exc = refusal(setup_=(participants, grants, keys))
    assert "partner 'brand-b' has no grant" in exc.message


def test_missing_key() -> None:
    participants, grants, keys = setup()
    del keys["brand-a"]
    exc = refusal(setup_=(participants, grants, keys))
    assert "partner 'brand-a' has no registered public key" in exc.message


def test_grant_of_another_partner_is_refused() -> None:
    participants, grants, keys = setup()
    grants["brand-a"] = grants["brand-b"]
    exc = refusal(setup_=(participants, grants, keys))
    assert "partner 'brand-a'" in exc.message and "issued by partner 'brand-b'" in exc.message


def test_flipped_signature_is_refused() -> None:
    participants, grants, keys = setup()
    raw = bytearray(base64.b64decode(grants["brand-a"].signature))
    raw[0] ^= 0x80
    grants["brand-a"] = grants["brand-a"].model_copy(
        update={"signature": base64.b64encode(bytes(raw)).decode()}
    )
    exc = refusal(setup_=(participants, grants, keys))
    assert "partner 'brand-a'" in exc.message and "does not verify" in exc.message


def test_edited_purposes_in_signed_grant_are_refused() -> None:
    participants, grants, keys = setup()
    doc = grants["brand-a"].model_dump(mode="json")
    doc["grant"]["purposes"] = ["purchase-prediction", "payment-risk-scoring"]
    grants["brand-a"] = SignedGrant.model_validate_json(json.dumps(doc))
    assert "does not verify" in refusal(setup_=(participants, grants, keys)).message


def test_grant_signed_by_an_unregistered_key_is_refused() -> None:
    participants, grants, keys = setup()
    grants["brand-a"] = sign_grant(grant_for("brand-a"), KEYS["b"])  # brand-b's key
    exc = refusal(setup_=(participants, grants, keys))
    assert "brand-a" in exc.message and "does not verify" in exc.message


def test_dataset_name_must_match() -> None:
    exc = refusal(setup_=setup(dataset="shop-other"))
    assert "covers dataset 'shop-other', not 'shop-brand-a'" in exc.message


def test_pinned_hash_must_match() -> None:
    decide(setup_=setup(dataset_hash=HASH_A))
    exc = refusal(setup_=setup(dataset_hash="sha256:" + "bb" * 32))
    assert "pins dataset" in exc.message and HASH_A in exc.message
    participants, grants, keys = setup(dataset_hash=HASH_A)
    participants["brand-a"] = ParticipantFacts("brand-a", "shop-brand-a", None)
    exc = refusal(setup_=(participants, grants, keys))
    assert "unknown content hash" in exc.message


def test_grant_validity_is_half_open() -> None:
    decide(now=G_FROM + timedelta(days=1))
    s = setup(valid_from=NOW)
    decide(now=NOW, setup_=s)
    assert "not valid before" in refusal(now=NOW - timedelta(microseconds=1), setup_=s).message
    s = setup(valid_until=NOW)
    decide(now=NOW - timedelta(microseconds=1), setup_=s)
    exc = refusal(now=NOW, setup_=s)
    assert "partner 'brand-a': grant expired at 2026-06-01T12:00:00Z" in exc.message


def test_purpose_not_in_grant() -> None:
    exc = refusal(purpose_id="user-segmentation")
    assert "does not allow purpose 'user-segmentation'" in exc.message
    assert "2 participants" in exc.message  # both partners lack it: reported together


# --- consents ----------------------------------------------------------------------


def test_missing_separate_provision_consent() -> None:
    exc = refusal(setup_=setup(consents=()))
    assert "partner 'brand-a'" in exc.message
    assert "requires a 'separate-provision' consent record" in exc.message
    assert "--consent" in exc.hint


def test_consent_for_another_purpose_does_not_count() -> None:
    other = consent("user-segmentation", "separate-provision")
    s = setup(purposes=("purchase-prediction", "user-segmentation"), consents=(other,))
    assert "'separate-provision'" in refusal(setup_=s).message


def test_consent_expiry_boundary() -> None:
    at = (consent("purchase-prediction", "separate-provision", valid_until=NOW),)
    decide(now=NOW - timedelta(microseconds=1), setup_=setup(consents=at))
    exc = refusal(now=NOW, setup_=setup(consents=at))
    assert "consent record 'crm:separate-provision-2026'" in exc.message
    assert "expired at 2026-06-01T12:00:00Z" in exc.message


def test_consent_covering_nobody_is_refused() -> None:
    zero = (consent("purchase-prediction", "separate-provision", subjects_covered=0),)
    assert "covers no data subjects" in refusal(setup_=setup(consents=zero)).message


def test_sensitive_data_needs_its_own_consent() -> None:
    purpose = "payment-risk-scoring"
    only_provision = (consent(purpose, "separate-provision"),)
    participants, _, keys = setup()
    grants = {
        name: sign_grant(
            grant_for(name, purposes=(purpose,), consents=only_provision), KEYS[name[-1]]
        )
        for name in participants
    }
    exc = refusal(purpose_id=purpose, setup_=(participants, grants, keys))
    assert "'sensitive-data' consent record" in exc.message
    both = (*only_provision, consent(purpose, "sensitive-data"))
    grants = {
        name: sign_grant(grant_for(name, purposes=(purpose,), consents=both), KEYS[name[-1]])
        for name in participants
    }
    decision = decide(purpose, setup_=(participants, grants, keys))
    assert {c.kind for c in decision.consents} == {"separate-provision", "sensitive-data"}


def _registry_with(**changes: Any) -> Registry:
    base = REGISTRY.purpose("purchase-prediction").model_dump()
    base.update(changes)
    return Registry(version=1, controller="x", purposes=(Purpose(**base),))


def test_explicit_consent_when_required() -> None:
    flags = {
        "separate_consent_for_provision": True,
        "sensitive_data": False,
        "gdpr_explicit_consent": True,
    }
    reg = _registry_with(consent=flags)
    exc = refusal(registry=reg)
    assert "'explicit' consent record" in exc.message


def test_consent_based_purpose_needs_at_least_general_consent() -> None:
    flags = {
        "separate_consent_for_provision": False,
        "sensitive_data": False,
        "gdpr_explicit_consent": False,
    }
    reg = _registry_with(consent=flags)
    assert "'general' consent record" in refusal(registry=reg).message
    lb = {"pipl": "contract", "gdpr": "contract", "note": "PIPL Art. 13(1)(2)"}
    reg = _registry_with(consent=flags, legal_basis=lb)
    assert decide(registry=reg).consents == ()


@pytest.mark.parametrize(
    ("flags", "pipl", "expected"),
    [
        ((True, False, False), "consent", ("separate-provision",)),
        ((True, True, False), "consent", ("separate-provision", "sensitive-data")),
        ((False, False, True), "consent", ("explicit",)),
        ((False, False, False), "consent", ("general",)),
        ((False, False, False), "contract", ()),
    ],
)
def test_required_consents(
    flags: tuple[bool, bool, bool], pipl: str, expected: tuple[str, ...]
) -> None:
    names = ("separate_consent_for_provision", "sensitive_data", "gdpr_explicit_consent")
    lb = {"pipl": pipl, "gdpr": "legitimate-interests", "note": "n"}
    purpose = _registry_with(consent=dict(zip(names, flags, strict=True)), legal_basis=lb)
    assert required_consents(purpose.purposes[0]) == expected


# --- partner-side check ------------------------------------------------------------


def partner_check(signed: SignedGrant, **changes: Any) -> None:
    kwargs: dict[str, Any] = {
        "purpose_id": "purchase-prediction",
        "partner": "brand-a",
        "dataset": "shop-brand-a",
        "dataset_hash": HASH_A,
        "grant": signed,
        "own_public_key": KEYS["a"].public_key,
        "now": NOW,
    }
    kwargs.update(changes)
    check_partner_grant(**kwargs)


def test_partner_accepts_a_job_inside_its_grant() -> None:
    signed = sign_grant(grant_for("brand-a"), KEYS["a"])
    partner_check(signed)
    partner_check(signed, purpose=REGISTRY.purpose("purchase-prediction"))


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"purpose_id": "payment-risk-scoring"}, "does not allow purpose"),
        ({"dataset": "shop-other"}, "covers dataset"),
        ({"now": G_UNTIL}, "expired"),
        ({"now": G_FROM - timedelta(seconds=1)}, "not valid before"),
        ({"own_public_key": KEYS["b"].public_key}, "does not verify"),
        ({"partner": "brand-b"}, "issued by partner 'brand-a'"),
    ],
)
def test_partner_refuses_a_job_outside_its_grant(changes: dict[str, Any], fragment: str) -> None:
    # The coordinator may have accepted the job; the node decides on its own grant.
    signed = sign_grant(grant_for("brand-a"), KEYS["a"])
    with pytest.raises(PolicyRefusal, match=fragment):
        partner_check(signed, **changes)


def test_partner_refuses_pinned_hash_mismatch() -> None:
    signed = sign_grant(grant_for("brand-a", dataset_hash=HASH_A), KEYS["a"])
    partner_check(signed)
    with pytest.raises(PolicyRefusal, match="pins dataset"):
        partner_check(signed, dataset_hash="sha256:" + "cc" * 32)


def test_partner_refuses_its_own_expired_consent_without_the_registry() -> None:
    expiring = (consent("purchase-prediction", "separate-provision", valid_until=NOW),)
    signed = sign_grant(grant_for("brand-a", consents=expiring), KEYS["a"])
    partner_check(signed, now=NOW - timedelta(microseconds=1))
    with pytest.raises(PolicyRefusal, match="expired"):
        partner_check(signed)


def test_partner_with_registry_entry_checks_required_consents_and_validity() -> None:
    signed = sign_grant(grant_for("brand-a", consents=()), KEYS["a"])
    partner_check(signed)  # nothing the node itself can hold against the job
    with pytest.raises(PolicyRefusal, match="'separate-provision'"):
        partner_check(signed, purpose=REGISTRY.purpose("purchase-prediction"))
    old = _registry_with(valid_until=date(2026, 5, 31)).purposes[0]
    with pytest.raises(PolicyRefusal, match="expired on 2026-05-31"):
        partner_check(sign_grant(grant_for("brand-a"), KEYS["a"]), purpose=old)
    with pytest.raises(ComplianceError, match="registry entry"):
        partner_check(signed, purpose=REGISTRY.purpose("user-segmentation"))
