"""Segment profiles in business units, from summed per-segment statistics.

After federated k-means (:mod:`protocols.kmeans`) each partner assigns its
customers to segments and describes each segment in the *original* units of
its numeric columns (euros, pages, seconds), not the standardised ones.  The
per-segment counts and sums are additive, so a partner sends one vector
(:func:`local_profile_vector`), the coordinator adds them, and
:func:`profiles_from_vector` yields size, share, purchase rate and column
means per segment -- the usual cluster "profile" table of customer
segmentation (Wedel & Kamakura 2000, "Market Segmentation", 2nd ed., ch. 5).

Vector layout, per segment ``s = 0 .. k-1``::

    [count, labelled_count, label_sum, (non_missing, sum) per numeric column]

``labelled_count`` is 0 for a partner without labels, so the purchase rate is
taken over labelled customers only and partners without a target do not bias
it.

Notes
-----
Only sums over all partners are revealed.  A small segment's means describe
few customers; callers publishing profiles should suppress segments below
their disclosure threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedcollab.common.errors import ProtocolError
from fedcollab.protocols._checks import (
    EMPTY_COUNT,
    as_binary_labels,
    as_column,
    as_vector,
    check_positive_int,
)

__all__ = [
    "SegmentProfile",
    "local_profile_vector",
    "profile_vector_length",
    "profiles_from_vector",
    "suppress_small_segments",
]


@dataclass(frozen=True)
class SegmentProfile:
    """One segment's profile.

    ``purchase_rate`` is None without labelled customers; a mean is None when
    no customer in the segment has that column.
    """

    segment: int
    size: int
    share: float
    purchase_rate: float | None
    means: dict[str, float | None]


def profile_vector_length(*, k: int, numeric_names: Sequence[str]) -> int:
    """Length of a :func:`local_profile_vector`."""
    return check_positive_int(k, name="k") * (3 + 2 * len(numeric_names))


def local_profile_vector(
    assignments: npt.ArrayLike,
    raw_numeric: Mapping[str, npt.ArrayLike],
    labels: npt.ArrayLike | None,
    *,
    k: int,
    numeric_names: Sequence[str],
) -> np.ndarray:
    """One partner's per-segment counts and sums (see the module docstring)."""
    check_positive_int(k, name="k")
    seg = np.asarray(assignments)
    if seg.ndim != 1 or not np.issubdtype(seg.dtype, np.integer):
        raise ProtocolError("assignments must be a 1-D integer array")
    if seg.size and (seg.min() < 0 or seg.max() >= k):
        raise ProtocolError(f"assignments must lie in [0, {k})")
    n = seg.shape[0]
    counts = np.bincount(seg, minlength=k).astype(np.float64)
    labelled: np.ndarray
    positives: np.ndarray
    if labels is None:
        labelled = np.zeros(k)
        positives = np.zeros(k)
    else:
        y = as_binary_labels(labels)
        if y.shape[0] != n:
            raise ProtocolError(f"{n} assignments but {y.shape[0]} labels")
        labelled = counts
        positives = np.bincount(seg, weights=y, minlength=k)
    columns: list[np.ndarray] = [labelled, positives]
    for name in numeric_names:
        if name not in raw_numeric:
            raise ProtocolError(f"numeric column {name!r} is missing from the data")
        x = as_column(raw_numeric[name], name=name)
        if x.shape[0] != n:
            raise ProtocolError(f"column {name!r} has {x.shape[0]} rows, expected {n}")
        present = ~np.isnan(x)
        columns.append(np.bincount(seg[present], minlength=k).astype(np.float64))
        columns.append(np.bincount(seg[present], weights=x[present], minlength=k))
    return np.column_stack([counts, *columns]).ravel().astype(np.float64)


def profiles_from_vector(
    summed: npt.ArrayLike, *, k: int, numeric_names: Sequence[str]
) -> list[SegmentProfile]:
    """Decode the sum of partners' :func:`local_profile_vector` outputs."""
    length = profile_vector_length(k=k, numeric_names=numeric_names)
    rows = as_vector(summed, length=length, name="summed profiles").reshape(k, -1)
    count_cols = [0, 1, *range(3, rows.shape[1], 2)]
    if np.any(rows[:, count_cols] <= -EMPTY_COUNT):
        raise ProtocolError("summed profile vector has negative counts")
    sizes = np.maximum(rows[:, 0], 0.0)
    total = sizes.sum()
    if total < EMPTY_COUNT:
        raise ProtocolError("no customers were assigned to any segment")
    profiles: list[SegmentProfile] = []
    for s in range(k):
        row = rows[s]
        labelled, positives = row[1], row[2]
        means: dict[str, float | None] = {}
        for j, name in enumerate(numeric_names):
            present, col_sum = row[3 + 2 * j], row[4 + 2 * j]
            means[name] = float(col_sum / present) if present >= EMPTY_COUNT else None
        profiles.append(
            SegmentProfile(
                segment=s,
                size=round(float(sizes[s])),
                share=float(sizes[s] / total),
                purchase_rate=float(positives / labelled) if labelled >= EMPTY_COUNT else None,
                means=means,
            )
        )
    return profiles


def suppress_small_segments(
    vec: npt.ArrayLike, *, k: int, numeric_names: Sequence[str], min_rows: int
) -> np.ndarray:
    """Zero every statistic of segments with fewer than ``min_rows`` local rows.

    Applied by a partner to its :func:`local_profile_vector` before replying,
    so a segment profile never describes a handful of one partner's customers.
    """
    length = profile_vector_length(k=k, numeric_names=numeric_names)
    out = as_vector(vec, length=length, name="profile").copy()
    blocks = out.reshape(k, -1)
    small = (blocks[:, 0] > 0) & (blocks[:, 0] < min_rows)
    blocks[small] = 0.0
    return out
