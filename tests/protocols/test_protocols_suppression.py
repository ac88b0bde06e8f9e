"""Partners never report clusters or segments of a handful of their rows."""

from __future__ import annotations

import numpy as np

from fedcollab.protocols.kmeans import local_cluster_vector, suppress_small_clusters
from fedcollab.protocols.segments import local_profile_vector, suppress_small_segments


def test_small_cluster_is_reported_empty() -> None:
    x = np.array([[0.0, 0.0]] * 6 + [[10.0, 10.0]])  # one outlier forms its own cluster
    c = np.array([[0.0, 0.0], [10.0, 10.0]])
    vec = suppress_small_clusters(local_cluster_vector(x, c), k=2, n_features=2, min_rows=5)
    sums, counts = vec[:4].reshape(2, 2), vec[4:6]
    assert counts.tolist() == [6.0, 0.0]
    assert sums[1].tolist() == [0.0, 0.0]  # the outlier's row is gone
    assert vec[6] == 0.0  # inertia kept (both points sit on their centroids)


def test_small_segment_is_reported_empty() -> None:
    seg = np.array([0] * 6 + [1])
    vec = local_profile_vector(
        seg, {"spend": np.arange(7.0)}, np.ones(7), k=2, numeric_names=["spend"]
    )
    out = suppress_small_segments(vec, k=2, numeric_names=["spend"], min_rows=5).reshape(2, -1)
    assert out[0, 0] == 6.0
    assert not out[1].any()
