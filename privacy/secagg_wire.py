"""Bytes on the wire for secure-aggregation messages, parsed strictly at the door.

The protocol modules (:mod:`privacy.secagg_partner`, :mod:`privacy.secagg_unmask`,
:mod:`privacy.verified_decryption`; Bonawitz et al. 2017, "Practical Secure
Aggregation for Privacy-Preserving Machine Learning", ACM CCS; Bell et al.
2020, "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", ACM
CCS; Shamir 1979 for the shares) exchange frozen dataclasses. This module
turns them into canonical JSON bytes (binary fields base64) for
:func:`common.serde.pack_blobs` and back, through pydantic models with
``extra="forbid"`` and strict types: a malformed message raises
:class:`~common.errors.ProtocolError` before any protocol code sees it.
``Envelope`` and ``MaskedInput`` carry their own ``to_bytes``/``from_bytes``
(the masked reply is 8 bytes per value plus a header, never base64).

Notes
-----
Parsing checks only shape; every signature and every protocol rule is
checked by the protocol code the parsed value is handed to.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from fedcollab.common.errors import PrivacyError, ProtocolError
from fedcollab.privacy.secagg_messages import SurvivorSignature, UnmaskRequest, UnmaskResponse
from fedcollab.privacy.secagg_session import Advertisement
from fedcollab.privacy.shamir import Share
from fedcollab.privacy.verified_decryption import SignedContribution

__all__ = [
    "dump",
    "load_advertisement",
    "load_contribution",
    "load_survivor_signature",
    "load_unmask_request",
    "load_unmask_response",
]

_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Advertisement(BaseModel):
    model_config = _STRICT
    type: str
    partner: str
    config_digest: str
    envelope_key: str
    masking_key: str
    self_commitment: str
    signature: str


class _SurvivorSignature(BaseModel):
    model_config = _STRICT
    type: str
    partner: str
    survivors: list[str]
    signature: str


class _UnmaskRequest(BaseModel):
    model_config = _STRICT
    type: str
    survivors: list[str]
    signatures: dict[str, str]
    dropped: list[str]


class _UnmaskResponse(BaseModel):
    model_config = _STRICT
    type: str
    partner: str
    x: int
    self_shares: dict[str, str]
    key_shares: dict[str, str]


class _Contribution(BaseModel):
    model_config = _STRICT
    type: str
    partner: str
    blob: str
    signature: str


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError("a secure-aggregation message holds invalid base64") from exc


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def dump(
    msg: Advertisement | SurvivorSignature | UnmaskRequest | UnmaskResponse | SignedContribution,
) -> bytes:
    """Canonical JSON bytes of one message."""
    if isinstance(msg, Advertisement):
        return _canonical(
            {
                "type": "secagg.advertisement",
                "partner": msg.partner,
                "config_digest": msg.config_digest,
                "envelope_key": _b64(msg.envelope_key),
                "masking_key": _b64(msg.masking_key),
                "self_commitment": _b64(msg.self_commitment),
                "signature": _b64(msg.signature),
            }
        )
    if isinstance(msg, SurvivorSignature):
        return _canonical(
            {
                "type": "secagg.survivors",
                "partner": msg.partner,
                "survivors": list(msg.survivors),
                "signature": _b64(msg.signature),
            }
        )
    if isinstance(msg, UnmaskRequest):
        return _canonical(
            {
                "type": "secagg.unmask-request",
                "survivors": list(msg.survivors),
                "signatures": {k: _b64(v) for k, v in msg.signatures.items()},
                "dropped": list(msg.dropped),
            }
        )
    if isinstance(msg, UnmaskResponse):
        xs = {s.x for s in [*msg.self_shares.values(), *msg.key_shares.values()]}
        if len(xs) > 1:
            raise ProtocolError("an unmask response holds shares at several indices")
        return _canonical(
            {
                "type": "secagg.unmask-response",
                "partner": msg.partner,
                "x": xs.pop() if xs else 0,
                "self_shares": {k: _b64(s.y_bytes()) for k, s in msg.self_shares.items()},
                "key_shares": {k: _b64(s.y_bytes()) for k, s in msg.key_shares.items()},
            }
        )
    return _canonical(
        {
            "type": "secagg.contribution",
            "partner": msg.partner,
            "blob": _b64(msg.blob),
            "signature": _b64(msg.signature),
        }
    )


_M = TypeVar("_M", bound=BaseModel)


def _parse(model: type[_M], raw: bytes, kind: str) -> _M:
    try:
        parsed = model.model_validate_json(raw)
    except ValidationError as exc:
        raise ProtocolError(
            f"malformed {kind} message: {exc.error_count()} problem(s)",
            hint="the sender runs another fedcollab version or the relay altered it",
        ) from exc
    if getattr(parsed, "type", None) != kind:
        raise ProtocolError(f"expected a {kind} message, got {getattr(parsed, 'type', None)!r}")
    return parsed


def load_advertisement(raw: bytes) -> Advertisement:
    m = _parse(_Advertisement, raw, "secagg.advertisement")
    return Advertisement(
        m.partner,
        m.config_digest,
        _unb64(m.envelope_key),
        _unb64(m.masking_key),
        _unb64(m.self_commitment),
        _unb64(m.signature),
    )


def load_survivor_signature(raw: bytes) -> SurvivorSignature:
    m = _parse(_SurvivorSignature, raw, "secagg.survivors")
    return SurvivorSignature(m.partner, tuple(m.survivors), _unb64(m.signature))


def load_unmask_request(raw: bytes) -> UnmaskRequest:
    m = _parse(_UnmaskRequest, raw, "secagg.unmask-request")
    return UnmaskRequest(
        tuple(m.survivors), {k: _unb64(v) for k, v in m.signatures.items()}, tuple(m.dropped)
    )


def load_unmask_response(raw: bytes) -> UnmaskResponse:
    m = _parse(_UnmaskResponse, raw, "secagg.unmask-response")
    try:
        return UnmaskResponse(
            m.partner,
            {k: Share.from_y_bytes(m.x, _unb64(v)) for k, v in m.self_shares.items()},
            {k: Share.from_y_bytes(m.x, _unb64(v)) for k, v in m.key_shares.items()},
        )
    except PrivacyError as exc:  # a share outside the field or of the wrong size
        raise ProtocolError(f"malformed share in an unmask response: {exc}") from exc


def load_contribution(raw: bytes) -> SignedContribution:
    m = _parse(_Contribution, raw, "secagg.contribution")
    return SignedContribution(m.partner, _unb64(m.blob), _unb64(m.signature))
