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
