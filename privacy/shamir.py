"""Shamir t-of-n secret sharing of 32-byte secrets over a prime field.

A secret ``s`` is the constant term of a random polynomial of degree
``t - 1`` over GF(p); share ``i`` is the point ``(x_i, f(x_i))`` (Shamir 1979,
"How to Share a Secret", CACM 22(11)). Any ``t`` shares give ``s`` by
Lagrange interpolation at 0; any ``t - 1`` are uniformly distributed and
independent of ``s``. Secure aggregation shares each partner's mask seeds
this way so that the sum survives dropouts (Bonawitz et al. 2017, "Practical
Secure Aggregation for Privacy-Preserving Machine Learning", ACM CCS; Bell et
al. 2020, "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead",
ACM CCS).

Reconstruction from more than ``t`` shares checks that every share lies on
the polynomial the first ``t`` define and raises
:class:`InconsistentSharesError` otherwise, so a single altered share among
redundant ones is detected rather than silently producing a wrong secret.
With exactly ``t`` shares nothing can be detected here: callers check the
result against a public commitment (the secure-aggregation layer checks a
reconstructed X25519 key against the signed public key, and a self-mask seed
against its signed hash).

Example
-------
>>> shares = split(bytes(range(32)), threshold=2, xs=[1, 2, 3])
>>> combine(shares[1:], threshold=2) == bytes(range(32))
True

Notes
-----
*Field.* ``p = 2^256 + 297``, the smallest prime above 2^256 (checked in the
tests), so every 32-byte string is a field element and a share is 33 bytes.
A 256-bit secret needs a field of at least 2^256 elements for the shares to
be perfectly hiding; X25519 private keys are arbitrary 32-byte strings (the
clamping happens at use), so 2^255 - 19 would not do.

*Randomness.* Coefficients come from :mod:`secrets` (the OS CSPRNG), reduced
from 320-bit draws so the bias mod p is below 2^-63.

*Threshold.* This module accepts any ``1 <= t <= n``; the secure-aggregation
layer enforces ``t > (n + colluders) / 2``.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from fedcollab.common.errors import CiphertextError, PrivacyError

__all__ = [
    "PRIME",
    "SECRET_BYTES",
    "SHARE_BYTES",
    "InconsistentSharesError",
    "Share",
    "combine",
    "split",
]

PRIME = 2**256 + 297
"""The field modulus (smallest prime above 2^256)."""

SECRET_BYTES = 32
SHARE_BYTES = 33
"""A share's y-coordinate serialised big-endian (p < 2^257)."""


class InconsistentSharesError(CiphertextError):
    """Shares of one secret do not lie on one polynomial of the agreed degree."""


@dataclass(frozen=True)
class Share:
    """The point ``(x, f(x))``; ``x`` is the holder's public index (1..n)."""

    x: int
    y: int

    def __post_init__(self) -> None:
        if not 0 < self.x < PRIME or not 0 <= self.y < PRIME:
            raise PrivacyError(
                f"share ({self.x}, ...) is outside the field",
                hint="the share was altered on the way; refuse it",
            )

    def y_bytes(self) -> bytes:
        return self.y.to_bytes(SHARE_BYTES, "big")

    @classmethod
    def from_y_bytes(cls, x: int, raw: bytes) -> Share:
        if len(raw) != SHARE_BYTES:
            raise PrivacyError(f"a share is {SHARE_BYTES} bytes, got {len(raw)}")
        return cls(x, int.from_bytes(raw, "big"))


def _random_element() -> int:
    return secrets.randbits(320) % PRIME


def _eval(coeffs: Sequence[int], x: int) -> int:
    acc = 0
    for c in reversed(coeffs):
        acc = (acc * x + c) % PRIME
    return acc


def split(secret: bytes, *, threshold: int, xs: Sequence[int]) -> list[Share]:
    """Shares of ``secret`` at the public points ``xs`` (distinct, non-zero)."""
    if len(secret) != SECRET_BYTES:
        raise PrivacyError(f"only {SECRET_BYTES}-byte secrets are shared, got {len(secret)}")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise PrivacyError("share points must be distinct non-zero field elements")
    if not 1 <= threshold <= len(xs):
        raise PrivacyError(f"threshold {threshold} is outside 1..{len(xs)}")
    coeffs = [int.from_bytes(secret, "big")] + [_random_element() for _ in range(threshold - 1)]
    return [Share(x, _eval(coeffs, x)) for x in xs]


@functools.lru_cache(maxsize=4096)
def _weights(xs: tuple[int, ...], at: int) -> tuple[int, ...]:
    """Lagrange basis values ``l_i(at)`` for the points ``xs`` (cached: a round reuses them)."""
    out = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * (at - xj) % PRIME
                den = den * (xi - xj) % PRIME
        out.append(num * pow(den, -1, PRIME) % PRIME)
    return tuple(out)


def _lagrange_at(points: Sequence[Share], at: int) -> int:
    weights = _weights(tuple(p.x for p in points), at % PRIME)
    return sum(w * p.y for w, p in zip(weights, points, strict=True)) % PRIME


def combine(shares: Sequence[Share], *, threshold: int) -> bytes:
    """The secret, from at least ``threshold`` shares; extra shares are cross-checked."""
    if len({s.x for s in shares}) != len(shares):
        raise InconsistentSharesError(
            "two shares claim the same holder index",
            hint="a share was duplicated or replayed; refuse the reconstruction",
        )
    if len(shares) < threshold:
        raise PrivacyError(
            f"{len(shares)} shares, {threshold} needed to reconstruct",
            hint="too many partners dropped out; the round cannot be unmasked",
        )
    ordered = sorted(shares, key=lambda s: s.x)
    base = ordered[:threshold]
    for extra in ordered[threshold:]:
        if _lagrange_at(base, extra.x) != extra.y:
            raise InconsistentSharesError(
                f"share of holder #{extra.x} is inconsistent with the others",
                hint="a partner (or the relay) altered a share; the round is refused",
            )
    value = _lagrange_at(base, 0)
    if value >= 2 ** (8 * SECRET_BYTES):
        raise InconsistentSharesError(
            "the shares reconstruct to a value that is not a 32-byte secret",
            hint="shares were altered; the round is refused",
        )
    return value.to_bytes(SECRET_BYTES, "big")
