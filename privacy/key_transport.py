"""Getting a job's CKKS secret key to every partner, past the coordinator.

The key ceremony runs at one partner (the *dealer*) once per job:

1. At the handshake every partner makes a fresh X25519 key pair for the run
   and answers with its public half, signed with its Ed25519 audit key
   (:func:`transport_offer`).
2. The coordinator forwards the offers to the dealer, which checks every
   signature against the partners' audit keys *pinned at its node* (never
   keys the coordinator supplies), makes fresh CKKS keys
   (:meth:`privacy.ckks.SecretKeys.generate`) and seals them to each
   partner with HPKE (RFC 9180: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
   AES-256-GCM; the ``info`` binds run, dealer, recipient and key digest).
   It signs, per recipient, a statement naming the sealed blob's hash and the
   public key digest (:func:`deal`).
3. Each partner checks the dealer's statement against the dealer's pinned
   audit key, opens its blob and checks that the keys inside are the ones the
   statement names (:func:`accept`).

The coordinator relays only sealed blobs and the public part, so it never
holds the secret key; substituting its own keys would need a dealer's
signature, and substituting a transport key would need a partner's.

Notes
-----
Per-run X25519 keys give forward secrecy across jobs: a node's transport key
is erased with the job's CKKS key when the job ends.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fedcollab.common.errors import CiphertextError
from fedcollab.common.keys import Signer, parse_verifier_key, verify_signature
from fedcollab.privacy.ckks import SecretKeys

__all__ = [
    "PeerKeys",
    "PublicKeyed",
    "Sealed",
    "TransportKey",
    "accept",
    "deal",
    "transport_offer",
    "verify_offer",
]

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: object, what: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError as exc:
        raise CiphertextError(f"{what} is not valid base64") from exc


def _canonical(value: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(value), sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class PeerKeys:
    """Partners' Ed25519 audit keys pinned at a node (partner name -> raw key)."""

    keys: Mapping[str, bytes]

    @classmethod
    def from_json(cls, text: str) -> PeerKeys:
        """From ``{"partner": "<C2SP verifier key>", ...}`` (``fedcollab federation peers``)."""
        try:
            raw = json.loads(text)
            keys = {}
            for name, vkey in raw.items():
                key_name, public = parse_verifier_key(str(vkey))
                if key_name != name:
                    raise ValueError(f"key for {name!r} is named {key_name!r}")
                keys[str(name)] = public
        except (ValueError, AttributeError) as exc:
            raise CiphertextError(
                f"pinned peer keys are unreadable: {exc}",
                hint="regenerate them with `fedcollab federation peers`",
            ) from exc
        return cls(keys)

    def get(self, partner: str) -> bytes:
        try:
            return self.keys[partner]
        except KeyError:
            raise CiphertextError(
                f"no pinned audit key for partner {partner!r}",
                hint="refresh this node's peer keys (`fedcollab federation peers`) after the "
                "partner registered",
            ) from None


class TransportKey:
    """A node's X25519 key for one run (the key ceremony's recipient key)."""

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private

    @classmethod
    def generate(cls) -> TransportKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, raw: bytes) -> TransportKey:
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def to_bytes(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def public_bytes(self) -> bytes:
        return self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def open(self, ciphertext: bytes, info: bytes) -> bytes:
        try:
            return _SUITE.decrypt(ciphertext, self._private, info=info)
        except Exception as exc:  # cryptography raises InvalidTag or ValueError
            raise CiphertextError(
                "the sealed payload does not open with this node's transport key",
                hint="it was sealed for another node or run, or altered on the way",
            ) from exc


def _offer_statement(run: str, partner: str, public: bytes) -> bytes:
    return _canonical(
        {"type": "he.transport-key", "run": run, "partner": partner, "x25519": _b64(public)}
    )


class PublicKeyed(Protocol):
    """Any X25519 key pair whose public half can be offered (transport or masking key)."""

    def public_bytes(self) -> bytes: ...


def transport_offer(key: PublicKeyed, *, run: str, partner: str, signer: Signer) -> dict[str, str]:
    """What a partner sends at the handshake: its run transport key, signed."""
    public = key.public_bytes()
    return {
        "x25519": _b64(public),
        "signature": _b64(signer.sign(_offer_statement(run, partner, public))),
    }


def verify_offer(offer: Mapping[str, Any], *, run: str, partner: str, peers: PeerKeys) -> bytes:
    """The offered X25519 public key, after checking the partner's signature."""
    public = _unb64(offer.get("x25519"), "transport key")
    signature = _unb64(offer.get("signature"), "transport key signature")
    if len(public) != 32 or not verify_signature(
        peers.get(partner), signature, _offer_statement(run, partner, public)
    ):
        raise CiphertextError(
            f"partner {partner!r}'s transport key is not signed by its pinned audit key",
            hint="the offer was altered on the way (or the peer keys are stale); refusing to "
            "seal the job key to it",
        )
    return public


@dataclass(frozen=True)
class Sealed:
    """The job's CKKS secret key sealed to one recipient, with the dealer's statement."""

    dealer: str
    recipient: str
    key_digest: str
    blob: bytes
    signature: bytes

    def to_json(self) -> dict[str, str]:
        return {
            "dealer": self.dealer,
            "recipient": self.recipient,
            "key_digest": self.key_digest,
            "blob": _b64(self.blob),
            "signature": _b64(self.signature),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Sealed:
        try:
            return cls(
                dealer=str(raw["dealer"]),
                recipient=str(raw["recipient"]),
                key_digest=str(raw["key_digest"]),
                blob=_unb64(raw["blob"], "sealed key"),
                signature=_unb64(raw["signature"], "dealer signature"),
            )
        except KeyError as exc:
            raise CiphertextError(f"sealed key lacks {exc}") from exc


def _info(run: str, dealer: str, recipient: str, key_digest: str) -> bytes:
    return _canonical(
        {
            "type": "he.sealed-key",
            "run": run,
            "dealer": dealer,
            "recipient": recipient,
            "key_digest": key_digest,
        }
    )


def _deal_statement(run: str, sealed: Sealed) -> bytes:
    return _canonical(
        {
            "type": "he.dealt-key",
            "run": run,
            "dealer": sealed.dealer,
            "recipient": sealed.recipient,
            "key_digest": sealed.key_digest,
            "blob_sha256": hashlib.sha256(sealed.blob).hexdigest(),
        }
    )


def deal(
    keys: SecretKeys,
    offers: Mapping[str, Mapping[str, Any]],
    *,
    run: str,
    dealer: str,
    peers: PeerKeys,
    signer: Signer,
) -> dict[str, Sealed]:
    """Seal ``keys`` to every partner whose signed offer checks out (dealer included)."""
    secret = keys.to_bytes()
    digest = keys.public().digest
    out: dict[str, Sealed] = {}
    for recipient, offer in sorted(offers.items()):
        public = verify_offer(offer, run=run, partner=recipient, peers=peers)
        blob = _SUITE.encrypt(
            secret,
            X25519PublicKey.from_public_bytes(public),
            info=_info(run, dealer, recipient, digest),
        )
        unsigned = Sealed(dealer, recipient, digest, blob, b"")
        signature = signer.sign(_deal_statement(run, unsigned))
        out[recipient] = Sealed(dealer, recipient, digest, blob, signature)
    return out


def accept(
    sealed: Sealed, *, run: str, partner: str, key: TransportKey, peers: PeerKeys
) -> SecretKeys:
    """Open this partner's sealed key after checking the dealer's pinned signature."""
    if sealed.recipient != partner:
        raise CiphertextError(
            f"sealed key is addressed to {sealed.recipient!r}, not {partner!r}",
            hint="the coordinator forwarded another partner's key; refusing it",
        )
    if not verify_signature(
        peers.get(sealed.dealer), sealed.signature, _deal_statement(run, sealed)
    ):
        raise CiphertextError(
            f"the job key is not signed by the dealer {sealed.dealer!r}'s pinned audit key",
            hint="someone other than a partner made this key; refusing to encrypt under it",
        )
    secret = key.open(sealed.blob, _info(run, sealed.dealer, partner, sealed.key_digest))
    keys = SecretKeys.from_bytes(secret)
    if keys.public().digest != sealed.key_digest:
        raise CiphertextError("the sealed key is not the key the dealer's statement names")
    return keys
