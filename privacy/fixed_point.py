"""Fixed-point encoding of float64 vectors into the ring Z_{2^64}, with an overflow budget.

Secure aggregation by masking (Bonawitz et al. 2017, "Practical Secure
Aggregation for Privacy-Preserving Machine Learning", ACM CCS; Bell et al.
2020, "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead",
ACM CCS) works in a finite group in which the masks are uniform and cancel
exactly. We use ``Z_{2^64}``: numpy's ``uint64`` arithmetic wraps mod 2^64 for
free, so masking and summing are single vectorised additions. A value ``v``
travels as ``round(v * 2^frac_bits)`` in two's complement.

A sum is decoded correctly only if the true integer sum stays within
``[-2^63, 2^63)``. :class:`FixedPointCodec` therefore takes the *budget* up
front: the largest magnitude one partner may encode and the largest number
of partners that may be summed. It refuses a budget that could wrap
(:class:`OverflowBudgetError`) and refuses any value outside it at encoding
time, before anything leaves the partner, never silently wrapping.

Example
-------
>>> codec = FixedPointCodec(frac_bits=24, max_abs_value=1e6, max_partners=1000)
>>> words = codec.encode(np.array([1.5, -2.25])) + codec.encode(np.array([0.5, 0.25]))
>>> codec.decode(words, summands=2).tolist()
[2.0, -2.0]

Notes
-----
*Ring.* Z_{2^64} rather than a prime field: a uniform mask over Z_{2^64} is a
one-time pad for any value of the ring, and 64-bit words are what the CPU
adds; a prime field would need a modular reduction per element and 8 bytes
per value as well. The masked reply is therefore 8 bytes per value, the same
as float64 plaintext.

*Split values.* Statistics in business units overflow any one-word budget that
keeps a fine grid: one partner's sum of squares of card balances (~1e6 each, a
few thousand rows) is ~1e15, beyond ``2^36`` at ``2^-20``. :func:`split_high_low`
writes each value ``v`` as ``v = h * 2^SPLIT_BITS + l`` with ``h`` an integer and
``|l| <= 2^(SPLIT_BITS - 1)``, both exactly (the subtraction is exact by
Sterbenz's lemma), so a codec of budget ``B`` carries ``|v| <= B * 2^SPLIT_BITS``
in two words, ``h`` exactly and ``l`` on the grid; sums of ``h`` and of ``l`` are
joined after unmasking (:func:`join_high_low`). Masked statistics use it; model
updates, bounded by their clipping, keep one word per value.

*Budget.* With ``f`` fraction bits, one partner contributes at most
``ceil(max_abs_value * 2^f)`` in magnitude (rounding adds at most 1/2, the
ceiling covers it), so ``max_partners * ceil(max_abs_value * 2^f) <= 2^63 - 1``
is exactly the condition for no sum of at most ``max_partners`` encodings to
wrap. The grid (``2^-f``) is the exactness unit of every masked sum: the
decoded sum equals the sum of the *rounded* values exactly, and differs from
the float64 sum by at most ``summands * 2^-(f+1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedcollab.common.errors import PrivacyError

__all__ = [
    "RING_BITS",
    "SPLIT_BITS",
    "FixedPointCodec",
    "OverflowBudgetError",
    "join_high_low",
    "split_high_low",
]

RING_BITS = 64
"""Masked vectors live in Z_{2^64} (numpy ``uint64`` wraps exactly there)."""

_MAX_POSITIVE: int = 2 ** (RING_BITS - 1) - 1


class OverflowBudgetError(PrivacyError):
    """A fixed-point budget or value could make a masked sum wrap around 2^64."""


@dataclass(frozen=True)
class FixedPointCodec:
    """Encode values of magnitude <= ``max_abs_value`` so ``max_partners`` of them sum exactly."""

    frac_bits: int
    max_abs_value: float
    max_partners: int

    def __post_init__(self) -> None:
        if not 0 <= self.frac_bits <= 52:
            raise OverflowBudgetError(
                f"frac_bits must be in 0..52, got {self.frac_bits}",
                hint="float64 carries 53 significant bits; choose fewer fraction bits",
            )
        if self.max_partners < 1:
            raise OverflowBudgetError(f"max_partners must be >= 1, got {self.max_partners}")
        if not (math.isfinite(self.max_abs_value) and self.max_abs_value > 0):
            raise OverflowBudgetError(
                f"max_abs_value must be a positive finite number, got {self.max_abs_value}"
            )
        if self.max_partners * self.max_word > _MAX_POSITIVE:
            raise OverflowBudgetError(
                f"{self.max_partners} partners x |value| <= {self.max_abs_value:g} at "
                f"{self.frac_bits} fraction bits could exceed 2^63 and wrap",
                hint="lower frac_bits, the per-partner value bound or the partner count "
                f"(this budget allows {self.max_budget_partners()} partners)",
            )

    @property
    def max_word(self) -> int:
        """Largest magnitude of one encoded value."""
        return math.ceil(math.ldexp(self.max_abs_value, self.frac_bits))

    @property
    def grid(self) -> float:
        """Quantisation step: sums are exact multiples of this."""
        return float(2.0**-self.frac_bits)

    def max_budget_partners(self) -> int:
        return _MAX_POSITIVE // max(self.max_word, 1)

    def quantise(self, values: npt.ArrayLike) -> np.ndarray:
        """``values`` rounded to the grid as int64 (after the range check)."""
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim != 1:
            raise OverflowBudgetError(f"only flat vectors can be encoded, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise OverflowBudgetError(
                "refusing to encode NaN or infinite values", hint="check the update for divergence"
            )
        peak = float(np.max(np.abs(arr))) if arr.size else 0.0
        if peak > self.max_abs_value:
            raise OverflowBudgetError(
                f"a value of magnitude {peak:.6g} exceeds the budget ({self.max_abs_value:.6g})",
                hint="clip the update to the job's bound or raise max_abs_value (and re-check "
                "the partner count)",
            )
        result: np.ndarray = np.rint(arr * 2.0**self.frac_bits).astype(np.int64)
        return result

    def encode(self, values: npt.ArrayLike) -> np.ndarray:
        """``values`` as ring elements (``uint64``, two's complement)."""
        return self.quantise(values).view(np.uint64)

    def decode(self, words: npt.ArrayLike, *, summands: int) -> np.ndarray:
        """The float64 values of a sum of ``summands`` encodings (masks already cancelled)."""
        if not 1 <= summands <= self.max_partners:
            raise OverflowBudgetError(
                f"a sum of {summands} encodings is outside this budget (1..{self.max_partners})",
                hint="the sum may have wrapped; the budget must cover every partner",
            )
        arr = np.asarray(words)
        if arr.dtype != np.uint64 or arr.ndim != 1:
            raise OverflowBudgetError("only flat uint64 vectors can be decoded")
        result: np.ndarray = arr.view(np.int64).astype(np.float64) * self.grid
        return result


#: Split encoding: ``v = high * 2^SPLIT_BITS + low`` (see Notes: split values).
SPLIT_BITS = 30


def split_high_low(values: npt.ArrayLike) -> np.ndarray:
    """``[high..., low...]`` with ``values == high * 2^SPLIT_BITS + low`` exactly.

    ``high`` is integer-valued and ``|low| <= 2^(SPLIT_BITS - 1)``.

    >>> split_high_low(np.array([3.5, -(2.0**31) - 0.25])).tolist()
    [0.0, -2.0, 3.5, -0.25]
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or not np.all(np.isfinite(arr)):
        raise OverflowBudgetError("only flat vectors of finite values can be split")
    high = np.rint(np.ldexp(arr, -SPLIT_BITS))
    low = arr - np.ldexp(high, SPLIT_BITS)
    return np.concatenate([high, low])


def join_high_low(parts: npt.ArrayLike) -> np.ndarray:
    """The values of :func:`split_high_low` parts (or of sums of them)."""
    arr = np.asarray(parts, dtype=np.float64)
    if arr.ndim != 1 or arr.size % 2:
        raise OverflowBudgetError(
            f"split parts must be a flat vector of even length, got {arr.shape}"
        )
    n = arr.size // 2
    joined: np.ndarray = np.ldexp(arr[:n], SPLIT_BITS) + arr[n:]
    return joined
