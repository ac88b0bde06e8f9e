"""Fixed-point codec: sums of in-budget encodings are exact on the grid and never wrap;
budgets or values that could wrap are refused with a typed error."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcollab.common.errors import PrivacyError
from fedcollab.privacy.fixed_point import FixedPointCodec, OverflowBudgetError


@settings(max_examples=60, deadline=None)
@given(
    frac_bits=st.integers(0, 40),
    partners=st.integers(1, 64),
    length=st.integers(1, 16),
    seed=st.integers(0, 2**32 - 1),
)
def test_in_budget_sums_are_exact_and_never_wrap(
    frac_bits: int, partners: int, length: int, seed: int
) -> None:
    # The largest bound this partner count allows at these fraction bits: the edge case.
    limit = (2**63 - 1) // partners
    bound = math.ldexp(float(limit), -frac_bits)
    while math.ceil(math.ldexp(bound, frac_bits)) > limit:
        bound = float(np.nextafter(bound, 0.0))
    codec = FixedPointCodec(frac_bits=frac_bits, max_abs_value=bound, max_partners=partners)
    rng = np.random.default_rng(seed)
    vecs = [
        rng.choice([-bound, bound], size=length) * rng.uniform(0, 1, size=length)
        for _ in range(partners)
    ]
    vecs[0][0] = bound  # at least one extreme value
    total = np.zeros(length, dtype=np.uint64)
    for v in vecs:
        total += codec.encode(v)
    exact = sum(int(q) for q in (codec.quantise(v)[0] for v in vecs))
    assert int(total.view(np.int64)[0]) == exact  # no wrap-around at the edge of the budget
    decoded = codec.decode(total, summands=partners)
    expected = sum(codec.quantise(v).astype(object) for v in vecs)
    assert np.array_equal(decoded, np.array([float(e) * codec.grid for e in expected]))


def test_budget_that_could_wrap_is_refused() -> None:
    with pytest.raises(OverflowBudgetError) as err:
        FixedPointCodec(frac_bits=40, max_abs_value=2.0**20, max_partners=16)
    assert "partners" in err.value.hint
    assert isinstance(err.value, PrivacyError)
    FixedPointCodec(frac_bits=40, max_abs_value=2.0**18, max_partners=16)  # 2^62 fits


@pytest.mark.parametrize("bad", [[1e7], [np.nan], [np.inf], [[1.0]]])
def test_out_of_budget_values_are_refused(bad: list[object]) -> None:
    codec = FixedPointCodec(frac_bits=24, max_abs_value=1e6, max_partners=100)
    with pytest.raises(OverflowBudgetError):
        codec.encode(np.array(bad, dtype=np.float64))


def test_decode_refuses_more_summands_than_the_budget() -> None:
    codec = FixedPointCodec(frac_bits=24, max_abs_value=1.0, max_partners=3)
    with pytest.raises(OverflowBudgetError):
        codec.decode(codec.encode(np.ones(2)), summands=4)


@pytest.mark.parametrize(
    ("frac_bits", "max_abs", "partners"), [(-1, 1.0, 1), (53, 1.0, 1), (8, 0.0, 1), (8, 1.0, 0)]
)
def test_nonsense_budgets_are_refused(frac_bits: int, max_abs: float, partners: int) -> None:
    with pytest.raises(OverflowBudgetError):
        FixedPointCodec(frac_bits=frac_bits, max_abs_value=max_abs, max_partners=partners)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.floats(min_value=-(2.0**62), max_value=2.0**62, allow_nan=False), min_size=1, max_size=8
    )
)
def test_split_values_are_exact_and_fit_one_word_each(values: list[float]) -> None:
    """v = high * 2^SPLIT_BITS + low exactly, high an integer, |low| <= 2^(SPLIT_BITS-1)."""
    from fedcollab.privacy.fixed_point import SPLIT_BITS, join_high_low, split_high_low

    arr = np.array(values)
    parts = split_high_low(arr)
    high, low = parts[: arr.size], parts[arr.size :]
    assert np.all(high == np.rint(high))
    assert np.all(np.abs(low) <= 2.0 ** (SPLIT_BITS - 1))
    assert np.array_equal(join_high_low(parts), arr)
    assert all(math.ldexp(h, SPLIT_BITS) + lo == v for h, lo, v in zip(high, low, arr, strict=True))


def test_split_sums_carry_what_one_word_refuses() -> None:
    """Sums of squares of card balances (~1e6 each, 3,000 rows: ~1e15) overflow the masked
    codec's one-word budget (2^36 at 2^-20); split, 12 partners sum exactly on the grid."""
    from fedcollab.privacy.fixed_point import join_high_low, split_high_low
    from fedcollab.privacy.secagg_job import CODEC

    rng = np.random.default_rng(3)
    vectors = [
        np.array([3000.0, rng.uniform(0, 1e6, 3000).sum(), (rng.uniform(0, 1e6, 3000) ** 2).sum()])
        for _ in range(12)
    ]
    with pytest.raises(OverflowBudgetError):
        CODEC.encode(vectors[0])
    words = sum((CODEC.encode(split_high_low(v)) for v in vectors), np.zeros(6, np.uint64))
    total = join_high_low(CODEC.decode(words, summands=12))
    want = sum(vectors)
    assert np.allclose(total, want, rtol=1e-15, atol=12 * CODEC.grid)


def test_split_refuses_what_it_cannot_carry() -> None:
    from fedcollab.privacy.fixed_point import join_high_low, split_high_low

    for bad in ([math.inf], [[1.0, 2.0]], [math.nan]):
        with pytest.raises(OverflowBudgetError):
            split_high_low(np.array(bad))
    with pytest.raises(OverflowBudgetError):
        join_high_low(np.zeros(3))
