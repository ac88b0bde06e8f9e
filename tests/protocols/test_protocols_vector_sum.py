from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcollab.common.errors import ProtocolError
from fedcollab.protocols.vector_sum import VectorSum

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


def test_fixed_example() -> None:
    acc = VectorSum(3)
    assert acc.count == 0
    np.testing.assert_array_equal(acc.total, np.zeros(3))
    acc.add([1.0, 2.0, 3.0])
    acc.add(np.array([0.5, 0.5, 0.5]))
    assert acc.count == 2
    assert acc.length == 3
    np.testing.assert_array_equal(acc.total, [1.5, 2.5, 3.5])


def test_total_is_a_copy() -> None:
    acc = VectorSum(2)
    acc.add([1.0, 1.0])
    t = acc.total
    t[0] = 99.0
    np.testing.assert_array_equal(acc.total, [1.0, 1.0])


@given(
    st.integers(1, 6).flatmap(
        lambda n: st.lists(st.lists(finite, min_size=n, max_size=n), min_size=1, max_size=8)
    ),
    st.randoms(use_true_random=False),
)
def test_order_independent(vectors: list[list[float]], rnd: object) -> None:
    shuffled = list(vectors)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    a, b = VectorSum(len(vectors[0])), VectorSum(len(vectors[0]))
    for v in vectors:
        a.add(v)
    for v in shuffled:
        b.add(v)
    assert a.count == b.count == len(vectors)
    np.testing.assert_allclose(a.total, b.total, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(a.total, np.sum(vectors, axis=0), rtol=1e-9, atol=1e-6)


@given(st.lists(st.lists(st.integers(-1000, 1000), min_size=4, max_size=4), min_size=1))
def test_integer_sums_are_exact(vectors: list[list[int]]) -> None:
    acc = VectorSum(4)
    for v in reversed(vectors):
        acc.add(np.array(v, dtype=np.float64))
    np.testing.assert_array_equal(acc.total, np.sum(vectors, axis=0))


@pytest.mark.parametrize(
    "bad",
    [[1.0, 2.0], [1.0, 2.0, 3.0, 4.0], [1.0, np.nan, 3.0], [np.inf, 0.0, 0.0], [[1.0, 2.0, 3.0]]],
)
def test_refuses_malformed_and_keeps_sum(bad: object) -> None:
    acc = VectorSum(3)
    acc.add([1.0, 1.0, 1.0])
    with pytest.raises(ProtocolError):
        acc.add(bad)  # type: ignore[arg-type]
    assert acc.count == 1
    np.testing.assert_array_equal(acc.total, [1.0, 1.0, 1.0])


def test_refuses_non_numeric() -> None:
    with pytest.raises(ProtocolError):
        VectorSum(1).add(["a"])


@pytest.mark.parametrize("length", [0, -1, True, 2.5])
def test_refuses_bad_length(length: object) -> None:
    with pytest.raises(ProtocolError):
        VectorSum(length)  # type: ignore[arg-type]
