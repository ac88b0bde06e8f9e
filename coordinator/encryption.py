"""The coordinator's record of a job's homomorphic encryption: :class:`HeSession`.

What it holds is public: the key ceremony's result and which sealed key copy rides on
which partner's next request. The relay of the ceremony itself is
``coordinator.roster.Roster.setup_encryption``, the decryption requests are
:mod:`coordinator.decryption`.

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

from fedcollab.common.errors import CiphertextError, ProtocolError
from fedcollab.common.messages.replies import DataReply, KeygenReply
from fedcollab.common.serde import validate_meta
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
        """An encrypted reply's parameters are this job's (CiphertextError otherwise, which
        the roster logs as ``ciphertext.refused``). Takes the meta, not the Payload, as
        coordinator/roster.py passes it."""
        try:
            he = validate_meta(meta, DataReply).he
        except ProtocolError as exc:
            raise CiphertextError(exc.message, hint=exc.hint) from None
        if he is None:
            raise CiphertextError("encrypted reply without encryption metadata")
        if he.key_digest != self.key_digest:
            raise CiphertextError(
                "ciphertext made under another key than this job's",
                hint="the partner holds a stale key (another run) or misbehaves",
            )
        if he.params != params or he.length != length:
            raise CiphertextError(
                f"ciphertext is for parameters {he.params!r} / length {he.length}, "
                f"expected {params!r} / {length}",
            )

    def decryptors(self, active: list[str]) -> list[str]:
        """Who may decrypt, in order: the dealer, then partners holding the key."""
        holders = [self.dealer] if self.dealer in active else []
        return holders + sorted(p for p in active if p in self.installed and p != self.dealer)


def session_from_keygen(meta: Mapping[str, Any], *, dealer: str) -> HeSession:
    """Check the dealer's reply (common.messages.replies.KeygenReply) and build the
    session; refuses any secret key. Takes the meta, as coordinator/roster.py passes it."""
    try:
        reply = validate_meta(meta, KeygenReply)
        public = PublicKeys.from_bytes(base64.b64decode(reply.public, validate=True))
    except ProtocolError as exc:
        raise CiphertextError(
            f"the key ceremony's reply is malformed ({exc.message})",
            hint="the dealer runs another fedcollab version",
        ) from exc
    except (TypeError, ValueError) as exc:
        raise CiphertextError(
            f"the key ceremony's reply is malformed ({exc!r})",
            hint="the dealer runs another fedcollab version",
        ) from exc
    sealed = {name: dict(copy) for name, copy in reply.sealed.items()}
    if public.has_secret_key():  # from_bytes already refuses; checked twice on purpose
        raise CiphertextError("the dealer sent a secret key to the coordinator")
    if reply.key_digest != public.digest:
        raise CiphertextError("the key ceremony's digest does not match its public keys")
    return HeSession(public=public, dealer=dealer, sealed=sealed, installed={dealer})
