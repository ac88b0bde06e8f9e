"""Federated k-means: one-shot seeding from local clusters, then summed Lloyd steps.

**Seeding** follows k-FED (Dennis, Li, Smith 2021, "Heterogeneity for the Win:
One-Shot Federated Clustering", arXiv:2103.00697): each partner clusters its
own standardised rows (k-means++, Arthur & Vassilvitskii 2007, then a few Lloyd
iterations) into ``k_local`` clusters and reports, per cluster, its row count
and the sum of its rows (:func:`local_seed_vector`), dropping clusters of
fewer than ``min_cluster_size`` rows.  The coordinator treats the local
centroids as weighted points and runs weighted k-means++ and weighted Lloyd on
them (:func:`seed_centroids`).

**Lloyd iterations** (Lloyd 1982) are sums: a partner assigns its rows to the
current centroids and sends per-cluster sums, counts and its inertia
(:func:`local_cluster_vector`); the coordinator adds the vectors and
:func:`update_centroids` divides.  Starting from the same centroids, this is
exactly the pooled Lloyd step (up to float summation order).

Notes
-----
*Leakage at seeding.* The seed message is a per-partner list, not a summable
vector, so the coordinator sees each partner's local cluster counts and sums in
plaintext -- also in the HE setting, where this is the one step that reveals
aggregates of one partner's rows (each of at least ``min_cluster_size`` rows)
rather than sums over all partners.  The number of zero-count slots reveals how
many local clusters were dropped.  ``min_cluster_size = 10`` is a
k-anonymity-style floor: no reported sum covers fewer than 10 customers.  The
Lloyd steps reveal only cross-partner sums.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedcollab.common.errors import ProtocolError
from fedcollab.protocols._checks import EMPTY_COUNT, as_matrix, as_vector, check_positive_int

__all__ = [
    "assign",
    "centralized_kmeans",
    "cluster_vector_length",
    "flooded_shift",
    "kmeans_objective",
    "local_cluster_vector",
    "local_seed_vector",
    "random_candidates",
    "seed_centroids",
    "seed_from_cells",
    "seed_vector_length",
    "suppress_small_clusters",
    "update_centroids",
]

_CHUNK_ELEMENTS = 1 << 22  # bounds the (rows, k, d) difference block to 32 MiB


def _check_centroids(centroids: npt.ArrayLike, *, n_features: int | None = None) -> np.ndarray:
    c = as_matrix(centroids, name="centroids")
    if c.shape[0] == 0:
        raise ProtocolError("centroids: need at least one centroid")
    if n_features is not None and c.shape[1] != n_features:
        raise ProtocolError(f"centroids have {c.shape[1]} features, data has {n_features}")
    return c


def _nearest(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of and squared distance to the nearest centroid, per row.

    Differences are computed directly (not via ``|x|^2 - 2x.c + |c|^2``) and in
    fixed-size row chunks, so a row's result does not depend on which other
    rows are in the batch: federated and pooled assignments agree bit for bit.
    """
    k, d = c.shape
    labels = np.empty(x.shape[0], dtype=np.int64)
    dist = np.empty(x.shape[0], dtype=np.float64)
    step = max(1, _CHUNK_ELEMENTS // max(1, k * d))
    for start in range(0, x.shape[0], step):
        block = x[start : start + step]
        d2 = np.square(block[:, None, :] - c[None, :, :]).sum(axis=2)
        labels[start : start + step] = np.argmin(d2, axis=1)
        dist[start : start + step] = d2[np.arange(block.shape[0]), labels[start : start + step]]
    return labels, dist


def _cluster_sums(
    x: np.ndarray, labels: np.ndarray, k: int, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster (weighted) row sums ``(k, d)`` and (weighted) counts ``(k,)``."""
    w = np.ones(x.shape[0]) if weights is None else weights
    counts = np.bincount(labels, weights=w, minlength=k).astype(np.float64)
    sums = np.empty((k, x.shape[1]), dtype=np.float64)
    for j in range(x.shape[1]):
        sums[:, j] = np.bincount(labels, weights=w * x[:, j], minlength=k)
    return sums, counts


def _kmeans_pp(
    points: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """Greedy weighted k-means++ (sklearn's variant: 2 + log k trials per centre)."""
    n = points.shape[0]
    base = weights / weights.sum()
    n_trials = 2 + int(np.log(k))
    first = int(rng.choice(n, p=base))
    centres = [points[first]]
    d2 = np.square(points - points[first]).sum(axis=1)
    for _ in range(1, k):
        potential = float(np.dot(weights, d2))
        p = base if potential <= 0 else weights * d2 / potential
        best_cost, best_idx, best_d2 = np.inf, 0, d2
        for cand in rng.choice(n, size=n_trials, p=p / p.sum()):
            cand_d2 = np.minimum(d2, np.square(points - points[cand]).sum(axis=1))
            cost = float(np.dot(weights, cand_d2))
            if cost < best_cost:
                best_cost, best_idx, best_d2 = cost, int(cand), cand_d2
        centres.append(points[best_idx])
        d2 = best_d2
    return np.array(centres, dtype=np.float64)


def _lloyd(
    points: np.ndarray, weights: np.ndarray, centroids: np.ndarray, *, max_iter: int
) -> tuple[np.ndarray, float]:
    """Weighted Lloyd until assignments stop changing; returns (centroids, objective)."""
    c = centroids.copy()
    labels, d2 = _nearest(points, c)
    for _ in range(max_iter):
        sums, counts = _cluster_sums(points, labels, c.shape[0], weights)
        keep = counts > 0
        c[keep] = sums[keep] / counts[keep, None]
        new_labels, d2 = _nearest(points, c)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
    return c, float(np.dot(weights, d2))


# --- seeding (k-FED) ------------------------------------------------------------


def seed_vector_length(*, k_local: int, n_features: int) -> int:
    """Length of a :func:`local_seed_vector`: ``k_local`` slots of ``[count, sum(d)]``."""
    return check_positive_int(k_local, name="k_local") * (
        1 + check_positive_int(n_features, name="n_features")
    )


def local_seed_vector(
    x: npt.ArrayLike,
    *,
    k_local: int,
    seed: int,
    min_cluster_size: int = 10,
    lloyd_iterations: int = 10,
) -> np.ndarray:
    """A partner's seeding message: ``k_local`` slots of ``[count, row_sum (d)]``.

    Slots of clusters with fewer than ``min_cluster_size`` rows are all zeros.
    ``x`` is the partner's standardised feature matrix.
    """
    data = as_matrix(x, name="features")
    n, d = data.shape
    length = seed_vector_length(k_local=k_local, n_features=d)
    check_positive_int(min_cluster_size, name="min_cluster_size")
    check_positive_int(lloyd_iterations, name="lloyd_iterations", minimum=0)
    out = np.zeros((k_local, 1 + d), dtype=np.float64)
    if n > 0:
        ones = np.ones(n)
        init = _kmeans_pp(data, ones, min(k_local, n), np.random.default_rng(seed))
        centroids, _ = _lloyd(data, ones, init, max_iter=lloyd_iterations)
        labels, _ = _nearest(data, centroids)
        sums, counts = _cluster_sums(data, labels, centroids.shape[0])
        kept = counts >= min_cluster_size
        out[: centroids.shape[0], 0] = np.where(kept, counts, 0.0)
        out[: centroids.shape[0], 1:] = np.where(kept[:, None], sums, 0.0)
    return out.reshape(length)


def seed_centroids(
    local_vectors: Sequence[npt.ArrayLike],
    *,
    k: int,
    n_features: int,
    seed: int,
    n_init: int = 10,
    max_iter: int = 100,
) -> np.ndarray:
    """``k`` initial centroids from partners' :func:`local_seed_vector` messages.

    Partners may use different ``k_local``.  ProtocolError if, over all
    partners, fewer than ``k`` local clusters were kept.
    """
    check_positive_int(k, name="k")
    check_positive_int(n_init, name="n_init")
    slot = 1 + check_positive_int(n_features, name="n_features")
    centres: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for i, raw in enumerate(local_vectors):
        vec = as_vector(raw, name=f"seed vector #{i + 1}")
        if vec.size == 0 or vec.size % slot:
            raise ProtocolError(
                f"seed vector #{i + 1} has length {vec.size}, not a multiple of {slot}"
            )
        slots = vec.reshape(-1, slot)
        counts = slots[:, 0]
        if np.any(counts <= -EMPTY_COUNT):
            raise ProtocolError(f"seed vector #{i + 1} has a negative count")
        kept = counts >= EMPTY_COUNT
        centres.append(slots[kept, 1:] / counts[kept, None])
        weights.append(counts[kept])
    points = np.concatenate(centres) if centres else np.zeros((0, slot - 1))
    w = np.concatenate(weights) if weights else np.zeros(0)
    if points.shape[0] < k:
        raise ProtocolError(
            f"only {points.shape[0]} local clusters were reported, fewer than k={k}",
            hint="lower k, raise k_local, or lower min_cluster_size",
        )
    rng = np.random.default_rng(seed)
    best: tuple[float, np.ndarray] | None = None
    for _ in range(n_init):
        init = _kmeans_pp(points, w, k, rng)
        centroids, objective = _lloyd(points, w, init, max_iter=max_iter)
        if best is None or objective < best[0]:
            best = (objective, centroids)
    assert best is not None  # n_init >= 1
    return best[1]


# --- Lloyd step ----------------------------------------------------------------


def random_candidates(m: int, *, n_features: int, seed: int) -> np.ndarray:
    """``m`` starting points for summed seeding, drawn without looking at any data."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(
        (check_positive_int(m, name="m"), check_positive_int(n_features, name="n_features"))
    )


def seed_from_cells(
    summed: npt.ArrayLike, *, m: int, k: int, n_features: int, seed: int
) -> np.ndarray:
    """``k`` initial centroids from a summed Lloyd vector over ``m`` candidate cells.

    The non-empty cells become weighted points (weight: row count) for the
    same weighted k-means++ and Lloyd that k-FED seeding uses.
    """
    vec = as_vector(
        summed, length=cluster_vector_length(k=m, n_features=n_features), name="summed cells"
    )
    sums = vec[: m * n_features].reshape(m, n_features)
    counts = vec[m * n_features : m * n_features + m]
    as_seed = np.concatenate([counts[:, None], sums], axis=1).ravel()
    return seed_centroids([as_seed], k=k, n_features=n_features, seed=seed)


def cluster_vector_length(*, k: int, n_features: int) -> int:
    """Length of a :func:`local_cluster_vector`: ``k*d + k + 1``."""
    return (
        check_positive_int(k, name="k") * (1 + check_positive_int(n_features, name="n_features"))
        + 1
    )


def assign(x: npt.ArrayLike, centroids: npt.ArrayLike) -> np.ndarray:
    """Index of the nearest centroid for each row (ties go to the lower index)."""
    data = as_matrix(x, name="features")
    return _nearest(data, _check_centroids(centroids, n_features=data.shape[1]))[0]


def kmeans_objective(x: npt.ArrayLike, centroids: npt.ArrayLike) -> float:
    """Sum of squared distances from each row to its nearest centroid."""
    data = as_matrix(x, name="features")
    return float(_nearest(data, _check_centroids(centroids, n_features=data.shape[1]))[1].sum())


def local_cluster_vector(x: npt.ArrayLike, centroids: npt.ArrayLike) -> np.ndarray:
    """A partner's Lloyd message: ``[sums (k*d, row-major), counts (k), inertia]``."""
    data = as_matrix(x, name="features")
    c = _check_centroids(centroids, n_features=data.shape[1])
    labels, d2 = _nearest(data, c)
    sums, counts = _cluster_sums(data, labels, c.shape[0])
    return np.concatenate([sums.ravel(), counts, [d2.sum()]])


def update_centroids(
    summed: npt.ArrayLike, previous_centroids: npt.ArrayLike
) -> tuple[np.ndarray, float, np.ndarray]:
    """Decode summed :func:`local_cluster_vector` outputs.

    Returns ``(new_centroids, objective, counts)``; ``objective`` is the total
    inertia w.r.t. ``previous_centroids``.  An empty cluster keeps its previous
    centroid.
    """
    prev = _check_centroids(previous_centroids)
    k, d = prev.shape
    vec = as_vector(summed, length=cluster_vector_length(k=k, n_features=d), name="summed Lloyd")
    sums = vec[: k * d].reshape(k, d)
    counts = vec[k * d : k * d + k]
    if np.any(counts <= -EMPTY_COUNT):
        raise ProtocolError("summed Lloyd vector has a negative cluster count")
    new = prev.copy()
    filled = counts >= EMPTY_COUNT
    new[filled] = sums[filled] / counts[filled, None]
    return new, float(vec[-1]), np.maximum(counts, 0.0)


# --- centralised baseline ------------------------------------------------------


def centralized_kmeans(
    x: npt.ArrayLike, *, k: int, seed: int, n_init: int = 10, max_iter: int = 300
) -> np.ndarray:
    """Centroids from scikit-learn's k-means on pooled data (baseline only)."""
    # Imported here: partners never need scikit-learn, and it costs ~1 s per process.
    from sklearn.cluster import KMeans

    data = as_matrix(x, name="features")
    check_positive_int(k, name="k")
    if data.shape[0] < k:
        raise ProtocolError(f"{data.shape[0]} rows cannot form k={k} clusters")
    model = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=seed)
    model.fit(data)
    return np.asarray(model.cluster_centers_, dtype=np.float64)


def suppress_small_clusters(
    vec: npt.ArrayLike, *, k: int, n_features: int, min_rows: int
) -> np.ndarray:
    """Zero the sums and counts of clusters with fewer than ``min_rows`` local rows.

    A partner applies this to its :func:`local_cluster_vector` before replying:
    a cluster of one row would otherwise reveal that row (the coordinator picks
    the centroids). The inertia slot is kept (one scalar over all rows).
    """
    out = as_vector(vec, length=cluster_vector_length(k=k, n_features=n_features), name="Lloyd")
    out = out.copy()
    counts = out[k * n_features : k * n_features + k]
    small = (counts >= EMPTY_COUNT) & (counts < min_rows)
    sums = out[: k * n_features].reshape(k, n_features)
    sums[small] = 0.0
    counts[small] = 0.0
    return out


def flooded_shift(summed: npt.ArrayLike, before: npt.ArrayLike, *, width: float) -> float:
    """The most the Lloyd update of ``before`` by ``summed`` moves a centroid through
    noise of ``width`` per summed value alone (a plain "ckks" sum is flooded,
    :mod:`privacy.flooding`): 10 widths of the sum and of the count, over the smallest
    filled count. 0 when ``width`` is 0.

    Convergence (the coordinator stops, partners refuse a further step) is a shift within
    the spec's tolerance or this: two steps on the same partition and partners then
    differ by no more than the noise, so their centroids never repeat exactly."""
    if width <= 0:
        return 0.0
    prev = _check_centroids(before)
    k, d = prev.shape
    vec = as_vector(summed, length=cluster_vector_length(k=k, n_features=d), name="summed")
    counts = vec[k * d : k * d + k]
    filled = counts >= EMPTY_COUNT
    if not filled.any():
        return 0.0
    sums = vec[: k * d].reshape(k, d)[filled]
    reach = 1.0 + float(np.max(np.abs(sums / counts[filled, None])))
    reach = max(reach, 1.0 + float(np.max(np.abs(prev))))
    return 10.0 * width * reach / float(np.min(counts[filled]))
