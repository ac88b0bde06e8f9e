"""Noise flooding for CKKS decryptions: what a plain "ckks" decryptor releases.

An exact (or merely rounded) CKKS decryption, returned to a party that holds the
ciphertext, gives a linear equation in the secret key; a handful recover it (Li &
Micciancio 2021, "On the Security of Homomorphic Encryption on Approximate
Numbers", EUROCRYPT). The countermeasure of Li, Micciancio, Schultz & Sorrell
2022 ("Securing Approximate Homomorphic Encryption Using Differential Privacy",
CRYPTO), which OpenFHE implements as ``NOISE_FLOODING_DECRYPT``: before decoding,
add to each decrypted polynomial i.i.d. Gaussian noise of width

    sigma = sqrt(12 * Q) * 2^(s/2) * B        (coefficient units)

with ``B`` a bound on the Euclidean norm of the decryption error (the sensitivity of
their Gaussian-mechanism argument), ``Q`` the number of ciphertexts decrypted under
the key and ``s`` the statistical security parameter (40,
:data:`STATISTICAL_SECURITY_BITS`): a key-recovery attack then succeeds with
probability at most about ``2^-s`` more than without the decryptions.

Notes
-----
*Where the noise goes.* :meth:`privacy.ckks.SecretKeys.decrypt` adds to each
ciphertext, before decrypting it, a plaintext whose slots are complex Gaussians of
width ``sigma * sqrt(N / 2) / scale`` in their real and imaginary parts: through
the canonical embedding (orthogonal up to the factor ``sqrt(N / 2)``) its
coefficients are i.i.d. Gaussians of width ``sigma``, rounded to integers by the
encoder (a red team measured std 1.0005 sigma, no correlation at any lag tried).
The decrypted polynomial ``m + e + noise`` is exact integer arithmetic; decoding it
(a floating-point FFT, whose rounding grows with the values' magnitude) is
post-processing. Released real slots carry noise of width ``sigma sqrt(N/2) / scale``
(:func:`slot_sigma`).

*Q: ciphertexts, by composition.* Each ciphertext decrypted costs ``||e||^2 / (2
sigma^2)`` of Kullback-Leibler divergence; a decryption of ``c`` ciphertexts, in a
plan of at most ``A`` decryptions, is flooded with ``Q = A * c``
(:meth:`privacy.ckks.SecretKeys.decrypt`). Summed over its ``c`` ciphertexts it
costs what one ciphertext costs at ``Q = A``; over at most ``A`` decryptions, what
``A`` ciphertexts cost at ``Q = A``: the budget of the formula above with ``Q = A``,
whatever the lengths (a red team of 2026-12-07 found ``Q = A`` alone undercounts
long vectors: 24 ciphertexts in a plan of 6). ``A`` is what the decryptor's own plan
allows (the spec's aggregate steps, :class:`client.run_contract.RequestPlan`), never
what a request says, each step decrypted once
(:meth:`client.he_keys.NodeKeyStore.claim_decryption`).

*The bound* (:func:`error_norm_bound`). TenSEAL encrypts with the secret key at the
data level (measured: per-coefficient error std 3.26 sqrt(n) for a sum of ``n``);
SEAL's public-key mode encrypts one level up and switches down, whose rounding
``r0 + r1 * s`` (``r`` in ``[-1/2, 1/2]``, ``s`` ternary) has std at most
``sqrt(N / 12)`` per coefficient. ``B`` covers both: per-coefficient std
``sigma_e = sqrt(N / 12) + 3.2`` over the ``n N`` coefficients of ``n``
contributions, 1.2 times the mean norm (a chi-square tail, Laurent & Massart 2000,
puts the norm above 1.08 times it with probability below 2^-70 at N = 8192), plus
the encoder's rounding (at most 1/2 per coefficient and contribution). It holds for
*fresh* encryptions: a contributor that crafts its ciphertext's error is a partner,
and in "ckks" every partner holds the key anyway (docs/privacy.md).
``tests/privacy/test_flooding.py`` measures the error's norm through SEAL, in both
modes, against ``B``.

*Sampling.* Box-Muller over 53-bit uniforms from a ChaCha20 stream (a fresh
32-byte key from the OS, or one the caller derives), scaled and rounded to
integer coefficients by the encoder. The guarantee above is stated for a discrete
Gaussian; a rounded continuous Gaussian of this width (about 1e11) is not exactly
one, and its distance from one is not bounded here (Canonne, Kamath & Steinke 2020
give an exact sampler; not done).
"""

from __future__ import annotations

import math
import secrets
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from fedcollab.common.errors import CiphertextError

__all__ = [
    "STATISTICAL_SECURITY_BITS",
    "ckks_sum_width",
    "contributors_of",
    "error_norm_bound",
    "flooding_sigma",
    "gaussian",
    "noise_key",
    "slot_sigma",
]

STATISTICAL_SECURITY_BITS = 40
"""``s`` in the flooding width."""


def flooding_sigma(
    *, error_bound: float, decryptions: int, security_bits: int = STATISTICAL_SECURITY_BITS
) -> float:
    """``sqrt(12 Q) 2^(s/2) B`` (see the module's docstring)."""
    if not error_bound > 0 or decryptions < 1 or security_bits < 1:
        raise CiphertextError(
            "the flooding width needs a positive error bound, Q >= 1 and s >= 1",
            hint="a decryptor that cannot size its noise does not decrypt",
        )
    return float(math.sqrt(12 * decryptions) * 2.0 ** (security_bits / 2) * error_bound)


def error_norm_bound(contributors: int, *, ring_degree: int) -> float:
    """``B``: the Euclidean norm of the decryption error of a sum of fresh encryptions
    (see the module's docstring, "The bound")."""
    if contributors < 1 or ring_degree < 1:
        raise CiphertextError("the error bound needs contributors >= 1 and a ring degree")
    n, big_n = contributors, ring_degree
    sigma_e = math.sqrt(big_n / 12) + 3.2
    return 1.2 * sigma_e * math.sqrt(n * big_n) + 0.5 * n * math.sqrt(big_n)


def slot_sigma(
    *,
    contributors: int,
    decryptions: int,
    ring_degree: int,
    scale_bits: int,
    security_bits: int = STATISTICAL_SECURITY_BITS,
) -> float:
    """The flooding noise's width in each released (real) slot."""
    bound = error_norm_bound(contributors, ring_degree=ring_degree)
    sigma = flooding_sigma(error_bound=bound, decryptions=decryptions, security_bits=security_bits)
    return sigma * math.sqrt(ring_degree / 2) / 2.0**scale_bits


def noise_key(key: bytes | None = None) -> bytes:
    """``key`` if given (32 bytes: the noise is then fixed), else a fresh one from the OS."""
    if key is None:
        return secrets.token_bytes(32)
    if len(key) != 32:
        raise CiphertextError("flooding needs a 32-byte noise key")
    return key


def gaussian(key: bytes, length: int) -> np.ndarray:
    """``length`` standard normal samples from the ChaCha20 stream of ``key``."""
    # The raw ChaCha20 stream (privacy.secagg_session.mask_stream is the same; importing
    # it here would close an import cycle through privacy.ckks).
    encryptor = Cipher(algorithms.ChaCha20(noise_key(key), bytes(16)), mode=None).encryptor()
    raw = encryptor.update(bytes(16 * ((length + 1) // 2)))
    words = np.frombuffer(raw, dtype="<u8").astype(np.uint64)
    u = ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53  # in (0, 1)
    u1, u2 = u[0::2], u[1::2]
    r = np.sqrt(-2.0 * np.log(u1))
    z = np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)])
    return z[:length]


def ckks_sum_width(*, aggregation: str, contributors: int, decryptions: int, length: int) -> float:
    """The noise per released value of a plain "ckks" job's sum ("wide" set) of
    ``contributors`` partners and ``length`` values, under a plan of ``decryptions``;
    0 in every other mode (their sums are exact). What partners and the coordinator
    allow for when they test k-means convergence (client.centroid_chain,
    coordinator.segmentation)."""
    if aggregation != "ckks":
        return 0.0
    from fedcollab.privacy.ckks import PARAMETER_SETS  # privacy.ckks imports this module

    wide = PARAMETER_SETS["wide"]
    return wide.flooding_width(
        contributors=max(1, contributors),
        decryptions=max(1, decryptions) * wide.ciphertexts_for(length),
    )


def contributors_of(receipt: Any) -> int:
    """How many contributors a key holder's sum receipt names (its ``statement``), 0 if
    none: a receipt already checked (compliance.contribution.check_sum_receipt)."""
    statement = getattr(receipt, "statement", None)
    if statement is None and isinstance(receipt, dict):
        statement = receipt.get("statement")
    names = statement.get("contributors") if isinstance(statement, dict) else None
    return len(names) if isinstance(names, list) else 0
