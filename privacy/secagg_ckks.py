"""Secure-aggregation masks inside the CKKS plaintext ("ckks+masked").

Each partner's masked input ``y_u`` (:meth:`privacy.secagg_partner.SecAggPartner.masked_input`,
Bonawitz et al. 2017, "Practical Secure Aggregation for Privacy-Preserving
Machine Learning", ACM CCS; Bell et al. 2020, "Secure Single-Server
Aggregation with (Poly)Logarithmic Overhead", ACM CCS) is a vector of words of
Z_{2^64}. CKKS (:mod:`privacy.ckks`) adds reals, not residues, so every word
is split into two 32-bit limbs, each encrypted as an exact integer
(:func:`ckks_plaintext`). The homomorphic sum of ``n`` such vectors holds
integers below ``n * 2^32``; the key holder decrypts the sum it verified
(:func:`privacy.verified_decryption.verify_contributions`), rounds every slot
to the nearest integer (:func:`decrypt_masked_sum`) and releases those
integers, from which the coordinator rebuilds the survivors' masked total
mod 2^64 (:func:`masked_total`) and removes the masks with the Shamir-shared
seeds (Shamir 1979; :func:`privacy.secagg_unmask.unmask_total`).

Who sees what. A single ciphertext decrypts to ``y_u``, uniform over Z_{2^64}
because of ``u``'s self-mask (a one-time pad), whatever ``x_u`` is; the
released limb sums are sums of such independent uniform words. So the key
holder learns nothing about any vector, not even the sum, and the coordinator
learns the survivors' sum and nothing else, exactly as in "masked" mode.

Notes
-----
*Limbs.* 32-bit limbs keep every slot of a sum of at most 128 partners
below 2^39. They travel under the ``limbs`` parameters (:mod:`privacy.ckks`:
one 60-bit prime, scale 2^19), which decrypt such a sum with an error of about
0.05-0.06 in the worst patterns two red teams tried on 2026-12-07 (128 partners all
sending the same periodic limb pattern, both limbs of a word in one complex slot; 0.058
the largest seen; 0.017 for uniform limbs, which masked words are): over 4x inside the
1/4 this module tolerates before refusing
(:class:`CkksMaskedSumError`), so rounding recovers the integers exactly. A
whole 64-bit word per slot does not fit: float64 encoding loses integers
beyond about 2^44 (measured: at 2^44 the error breaks even the contribution
slot). Bytes: the two limbs of a word share one complex slot (the ``limbs`` set's
``complex_pairs``: the low limb the real part, the high limb the imaginary part;
``tests/privacy/test_secagg_ckks.py`` fails beyond 0.1 at 128 partners), each
ciphertext one prime wide and sent seeded (:mod:`privacy.ckks_wire`): 16 bytes per
word, twice a float64 word (until 2026-12-07 one limb per real slot, unseeded: eight
times; until 2026-12-06 the three-prime ``wide`` set: sixteen).

*Rounding instead of flooding.* Li & Micciancio (2021, EUROCRYPT) recover
the CKKS key from exact decryptions. Here a recovered key only lets its
holder decrypt single ``y_u``, which are one-time-padded: it gains nothing
beyond what "masked" mode gives away, so exact (rounded) decryption of the
masked sum is safe, and the result stays exact on the fixed-point grid. The
ledger of :mod:`privacy.verified_decryption` still caps the decryptions.
"""

from __future__ import annotations

import numpy as np

from fedcollab.common.errors import CiphertextError
from fedcollab.privacy.ckks import SecretKeys
from fedcollab.privacy.verified_decryption import DecryptionLedger, VerifiedSum

__all__ = [
    "LIMB_BITS",
    "MAX_CKKS_PARTNERS",
    "CkksMaskedSumError",
    "ckks_plaintext",
    "decrypt_masked_sum",
    "exact_limb_sums",
    "masked_total",
]

LIMB_BITS = 32
MAX_CKKS_PARTNERS = 128
"""Sums of 32-bit limbs stay below 2^39 (see Notes)."""

PARAMS = "limbs"
_MASK = np.uint64(2**LIMB_BITS - 1)
_TOLERANCE = 0.25


class CkksMaskedSumError(CiphertextError):
    """A decrypted masked sum is not a vector of exact limb sums."""


def ckks_plaintext(words: np.ndarray) -> np.ndarray:
    """``[low limbs..., high limbs...]`` of the masked words, as exact float64 integers."""
    arr = np.asarray(words)
    if arr.dtype != np.uint64 or arr.ndim != 1:
        raise CkksMaskedSumError("only flat uint64 masked vectors can be encrypted")
    low = (arr & _MASK).astype(np.float64)
    high = (arr >> np.uint64(LIMB_BITS)).astype(np.float64)
    return np.concatenate([low, high])


def decrypt_masked_sum(
    keys: SecretKeys, verified: VerifiedSum, *, ledger: DecryptionLedger, length: int
) -> np.ndarray:
    """The key holder's step: charge the ledger, decrypt, round every limb sum to an integer.

    ``length`` is the masked vector's length (the ciphertexts hold its ``2 * length``
    limbs in ``length + 1`` complex slots, the contribution slot included).
    """
    summands = len(verified.contributors)
    if not 1 <= summands <= MAX_CKKS_PARTNERS:
        raise CkksMaskedSumError(f"{summands} contributions, at most {MAX_CKKS_PARTNERS}")
    ledger.charge(verified)
    values = keys.decrypt(
        verified.ciphertext, params=PARAMS, length=2 * length, contributors=summands
    )
    return exact_limb_sums(values, summands=summands)


def exact_limb_sums(values: np.ndarray, *, summands: int) -> np.ndarray:
    """Decrypted limb sums of ``summands`` contributions, rounded to the integers they must
    be; refused when a slot is not within 1/4 of an integer or outside its range."""
    if not 1 <= summands <= MAX_CKKS_PARTNERS:
        raise CkksMaskedSumError(f"{summands} contributions, at most {MAX_CKKS_PARTNERS}")
    rounded = np.rint(values)
    if values.size and float(np.max(np.abs(values - rounded))) > _TOLERANCE:
        raise CkksMaskedSumError(
            "the decrypted masked sum is not close to integers",
            hint="a contribution was not a limb-split masked vector, or the parameters are "
            "too small; the step is refused",
        )
    if values.size and (
        float(np.min(rounded)) < 0 or float(np.max(rounded)) > summands * float(_MASK)
    ):
        raise CkksMaskedSumError("a decrypted limb sum is outside its possible range")
    result: np.ndarray = rounded
    return result


def masked_total(limb_sums: np.ndarray, *, length: int) -> np.ndarray:
    """The survivors' masked total mod 2^64, from the released limb sums."""
    arr = np.asarray(limb_sums, dtype=np.float64)
    if arr.shape != (2 * length,) or not np.all(arr == np.rint(arr)) or np.any(arr < 0):
        raise CkksMaskedSumError(f"expected {2 * length} non-negative integer limb sums")
    if arr.size and float(np.max(arr)) >= 2.0**53:
        raise CkksMaskedSumError("limb sums beyond 2^53 are not exact in float64")
    low = arr[:length].astype(np.uint64)
    high = arr[length:].astype(np.uint64)
    # uint64 arithmetic wraps mod 2^64: exactly the ring the masks live in.
    result: np.ndarray = low + (high << np.uint64(LIMB_BITS))
    return result
