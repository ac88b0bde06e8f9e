from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedcollab.common.errors import ProtocolError
from fedcollab.protocols.fedavg import decode_average, encode_update, update_length
from fedcollab.protocols.models import shapes_of
from fedcollab.protocols.vector_sum import VectorSum

SHAPES = [(3, 2), (2,), (1, 1)]
weights_strategy = st.tuples(
    *[hnp.arrays(np.float64, s, elements=st.floats(-100, 100, allow_nan=False)) for s in SHAPES]
).map(list)


def test_fixed_example() -> None:
    u = encode_update([np.array([1.0, 3.0])], n_examples=2)
    v = encode_update([np.array([4.0, 0.0])], n_examples=1)
    np.testing.assert_array_equal(u, [2.0, 6.0, 2.0])
    (avg,) = decode_average(u + v, [(2,)])
    np.testing.assert_array_equal(avg, [2.0, 2.0])


@given(weights_strategy, st.lists(st.integers(1, 10_000), min_size=1, max_size=6))
def test_identical_weights_average_to_themselves(
    weights: list[np.ndarray], counts: list[int]
) -> None:
    acc = VectorSum(update_length(SHAPES))
    for n in counts:
        acc.add(encode_update(weights, n_examples=n))
    for got, want in zip(decode_average(acc.total, SHAPES), weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@given(weights_strategy, st.integers(1, 10_000))
def test_decode_encode_round_trip(weights: list[np.ndarray], n: int) -> None:
    decoded = decode_average(encode_update(weights, n_examples=n), shapes_of(weights))
    for got, want in zip(decoded, weights, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@given(st.lists(st.tuples(weights_strategy, st.integers(0, 1000)), min_size=1, max_size=5))
def test_matches_weighted_mean(parts: list[tuple[list[np.ndarray], int]]) -> None:
    total = sum(n for _, n in parts)
    acc = VectorSum(update_length(SHAPES))
    for w, n in parts:
        acc.add(encode_update(w, n_examples=n))
    if total == 0:
        with pytest.raises(ProtocolError):
            decode_average(acc.total, SHAPES)
        return
    got = decode_average(acc.total, SHAPES)
    for i in range(len(SHAPES)):
        want = sum(n * w[i] for w, n in parts) / total
        np.testing.assert_allclose(got[i], want, rtol=1e-9, atol=1e-9)


def test_errors() -> None:
    with pytest.raises(ProtocolError):
        encode_update([np.zeros(2)], n_examples=-1)
    with pytest.raises(ProtocolError):
        encode_update([np.zeros(2)], n_examples=2.5)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError):
        encode_update([np.array([np.nan, 0.0])], n_examples=1)
    with pytest.raises(ProtocolError, match="nothing to average"):
        decode_average(np.zeros(3), [(2,)])
    with pytest.raises(ProtocolError, match="length"):
        decode_average(np.ones(4), [(2,)])


def test_approximate_zero_count_is_refused() -> None:
    # A CKKS-decrypted zero is not exactly zero; it must not be divided by.
    with pytest.raises(ProtocolError):
        decode_average(np.array([1e-9, 1e-9, 3e-9]), [(2,)])
