"""CKKS aggregation: sums decrypt exactly up to the rounding grid, and every bad
ciphertext (other parameters, other key, wrong length, truncated, garbage) is refused."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tenseal as ts
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcollab.common.errors import CiphertextError
from fedcollab.privacy.ckks import PARAMETER_SETS, EncryptedSum, PublicKeys, SecretKeys
from fedcollab.privacy.ckks_params import params_named
from fedcollab.privacy.ckks_wire import encrypt_seeded

LIMBS = PARAMETER_SETS["limbs"]

warnings.filterwarnings("ignore", message=".*does not fit in a single ciphertext.*")


@pytest.fixture(scope="module")
def keys() -> SecretKeys:
    return SecretKeys.generate()


@pytest.fixture(scope="module")
def other_keys() -> SecretKeys:
    return SecretKeys.generate()


def _sum(keys: SecretKeys, vectors: list[np.ndarray], params: str) -> bytes:
    total = EncryptedSum(keys.public(), params=params, length=vectors[0].size)
    for v in vectors:
        total.add(keys.encrypt(v, params=params))
    return total.serialize()


@settings(max_examples=12, deadline=None)
@given(
    length=st.integers(1, 9000),
    partners=st.integers(2, 5),
    params=st.sampled_from(sorted(n for n, p in PARAMETER_SETS.items() if not p.integers)),
    seed=st.integers(0, 2**32 - 1),
)
def test_decrypted_sum_equals_plaintext_sum(
    keys: SecretKeys, length: int, partners: int, params: str, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    vectors = [rng.normal(scale=100.0, size=length) for _ in range(partners)]
    got = keys.decrypt(
        _sum(keys, vectors, params), params=params, length=length, contributors=partners
    )
    grid = PARAMETER_SETS[params].rounding_grid
    assert got.shape == (length,)
    assert np.max(np.abs(got - np.sum(vectors, axis=0))) <= grid
    assert np.all(np.round(got / grid) * grid == got)  # released values sit on the grid


def test_wide_parameters_hold_large_statistics(keys: SecretKeys) -> None:
    # Sums of squared durations (seconds^2 x rows) need the wide range.
    big = np.array([3.6e13, 1.0, -2.5e12])
    got = keys.decrypt(_sum(keys, [big, big], "wide"), params="wide", length=3, contributors=2)
    assert np.allclose(got, 2 * big, rtol=0, atol=1e-4)
    with pytest.raises(CiphertextError, match="exceeds the compact CKKS range"):
        keys.encrypt(big, params="compact")


def test_security_constants_within_the_he_standard() -> None:
    # HE security standard: N = 8192 allows log2(q) <= 218 for 128-bit security.
    for p in PARAMETER_SETS.values():
        assert p.poly_modulus_degree == 8192
        assert sum(p.coeff_mod_bit_sizes) <= 218
        if p.integers:
            # Exact integers: 128 partners' 32-bit limbs fit without wrapping.
            assert p.max_abs_sum >= 128 * (2**32 - 1)
        else:
            assert p.rounding_grid > 2**-p.scale_bits * 2**16


def test_limbs_parameters_carry_exact_integers(keys: SecretKeys) -> None:
    """The "limbs" set (ckks+masked): sums of 32-bit limbs decrypt to the exact integers at
    the largest values, in both halves of the complex slots (values j and L/2 + j share a
    slot); a sum that is not integers is refused, never returned raw (exact CKKS
    decryptions give the key away, Li & Micciancio 2021)."""
    length = 2 * (LIMBS.slots - 1)  # one full ciphertext: 4095 pairs and the count
    top = np.full(length, 2.0**32 - 1)
    rng = np.random.default_rng(5)
    mixed = rng.integers(0, 2**32, size=length).astype(np.float64)
    blob = _sum(keys, [top] * 8 + [mixed] * 8, "limbs")
    assert keys.public().load(blob, params="limbs", length=length).size() == LIMBS.slots
    got = keys.decrypt(blob, params="limbs", length=length, contributors=16)
    assert np.array_equal(got, 8 * top + 8 * mixed)
    reals = _sum(keys, [np.array([0.5, 1.25, 3.0, 2.0])] * 2, "limbs")
    with pytest.raises(CiphertextError, match="not close to integers"):
        keys.decrypt(reals, params="limbs", length=4, contributors=2)
    with pytest.raises(CiphertextError, match="exceeds the limbs CKKS range"):
        keys.encrypt(np.array([2.0**33, 0.0]), params="limbs")
    with pytest.raises(CiphertextError, match="packs values in pairs"):
        keys.encrypt(np.array([1.0, 2.0, 3.0]), params="limbs")
    # A contribution slot of 1 + 1i (not fedcollab's encryption) is refused, not dropped.
    odd = encrypt_seeded(keys._contexts["limbs"], [3 + 4j, 1 + 1j], scale=2.0**19)
    with pytest.raises(CiphertextError, match="imaginary part"):
        keys.decrypt(odd, params="limbs", length=2, contributors=1)
    assert keys.decrypt(
        encrypt_seeded(keys._contexts["limbs"], [3 + 4j, 1 + 0j], scale=2.0**19),
        params="limbs", length=2, contributors=1,
    ).tolist() == [3.0, 4.0]  # fmt: skip


def test_seeded_vectors_load_in_tenseal_and_need_the_secret_key(keys: SecretKeys) -> None:
    """``encrypt_seeded`` writes TenSEAL's own CKKSVectorProto: ``ts.ckks_vector_from``
    loads it with its chunk sizes and decrypts what TenSEAL's encryption would; a context
    without the secret key cannot make one (it would need public-key encryption)."""
    ctx = keys._contexts["wide"]
    values = np.linspace(-3.0, 3.0, PARAMETER_SETS["wide"].slots + 5)
    vec = ts.ckks_vector_from(ctx, encrypt_seeded(ctx, values.tolist(), scale=2.0**60))
    assert vec.size() == values.size and len(vec.ciphertext()) == 2
    assert np.allclose(vec.decrypt(), values, atol=1e-9)
    public = keys.public()._contexts["wide"]
    with pytest.raises(ValueError, match="secret key"):
        encrypt_seeded(public, [1.0], scale=2.0**60)


def test_chunk_sizes_are_whole_ciphertexts_then_the_rest() -> None:
    wide, limbs = params_named("wide"), params_named("limbs")
    assert wide.chunk_sizes(wide.slots - 1) == [wide.slots]
    assert wide.chunk_sizes(wide.slots + 10) == [wide.slots, 11]
    assert limbs.chunk_sizes(2 * limbs.slots) == [limbs.slots, 1]  # pairs, then the count
    assert all(len(p.chunk_sizes(10**6)) == p.ciphertexts_for(10**6) for p in (wide, limbs))
    with pytest.raises(CiphertextError, match="unknown CKKS parameter set"):
        params_named("huge")


def test_a_vector_with_other_chunk_sizes_is_refused(keys: SecretKeys) -> None:
    """TenSEAL decrypts chunk i into its first sizes[i] slots: a partner declaring a short
    first chunk (same total) would move values to slots the decoders do not read; the
    loader refuses any layout but full ciphertexts and a last partial one."""
    from fedcollab.privacy.ckks_wire import _CKKSVectorProto

    wide = PARAMETER_SETS["wide"]
    v = np.ones(wide.slots + 10)
    blob = keys.encrypt(v, params="wide")
    msg = _CKKSVectorProto()
    msg.ParseFromString(blob)
    assert list(msg.sizes) == [wide.slots, 11]
    msg.sizes[:] = [wide.slots - 5, 16]
    with pytest.raises(CiphertextError, match="chunks hold"):
        keys.public().load(msg.SerializeToString(), params="wide", length=v.size)
    with pytest.raises(CiphertextError, match="does not parse"):
        keys.public().load(b"\xff" * 64, params="wide", length=v.size)


def test_fresh_ciphertexts_travel_seeded_and_sums_at_full_size(keys: SecretKeys) -> None:
    """A fresh encryption carries one polynomial per ciphertext and a seed
    (privacy.ckks_wire); TenSEAL loads it, and a sum, a new ciphertext, carries both."""
    wide = PARAMETER_SETS["wide"]
    poly_bytes = wide.poly_modulus_degree * wide.data_primes * 8
    v = np.linspace(-1.0, 1.0, 3 * wide.slots)
    fresh = keys.encrypt(v, params="wide")
    n = wide.ciphertexts_for(v.size)
    assert n * poly_bytes < len(fresh) < n * poly_bytes * 1.01
    total = EncryptedSum(keys.public(), params="wide", length=v.size)
    total.add(fresh)
    total.add(keys.encrypt(v, params="wide"))
    summed = total.serialize()
    assert 2 * n * poly_bytes < len(summed) < 2 * n * poly_bytes * 1.01
    got = keys.decrypt(summed, params="wide", length=v.size, contributors=2)
    assert np.allclose(got, 2 * v, atol=1e-5)


def test_public_keys_hold_no_secret_key(keys: SecretKeys) -> None:
    public = PublicKeys.from_bytes(keys.public().to_bytes())
    assert not public.has_secret_key()
    assert public.digest == keys.public().digest
    # The coordinator refuses to load key material that carries a secret key.
    with pytest.raises(CiphertextError, match="secret key"):
        PublicKeys.from_bytes(keys.to_bytes())
    # and public material is tiny: parameters and a key id, no key at all.
    assert len(public.to_bytes()) < 1024 < len(keys.to_bytes())


def test_public_keys_cannot_decrypt(keys: SecretKeys) -> None:
    blob = keys.encrypt(np.ones(4), params="wide")
    vec = keys.public().load(blob, params="wide", length=4)
    with pytest.raises(ValueError):  # TenSEAL: the context holds no secret key
        vec.decrypt()


def test_another_key_cannot_decrypt(keys: SecretKeys, other_keys: SecretKeys) -> None:
    vectors = [np.arange(5.0), np.ones(5)]
    blob = _sum(keys, vectors, "wide")
    with pytest.raises(CiphertextError, match="does not decrypt to 2 contributions"):
        other_keys.decrypt(blob, params="wide", length=5, contributors=2)


def test_contribution_under_another_key_spoils_the_aggregate(
    keys: SecretKeys, other_keys: SecretKeys
) -> None:
    total = EncryptedSum(keys.public(), params="compact", length=5)
    total.add(keys.encrypt(np.ones(5), params="compact"))
    total.add(other_keys.encrypt(np.ones(5), params="compact"))  # same parameters: parses
    with pytest.raises(CiphertextError, match="does not decrypt to 2 contributions"):
        keys.decrypt(total.serialize(), params="compact", length=5, contributors=2)


def test_contribution_count_must_match(keys: SecretKeys) -> None:
    blob = _sum(keys, [np.ones(3)] * 3, "wide")
    with pytest.raises(CiphertextError, match="does not decrypt to 2 contributions"):
        keys.decrypt(blob, params="wide", length=3, contributors=2)


def _foreign_context(n: int, coeffs: list[int], scale_bits: int) -> ts.Context:
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        n,
        coeff_mod_bit_sizes=coeffs,
        encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
    )
    ctx.global_scale = 2.0**scale_bits
    return ctx


def _foreign(n: int, coeffs: list[int], scale_bits: int) -> bytes:
    data: bytes = ts.ckks_vector(_foreign_context(n, coeffs, scale_bits), [1.0] * 6).serialize()
    return data


@pytest.mark.parametrize(
    ("case", "make"),
    [
        ("smaller ring", lambda k: _foreign(4096, [40, 20, 40], 20)),
        ("other scale", lambda k: _foreign(8192, [60, 40], 30)),
        ("wide into compact", lambda k: k.encrypt(np.ones(5), params="wide")),
        ("wrong length", lambda k: k.encrypt(np.ones(7), params="compact")),
        ("truncated", lambda k: k.encrypt(np.ones(5), params="compact")[:-100]),
        ("half", lambda k: k.encrypt(np.ones(5), params="compact")[:5000]),
        ("garbage", lambda k: b"\x00garbage" * 500),
        ("empty", lambda k: b""),
    ],
)  # fmt: skip
def test_bad_ciphertexts_are_refused_and_add_nothing(keys: SecretKeys, case: str, make) -> None:  # type: ignore[no-untyped-def]
    total = EncryptedSum(keys.public(), params="compact", length=5)
    total.add(keys.encrypt(np.full(5, 2.0), params="compact"))
    with pytest.raises(CiphertextError):
        total.add(make(keys))
    assert total.count == 1
    total.add(keys.encrypt(np.full(5, 3.0), params="compact"))
    got = keys.decrypt(total.serialize(), params="compact", length=5, contributors=2)
    assert np.allclose(got, 5.0, atol=1e-3)


def test_refuses_non_finite_and_unknown_parameters(keys: SecretKeys) -> None:
    with pytest.raises(CiphertextError, match="NaN"):
        keys.encrypt(np.array([1.0, np.nan]), params="wide")
    with pytest.raises(CiphertextError, match="unknown CKKS parameter set"):
        keys.encrypt(np.ones(2), params="huge")
    with pytest.raises(CiphertextError, match="no contribution"):
        EncryptedSum(keys.public(), params="wide", length=2).serialize()


def test_secret_keys_round_trip_and_refuse_damage(keys: SecretKeys) -> None:
    again = SecretKeys.from_bytes(keys.to_bytes())
    assert again.public().digest == keys.public().digest
    blob = keys.encrypt(np.arange(3.0), params="wide")
    total = EncryptedSum(again.public(), params="wide", length=3)
    total.add(blob)
    total.add(again.encrypt(np.arange(3.0), params="wide"))
    assert np.allclose(
        again.decrypt(total.serialize(), params="wide", length=3, contributors=2),
        [0.0, 2.0, 4.0],
    )
    raw = keys.to_bytes()
    for bad in (raw[:-1], b"nope" + raw, raw[:40]):
        with pytest.raises(CiphertextError, match="malformed"):
            SecretKeys.from_bytes(bad)
    # A public key set is not a secret key set.
    with pytest.raises(CiphertextError, match="holds no secret key"):
        SecretKeys.from_bytes(keys.public().to_bytes())


def test_each_key_set_has_its_own_id(keys: SecretKeys, other_keys: SecretKeys) -> None:
    assert keys.public().key_id != other_keys.public().key_id
    assert keys.public().digest != other_keys.public().digest
