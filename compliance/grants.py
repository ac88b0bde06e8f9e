"""Dataset grants: a partner's signed statement of which purposes may use which dataset.

A partner (a personal information handler in its own right) decides which
registered purposes may process which of its datasets, until when, and on the
strength of which consent records it holds: separate consent to provide data to
another handler (PIPL Art. 23), separate consent for sensitive personal
information (PIPL Art. 29), explicit consent (GDPR Art. 9(2)(a)) or ordinary
consent (PIPL Art. 14; GDPR Art. 6(1)(a), Art. 7(1) "demonstrate consent").

The grant is signed with the partner's Ed25519 key (:class:`common.keys.Signer`)
over RFC 8785 canonical JSON, so the coordinator can show an auditor exactly
what each partner allowed, and a partner node can check that a job stays
inside its own grant.

A signed grant file::

    {"version": 1,
     "grant": {"partner": "brand-a", "dataset": "online-shoppers-region-1",
               "dataset_hash": null, "purposes": ["purchase-prediction"],
               "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2027-01-01T00:00:00Z",
               "consents": [{"purpose": "purchase-prediction", "kind": "separate-provision",
                             "evidence_ref": "crm-consent:campaign-2026-03",
                             "subjects_covered": 12330,
                             "valid_until": "2027-01-01T00:00:00Z"}],
               "issued_at": "2026-01-01T00:00:00Z"},
     "signer_name": "brand-a", "signature": "<base64 Ed25519, 88 characters>"}

Personal data never enters a grant.  ``evidence_ref`` is a *reference* into the
partner's own consent-management system (a campaign, batch or record-set id)
from which the partner can demonstrate consent when asked; it must never hold
names, phone numbers, e-mail addresses, account numbers or any other data about
a person.  The model refuses values that look like e-mail addresses or long
digit runs (phone, ID card or account numbers), a guard rather than a guarantee.

Notes
-----
* Signed bytes: ``b"fedcollab-grant-v1\\n" || JCS({"grant": ..., "signer_name": ...})``
  (RFC 8785).  The prefix separates grant signatures from every other use of the
  same key (audit events, checkpoints); binding ``signer_name`` stops the name
  shown in logs from being swapped without breaking the signature.
* Times are timezone-aware and normalised to UTC with a ``Z`` suffix before
  signing, so one instant has one encoding.  A grant is valid on the half-open
  interval ``[valid_from, valid_until)``; a consent record until (excluding)
  its ``valid_until``.
* :func:`verify_grant` raises :class:`common.errors.PolicyRefusal` (exit 32):
  a grant that does not verify is treated exactly as a missing grant, and the
  job it was meant to authorise is refused.  It returns nothing on success.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)

from fedcollab.common.errors import ComplianceError, PolicyRefusal
from fedcollab.common.keys import KEY_NAME_PATTERN, Signer, check_key_name, verify_signature
from fedcollab.compliance.events import canonical_json
from fedcollab.compliance.registry import (
    PURPOSE_ID_PATTERN,
    format_validation_error,
    read_json_text,
    write_json_atomically,
)

__all__ = [
    "GRANT_DOMAIN",
    "ConsentKind",
    "ConsentRecord",
    "Grant",
    "SignedGrant",
    "UtcDatetime",
    "grant_signing_payload",
    "load_signed_grant",
    "parse_signed_grant",
    "rfc3339",
    "save_signed_grant",
    "sign_grant",
    "verify_grant",
]

#: Domain-separation prefix of every grant signature (see Notes).
GRANT_DOMAIN = b"fedcollab-grant-v1\n"

#: ``separate-provision``: PIPL Art. 23 (or Art. 39 abroad); ``sensitive-data``:
#: PIPL Art. 29; ``explicit``: GDPR Art. 9(2)(a); ``general``: ordinary consent.
ConsentKind = Literal["separate-provision", "sensitive-data", "explicit", "general"]

_NAME_PATTERN = f"^{KEY_NAME_PATTERN}$"  # common.keys: the names signing accepts
_EVIDENCE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/#=-]{0,199}$"
_LONG_DIGITS = re.compile(r"\d{11,}")


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def rfc3339(value: datetime) -> str:
    """``2026-01-01T00:00:00Z`` (microseconds only when non-zero)."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


UtcDatetime = Annotated[
    AwareDatetime,
    AfterValidator(_to_utc),
    PlainSerializer(rfc3339, return_type=str, when_used="json"),
]
_PurposeId = Annotated[str, Field(min_length=1, max_length=64, pattern=PURPOSE_ID_PATTERN)]


def _list_to_tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def _not_personal(value: str) -> str:
    if _LONG_DIGITS.search(value):
        raise ValueError(
            "evidence_ref holds a run of 11 or more digits, which may be a phone, ID or "
            "account number; use the id of a consent record set, never personal data"
        )
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ConsentRecord(_Strict):
    """A reference to consents the partner holds for one purpose (never personal data)."""

    purpose: _PurposeId
    kind: ConsentKind
    #: An id in the partner's consent-management system, e.g. "crm-consent:campaign-2026-03".
    evidence_ref: Annotated[str, Field(pattern=_EVIDENCE_PATTERN), AfterValidator(_not_personal)]
    #: How many data subjects the referenced records cover (an aggregate count).
    subjects_covered: int = Field(ge=0)
    valid_until: UtcDatetime

    def is_valid_at(self, now: datetime) -> bool:
        return now < self.valid_until


class Grant(_Strict):
    """What one partner allows: which purposes may use which dataset, until when."""

    partner: str = Field(pattern=_NAME_PATTERN)
    #: The dataset name in the partner's schema (``DatasetSchema.dataset``).
    dataset: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")
    #: Optional pin of the dataset's content (``"sha256:<64 hex>"``).
    dataset_hash: Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")] | None = None
    purposes: Annotated[tuple[_PurposeId, ...], BeforeValidator(_list_to_tuple)]
    valid_from: UtcDatetime
    valid_until: UtcDatetime
    # A tuple, not a list, from code: a list-to-tuple before-validator would make
    # strict pydantic validate the nested times in Python mode and refuse ISO strings.
    consents: tuple[ConsentRecord, ...] = ()
    issued_at: UtcDatetime

    @model_validator(mode="after")
    def _coherent(self) -> Grant:
        if not self.purposes:
            raise ValueError("purposes is empty; a grant must allow at least one purpose")
        if len(set(self.purposes)) != len(self.purposes):
            raise ValueError("purposes lists a purpose twice")
        if self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        seen: set[tuple[str, str]] = set()
        for record in self.consents:
            if record.purpose not in self.purposes:
                raise ValueError(
                    f"a consent record names purpose {record.purpose!r}, "
                    "which the grant does not allow"
                )
            key = (record.purpose, record.kind)
            if key in seen:
                raise ValueError(f"two {record.kind!r} consent records for {record.purpose!r}")
            seen.add(key)
        return self

    def to_json_value(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def digest(self) -> str:
        """``"sha256:<hex>"`` of the grant's RFC 8785 canonical JSON."""
        return "sha256:" + hashlib.sha256(canonical_json(self.to_json_value())).hexdigest()

    def consent(self, purpose_id: str, kind: ConsentKind) -> ConsentRecord | None:
        """The consent record of ``kind`` for ``purpose_id``, if the grant lists one."""
        for record in self.consents:
            if record.purpose == purpose_id and record.kind == kind:
                return record
        return None


class SignedGrant(_Strict):
    """A grant with its signer's name and Ed25519 signature (base64)."""

    version: Literal[1] = 1
    grant: Grant
    signer_name: str = Field(pattern=_NAME_PATTERN)
    signature: str = Field(min_length=88, max_length=88)


def grant_signing_payload(grant: Grant, signer_name: str) -> bytes:
    """The exact bytes signed: domain prefix, then JCS of grant and signer name."""
    return GRANT_DOMAIN + canonical_json(
        {"grant": grant.to_json_value(), "signer_name": signer_name}
    )


def sign_grant(grant: Grant, signer: Signer, *, signer_name: str | None = None) -> SignedGrant:
    """Sign ``grant``; ``signer_name`` defaults to the grant's partner.

    >>> from datetime import datetime, UTC
    >>> t0, t1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    >>> g = Grant(partner="brand-a", dataset="shop", purposes=("purchase-prediction",),
    ...           valid_from=t0, valid_until=t1, issued_at=t0)
    >>> signer = Signer.generate()
    >>> verify_grant(sign_grant(g, signer), signer.public_key)
    """
    name = check_key_name(grant.partner if signer_name is None else signer_name)
    signature = signer.sign(grant_signing_payload(grant, name))
    return SignedGrant(
        grant=grant, signer_name=name, signature=base64.b64encode(signature).decode()
    )


def verify_grant(signed: SignedGrant, public_key: bytes) -> None:
    """Check the signature with ``public_key``; raise :class:`PolicyRefusal` on failure."""
    who = f"grant of partner {signed.grant.partner!r}"
    hint = (
        "ask the partner to re-issue and sign the grant with its registered key "
        "('fedcollab grant sign'), and check that the key registered for it is current"
    )
    try:
        signature = base64.b64decode(signed.signature, validate=True)
    except binascii.Error:
        raise PolicyRefusal(f"{who}: signature is not valid base64", hint=hint) from None
    payload = grant_signing_payload(signed.grant, signed.signer_name)
    if not verify_signature(public_key, signature, payload):
        raise PolicyRefusal(
            f"{who}: signature by {signed.signer_name!r} does not verify with the key "
            "registered for the partner (the grant was altered or signed by another key)",
            hint=hint,
        )


def parse_signed_grant(text: str | bytes, *, source: str = "grant") -> SignedGrant:
    """Validate a signed grant from JSON text (untrusted); ComplianceError if malformed."""
    try:
        return SignedGrant.model_validate_json(text)
    except ValidationError as exc:
        raise ComplianceError(
            f"{source}: invalid signed grant:\n{format_validation_error(exc)}",
            hint="ask the partner for a grant file written by 'fedcollab grant sign'",
        ) from exc


def load_signed_grant(path: str | Path) -> SignedGrant:
    """Read a signed grant file; the signature is *not* checked here (see verify_grant)."""
    path = Path(path)
    text = read_json_text(
        path, what="grant file", hint="ask the partner for the file 'fedcollab grant sign' wrote"
    )
    return parse_signed_grant(text, source=str(path))


def save_signed_grant(signed: SignedGrant, path: str | Path) -> None:
    """Write the signed grant as indented JSON that :func:`load_signed_grant` reads back."""
    write_json_atomically(Path(path), signed.model_dump(mode="json"))
