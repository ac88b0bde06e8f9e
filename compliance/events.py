"""Audit events: JSON envelopes signed by the actor that caused them.

An event is::

    {"actor": "partner-3", "type": "training.round", "time": "2025-01-31T12:00:00.000000Z",
     "body": {...}, "sig": base64(Ed25519(canonical JSON of the envelope without "sig"))}

Canonical JSON is RFC 8785 (JSON Canonicalization Scheme); times are RFC 3339
in UTC with a ``Z`` suffix.  Personal data never enters the log: refer to it
with :func:`salted_hash`, so that erasing the salt (kept outside the log)
makes the reference meaningless while the log stays verifiable.

Notes
-----
* HMAC-SHA256 (RFC 2104) keyed by the salt rather than a plain hash, so a
  reference cannot be confirmed by hashing guesses (e-mail addresses, customer
  ids are guessable) without the salt; salts must be at least 16 bytes
  (128 bits, beyond brute force).
* Event fields are checked with a strict pydantic model (``extra="forbid"``)
  because envelopes arrive from other parties and from exported files.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import rfc8785
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedcollab.common.errors import AuditVerificationError, ComplianceError
from fedcollab.common.keys import KEY_NAME_PATTERN, Signer, check_key_name, verify_signature

__all__ = [
    "MIN_SALT_BYTES",
    "EventEnvelope",
    "canonical_json",
    "make_event",
    "new_salt",
    "salted_hash",
    "signing_payload",
    "verify_event",
]

MIN_SALT_BYTES = 16
_TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$"
_NAME_PATTERN = f"^{KEY_NAME_PATTERN}$"  # common.keys: the names signing accepts
_TYPE_PATTERN = r"^[a-z][a-z0-9_.-]{0,127}$"


class EventEnvelope(BaseModel):
    """The envelope as it arrives from untrusted bytes."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    actor: str = Field(pattern=_NAME_PATTERN)
    type: str = Field(pattern=_TYPE_PATTERN)
    time: str = Field(pattern=_TIME_PATTERN)
    body: dict[str, Any]
    sig: str = Field(min_length=88, max_length=88)


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical bytes; raises ComplianceError on non-JSON values."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise ComplianceError(f"value is not canonicalisable JSON: {exc}") from exc


def signing_payload(event: Mapping[str, Any]) -> bytes:
    """The bytes the actor signs: canonical JSON of the envelope without ``sig``."""
    return canonical_json({k: v for k, v in event.items() if k != "sig"})


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_event(
    signer: Signer,
    actor: str,
    type: str,
    body: Mapping[str, Any],
    *,
    time: datetime | None = None,
) -> dict[str, Any]:
    """Build and sign an event envelope.

    >>> ev = make_event(Signer.generate(), "partner-1", "consent.granted", {"purpose": "p1"})
    >>> sorted(ev)
    ['actor', 'body', 'sig', 'time', 'type']
    """
    check_key_name(actor)
    if not re.fullmatch(_TYPE_PATTERN, type):
        raise ComplianceError(f"invalid event type {type!r}", hint="use e.g. 'training.round'")
    if time is None:
        stamp = _utc_now()
    elif time.tzinfo is None:
        raise ComplianceError("event time must be timezone-aware")
    else:
        stamp = time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    envelope: dict[str, Any] = {"actor": actor, "type": type, "time": stamp, "body": dict(body)}
    envelope["sig"] = base64.b64encode(signer.sign(signing_payload(envelope))).decode()
    return envelope


def verify_event(event: Mapping[str, Any], public_key: bytes) -> None:
    """Check the envelope's shape and the actor's signature; raise on failure."""
    try:
        env = EventEnvelope.model_validate(dict(event))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "event"
        raise AuditVerificationError(f"malformed event: {where}: {first['msg']}") from exc
    try:
        sig = base64.b64decode(env.sig, validate=True)
    except binascii.Error as exc:
        raise AuditVerificationError("event signature is not valid base64") from exc
    try:
        payload = signing_payload(event)
    except ComplianceError as exc:
        raise AuditVerificationError(f"event is not canonical JSON: {exc.message}") from exc
    if not verify_signature(public_key, sig, payload):
        raise AuditVerificationError(f"signature by {env.actor!r} does not verify")


def new_salt() -> bytes:
    return secrets.token_bytes(32)


def salted_hash(value: str | bytes, salt: bytes) -> str:
    """``"hmac-sha256:<hex>"`` reference to personal data; erase the salt to forget it."""
    if len(salt) < MIN_SALT_BYTES:
        raise ComplianceError(f"salt must be at least {MIN_SALT_BYTES} bytes")
    data = value.encode("utf-8") if isinstance(value, str) else value
    return "hmac-sha256:" + hmac.new(salt, data, hashlib.sha256).hexdigest()
