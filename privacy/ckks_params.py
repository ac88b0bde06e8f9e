"""The CKKS parameter sets fedcollab encrypts under (:mod:`privacy.ckks`), and their budgets.

Notes
-----
*Parameter sets.* Aggregation needs no multiplication, so the modulus chain
is as short as the values allow; every set uses ring degree N = 8192 (4096
slots per ciphertext). The homomorphic encryption security standard
(Albrecht et al. 2018, homomorphicencryption.org) allows log2 q <= 218 for
128-bit classical security at N = 8192 (ternary secret); ours: 100 or 180 bits.
- ``compact``: primes (60, 40), scale 2^32, 8192 x 8 bytes per 4096 values sent
  seeded (4x float32; a sum 8x), sums below 2^26, error up to 6.7e-7 at 10 partners (measured). Only
  the benchmarks' baseline: a flooded decryption of it would be too noisy.
- ``wide`` (every plain "ckks" sum): primes (60, 60, 60), scale 2^60, sums below
  2^58 (sums of squared raw durations fit), error about 1e-15 at 10 partners; the
  flooding noise of :mod:`privacy.flooding` is then 3e-6 (3 partners, 6 short
  decryptions) to 1.6e-3 (100 partners, 200 decryptions of 1M values) per value,
  growing as sqrt(partners x planned aggregates x ciphertexts).
- ``limbs`` ("ckks+masked", :mod:`privacy.secagg_ckks`): primes (60, 40), scale
  2^19, integers below 2^39 (128 partners' 32-bit limbs), both limbs of a word in one
  complex slot, error about 0.05-0.06 at 128 partners in the worst patterns tried;
  decrypted to exact integers or refused, never released raw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import tenseal as ts

from fedcollab.common.errors import CiphertextError
from fedcollab.privacy.flooding import slot_sigma

__all__ = ["PARAMETER_SETS", "CkksParameters", "params_named"]


@dataclass(frozen=True)
class CkksParameters:
    name: str
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    #: Partners each add at most this many bits to a sum (2^7 = 128 partners).
    partner_headroom_bits: int = 7
    #: Exact integers (``limbs``): decryptions are rounded to integers, or refused.
    integers: bool = False
    #: A vector of even length ``L`` travels as ``L/2`` complex slots (value ``j`` the
    #: real part, value ``L/2 + j`` the imaginary part): half the ciphertexts.
    complex_pairs: bool = False

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def data_primes(self) -> int:
        """Primes a fresh ciphertext carries (the last prime is the special prime)."""
        return len(self.coeff_mod_bit_sizes) - 1

    @property
    def max_abs_sum(self) -> float:
        """Largest magnitude an aggregate may reach before it wraps around the modulus."""
        data_bits = sum(self.coeff_mod_bit_sizes[:-1])
        return float(2 ** (data_bits - 2 - self.scale_bits))

    @property
    def max_abs_value(self) -> float:
        """Largest magnitude one partner may encrypt (room for 2^headroom partners)."""
        return self.max_abs_sum / float(2**self.partner_headroom_bits)

    @property
    def rounding_grid(self) -> float:
        """Decrypted values are rounded to multiples of this (see Notes); 1 for integers."""
        return 1.0 if self.integers else float(2.0 ** -(self.scale_bits - 20))

    def flooding_width(self, *, contributors: int, decryptions: int) -> float:
        """The noise a flooded decryption adds to each released slot (:mod:`privacy.flooding`)."""
        return slot_sigma(
            contributors=contributors,
            decryptions=decryptions,
            ring_degree=self.poly_modulus_degree,
            scale_bits=self.scale_bits,
        )

    def slots_for(self, length: int) -> int:
        """Slots a vector of ``length`` values fills, with the contribution slot."""
        return (length // 2 if self.complex_pairs else length) + 1

    @property
    def max_ciphertext_bytes(self) -> int:
        """Bytes of one serialized two-polynomial ciphertext of this set, with room for
        SEAL's header and seed; a fresh (seeded) one takes about half."""
        return 2 * self.data_primes * self.poly_modulus_degree * 8 + 1024

    def chunk_sizes(self, length: int) -> list[int]:
        """Slots of each ciphertext a vector of ``length`` values fills: whole
        ciphertexts, then the rest (TenSEAL's chunking, :mod:`privacy.ckks_wire`)."""
        filled = self.slots_for(length)
        whole, rest = divmod(filled, self.slots)
        return [self.slots] * whole + ([rest] if rest else [])

    def ciphertexts_for(self, length: int) -> int:
        return math.ceil(self.slots_for(length) / self.slots)

    def new_context(self) -> ts.Context:
        ctx = ts.context(
            ts.SCHEME_TYPE.CKKS,
            self.poly_modulus_degree,
            coeff_mod_bit_sizes=list(self.coeff_mod_bit_sizes),
            encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
        )
        ctx.global_scale = float(2**self.scale_bits)
        return ctx


PARAMETER_SETS: Mapping[str, CkksParameters] = {
    "compact": CkksParameters("compact", 8192, (60, 40), 32),
    "wide": CkksParameters("wide", 8192, (60, 60, 60), 60),
    "limbs": CkksParameters("limbs", 8192, (60, 40), 19, integers=True, complex_pairs=True),
}


def params_named(name: str) -> CkksParameters:
    try:
        return PARAMETER_SETS[name]
    except KeyError:
        raise CiphertextError(
            f"unknown CKKS parameter set {name!r}",
            hint=f"use one of {sorted(PARAMETER_SETS)} (peer runs another fedcollab version?)",
        ) from None
