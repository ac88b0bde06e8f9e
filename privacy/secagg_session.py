"""One secure-aggregation session: its configuration, signed keys and mask streams.

Secure aggregation (Bonawitz et al. 2017, "Practical Secure Aggregation for
Privacy-Preserving Machine Learning", ACM CCS; the sparse-graph variant is
Bell et al. 2020, "Secure Single-Server Aggregation with (Poly)Logarithmic
Overhead", ACM CCS) lets a coordinator learn the sum of the partners'
vectors and nothing else, even when partners drop out. A *session* is one
aggregate of one job: (run, step, purpose). Everything signed or derived in
it is bound to :attr:`SecAggConfig.digest`, the SHA-256 of the canonical
configuration (run, step, purpose, cohort, threshold, vector length, fixed-point
budget), so a value valid in one session is refused in every other.

This module holds the pieces both sides need:

* :class:`SecAggConfig`, the plan both sides must agree on (it refuses a
  threshold that would let the coordinator plus ``colluders`` partners
  reconstruct a secret from two inconsistent survivor sets);
* :class:`Advertisement`, a partner's per-session public keys (X25519 key for
  share envelopes, X25519 masking key, commitment to the self-mask seed)
  signed with its Ed25519 audit key (:mod:`common.keys`), checked against
  the audit keys each node pinned (:class:`privacy.key_transport.PeerKeys`);
* the seed derivations and the ChaCha20 mask streams.

Notes
-----
*Fresh keys per session.* A dropped partner's masking key is reconstructed by
the coordinator, which then knows every seed derived from it; if the key
outlived the session, the partner's masks in a later step would be known. So
keys, like the self-mask seed ``b_u``, are made per (run, step, purpose)
(as in Bonawitz et al., one key pair per aggregation).

*Seeds.* Pairwise seed = HKDF-SHA256 (RFC 5869) of the X25519 (RFC 7748)
shared secret, ``info`` = length-prefixed (domain tag, config digest, run,
step, purpose, the two names in sorted order); self-mask key = HKDF of the
256-bit ``b_u`` with its own domain tag. Both are 256 bits: a mask stream is
never seeded from fewer bits than a ChaCha20 key holds.

*Stream.* ChaCha20 (RFC 8439) keystream read as little-endian ``uint64``;
the nonce is fixed at zero because every key is used for exactly one stream
(the info above differs for every session and pair). The 32-bit block
counter limits a stream to 2^32 blocks = 2^35 values, far above any model.

*Threshold.* The coordinator can learn ``x_v`` only by collecting ``b_v``
shares from ``t`` partners that think ``v`` survived and ``s_v`` shares from
``t`` partners that think it dropped. Each honest partner signs one survivor
set per session and answers only the set it signed (with ``t`` signatures on
it), so the two groups of answerers overlap only in colluders:
``2t - n <= colluders``. Nothing here needs *every* survivor's signature: a
survivor may be counted in a sum whose final set it never signed (it was lost
after sending its masked input), which is a matter of consent, not of what
the coordinator learns (its input is still one of at least ``t`` summed).
Requiring ``2t - n > colluders`` (:func:`minimum_threshold`) refuses that,
and with ``colluders >= 0`` implies ``t > n/2``.

*Self-mask commitment.* ``SHA-256(tag || digest || partner || b_u)`` is
published in the signed advertisement; ``b_u`` is 256 uniformly random bits,
so the hash hides it (preimage search), and binds the reconstruction (a
forged share set that yields another seed is caught).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedcollab.common.errors import PrivacyError
from fedcollab.common.keys import Signer, verify_signature
from fedcollab.privacy.fixed_point import FixedPointCodec
from fedcollab.privacy.key_transport import PeerKeys
from fedcollab.privacy.masking import MaskingKey

__all__ = [
    "MAX_VECTOR_LENGTH",
    "Advertisement",
    "SecAggConfig",
    "SecAggRefusal",
    "commit_self_seed",
    "mask_stream",
    "minimum_threshold",
    "pair_sign",
    "pairwise_seed",
    "self_mask_key",
]

MAX_VECTOR_LENGTH = 2**35
"""ChaCha20's 32-bit block counter: 2^32 blocks of 8 uint64 words per key."""

_TAG_PAIR = b"fedcollab/secagg/pairwise/v1"
_TAG_SELF = b"fedcollab/secagg/self-mask/v1"
_TAG_COMMIT = b"fedcollab/secagg/self-commit/v1"
_ZERO_NONCE = bytes(16)


class SecAggRefusal(PrivacyError):
    """A secure-aggregation message or request is refused (fail closed)."""


def _lp(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def minimum_threshold(partners: int, *, colluders: int = 1) -> int:
    """Smallest ``t`` with ``2t - n > colluders`` (see Notes)."""
    return (partners + colluders) // 2 + 1


@dataclass(frozen=True)
class SecAggConfig:
    """What every party of a session must agree on (it is bound into every signature)."""

    run: str
    step: int
    purpose: str
    cohort: tuple[str, ...]
    threshold: int
    length: int
    codec: FixedPointCodec
    colluders: int = 1

    def __post_init__(self) -> None:
        n = len(self.cohort)
        if not self.run or not self.purpose:
            raise SecAggRefusal("a session needs a run id and a purpose")
        if isinstance(self.step, bool) or self.step < 0:
            raise SecAggRefusal(f"the step must be a non-negative integer, got {self.step!r}")
        if tuple(sorted(set(self.cohort))) != self.cohort or n < 2 or "" in self.cohort:
            raise SecAggRefusal(
                "the cohort must be at least two distinct, sorted partner names",
                hint="a single partner's 'sum' is its own vector; masking cannot hide it",
            )
        if (
            self.colluders < 0
            or not minimum_threshold(n, colluders=self.colluders) <= (self.threshold) <= n
        ):
            raise SecAggRefusal(
                f"threshold {self.threshold} of {n} partners does not resist the coordinator "
                f"plus {self.colluders} partner(s)",
                hint=f"use a threshold in {minimum_threshold(n, colluders=self.colluders)}..{n}",
            )
        if not 1 <= self.length <= MAX_VECTOR_LENGTH:
            raise SecAggRefusal(f"vector length {self.length} is outside 1..{MAX_VECTOR_LENGTH}")
        if self.codec.max_partners < n:
            raise SecAggRefusal(
                f"the fixed-point budget covers {self.codec.max_partners} partners, the cohort "
                f"has {n}",
                hint="widen the budget: fewer fraction bits or a smaller value bound",
            )

    @property
    def digest(self) -> str:
        body = {
            "type": "secagg.config/v1",
            "run": self.run,
            "step": self.step,
            "purpose": self.purpose,
            "cohort": list(self.cohort),
            "threshold": self.threshold,
            "length": self.length,
            "frac_bits": self.codec.frac_bits,
            "max_abs_value": self.codec.max_abs_value.hex(),
            "max_partners": self.codec.max_partners,
            "colluders": self.colluders,
        }
        raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(raw).hexdigest()

    def index(self, partner: str) -> int:
        """The partner's Shamir x-coordinate (1-based position in the cohort)."""
        try:
            return self.cohort.index(partner) + 1
        except ValueError:
            raise SecAggRefusal(
                f"{partner!r} is not in this session's cohort",
                hint="only the plan's partners take part; the message is refused",
            ) from None

    def check_subset(self, names: Sequence[str] | frozenset[str], what: str) -> frozenset[str]:
        found = frozenset(names)
        if not found <= set(self.cohort):
            raise SecAggRefusal(
                f"{what} names partners outside the cohort: {sorted(found - set(self.cohort))}"
            )
        if len(found) < self.threshold:
            raise SecAggRefusal(
                f"{what} has {len(found)} partners, fewer than the threshold {self.threshold}",
                hint="too many partners dropped out; this step cannot be aggregated",
            )
        return found


def commit_self_seed(config: SecAggConfig, partner: str, seed: bytes) -> bytes:
    return hashlib.sha256(_lp(_TAG_COMMIT, config.digest.encode(), partner.encode(), seed)).digest()


@dataclass(frozen=True)
class Advertisement:
    """A partner's public keys for one session, signed with its audit key."""

    partner: str
    config_digest: str
    envelope_key: bytes
    masking_key: bytes
    self_commitment: bytes
    signature: bytes = b""

    def statement(self) -> bytes:
        return _lp(
            b"fedcollab/secagg/advertisement/v1",
            self.partner.encode(),
            self.config_digest.encode(),
            self.envelope_key,
            self.masking_key,
            self.self_commitment,
        )

    def signed(self, signer: Signer) -> Advertisement:
        return Advertisement(
            self.partner,
            self.config_digest,
            self.envelope_key,
            self.masking_key,
            self.self_commitment,
            signer.sign(self.statement()),
        )

    def verify(self, config: SecAggConfig, peers: PeerKeys) -> None:
        """Raise :class:`SecAggRefusal` unless signed by the partner's pinned key (this session)."""
        config.index(self.partner)
        if self.config_digest != config.digest:
            raise SecAggRefusal(
                f"{self.partner!r}'s keys belong to another session",
                hint="a key from another run or step was replayed; refused",
            )
        if (
            len(self.envelope_key) != 32
            or len(self.masking_key) != 32
            or len(self.self_commitment) != 32
        ):
            raise SecAggRefusal(f"{self.partner!r}'s advertisement has keys of the wrong size")
        if not verify_signature(peers.get(self.partner), self.signature, self.statement()):
            raise SecAggRefusal(
                f"{self.partner!r}'s session keys are not signed by its pinned audit key",
                hint="the coordinator (or someone on the way) substituted a key; refused",
            )


def pairwise_seed(
    config: SecAggConfig, key: MaskingKey, *, me: str, peer: str, peer_public: bytes
) -> bytes:
    """The 256-bit seed ``me`` shares with ``peer`` in this session."""
    if me == peer:
        raise SecAggRefusal("a partner has no pairwise seed with itself")
    first, second = sorted((me, peer))
    info = _lp(
        _TAG_PAIR,
        config.digest.encode(),
        config.run.encode(),
        struct.pack(">Q", config.step),
        config.purpose.encode(),
        first.encode(),
        second.encode(),
    )
    shared = key.exchange(peer_public)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def self_mask_key(config: SecAggConfig, partner: str, seed: bytes) -> bytes:
    """The ChaCha20 key of ``partner``'s self-mask, from its 256-bit ``b_u``."""
    if len(seed) != 32:
        raise SecAggRefusal("a self-mask seed is 32 bytes")
    info = _lp(_TAG_SELF, config.digest.encode(), partner.encode())
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(seed)


def mask_stream(key: bytes, length: int) -> np.ndarray:
    """``length`` uniform ``uint64`` words of the ChaCha20 keystream under ``key``."""
    if len(key) != 32:
        raise SecAggRefusal("a mask key is 32 bytes (256 bits)")
    if not 0 <= length <= MAX_VECTOR_LENGTH:
        raise SecAggRefusal(f"mask length {length} is outside 0..{MAX_VECTOR_LENGTH}")
    encryptor = Cipher(algorithms.ChaCha20(key, _ZERO_NONCE), mode=None).encryptor()
    raw = encryptor.update(bytes(8 * length))
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)


def pair_sign(me: str, peer: str) -> int:
    """+1 if ``me`` adds the pair's mask, -1 if it subtracts it (the smaller name adds)."""
    return 1 if me < peer else -1
