"""Segment statistics with bounded contributions, for DP segmentation (pure).

Under differential privacy a partner may only release sums whose change,
when one customer is added or removed, is bounded; raw business values
(euros, seconds) are not.  So a DP segment profile is built from the same
*standardised, clipped* rows (L2 norm at most ``B = row_clip_norm``) that the
DP Lloyd steps use, and mapped back to business units after the sum, with the
pooled means and standard deviations of the :class:`Preprocessor` (public
within the job).  The noise itself is added by
:func:`protocols.client_dp.private_profile_vector`; this module only lays out
and decodes the vectors (Wedel & Kamakura 2000, "Market Segmentation", ch. 5
for the profile table; Su et al. 2016, "Differentially Private k-Means
Clustering", CODASPY, for noisy sums and counts).

Vector layout (:func:`local_bounded_profile_vector`), ``k`` segments and ``d``
features::

    [sums (k*d, row-major), counts (k), labelled counts (k), label sums (k)]

Its first ``k*d + k`` entries are the sums and counts of
:func:`protocols.kmeans.local_cluster_vector` (without the inertia slot).

Notes
-----
* One customer changes one segment's row sum by at most ``B`` (L2), its count
  by 1, its labelled count by 1 and its label sum by at most 1: L2
  sensitivity ``sqrt(B^2 + 3)``.
* Decoding is post-processing of noisy sums: counts are floored at 0, a
  segment whose noisy count is below ``min_count`` has no means and no
  purchase rate, and the purchase rate is clamped to [0, 1].
* Bias, by construction: clipping pulls large rows towards the pooled mean,
  and a missing numeric value is standardised to 0, i.e. counted at the pooled
  mean.  Choose ``row_clip_norm`` near the typical row norm (about
  ``sqrt(d)`` for standardised columns) to keep both small.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedcollab.common.errors import ProtocolError
from fedcollab.protocols import kmeans
from fedcollab.protocols._checks import EMPTY_COUNT, as_binary_labels, as_matrix, as_vector
from fedcollab.protocols._checks import check_positive_int as _positive
from fedcollab.protocols.preprocessing import Preprocessor
from fedcollab.protocols.segments import SegmentProfile

__all__ = [
    "bounded_profile_vector_length",
    "local_bounded_profile_vector",
    "profiles_from_bounded_vector",
    "suppress_noisy_clusters",
]


def bounded_profile_vector_length(*, k: int, n_features: int) -> int:
    """Length of a :func:`local_bounded_profile_vector`: ``k * (d + 3)``."""
    return _positive(k, name="k") * (_positive(n_features, name="n_features") + 3)


def local_bounded_profile_vector(
    x: npt.ArrayLike, centroids: npt.ArrayLike, labels: npt.ArrayLike | None
) -> np.ndarray:
    """Per-segment sums of ``x``'s rows, counts and label statistics (see the layout).

    ``x`` holds the partner's standardised rows, already clipped; each row goes
    to its nearest centroid.  ``labels`` is None for a partner without labels
    (its labelled counts and label sums are 0).
    """
    data = as_matrix(x, name="features")
    c = as_matrix(centroids, name="centroids")
    k = c.shape[0]
    lloyd = kmeans.local_cluster_vector(data, c)  # checks the centroids against the data
    segments = kmeans.assign(data, c)
    labelled: np.ndarray = np.zeros(k)
    positives: np.ndarray = np.zeros(k)
    if labels is not None:
        y = as_binary_labels(labels)
        if y.shape[0] != data.shape[0]:
            raise ProtocolError(f"{data.shape[0]} rows but {y.shape[0]} labels")
        labelled = np.bincount(segments, minlength=k).astype(np.float64)
        positives = np.bincount(segments, weights=y, minlength=k)
    return np.concatenate([lloyd[:-1], labelled, positives])


def profiles_from_bounded_vector(
    summed: npt.ArrayLike, *, k: int, preprocessor: Preprocessor, min_count: float
) -> list[SegmentProfile]:
    """Segment profiles in business units from summed (noisy) bounded vectors.

    Means are given for the preprocessor's numeric columns (the first columns
    of its output): ``mean + std * (standardised sum / count)``.
    """
    d = preprocessor.n_features
    length = bounded_profile_vector_length(k=k, n_features=d)
    vec = as_vector(summed, length=length, name="summed bounded profiles")
    if not (np.isfinite(min_count) and min_count >= EMPTY_COUNT):
        raise ProtocolError(f"min_count must be finite and >= {EMPTY_COUNT}, got {min_count!r}")
    sums = vec[: k * d].reshape(k, d)
    counts, labelled, positives = (vec[k * d + i * k : k * d + (i + 1) * k] for i in range(3))
    sizes = np.maximum(counts, 0.0)
    total = float(sizes.sum())
    if total < EMPTY_COUNT:
        raise ProtocolError("no customers were assigned to any segment")
    names: Sequence[str] = preprocessor.numeric_names
    profiles: list[SegmentProfile] = []
    for s in range(k):
        means: dict[str, float | None] = {}
        for j, name in enumerate(names):
            standardised = sums[s, j] / counts[s] if counts[s] >= min_count else None
            means[name] = (
                None
                if standardised is None
                else preprocessor.means[j] + preprocessor.stds[j] * float(standardised)
            )
        rate = (
            float(np.clip(positives[s] / labelled[s], 0.0, 1.0))
            if labelled[s] >= min_count
            else None
        )
        profiles.append(
            SegmentProfile(
                segment=s,
                size=round(float(sizes[s])),
                share=float(sizes[s]) / total,
                purchase_rate=rate,
                means=means,
            )
        )
    return profiles


def suppress_noisy_clusters(
    summed: npt.ArrayLike, *, k: int, n_features: int, min_count: float
) -> np.ndarray:
    """Zero the sums and counts of clusters whose summed noisy count is below ``min_count``.

    Applied by the coordinator to a summed DP Lloyd vector before
    :func:`protocols.kmeans.update_centroids` (which refuses negative counts, and
    keeps the previous centroid of an empty cluster): a noisy sum divided by a
    count near zero is noise.  Post-processing: it costs no privacy.
    """
    length = kmeans.cluster_vector_length(k=k, n_features=n_features)
    out = as_vector(summed, length=length, name="summed Lloyd")
    if not (np.isfinite(min_count) and min_count >= EMPTY_COUNT):
        raise ProtocolError(f"min_count must be finite and >= {EMPTY_COUNT}, got {min_count!r}")
    counts = out[k * n_features : k * n_features + k]
    small = counts < min_count
    out[: k * n_features].reshape(k, n_features)[small] = 0.0
    counts[small] = 0.0
    return out
