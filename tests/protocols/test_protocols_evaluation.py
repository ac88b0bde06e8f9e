from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from fedcollab.common.errors import ProtocolError
from fedcollab.protocols.evaluation import (
    eval_vector_length,
    local_eval_vector,
    metrics_from_vector,
)
from fedcollab.protocols.vector_sum import VectorSum


def _federated(y: np.ndarray, p: np.ndarray, *, bins: int, parts: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    acc = VectorSum(eval_vector_length(bins=bins))
    for idx in np.array_split(rng.permutation(len(y)), parts):
        acc.add(local_eval_vector(y[idx], p[idx], bins=bins))
    return metrics_from_vector(acc.total, bins=bins)


def test_fixed_small_example() -> None:
    vec = local_eval_vector(np.array([1, 0, 1, 0]), np.array([0.9, 0.2, 0.4, 0.6]), bins=2)
    assert vec[:2].tolist() == [4.0, 2.0]
    np.testing.assert_array_equal(vec[3:], [1, 1, 1, 1])  # pos: [0.4], [0.9]; neg: [0.2], [0.6]
    m = metrics_from_vector(vec, bins=2)
    assert m.n == 4 and m.accuracy == 0.5
    assert m.auc == pytest.approx(0.5)  # 1 win + 2 same-bin ties of 4 pairs
    assert m.log_loss == pytest.approx(log_loss([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6]))


@given(st.integers(0, 2**32 - 1))
def test_histogram_auc_close_to_exact(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 2000
    y = (rng.random(n) < 0.3).astype(np.float64)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * y - 0.8)))
    m = _federated(y, p, bins=1000, parts=4, seed=seed)
    assert m.auc is not None
    assert abs(m.auc - roc_auc_score(y, p)) < 2e-3
    assert m.accuracy == pytest.approx(accuracy_score(y, p >= 0.5), abs=1e-12)
    assert m.log_loss == pytest.approx(log_loss(y, p), rel=1e-9)
    assert m.n == n


@given(st.integers(0, 2**32 - 1), st.sampled_from([10, 100, 1000]))
def test_histogram_auc_exact_on_quantised_scores(seed: int, bins: int) -> None:
    rng = np.random.default_rng(seed)
    n = 500
    y = np.zeros(n)
    y[: n // 3] = 1.0
    rng.shuffle(y)
    k = np.clip(rng.normal(bins / 2 + 0.1 * bins * y, bins / 6).astype(int), 0, bins - 1)
    p = (k + 0.5) / bins  # bin centres: scores are constant within bins
    m = _federated(y, p, bins=bins, parts=3, seed=seed)
    assert m.auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_single_class_has_no_auc() -> None:
    m = metrics_from_vector(local_eval_vector(np.ones(5), np.full(5, 0.7), bins=10), bins=10)
    assert m.auc is None and m.accuracy == 1.0


def test_local_errors() -> None:
    with pytest.raises(ProtocolError):
        local_eval_vector(np.array([0, 1]), np.array([0.5]))
    with pytest.raises(ProtocolError):
        local_eval_vector(np.array([0, 2]), np.array([0.5, 0.5]))
    with pytest.raises(ProtocolError):
        local_eval_vector(np.array([0, 1]), np.array([0.5, 1.5]))
    with pytest.raises(ProtocolError):
        local_eval_vector(np.array([0, 1]), np.array([0.5, np.nan]))
    with pytest.raises(ProtocolError):
        local_eval_vector(np.array([0, 1]), np.array([0.5, 0.5]), bins=0)


def test_decode_errors() -> None:
    good = local_eval_vector(np.array([0, 1]), np.array([0.2, 0.8]), bins=4)
    with pytest.raises(ProtocolError, match="length"):
        metrics_from_vector(good, bins=5)
    with pytest.raises(ProtocolError, match="no evaluation"):
        metrics_from_vector(np.zeros_like(good), bins=4)
    bad = good.copy()
    bad[0] = 3.0  # histograms count 2 rows
    with pytest.raises(ProtocolError, match="inconsistent"):
        metrics_from_vector(bad, bins=4)
    bad = good.copy()
    bad[4] = -1.0
    with pytest.raises(ProtocolError, match="negative"):
        metrics_from_vector(bad, bins=4)


def test_tolerates_approximate_counts() -> None:
    good = local_eval_vector(np.array([0, 1, 1]), np.array([0.2, 0.8, 0.6]), bins=4)
    noisy = good + np.random.default_rng(0).normal(0, 1e-7, size=good.size)
    m = metrics_from_vector(noisy, bins=4)
    assert m.n == 3 and m.auc == pytest.approx(1.0, abs=1e-6)
