from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.datasets import make_blobs

from fedcollab.common.errors import ProtocolError
from fedcollab.protocols.kmeans import (
    assign,
    centralized_kmeans,
    cluster_vector_length,
    flooded_shift,
    kmeans_objective,
    local_cluster_vector,
    local_seed_vector,
    seed_centroids,
    seed_vector_length,
    update_centroids,
)
from fedcollab.protocols.vector_sum import VectorSum


def _pooled_lloyd_step(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    labels = assign(x, c)
    new = c.copy()
    for j in range(c.shape[0]):
        if np.any(labels == j):
            new[j] = x[labels == j].mean(axis=0)
    return new


def _federated_lloyd_step(parts: list[np.ndarray], c: np.ndarray) -> tuple[np.ndarray, float]:
    k, d = c.shape
    acc = VectorSum(cluster_vector_length(k=k, n_features=d))
    for p in parts:
        acc.add(local_cluster_vector(p, c))
    new, objective, counts = update_centroids(acc.total, c)
    assert counts.sum() == pytest.approx(sum(len(p) for p in parts))
    return new, objective


def test_fixed_lloyd_step() -> None:
    x = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [12.0, 10.0]])
    c = np.array([[1.0, 1.0], [11.0, 11.0], [50.0, 50.0]])
    vec = local_cluster_vector(x, c)
    np.testing.assert_array_equal(vec[:6], [2, 0, 22, 20, 0, 0])
    np.testing.assert_array_equal(vec[6:9], [2, 2, 0])
    assert vec[9] == 8.0
    new, objective, counts = update_centroids(vec, c)
    np.testing.assert_array_equal(new, [[1.0, 0.0], [11.0, 10.0], [50.0, 50.0]])  # empty kept
    assert objective == 8.0
    np.testing.assert_array_equal(counts, [2, 2, 0])
    assert kmeans_objective(x, new) == 4.0
    np.testing.assert_array_equal(assign(x, new), [0, 0, 1, 1])


@given(st.integers(0, 2**32 - 1), st.integers(2, 6), st.integers(1, 5))
def test_federated_lloyd_equals_pooled(seed: int, k: int, n_partners: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 3)) + rng.integers(0, 4, size=(300, 1)) * 3.0
    parts = np.array_split(x[rng.permutation(300)], n_partners)
    c_fed = x[rng.choice(300, size=k, replace=False)]
    c_pool = c_fed.copy()
    for _ in range(10):
        objective_before = kmeans_objective(x, c_fed)
        c_fed, objective = _federated_lloyd_step(parts, c_fed)
        c_pool = _pooled_lloyd_step(x, c_pool)
        np.testing.assert_allclose(c_fed, c_pool, rtol=0, atol=1e-9)
        assert objective == pytest.approx(objective_before, rel=1e-9)


def _non_iid_blobs(seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    x, blob = make_blobs(
        n_samples=3000, centers=8, n_features=4, cluster_std=1.5, random_state=seed
    )
    rng = np.random.default_rng(seed)
    # Each partner holds mostly two or three blobs (sorting by blob, a little mixing).
    order = np.argsort(blob + rng.normal(0, 0.8, size=blob.size))
    return x, np.array_split(x[order], 5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_federated_kmeans_close_to_sklearn(seed: int) -> None:
    k = 8
    x, parts = _non_iid_blobs(seed)
    seeds = [local_seed_vector(p, k_local=k, seed=seed + i) for i, p in enumerate(parts)]
    assert all(v.shape == (seed_vector_length(k_local=k, n_features=4),) for v in seeds)
    c = seed_centroids(seeds, k=k, n_features=4, seed=seed)
    assert c.shape == (k, 4)
    for _ in range(20):
        c, _ = _federated_lloyd_step(parts, c)
    ours = kmeans_objective(x, c)
    baseline = kmeans_objective(x, centralized_kmeans(x, k=k, seed=seed))
    assert ours <= 1.02 * baseline


def test_seed_vector_drops_small_clusters() -> None:
    rng = np.random.default_rng(0)
    big = rng.normal(size=(50, 2))
    outliers = np.array([[100.0, 100.0], [101.0, 100.0]])
    vec = local_seed_vector(np.vstack([big, outliers]), k_local=3, seed=0, min_cluster_size=10)
    slots = vec.reshape(3, 3)
    counts = slots[:, 0]
    assert counts.sum() <= 50  # the 2 outliers are never reported
    assert np.all((counts == 0) | (counts >= 10))
    assert np.all(slots[counts == 0, 1:] == 0)
    np.testing.assert_array_equal(slots[:, 1:].sum(axis=0) <= big.sum(axis=0) + 1e-9, [True, True])


def test_seed_vector_small_and_empty_partner() -> None:
    assert np.all(local_seed_vector(np.zeros((0, 2)), k_local=4, seed=0) == 0)
    vec = local_seed_vector(np.ones((3, 2)), k_local=4, seed=0, min_cluster_size=1)
    assert vec.shape == (12,)
    assert vec.reshape(4, 3)[:, 0].sum() == 3


def test_seed_centroids_errors() -> None:
    v = local_seed_vector(np.random.default_rng(0).normal(size=(40, 2)), k_local=2, seed=0)
    with pytest.raises(ProtocolError, match="fewer than k"):
        seed_centroids([v], k=5, n_features=2, seed=0)
    with pytest.raises(ProtocolError, match="multiple"):
        seed_centroids([v[:-1]], k=1, n_features=2, seed=0)
    bad = v.copy()
    bad[0] = -5.0
    with pytest.raises(ProtocolError, match="negative"):
        seed_centroids([bad], k=1, n_features=2, seed=0)
    with pytest.raises(ProtocolError):
        seed_centroids([np.full_like(v, np.nan)], k=1, n_features=2, seed=0)


def test_lloyd_errors() -> None:
    c = np.zeros((2, 3))
    with pytest.raises(ProtocolError):
        local_cluster_vector(np.zeros((4, 2)), c)
    with pytest.raises(ProtocolError, match="length"):
        update_centroids(np.zeros(5), c)
    bad = np.zeros(cluster_vector_length(k=2, n_features=3))
    bad[6] = -3.0
    with pytest.raises(ProtocolError, match="negative"):
        update_centroids(bad, c)
    with pytest.raises(ProtocolError):
        assign(np.zeros((2, 3)), np.zeros((0, 3)))
    with pytest.raises(ProtocolError):
        centralized_kmeans(np.zeros((2, 3)), k=3, seed=0)


def test_flooded_shift_is_what_the_noise_alone_moves_a_centroid() -> None:
    """10 widths of sum and count noise over the smallest filled count (empty clusters,
    below EMPTY_COUNT, keep their centroid and do not count); 0 without flooding."""
    before = np.array([[1.0, -2.0], [0.0, 0.0], [5.0, 5.0]])
    # k = 3, d = 2: sums (k*d), counts (k), objective.
    summed = np.array([4.0, -8.0, 0.0, 0.0, 10.0, 0.0, 4.0, 0.2, 2.0, 7.0])
    reach = 1.0 + max(5.0, 2.0)  # the largest |centroid| before or after
    assert flooded_shift(summed, before, width=1e-4) == pytest.approx(10 * 1e-4 * reach / 2.0)
    assert flooded_shift(summed, before, width=0.0) == 0.0
