"""The Record of Processing Activities: registered purposes and their legal footing.

The registry is the JSON file the platform's compliance officer maintains as the
record required by GDPR Art. 30 and kept for PIPL Art. 54-56 compliance audits
and personal information protection impact assessments (PIPIA).  Every job
names one registered purpose; :mod:`compliance.policy` refuses jobs whose
purpose is missing or outside its validity.

A purpose states:

* its legal basis under PIPL Art. 13(1) and GDPR Art. 6(1);
* which consents it needs: separate consent to provide personal information to
  another handler (PIPL Art. 23) or abroad (PIPL Art. 39), separate consent for
  sensitive personal information such as financial accounts (PIPL Art. 28-29),
  explicit consent for special categories (GDPR Art. 9(2)(a));
* data categories, retention, recipients (GDPR Art. 30(1)(c)-(f));
* whether data leave the country and under which PIPL Art. 38 mechanism;
* the reference of its PIPIA (PIPL Art. 55-56) / DPIA (GDPR Art. 35).

Example (``data/registry.example.json``, abridged)::

    {"version": 1, "controller": "Example Mall Ltd.",
     "purposes": [{"id": "purchase-prediction", "name": "...", "description": "...",
       "legal_basis": {"pipl": "consent", "gdpr": "consent", "note": "..."},
       "consent": {"separate_consent_for_provision": true, "sensitive_data": false,
                   "gdpr_explicit_consent": false},
       "data_categories": ["browsing behaviour"], "retention_days": 180,
       "recipients": ["platform operator"], "cross_border": false,
       "cross_border_mechanism": null, "impact_assessment_ref": "PIPIA-2026-007",
       "controller": "Example Mall Ltd.", "valid_from": "2026-01-01",
       "valid_until": "2027-12-31"}]}

Notes
-----
* The file is untrusted input (edited by hand): strict pydantic models refuse
  unknown keys, type coercion and duplicate JSON keys.
* A purpose is valid on the UTC calendar days ``valid_from`` to ``valid_until``,
  both included: the registry speaks in dates, as a RoPA does.
* An impact assessment reference is required whenever PIPL Art. 55 makes a
  PIPIA mandatory and the registry can tell: sensitive data (55(1)), provision
  to another handler (55(3)) and cross-border transfer (55(4)).
* A cross-border purpose must require separate consent for provision, because
  PIPL Art. 39 requires separate consent for any transfer abroad.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from fedcollab.common.atomic import write_json_atomic
from fedcollab.common.errors import ComplianceError, PolicyRefusal

__all__ = [
    "PURPOSE_ID_PATTERN",
    "ConsentRequirement",
    "GdprBasis",
    "LegalBasis",
    "PiplBasis",
    "Purpose",
    "Registry",
    "format_validation_error",
    "load_purpose",
    "load_registry",
    "read_json_text",
    "save_registry",
    "utc_date",
    "write_json_atomically",
]

#: A purpose id: lowercase words joined by single hyphens ("purchase-prediction").
PURPOSE_ID_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"

#: PIPL Art. 13(1) items (1)-(7): consent; contract or HR management; legal duty;
#: public-health emergency or protection of life/property; news reporting in the
#: public interest; information the individual disclosed; other laws.
PiplBasis = Literal[
    "consent",
    "contract",
    "legal-obligation",
    "public-health",
    "news-public-interest",
    "public-disclosed",
    "other-law",
]

#: GDPR Art. 6(1)(a)-(f).
GdprBasis = Literal[
    "consent",
    "contract",
    "legal-obligation",
    "vital-interests",
    "public-task",
    "legitimate-interests",
]

_Text = Annotated[str, Field(min_length=1, max_length=2000, pattern=r"^[^\x00-\x1f]+$")]
_Label = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]


def _list_to_tuple(value: object) -> object:
    # Strict mode refuses a Python list for a tuple field (JSON arrays are fine);
    # accept lists from code, store tuples so the model is immutable throughout.
    return tuple(value) if isinstance(value, list) else value


def _distinct(values: tuple[str, ...], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} lists {value!r} twice")
        seen.add(value)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LegalBasis(_Strict):
    """The lawful basis under each law, with a note citing the reasoning."""

    pipl: PiplBasis
    gdpr: GdprBasis
    note: _Text


class ConsentRequirement(_Strict):
    """Which consents, beyond the legal basis itself, the purpose depends on."""

    #: PIPL Art. 23 (and Art. 39 abroad): separate consent to provide data to another handler.
    separate_consent_for_provision: bool
    #: PIPL Art. 28-29: sensitive personal information (e.g. payment accounts) needs
    #: separate consent and a demonstrated necessity.
    sensitive_data: bool
    #: GDPR Art. 9(2)(a): explicit consent for special categories of data.
    gdpr_explicit_consent: bool


class Purpose(_Strict):
    """One processing activity of the record (GDPR Art. 30(1))."""

    id: str = Field(min_length=1, max_length=64, pattern=PURPOSE_ID_PATTERN)
    name: _Label
    description: _Text
    legal_basis: LegalBasis
    consent: ConsentRequirement
    data_categories: Annotated[tuple[_Label, ...], BeforeValidator(_list_to_tuple)]
    retention_days: int = Field(gt=0, le=36_500)
    recipients: Annotated[tuple[_Label, ...], BeforeValidator(_list_to_tuple)]
    cross_border: bool
    cross_border_mechanism: _Text | None
    impact_assessment_ref: str = Field(max_length=200, pattern=r"^[^\x00-\x1f]*$")
    controller: _Label
    valid_from: date
    valid_until: date

    @model_validator(mode="after")
    def _coherent(self) -> Purpose:
        if not self.data_categories:
            raise ValueError("data_categories is empty; list what personal data is processed")
        _distinct(self.data_categories, "data_categories")
        _distinct(self.recipients, "recipients")
        if self.valid_until < self.valid_from:
            raise ValueError("valid_until is before valid_from")
        if self.cross_border and self.cross_border_mechanism is None:
            raise ValueError(
                "cross_border is true but cross_border_mechanism is null; name the "
                "PIPL Art. 38 mechanism (security assessment, certification, standard contract)"
            )
        if not self.cross_border and self.cross_border_mechanism is not None:
            raise ValueError("cross_border_mechanism is set but cross_border is false")
        if self.cross_border and not self.consent.separate_consent_for_provision:
            raise ValueError(
                "a cross-border purpose needs separate consent (PIPL Art. 39): "
                "set consent.separate_consent_for_provision to true"
            )
        needs_assessment = (
            self.consent.sensitive_data
            or self.consent.separate_consent_for_provision
            or self.cross_border
        )
        if needs_assessment and not self.impact_assessment_ref.strip():
            raise ValueError(
                "impact_assessment_ref is empty but PIPL Art. 55 requires a PIPIA for sensitive "
                "data, provision to another handler or cross-border transfer"
            )
        return self

    def is_valid_on(self, day: date) -> bool:
        """``True`` iff ``valid_from <= day <= valid_until``."""
        return self.valid_from <= day <= self.valid_until

    def check_valid_at(self, now: datetime) -> None:
        """Raise :class:`PolicyRefusal` unless the purpose is valid at ``now`` (UTC date)."""
        day = utc_date(now)
        if day < self.valid_from:
            raise PolicyRefusal(
                f"purpose {self.id!r} is registered only from {self.valid_from.isoformat()}",
                hint="wait until the purpose takes effect, or ask the compliance officer "
                "to correct valid_from in the registry",
            )
        if day > self.valid_until:
            raise PolicyRefusal(
                f"purpose {self.id!r} expired on {self.valid_until.isoformat()}",
                hint="ask the compliance officer to review the purpose (and its PIPIA) "
                "and extend valid_until in the registry",
            )


class Registry(_Strict):
    """The whole record: the controller and its registered purposes."""

    version: Literal[1]
    controller: _Label
    # No list-to-tuple shim here: a before-validator would validate nested dates in
    # Python mode, where strict pydantic refuses ISO strings.
    purposes: tuple[Purpose, ...] = ()

    @model_validator(mode="after")
    def _unique_ids(self) -> Registry:
        _distinct(tuple(p.id for p in self.purposes), "purposes")
        return self

    def purpose(self, purpose_id: str) -> Purpose:
        """The purpose called ``purpose_id``; :class:`PolicyRefusal` if none is."""
        for p in self.purposes:
            if p.id == purpose_id:
                return p
        known = ", ".join(p.id for p in self.purposes) or "none"
        raise PolicyRefusal(
            f"purpose {purpose_id!r} is not registered",
            hint=f"name a registered purpose (registered: {known}), or ask the compliance "
            "officer to add it with 'fedcollab registry add-purpose'",
        )

    def with_purpose(self, purpose: Purpose) -> Registry:
        """A copy with ``purpose`` appended; refuses an id that is already registered."""
        if any(p.id == purpose.id for p in self.purposes):
            raise ComplianceError(
                f"purpose {purpose.id!r} is already registered",
                hint="choose another id; to change a registered purpose, edit the registry "
                "file under your change-control procedure",
            )
        return Registry(
            version=self.version,
            controller=self.controller,
            purposes=(*self.purposes, purpose),
        )


def utc_date(now: datetime) -> date:
    """The UTC calendar date of an aware datetime; refuses naive ones."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ComplianceError(
            "a naive datetime was given where a timezone-aware one is required",
            hint="pass e.g. datetime.now(UTC)",
        )
    return now.astimezone(UTC).date()


def format_validation_error(exc: ValidationError) -> str:
    """One indented line per pydantic error: ``  purposes.0.id: <message>``."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"  {loc}: {error['msg']}")
    return "\n".join(lines)


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key!r} appears twice in one object")
        result[key] = value
    return result


def read_json_text(path: Path, *, what: str, hint: str) -> str:
    """The UTF-8 text of a JSON file, refusing duplicate keys; ComplianceError otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ComplianceError(f"{path}: {what} not found", hint="check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ComplianceError(f"{path}: cannot read {what}: {exc}", hint=hint) from exc
    try:
        json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise ComplianceError(
            f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            hint=hint,
        ) from exc
    except ValueError as exc:
        raise ComplianceError(f"{path}: not valid JSON: {exc}", hint=hint) from exc
    return text


def load_registry(path: str | Path) -> Registry:
    """Read and validate a registry file.

    Raises :class:`ComplianceError` naming the file and each offending location
    (``purposes.1.impact_assessment_ref``, ...).
    """
    path = Path(path)
    hint = "fix the registry file (see data/registry.example.json for an example)"
    text = read_json_text(path, what="registry file", hint=hint)
    try:
        return Registry.model_validate_json(text)
    except ValidationError as exc:
        raise ComplianceError(
            f"{path}: invalid registry:\n{format_validation_error(exc)}", hint=hint
        ) from exc


def load_purpose(path: str | Path) -> Purpose:
    """Read and validate one purpose (a JSON object as in the registry's ``purposes``)."""
    path = Path(path)
    hint = "fix the purpose file (see one entry of data/registry.example.json)"
    text = read_json_text(path, what="purpose file", hint=hint)
    try:
        return Purpose.model_validate_json(text)
    except ValidationError as exc:
        raise ComplianceError(
            f"{path}: invalid purpose:\n{format_validation_error(exc)}", hint=hint
        ) from exc


def write_json_atomically(path: Path, data: Any) -> None:
    """Write indented JSON with :func:`common.atomic.write_json_atomic`.

    A crash mid-write leaves the old file intact, never a truncated record.
    """
    write_json_atomic(path, data, sort_keys=False, ensure_ascii=False)


def save_registry(registry: Registry, path: str | Path) -> None:
    """Write ``registry`` as indented JSON that :func:`load_registry` reads back equal."""
    write_json_atomically(Path(path), registry.model_dump(mode="json"))
