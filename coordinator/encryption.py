"""The coordinator's side of homomorphic aggregation: key ceremony relay and decryption requests.

The coordinator never holds a secret key. At the start of an encrypted job
it forwards the partners' signed transport keys (from their handshakes) to
the *dealer* partner, which runs the key ceremony and returns the public
part (:class:`privacy.ckks.PublicKeys`: parameters and key id only) and one
sealed copy of the secret key per partner. Each sealed copy rides on that
partner's next request. Aggregates are summed as ciphertexts
(:class:`privacy.ckks.EncryptedSum`) and one partner decrypts each aggregate
(:meth:`HeSession.decryptors`), after checking it holds at least two
contributions.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedcollab.common.errors import CiphertextError
from fedcollab.privacy.ckks import PARAMETER_SETS, PublicKeys

__all__ = ["HeSession", "params_summary", "session_from_keygen"]


def params_summary() -> dict[str, Any]:
    """The CKKS parameter sets, as recorded in the audit log and outputs."""
    return {
        name: {
            "poly_modulus_degree": p.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(p.coeff_mod_bit_sizes),
            "scale_bits": p.scale_bits,
        }
        for name, p in PARAMETER_SETS.items()
    }


@dataclass
class HeSession:
    """One job's encryption state at the coordinator (no secret key)."""

    public: PublicKeys
    dealer: str
    sealed: dict[str, dict[str, str]]
    #: Partners that already hold the key (their sealed copy is not resent).
    installed: set[str] = field(default_factory=set)

    @property
    def key_digest(self) -> str:
        return self.public.digest

    def request_meta(self, partner: str, *, params: str) -> dict[str, Any]:
        meta: dict[str, Any] = {"key_digest": self.key_digest, "params": params}
        if partner not in self.installed and partner in self.sealed:
            meta["sealed"] = self.sealed[partner]
        return meta

    def check_reply(self, meta: Mapping[str, Any], *, params: str, length: int) -> None:
        he = meta.get("he")
        if not isinstance(he, Mapping):
            raise CiphertextError("encrypted reply without encryption metadata")
        if he.get("key_digest") != self.key_digest:
            raise CiphertextError(
                "ciphertext made under another key than this job's",
                hint="the partner holds a stale key (another run) or misbehaves",
            )
        if he.get("params") != params or he.get("length") != length:
            raise CiphertextError(
                f"ciphertext is for parameters {he.get('params')!r} / length {he.get('length')}, "
                f"expected {params!r} / {length}",
            )

    def decryptors(self, active: list[str]) -> list[str]:
        """Who may decrypt, in order: the dealer, then partners holding the key."""
        holders = [self.dealer] if self.dealer in active else []
        return holders + sorted(p for p in active if p in self.installed and p != self.dealer)


def session_from_keygen(meta: Mapping[str, Any], *, dealer: str) -> HeSession:
    """Check the dealer's reply and build the session; refuses any secret key."""
    try:
        public = PublicKeys.from_bytes(base64.b64decode(str(meta["public"]), validate=True))
        sealed = {str(k): dict(v) for k, v in dict(meta["sealed"]).items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise CiphertextError(
            f"the key ceremony's reply is malformed ({exc!r})",
            hint="the dealer runs another fedcollab version",
        ) from exc
    if public.has_secret_key():  # from_bytes already refuses; checked twice on purpose
        raise CiphertextError("the dealer sent a secret key to the coordinator")
    if meta.get("key_digest") != public.digest:
        raise CiphertextError("the key ceremony's digest does not match its public keys")
    return HeSession(public=public, dealer=dealer, sealed=sealed, installed={dealer})
