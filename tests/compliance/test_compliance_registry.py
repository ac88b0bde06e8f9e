"""The Record of Processing Activities: models, file loading, purpose look-up."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import fedcollab.compliance.registry as registry_module
from fedcollab.common.errors import ComplianceError, PolicyRefusal
from fedcollab.compliance.registry import (
    Purpose,
    Registry,
    load_purpose,
    load_registry,
    save_registry,
    utc_date,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "data" / "registry.example.json"


def purpose_dict(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "purchase-prediction",
        "name": "Joint purchase-propensity modelling",
        "description": "Predict purchase sessions.",
        "legal_basis": {"pipl": "consent", "gdpr": "consent", "note": "PIPL Art. 13(1)(1)"},
        "consent": {
            "separate_consent_for_provision": True,
            "sensitive_data": False,
            "gdpr_explicit_consent": False,
        },
        "data_categories": ["browsing behaviour", "purchase outcome"],
        "retention_days": 180,
        "recipients": ["platform operator"],
        "cross_border": False,
        "cross_border_mechanism": None,
        "impact_assessment_ref": "PIPIA-2026-007",
        "controller": "Example Mall",
        "valid_from": "2026-01-01",
        "valid_until": "2026-12-31",
    }
    base.update(changes)
    return base


def parse(data: dict[str, Any]) -> Purpose:
    return Purpose.model_validate_json(json.dumps(data))


def test_public_surface() -> None:
    assert set(registry_module.__all__) >= {
        "ConsentRequirement",
        "LegalBasis",
        "Purpose",
        "Registry",
        "load_registry",
        "save_registry",
    }


def test_example_registry_loads_and_is_coherent() -> None:
    reg = load_registry(EXAMPLE)
    ids = [p.id for p in reg.purposes]
    assert ids == ["purchase-prediction", "user-segmentation", "payment-risk-scoring"]
    pp = reg.purpose("purchase-prediction")
    assert pp.consent.separate_consent_for_provision
    assert pp.impact_assessment_ref == "PIPIA-2026-007"
    risk = reg.purpose("payment-risk-scoring")
    assert risk.consent.sensitive_data and risk.impact_assessment_ref
    for p in reg.purposes:
        assert "Art." in p.legal_basis.note


def test_valid_purpose_parses_and_is_frozen() -> None:
    p = parse(purpose_dict())
    assert p.valid_from == date(2026, 1, 1)
    assert p.data_categories == ("browsing behaviour", "purchase outcome")
    with pytest.raises(ValidationError):
        p.retention_days = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"extra": 1}, "extra"),
        ({"id": "Purchase Prediction"}, "id"),
        ({"id": "a--b"}, "id"),
        ({"retention_days": 0}, "retention_days"),
        ({"retention_days": "180"}, "retention_days"),
        ({"data_categories": []}, "data_categories is empty"),
        ({"data_categories": ["a", "a"]}, "twice"),
        ({"valid_until": "2025-12-31"}, "before valid_from"),
        ({"legal_basis": {"pipl": "legitimate-interests", "gdpr": "consent", "note": "x"}}, "pipl"),
        ({"legal_basis": {"pipl": "consent", "gdpr": "vital", "note": "x"}}, "gdpr"),
        ({"cross_border": True}, "cross_border_mechanism is null"),
        ({"cross_border_mechanism": "standard contract"}, "cross_border is false"),
        ({"impact_assessment_ref": ""}, "PIPIA"),
        ({"impact_assessment_ref": "   "}, "PIPIA"),
    ],
)
def test_invalid_purposes_are_refused(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        parse(purpose_dict(**changes))


def test_cross_border_needs_separate_consent_pipl_art_39() -> None:
    data = purpose_dict(cross_border=True, cross_border_mechanism="CAC standard contract")
    assert parse(data).cross_border
    data["consent"] = dict(data["consent"], separate_consent_for_provision=False)
    with pytest.raises(ValidationError, match=r"Art\. 39"):
        parse(data)


def test_sensitive_data_needs_impact_assessment() -> None:
    data = purpose_dict(impact_assessment_ref="")
    data["consent"] = {
        "separate_consent_for_provision": False,
        "sensitive_data": True,
        "gdpr_explicit_consent": False,
    }
    with pytest.raises(ValidationError, match="PIPIA"):
        parse(data)
    data["consent"]["sensitive_data"] = False
    assert parse(data).impact_assessment_ref == ""  # nothing triggers Art. 55 here


def test_purpose_lookup_refuses_unknown_ids() -> None:
    reg = Registry(version=1, controller="Example Mall", purposes=(parse(purpose_dict()),))
    assert reg.purpose("purchase-prediction").id == "purchase-prediction"
    with pytest.raises(PolicyRefusal, match="'nope' is not registered") as info:
        reg.purpose("nope")
    assert info.value.exit_code == 32
    assert "purchase-prediction" in info.value.hint


def test_duplicate_ids_are_refused() -> None:
    p = parse(purpose_dict())
    with pytest.raises(ValidationError, match="twice"):
        Registry(version=1, controller="Example Mall", purposes=(p, p))
    reg = Registry(version=1, controller="Example Mall", purposes=(p,))
    with pytest.raises(ComplianceError, match="already registered") as info:
        reg.with_purpose(p)
    assert info.value.hint


def test_validity_boundaries_are_inclusive_utc_days() -> None:
    p = parse(purpose_dict())
    p.check_valid_at(datetime(2026, 1, 1, 0, 0, tzinfo=UTC))
    p.check_valid_at(datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC))
    with pytest.raises(PolicyRefusal, match="only from 2026-01-01"):
        p.check_valid_at(datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC))
    with pytest.raises(PolicyRefusal, match="expired on 2026-12-31"):
        p.check_valid_at(datetime(2027, 1, 1, tzinfo=UTC))
    # 2027-01-01 07:00 in Shanghai is still 2026-12-31 in UTC.
    shanghai = timezone(timedelta(hours=8))
    p.check_valid_at(datetime(2027, 1, 1, 7, 0, tzinfo=shanghai))


def test_naive_time_is_misuse() -> None:
    with pytest.raises(ComplianceError, match="naive"):
        utc_date(datetime(2026, 1, 1))


def test_save_then_load_roundtrip(tmp_path: Path) -> None:
    reg = load_registry(EXAMPLE)
    out = tmp_path / "reg.json"
    save_registry(reg, out)
    assert load_registry(out) == reg
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{", "not valid JSON"),
        ('{"version": 1, "version": 1, "controller": "x", "purposes": []}', "appears twice"),
        ('{"version": 2, "controller": "x", "purposes": []}', "version"),
        ('{"version": 1, "controller": "x", "purposes": [{"id": "p"}]}', "purposes.0.name"),
    ],
)
def test_bad_files_name_file_and_location(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "reg.json"
    path.write_text(text)
    with pytest.raises(ComplianceError, match=fragment) as info:
        load_registry(path)
    assert not isinstance(info.value, PolicyRefusal)
    assert str(path) in info.value.message and info.value.hint


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ComplianceError, match="not found"):
        load_registry(tmp_path / "none.json")


def test_load_purpose(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(purpose_dict()))
    assert load_purpose(path).id == "purchase-prediction"
    path.write_text(json.dumps(purpose_dict(retention_days=-1)))
    with pytest.raises(ComplianceError, match="retention_days"):
        load_purpose(path)
