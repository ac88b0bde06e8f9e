"""Noise flooding of plain "ckks" decryptions (privacy.flooding), on real ciphertexts."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import tenseal.sealapi as sealapi

from fedcollab.common.errors import CiphertextError
from fedcollab.privacy.ckks import PARAMETER_SETS, EncryptedSum, SecretKeys
from fedcollab.privacy.flooding import (
    error_norm_bound,
    flooding_sigma,
    gaussian,
    noise_key,
    slot_sigma,
)

WIDE = PARAMETER_SETS["wide"]


@pytest.fixture(scope="module")
def keys() -> SecretKeys:
    return SecretKeys.generate()


def _sum(keys: SecretKeys, vectors: list[np.ndarray]) -> bytes:
    total = EncryptedSum(keys.public(), params="wide", length=vectors[0].size)
    for v in vectors:
        total.add(keys.encrypt(v, params="wide"))
    return total.serialize()


def _raw(keys: SecretKeys, blob: bytes, length: int) -> np.ndarray:
    """The raw decryption, which the product never releases (SecretKeys.decrypt rounds,
    floods or refuses): TenSEAL's own decrypt with the secret context."""
    vec = keys.public().load(blob, params="wide", length=length)
    vec.link_context(keys._contexts["wide"])
    return np.asarray(vec.decrypt(), dtype=np.float64)[:-1]


class _Seal:
    """SEAL's own view of the "wide" set under ``keys``: the coefficients of what a
    ciphertext decrypts to (the red team's measurement of 2026-12-07)."""

    def __init__(self, keys: SecretKeys) -> None:
        self.ctx = keys._contexts["wide"]  # the raw key: a measurement, never released
        seal = self.ctx.seal_context().data
        self.seal = seal
        self.encoder, self.evaluator = sealapi.CKKSEncoder(seal), sealapi.Evaluator(seal)
        self.decryptor = sealapi.Decryptor(seal, self.ctx.secret_key().data)
        self.q0 = seal.first_context_data().parms().coeff_modulus()[0].value()

    def _c0(self, ct: Any) -> np.ndarray:
        plain = sealapi.Ciphertext()
        self.evaluator.transform_from_ntt(ct, plain)
        data = plain.dyn_array()
        return np.array([data.at(i) for i in range(WIDE.poly_modulus_degree)], dtype=object)

    def coefficients(self, plain: Any, ct: Any) -> np.ndarray:
        """An NTT-form plaintext's coefficients (centred, mod the first prime)."""
        shifted = sealapi.Ciphertext()
        self.evaluator.add_plain(ct, plain, shifted)
        d = (self._c0(shifted) - self._c0(ct)) % self.q0
        q0 = self.q0
        return np.array([int(x) if int(x) < q0 // 2 else int(x) - q0 for x in d], dtype=float)

    def error(self, ct: Any, vectors: list[np.ndarray]) -> np.ndarray:
        """``Decrypt(ct)`` minus the contributors' encodings: the decryption error."""
        exact = None
        for v in vectors:
            plain = sealapi.Plaintext()
            self.encoder.encode([*v.tolist(), 1.0], ct.parms_id(), ct.scale, plain)
            c = self.coefficients(plain, ct)
            exact = c if exact is None else exact + c
        decrypted = sealapi.Plaintext()
        self.decryptor.decrypt(ct, decrypted)
        assert exact is not None
        return self.coefficients(decrypted, ct) - exact


def test_the_error_norm_is_inside_the_bound_in_both_encryption_modes(keys: SecretKeys) -> None:
    """``B`` bounds the error's Euclidean norm (privacy.flooding, "The bound"), for
    TenSEAL's secret-key encryption and for SEAL's public-key mode (one level up, then a
    modulus switch), measured through SEAL. If the noise of either grows towards ``B``
    (another TenSEAL, another parameter set), this fails."""
    seal, n = _Seal(keys), 3
    rng = np.random.default_rng(3)
    vectors = [rng.uniform(-1.0, 1.0, WIDE.slots - 1) for _ in range(n)]
    total = EncryptedSum(keys.public(), params="wide", length=WIDE.slots - 1)
    for v in vectors:
        total.add(keys.encrypt(v, params="wide"))
    vec = keys.public().load(total.serialize(), params="wide", length=WIDE.slots - 1)
    vec.link_context(seal.ctx)
    e = seal.error(vec.ciphertext()[0], vectors)
    assert 0 < float(np.linalg.norm(e)) < error_norm_bound(n, ring_degree=8192) / 4
    # Public-key mode, the bound's worst case: std ~ sqrt(N/12) per coefficient.
    keygen = sealapi.KeyGenerator(seal.seal, seal.ctx.secret_key().data)
    public = sealapi.PublicKey()
    keygen.create_public_key(public)
    encryptor = sealapi.Encryptor(seal.seal, public)
    plain = sealapi.Plaintext()
    v = rng.uniform(-1.0, 1.0, WIDE.slots - 1)
    seal.encoder.encode([*v.tolist(), 1.0], seal.seal.first_parms_id(), 2.0**WIDE.scale_bits, plain)
    ct = sealapi.Ciphertext()
    encryptor.encrypt(plain, ct)
    e = seal.error(ct, [v])
    norm = float(np.linalg.norm(e))
    assert 10 * math.sqrt(8192) < norm < error_norm_bound(1, ring_degree=8192)


def test_the_width_is_li_micciancio_schultz_sorrell() -> None:
    sigma = flooding_sigma(error_bound=100.0, decryptions=20)
    assert sigma == pytest.approx(math.sqrt(240) * 2.0**20 * 100.0)
    assert flooding_sigma(error_bound=100.0, decryptions=80) == pytest.approx(2 * sigma)
    for bad in ({"error_bound": 0.0, "decryptions": 1}, {"error_bound": 1.0, "decryptions": 0}):
        with pytest.raises(CiphertextError, match="flooding width"):
            flooding_sigma(**bad)  # type: ignore[arg-type]
    # B: 1.2 (sqrt(N/12) + 3.2) sqrt(n N) + n sqrt(N) / 2; slot units: sigma sqrt(N/2) / scale.
    b = error_norm_bound(3, ring_degree=8192)
    assert b == pytest.approx(
        1.2 * (math.sqrt(8192 / 12) + 3.2) * math.sqrt(3 * 8192) + 1.5 * 90.51, rel=1e-4
    )
    assert slot_sigma(
        contributors=3, decryptions=6, ring_degree=8192, scale_bits=60
    ) == pytest.approx(flooding_sigma(error_bound=b, decryptions=6) * 64 / 2.0**60)


def test_the_widths_a_job_sees_are_small_against_the_counts_it_checks() -> None:
    """The protocols refuse a count below -0.5 (EMPTY_COUNT) and histograms whose total
    is off by 0.5: with "wide"'s scale 2^60 the flooding stays far below that, from 3
    partners and 6 one-ciphertext decryptions to 100 partners, 200 decryptions of a
    1M-value vector (245 ciphertexts each)."""
    low = WIDE.flooding_width(contributors=3, decryptions=6)
    high = WIDE.flooding_width(contributors=100, decryptions=200 * 245)
    assert 1e-6 < low < 1e-5 and high < 2e-3
    assert 0.5 / (high * math.sqrt(1000)) > 5.0  # a 1000-bin total stays within 0.5


def test_the_noise_source_is_a_standard_normal_fixed_by_its_key() -> None:
    z = gaussian(b"\x01" * 32, 200_001)
    assert abs(float(np.mean(z))) < 0.01 and abs(float(np.std(z)) - 1.0) < 0.01
    assert float(np.mean(np.abs(z) > 2)) == pytest.approx(0.0455, abs=0.003)
    assert np.array_equal(gaussian(b"\x02" * 32, 10), gaussian(b"\x02" * 32, 10))
    assert noise_key() != noise_key()
    with pytest.raises(CiphertextError, match="32-byte"):
        noise_key(b"short")


def test_a_flooded_decryption_carries_the_width_and_hides_the_ckks_error(
    keys: SecretKeys,
) -> None:
    """What the attack of Li & Micciancio reads is the CKKS error in a decryption: flooded,
    the released value differs from the true sum by the flooding noise (its stated width,
    ~1e-5), not by CKKS's own error (~1e-15); fresh noise each time, unless a key fixes
    it; at any magnitude (the noise goes in before the decoder's rounding)."""
    length = 3 * WIDE.slots  # several ciphertexts
    rng = np.random.default_rng(7)
    for magnitude in (1.0, 1e12):
        vectors = [rng.uniform(-magnitude, magnitude, length) for _ in range(2)]
        blob, exact = _sum(keys, vectors), vectors[0] + vectors[1]
        # Q: 20 planned decryptions x this vector's 4 ciphertexts (privacy.flooding).
        sigma = WIDE.flooding_width(contributors=2, decryptions=20 * WIDE.ciphertexts_for(length))
        out = keys.decrypt(blob, params="wide", length=length, contributors=2, flooding=20)
        raw_error = float(np.std(_raw(keys, blob, length) - exact))
        noise = out - exact
        expected = math.sqrt(sigma**2 + raw_error**2)
        assert float(np.std(noise)) == pytest.approx(expected, rel=0.05)
        assert abs(float(np.mean(noise))) < 5 * expected / math.sqrt(length)
    again = keys.decrypt(blob, params="wide", length=length, contributors=2, flooding=20)
    assert not np.array_equal(out, again)
    fixed = [
        keys.decrypt(blob, params="wide", length=length, contributors=2, flooding=20,
                     noise_key=b"\x03" * 32)
        for _ in range(2)
    ]  # fmt: skip
    assert np.array_equal(fixed[0], fixed[1])
    # Rounding instead (tests and benchmarks only): the exact sum on the 2^-40 grid.
    rounded = keys.decrypt(blob, params="wide", length=length, contributors=2)
    assert float(np.max(np.abs(rounded - exact) / np.maximum(1.0, np.abs(exact)))) < 1e-9


def test_sums_of_business_magnitude_decrypt_and_a_wrong_key_is_still_refused(
    keys: SecretKeys,
) -> None:
    """Red team of 2026-12-07: a plain "ckks" moments sum of balances (sums of squares
    ~1e15) was refused as "made under another key": the float64 FFT's rounding reached
    the contribution slot. The slot's tolerance now grows with the largest value; a
    contribution under another key is still refused at that magnitude."""
    length = 64
    vectors = [np.full(length, 4e14), np.linspace(1.0, 3e14, length), np.ones(length)]
    total = EncryptedSum(keys.public(), params="wide", length=length)
    for v in vectors:
        total.add(keys.encrypt(v, params="wide"))
    exact = sum(vectors)
    for flooding in (0, 6):
        out = keys.decrypt(
            total.serialize(), params="wide", length=length, contributors=3, flooding=flooding
        )
        assert float(np.max(np.abs(out - exact) / exact)) < 1e-12
    other = SecretKeys.generate()
    forged = EncryptedSum(keys.public(), params="wide", length=length)
    forged.add(keys.encrypt(vectors[0], params="wide"))
    forged.add(keys.encrypt(vectors[1], params="wide"))
    forged.add(other.encrypt(vectors[2], params="wide"))
    with pytest.raises(CiphertextError, match="does not decrypt to 3 contributions"):
        keys.decrypt(forged.serialize(), params="wide", length=length, contributors=3, flooding=6)
