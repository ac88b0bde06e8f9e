"""The decryptor's side of "ckks+masked": decrypt only sums it can verify, flooded, counted.

Today's CKKS aggregation (:mod:`privacy.ckks`) lets the coordinator hand the
decrypting partner any ciphertext as "the sum" (e.g. one partner's ciphertext
plus a plaintext it adds without a key) and ask again and again. This module
is what the key holder checks before it decrypts anything:

* :func:`sign_contribution`: each partner signs its ciphertext over
  (run, step, request digest, partner, SHA-256 of the ciphertext) with its
  Ed25519 audit key (:mod:`common.keys`).
* :func:`verify_contributions`: the decryptor checks every claimed
  contributor's signature against the keys *it* pinned
  (:class:`privacy.key_transport.PeerKeys`), refuses duplicates and fewer
  than ``min_partners`` distinct contributors, and recomputes the sum itself
  (:class:`privacy.ckks.EncryptedSum`) from the signed ciphertexts; the
  coordinator's own aggregate is never decrypted.
* :class:`DecryptionLedger`: at most the plan's number of decryptions per
  run and one sum per (run, step); a repeated identical request is answered
  identically (:func:`flooded_decrypt` draws its noise from a PRF of the sum's
  digest), never with fresh noise.
* :func:`flooded_decrypt`: decryption plus Gaussian noise flooding (Li &
  Micciancio 2021, "On the Security of Homomorphic Encryption on Approximate
  Numbers", EUROCRYPT; Li, Micciancio, Schultz & Sorrell 2022, "Securing
  Approximate Homomorphic Encryption Using Differential Privacy", CRYPTO)
  instead of rounding, which a decryption oracle undoes by binary search.

With secure aggregation (Bonawitz et al. 2017, "Practical Secure Aggregation
for Privacy-Preserving Machine Learning", ACM CCS; Bell et al. 2020, "Secure
Single-Server Aggregation with (Poly)Logarithmic Overhead", ACM CCS) the
plaintext each partner encrypts is its masked vector (:mod:`privacy.secagg_ckks`,
"ckks+masked"): the key holder then sees only sums of one-time-padded words,
and the coordinator removes the masks with the Shamir-shared seeds (Shamir
1979) after decryption, so no single party, and not the coordinator plus the
key holder, sees one partner's vector. That mode decrypts exactly (rounded to
integers, :func:`privacy.secagg_ckks.decrypt_masked_sum`); the flooding here is
for plain "ckks" mode, where the key is all that protects the vectors.

Notes
-----
*Flooding.* Width, error bound, Q and sampling: :mod:`privacy.flooding`. Here the
noise key is HKDF(noise key, digest of the verified sum, request digest): a
replay of one sum is answered with the same noise, never fresh noise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedcollab.common.errors import CiphertextError
from fedcollab.common.keys import Signer, verify_signature
from fedcollab.privacy.ckks import EncryptedSum, PublicKeys, SecretKeys
from fedcollab.privacy.flooding import STATISTICAL_SECURITY_BITS, flooding_sigma
from fedcollab.privacy.key_transport import PeerKeys

__all__ = [
    "STATISTICAL_SECURITY_BITS",
    "DecryptionLedger",
    "DecryptionRefusal",
    "SignedContribution",
    "VerifiedSum",
    "flooded_decrypt",
    "flooding_sigma",
    "sign_contribution",
    "verify_contributions",
]

_NOISE_INFO = b"fedcollab/ckks/flooding-noise/v1"


class DecryptionRefusal(CiphertextError):
    """The decryptor refuses to decrypt: unverifiable sum, too few partners, over budget."""


def _statement(run: str, step: int, request_digest: str, partner: str, blob: bytes) -> bytes:
    digest = hashlib.sha256(blob).hexdigest()
    return (
        f"fedcollab/ckks/contribution/v1\n{run}\n{step}\n{request_digest}\n{partner}\n{digest}"
    ).encode()


@dataclass(frozen=True)
class SignedContribution:
    partner: str
    blob: bytes
    signature: bytes


def sign_contribution(
    blob: bytes, *, run: str, step: int, request_digest: str, partner: str, signer: Signer
) -> SignedContribution:
    """What a partner sends with its ciphertext."""
    sig = signer.sign(_statement(run, step, request_digest, partner, blob))
    return SignedContribution(partner, blob, sig)


@dataclass(frozen=True)
class VerifiedSum:
    """The sum the decryptor recomputed from signed ciphertexts, and who is in it."""

    run: str
    step: int
    request_digest: str
    contributors: tuple[str, ...]
    ciphertext: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.ciphertext).hexdigest()


def verify_contributions(
    contributions: Sequence[tuple[str, SignedContribution]],
    *,
    peers: PeerKeys,
    public: PublicKeys,
    params: str,
    length: int,
    request_digest: str,
    run: str,
    step: int,
    min_partners: int,
    cohort: Collection[str] | None = None,
) -> VerifiedSum:
    """Check every contribution and recompute their sum; raise :class:`DecryptionRefusal`."""
    if min_partners < 2:
        raise DecryptionRefusal(
            f"min_partners {min_partners} lets one partner's vector be decrypted alone",
            hint="the plan must require at least two contributors per decrypted sum",
        )
    seen: set[str] = set()
    total = EncryptedSum(public, params=params, length=length)
    for claimed, item in contributions:
        if claimed != item.partner or claimed in seen:
            raise DecryptionRefusal(
                f"contribution of {item.partner!r} listed as {claimed!r} or twice",
                hint="the coordinator counted a partner twice to reach min_partners; refused",
            )
        if cohort is not None and claimed not in cohort:
            raise DecryptionRefusal(f"{claimed!r} is not a partner of this job")
        statement = _statement(run, step, request_digest, claimed, item.blob)
        if not verify_signature(peers.get(claimed), item.signature, statement):
            raise DecryptionRefusal(
                f"{claimed!r}'s ciphertext is not signed by its pinned audit key for this "
                "run, step and request",
                hint="forged, altered or replayed contribution; nothing is decrypted",
            )
        total.add(item.blob)
        seen.add(claimed)
    if len(seen) < min_partners:
        raise DecryptionRefusal(
            f"{len(seen)} distinct contributors, the plan requires {min_partners}",
            hint="too few partners contributed; the step's aggregate is not decrypted",
        )
    return VerifiedSum(run, step, request_digest, tuple(sorted(seen)), total.serialize())


class DecryptionLedger:
    """Decryptions this key holder made: <= ``planned`` per run, one sum per (run, step)."""

    def __init__(self, *, planned: int) -> None:
        if planned < 1:
            raise DecryptionRefusal("a plan allows at least one decryption")
        self.planned = planned
        self._done: dict[tuple[str, int], str] = {}

    def charge(self, verified: VerifiedSum) -> None:
        key = (verified.run, verified.step)
        previous = self._done.get(key)
        if previous == verified.digest:
            return  # the same sum again: answered identically, not charged twice
        if previous is not None:
            raise DecryptionRefusal(
                f"step {verified.step} of run {verified.run!r} was already decrypted for "
                "another sum",
                hint="one decryption per step; a second sum for a step is an offset search",
            )
        used = sum(1 for run, _ in self._done if run == verified.run)
        if used >= self.planned:
            raise DecryptionRefusal(
                f"run {verified.run!r} already used its {self.planned} planned decryptions",
                hint="the plan caps decryptions per run; extra requests are refused",
            )
        self._done[key] = verified.digest

    @property
    def entries(self) -> Mapping[tuple[str, int], str]:
        """(run, step) -> digest of the decrypted sum: what the decryptor logs."""
        return dict(self._done)


def flooded_decrypt(
    keys: SecretKeys,
    verified: VerifiedSum,
    *,
    ledger: DecryptionLedger,
    noise_key: bytes,
    params: str,
    length: int,
) -> np.ndarray:
    """Charge the ledger, decrypt the verified sum flooded for the ledger's planned
    decryptions (:mod:`privacy.flooding`), with noise fixed by the sum and ``noise_key``."""
    if len(noise_key) != 32:
        raise DecryptionRefusal("flooding needs a 32-byte noise key")
    ledger.charge(verified)
    info = _NOISE_INFO + verified.digest.encode() + verified.request_digest.encode()
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(noise_key)
    return keys.decrypt(
        verified.ciphertext,
        params=params,
        length=length,
        contributors=len(verified.contributors),
        flooding=ledger.planned,
        noise_key=key,
    )
