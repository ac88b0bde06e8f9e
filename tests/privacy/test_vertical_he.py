"""CKKS under the label holder's key: masked gradients decrypt to X^T d + r, every slot is
masked, the public context carries no secret key, and bad ciphertexts are refused."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts

import fedcollab.privacy.vertical_he as vhe
from fedcollab.common.errors import CiphertextError, PrivacyError
from fedcollab.privacy.vertical_he import (
    MASK_BOUND,
    ROUNDING_GRID,
    SLOTS,
    LabelKeys,
    PublicContext,
    decrypt_masked,
    draw_masks,
    encrypt_residuals,
    encrypted_gradient,
    raw_slots_unsafe,
)


@pytest.fixture(scope="module")
def keys() -> LabelKeys:
    return LabelKeys.generate()


@pytest.fixture(scope="module")
def public(keys: LabelKeys) -> PublicContext:
    return PublicContext.from_bytes(keys.public_bytes())


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    n = SLOTS + 500  # two ciphertexts, the second one partly padding
    X = rng.normal(size=(n, 3))
    d = (rng.random(n) - (rng.random(n) < 0.3)) / n
    return X, d


def test_public_surface() -> None:
    assert {"LabelKeys", "PublicContext", "decrypt_masked", "encrypt_residuals"} <= set(vhe.__all__)
    assert "encrypted_gradient" in vhe.__all__ and "raw_slots_unsafe" in vhe.__all__


def test_public_context_has_no_secret_key(keys: LabelKeys, public: PublicContext) -> None:
    ctx = ts.context_from(keys.public_bytes())
    assert not ctx.has_secret_key() and ctx.has_galois_keys() and ctx.has_public_key()
    assert not public.context.has_secret_key()
    assert public.digest.startswith("sha256:")


def test_secret_bearing_context_is_refused(keys: LabelKeys) -> None:
    with pytest.raises(CiphertextError, match="holds a secret key"):
        PublicContext.from_bytes(keys.to_bytes())


def test_other_parameters_are_refused() -> None:
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40, 60])
    ctx.global_scale = 2.0**40
    ctx.generate_galois_keys()
    ctx.make_context_public()
    with pytest.raises(CiphertextError, match="CKKS parameters"):
        PublicContext.from_bytes(ctx.serialize(save_galois_keys=True))
    with pytest.raises(CiphertextError):
        PublicContext.from_bytes(b"not a context")


def test_masked_gradient_decrypts_to_gradient_plus_mask(
    keys: LabelKeys, public: PublicContext, data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, d = data
    masks = draw_masks(X.shape[1])
    assert np.all(np.abs(masks) <= MASK_BOUND)
    cts = encrypted_gradient(public, encrypt_residuals(keys, d), X, masks)
    assert len(cts) == X.shape[1]
    got = decrypt_masked(keys, cts)
    np.testing.assert_array_equal(np.round(got / ROUNDING_GRID), got / ROUNDING_GRID)
    np.testing.assert_allclose(got - masks, X.T @ d, atol=2 * ROUNDING_GRID)


def test_every_slot_of_a_masked_gradient_is_masked(
    keys: LabelKeys, public: PublicContext, data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, d = data
    masks = np.array([150_000.25, -90_000.5, 3_000.0])
    cts = encrypted_gradient(public, encrypt_residuals(keys, d), X, masks)
    grad = X.T @ d
    for j, blob in enumerate(cts):
        slots = raw_slots_unsafe(keys, blob)
        assert slots.size == SLOTS
        # Every slot holds g_j + r_j (no partial sums, no unmasked slot) ...
        np.testing.assert_allclose(slots, grad[j] + masks[j], atol=1e-4)
        # ... and none is anywhere near the gradient itself.
        assert np.min(np.abs(slots - grad[j])) > 1_000


def test_key_round_trip(keys: LabelKeys, public: PublicContext) -> None:
    restored = LabelKeys.from_bytes(keys.to_bytes())
    X = np.ones((4, 1))
    cts = encrypted_gradient(public, encrypt_residuals(keys, np.full(4, 0.25)), X, np.zeros(1))
    assert decrypt_masked(restored, cts).tolist() == [1.0]


def test_foreign_ciphertext_is_refused(keys: LabelKeys) -> None:
    other = LabelKeys.generate()
    X = np.ones((10, 1))
    cts = encrypted_gradient(
        other.public(), encrypt_residuals(other, np.full(10, 0.01)), X, draw_masks(1)
    )
    with pytest.raises(CiphertextError, match="every slot"):
        decrypt_masked(keys, cts)


def test_tampered_or_truncated_ciphertexts_are_refused(
    keys: LabelKeys, public: PublicContext
) -> None:
    X = np.ones((10, 1))
    residual = encrypt_residuals(keys, np.full(10, 0.01))
    (ct,) = encrypted_gradient(public, residual, X, draw_masks(1))
    with pytest.raises(CiphertextError):
        decrypt_masked(keys, [ct[: len(ct) // 2]])
    with pytest.raises(CiphertextError):
        decrypt_masked(keys, [b"garbage"])
    with pytest.raises(CiphertextError):
        decrypt_masked(keys, [residual])  # a residual is not a gradient
    with pytest.raises(CiphertextError):
        encrypted_gradient(public, residual[:-10], X, np.zeros(1))
    with pytest.raises(CiphertextError):
        encrypted_gradient(public, b"X" + residual[1:], X, np.zeros(1))
    with pytest.raises(CiphertextError, match="rows"):
        encrypted_gradient(public, residual, np.ones((SLOTS + 1, 1)), np.zeros(1))


def test_out_of_range_inputs_are_refused(keys: LabelKeys, public: PublicContext) -> None:
    with pytest.raises(PrivacyError):
        encrypt_residuals(keys, np.array([2.0]))
    residual = encrypt_residuals(keys, np.full(4, 0.1))
    with pytest.raises(PrivacyError, match="exceeds 1024"):
        encrypted_gradient(public, residual, np.full((4, 1), 5000.0), np.zeros(1))
    with pytest.raises(PrivacyError):
        encrypted_gradient(public, residual, np.ones((4, 1)), np.array([MASK_BOUND * 2]))


def test_docstring_examples() -> None:
    import doctest

    result = doctest.testmod(vhe)
    assert result.attempted > 0 and result.failed == 0
