"""Pairwise masking: masks cancel exactly in the sum, one masked vector reveals nothing
recognisable, and every misuse (out of range, bad keys, mixed lengths) is refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedcollab.privacy.masking as masking
from fedcollab.common.errors import PrivacyError
from fedcollab.privacy.masking import (
    MAX_ABS_VALUE,
    SCALE_BITS,
    MaskingKey,
    decode,
    encode,
    mask_vector,
    pairwise_seeds,
    unmask_sum,
)


def _setup(names: list[str], run: str = "run-1") -> dict[str, dict[str, bytes]]:
    keys = {n: MaskingKey.generate() for n in names}
    pubs = {n: k.public_bytes() for n, k in keys.items()}
    return {n: pairwise_seeds(k, me=n, peers=pubs, run=run) for n, k in keys.items()}


def test_public_surface() -> None:
    assert set(masking.__all__) == {
        "MAX_ABS_VALUE",
        "MAX_PARTIES",
        "SCALE_BITS",
        "MaskingKey",
        "decode",
        "encode",
        "mask_vector",
        "pairwise_seeds",
        "unmask_sum",
    }


@settings(max_examples=25, deadline=None)
@given(
    parties=st.integers(2, 5),
    length=st.integers(1, 40),
    step=st.integers(0, 2**40),
    seed=st.integers(0, 2**32 - 1),
)
def test_masked_sum_equals_plain_sum_exactly(
    parties: int, length: int, step: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    names = [f"p{i}" for i in range(parties)]
    seeds = _setup(names)
    values = {n: rng.normal(scale=1e3, size=length) for n in names}
    masked = [
        mask_vector(values[n], me=n, seeds=seeds[n], step=step, purpose="scores") for n in names
    ]
    plain = decode(sum((encode(values[n]) for n in names), start=np.zeros(length, np.uint64)))
    np.testing.assert_array_equal(unmask_sum(masked), plain)
    np.testing.assert_allclose(
        unmask_sum(masked), sum(values.values()), atol=parties * 2.0**-SCALE_BITS
    )


def test_seeds_are_symmetric_and_bound_to_the_run() -> None:
    keys = {n: MaskingKey.generate() for n in ("a", "b")}
    pubs = {n: k.public_bytes() for n, k in keys.items()}
    ab = pairwise_seeds(keys["a"], me="a", peers=pubs, run="r1")["b"]
    ba = pairwise_seeds(keys["b"], me="b", peers=pubs, run="r1")["a"]
    other_run = pairwise_seeds(keys["a"], me="a", peers=pubs, run="r2")["b"]
    assert ab == ba and ab != other_run and len(ab) == 32


def test_one_masked_vector_is_not_its_encoding() -> None:
    seeds = _setup(["a", "b", "c"])
    values = np.linspace(-3, 3, 64)
    masked = mask_vector(values, me="b", seeds=seeds["b"], step=7, purpose="scores")
    assert masked.dtype == np.uint64
    assert not np.any(masked == encode(values))
    # A fresh stream per step and purpose: the same vector never gets the same mask twice.
    again = mask_vector(values, me="b", seeds=seeds["b"], step=8, purpose="scores")
    other = mask_vector(values, me="b", seeds=seeds["b"], step=7, purpose="predict")
    assert not np.any(masked == again) and not np.any(masked == other)


def test_single_party_gets_the_plain_encoding() -> None:
    seeds = _setup(["only"])
    assert seeds == {"only": {}}
    values = np.array([0.5, -1.25])
    out = mask_vector(values, me="only", seeds=seeds["only"], step=0, purpose="scores")
    np.testing.assert_array_equal(out, encode(values))
    assert unmask_sum([out]).tolist() == [0.5, -1.25]


def test_out_of_range_and_non_finite_values_are_refused() -> None:
    with pytest.raises(PrivacyError, match="exceeds the masking range"):
        encode(np.array([MAX_ABS_VALUE * 2]))
    with pytest.raises(PrivacyError, match="NaN"):
        encode(np.array([np.nan]))
    with pytest.raises(PrivacyError):
        encode(np.zeros((2, 2)))


def test_mixed_lengths_or_dtypes_are_refused() -> None:
    with pytest.raises(PrivacyError):
        unmask_sum([np.zeros(3, np.uint64), np.zeros(4, np.uint64)])
    with pytest.raises(PrivacyError):
        unmask_sum([np.zeros(3, np.uint64), np.zeros(3, np.float64)])
    with pytest.raises(PrivacyError):
        unmask_sum([])


def test_key_round_trip_and_substitution_refused() -> None:
    key = MaskingKey.generate()
    assert MaskingKey.from_bytes(key.to_bytes()).public_bytes() == key.public_bytes()
    other = MaskingKey.generate()
    with pytest.raises(PrivacyError, match="not its own"):
        pairwise_seeds(key, me="a", peers={"a": other.public_bytes()}, run="r")
    with pytest.raises(PrivacyError, match="own masking key"):
        pairwise_seeds(key, me="a", peers={"b": key.public_bytes()}, run="r")
    with pytest.raises(PrivacyError):
        pairwise_seeds(key, me="a", peers={"b": b"short"}, run="r")
    with pytest.raises(PrivacyError, match="low-order"):
        pairwise_seeds(key, me="a", peers={"b": bytes(32)}, run="r")
    with pytest.raises(PrivacyError):
        MaskingKey.from_bytes(b"\x00" * 31)


def test_docstring_examples() -> None:
    import doctest

    result = doctest.testmod(masking)
    assert result.attempted > 0 and result.failed == 0
