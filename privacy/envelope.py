"""End-to-end sealed, signed payloads between partners, relayed by the coordinator.

In a vertical job the partners exchange values (blinded id sets, masked
partial scores, decrypted masked gradients) that only one other partner may
read. The coordinator relays them as opaque :class:`Envelope` blobs:

* **Confidential to the recipient**: HPKE (RFC 9180, DHKEM(X25519,
  HKDF-SHA256), HKDF-SHA256, AES-256-GCM, from ``cryptography``) to the
  recipient's per-run X25519 transport key, whose offer the sender checked
  against the recipient's pinned audit key (:func:`privacy.key_transport.verify_offer`).
* **Authentic from the sender**: the sender signs a statement naming run,
  sender, recipient, topic and the blob's SHA-256 with its Ed25519 audit key;
  the recipient checks it against the sender's *pinned* key, so the
  coordinator can neither forge nor redirect a payload.
* **Bound to its place in the protocol**: the HPKE ``info`` and the signed
  statement carry the topic (e.g. ``"step-7/scores"``); the recipient says
  which topic it expects, so a replayed or reordered envelope is refused.

Notes
-----
HPKE base mode alone does not authenticate the sender (anyone may encrypt to a
public key); the Ed25519 statement does. Signing the ciphertext's hash rather
than the plaintext keeps the signature from revealing anything about the
plaintext to the relay.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from fedcollab.common.errors import CiphertextError
from fedcollab.common.keys import Signer, verify_signature
from fedcollab.privacy.key_transport import PeerKeys, TransportKey

__all__ = ["Envelope", "open_envelope", "seal"]

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_MAGIC = b"FCE1"


def _canonical(value: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(value), sort_keys=True, separators=(",", ":")).encode()


def _header(run: str, sender: str, recipient: str, topic: str) -> dict[str, str]:
    return {
        "type": "vertical.envelope",
        "run": run,
        "sender": sender,
        "recipient": recipient,
        "topic": topic,
    }


@dataclass(frozen=True)
class Envelope:
    """One sealed payload: who sent it to whom, for which protocol topic."""

    sender: str
    recipient: str
    topic: str
    blob: bytes
    signature: bytes

    def to_bytes(self) -> bytes:
        head = json.dumps(
            {
                "sender": self.sender,
                "recipient": self.recipient,
                "topic": self.topic,
                "signature": base64.b64encode(self.signature).decode(),
            },
            sort_keys=True,
        ).encode()
        return _MAGIC + len(head).to_bytes(4, "big") + head + self.blob

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        try:
            if raw[:4] != _MAGIC:
                raise ValueError("not an envelope")
            size = int.from_bytes(raw[4:8], "big")
            head = json.loads(raw[8 : 8 + size])
            return cls(
                sender=str(head["sender"]),
                recipient=str(head["recipient"]),
                topic=str(head["topic"]),
                blob=raw[8 + size :],
                signature=base64.b64decode(str(head["signature"]), validate=True),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CiphertextError(
                f"malformed sealed payload: {exc}",
                hint="the relay altered the message or runs another version",
            ) from exc

    def statement(self, run: str) -> bytes:
        return _canonical(
            {
                **_header(run, self.sender, self.recipient, self.topic),
                "blob_sha256": hashlib.sha256(self.blob).hexdigest(),
            }
        )


def seal(
    payload: bytes,
    *,
    run: str,
    sender: str,
    recipient: str,
    topic: str,
    recipient_key: bytes,
    signer: Signer,
) -> Envelope:
    """Encrypt ``payload`` to ``recipient_key`` (a verified X25519 offer) and sign it."""
    info = _canonical(_header(run, sender, recipient, topic))
    blob = _SUITE.encrypt(payload, X25519PublicKey.from_public_bytes(recipient_key), info=info)
    unsigned = Envelope(sender, recipient, topic, blob, b"")
    return Envelope(sender, recipient, topic, blob, signer.sign(unsigned.statement(run)))


def open_envelope(
    raw: bytes | Envelope,
    *,
    run: str,
    me: str,
    sender: str,
    topic: str,
    key: TransportKey,
    peers: PeerKeys,
) -> bytes:
    """The payload, after checking it is for ``me``, from ``sender``, for ``topic``.

    Raises :class:`CiphertextError` on any mismatch: nothing is returned unchecked.
    """
    env = raw if isinstance(raw, Envelope) else Envelope.from_bytes(raw)
    if env.recipient != me or env.sender != sender or env.topic != topic:
        raise CiphertextError(
            f"sealed payload is {env.sender!r} -> {env.recipient!r} ({env.topic!r}), expected "
            f"{sender!r} -> {me!r} ({topic!r})",
            hint="the relay forwarded another partner's or another step's payload; refused",
        )
    if not verify_signature(peers.get(sender), env.signature, env.statement(run)):
        raise CiphertextError(
            f"sealed payload is not signed by {sender!r}'s pinned audit key",
            hint="someone other than the partner made or altered it; refused",
        )
    return key.open(env.blob, _canonical(_header(run, sender, me, topic)))
