"""Gaussian releases of the statistics a DP job needs beside its training (issue 13).

In a job with ``privacy.dp`` set, every value that leaves a partner is either a
DP release charged to its budget ledger or a function of nothing. Training is
DP-SGD / DP-FedAvg / DP k-means (:mod:`privacy.dp_plan`); this module noises
the rest, each reply one Gaussian mechanism (Dwork & Roth 2014, "The
Algorithmic Foundations of Differential Privacy", Thm A.1; analysed with RDP,
Mironov 2017, arXiv:1702.07476) of noise std ``z * sensitivity`` where ``z`` is
the plan's ``statistics_noise_multiplier`` and the L2 sensitivity is that of
adding or removing one row:

* **Moments** (:func:`private_moments`): numeric values are clipped to the job's
  declared ``privacy.value_bounds`` ``[lo, hi]`` and centred and scaled to
  ``t = (x - c) / h`` with ``c = (lo + hi) / 2``, ``h = (hi - lo) / 2``, so a row
  adds at most 1 to each of ``count, sum t, sum t^2`` per numeric column, 1 to
  one category count per categorical column and 1 to each of ``count, sum`` per
  boolean column: sensitivity ``sqrt(3 n_numeric + n_categorical + 2 n_boolean)``
  (:func:`moments_sensitivity`). The noisy scaled sums are mapped back to
  ``count, sum x, sum x^2`` (post-processing), the exact moments' layout; the
  coordinator decodes their sum with :func:`decode_private_moments`, which keeps a
  variance that noise pushed down at the noise's own level (post-processing with
  public facts: the bounds and the noise std). No rare-category threshold applies
  here: a threshold on the exact count would let one row move a released count
  from 0 to 10.
* **Evaluation** (:func:`private_eval_vector`): scores are binned into
  :data:`DP_EVAL_BINS` coarse bins per class (one row adds 1 to one bin:
  sensitivity 1); the counts sit at the coarse bins' midpoints in the usual
  ``bins``-wide layout, with the head ``n, n_correct, log loss`` zero (the
  coordinator derives them from the histograms, :func:`protocols.evaluation.
  metrics_from_vector` with ``noisy=True``). Validation and test histograms in
  one reply hold disjoint rows: still sensitivity 1.
* **Permutation importance** (:func:`private_permutation_vector`): a shuffle
  among a partner's rows is not row-local (removing one row re-deals the
  column to every other row), so a DP job replaces each column by its pooled
  mean (0 after standardisation; "unknown" for a category) instead. One row is
  then in each of the ``1 + C`` blocks once: sensitivity ``sqrt(1 + C)``.

Notes
-----
* Randomness from ``np.random.default_rng`` seeded with 128 bits of OS entropy,
  as in :mod:`protocols.client_dp` (same residual floating-point caveat).
* The coarse histogram costs resolution: the AUC from 20 bins differs from the
  exact one by at most half the share of positive-negative pairs in one bin.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from fedcollab.common.errors import PrivacyError
from fedcollab.protocols import evaluation, preprocessing
from fedcollab.protocols._checks import as_vector
from fedcollab.protocols.attribution import ColumnGroup

__all__ = [
    "DP_EVAL_BINS",
    "decode_private_moments",
    "moments_sensitivity",
    "private_eval_vector",
    "private_moments",
    "private_permutation_vector",
]

#: Score bins per class of a DP evaluation histogram (0.5 is a bin edge).
DP_EVAL_BINS = 20
#: A noisy variance below this many standard errors of its noise is kept at that
#: level (:func:`decode_private_moments`). Chosen on the privacy study's job
#: (sample-level epsilon 1, 9 partners, seeds 0-3, released model's exact test AUC):
#: floor 2: 0.846, 0.835 (seeds 0-1); 1: mean 0.854; 0.5: mean 0.862 (0.874, 0.852,
#: 0.848, 0.874). A higher floor overstates the std of columns the noise dominates
#: (1.4-2x at 2), which shrinks their inputs and slows DP-SGD; at 0.5 a std is
#: understated by at most about 1/sqrt(2) where the variance is near the noise's
#: standard error, and overstated where it is far below it.
NOISE_FLOOR_SE = 0.5


def _gaussian(size: int, std: float) -> np.ndarray:
    if not (math.isfinite(std) and std > 0):
        raise PrivacyError(f"noise std must be finite and > 0, got {std!r}", hint="a bug")
    return np.random.default_rng(secrets.randbits(128)).normal(0.0, std, size=size)


def moments_sensitivity(layout: preprocessing.MomentsLayout) -> float:
    """L2 sensitivity of one row on a scaled moments vector (module docstring)."""
    return math.sqrt(
        3 * len(layout.numeric_names)
        + len(layout.categorical_vocab)
        + 2 * len(layout.boolean_names)
    )


def private_moments(
    layout: preprocessing.MomentsLayout,
    numeric: Mapping[str, npt.ArrayLike],
    categorical: Mapping[str, npt.ArrayLike],
    boolean: Mapping[str, npt.ArrayLike],
    *,
    bounds: Mapping[str, Sequence[float]],
    noise_multiplier: float,
) -> np.ndarray:
    """A moments vector over ``layout`` with Gaussian noise (see the module docstring)."""
    missing = [c for c in layout.numeric_names if c not in bounds]
    if missing:
        raise PrivacyError(
            f"numeric columns {missing} have no declared bounds, so their moments have no "
            "bounded sensitivity",
            hint="declare [privacy.value_bounds] (column = [low, high]) for every numeric "
            "column of a DP job; values are clipped to them",
        )
    centre: dict[str, tuple[float, float]] = {}
    scaled: dict[str, np.ndarray] = {}
    for col in layout.numeric_names:
        lo, hi = (float(v) for v in bounds[col])
        c, h = (lo + hi) / 2.0, (hi - lo) / 2.0
        centre[col] = (c, h)
        x = np.asarray(numeric[col], dtype=np.float64)
        scaled[col] = (np.clip(x, lo, hi) - c) / h  # NaN stays NaN: not counted
    vec = preprocessing.local_moments(layout, scaled, categorical, boolean, min_category_count=1)
    noisy: np.ndarray = vec + _gaussian(vec.size, noise_multiplier * moments_sensitivity(layout))
    for i, col in enumerate(layout.numeric_names):  # back to count, sum x, sum x^2
        c, h = centre[col]
        n, s1, s2 = noisy[3 * i : 3 * i + 3]
        noisy[3 * i + 1] = c * n + h * s1
        noisy[3 * i + 2] = c * c * n + 2 * c * h * s1 + h * h * s2
    return noisy


def decode_private_moments(
    layout: preprocessing.MomentsLayout,
    summed: npt.ArrayLike,
    *,
    bounds: Mapping[str, Sequence[float]],
    noise_std: float,
) -> preprocessing.Preprocessor:
    """The preprocessor from a sum of :func:`private_moments` vectors.

    Post-processing with public facts only (the declared bounds and ``noise_std``,
    the std of the summed noise on one scaled slot: ``z * sensitivity * sqrt(partners)``),
    so it costs no privacy. In the scaled units ``t = (x - c) / h`` of each column:

    * the mean is clipped to ``[-1, 1]`` (every clipped value lies there);
    * the variance is kept within ``[floor, 1]`` with ``floor = k * noise_std *
      sqrt(1 + 4 m^2) / count``, ``k`` (:data:`NOISE_FLOOR_SE`) times the noise's
      standard error on ``S2/n - m^2``: an estimate below it is mostly noise.
      Understating a std blows a column's inputs up; overstating it shrinks them
      and slows training. The exact decoder's fallback
      (std 1 in the data's own units when the variance is not positive) is what the
      privacy study met: at sample-level epsilon 1 noise pushed PageValues' variance
      below 0 and the job trained on values up to 100 divided by 1 (test AUC 0.68
      instead of 0.87);
    * a boolean column's mean is clipped to ``[0, 1]``.
    """
    if not (math.isfinite(noise_std) and noise_std >= 0):
        raise PrivacyError(f"noise std must be finite and >= 0, got {noise_std!r}", hint="a bug")
    vec = np.array(as_vector(summed, length=layout.length, name="summed moments"))
    for i, col in enumerate(layout.numeric_names):
        lo, hi = (float(v) for v in bounds[col])
        c, h = (lo + hi) / 2.0, (hi - lo) / 2.0
        n, sx, sxx = vec[3 * i : 3 * i + 3]
        if n < 1.0:
            continue  # from_moments reports the empty column
        s1 = (sx - c * n) / h  # exact inverse of private_moments' mapping
        s2 = (sxx - 2 * c * sx + c * c * n) / (h * h)
        m = float(np.clip(s1 / n, -1.0, 1.0))
        floor = min(NOISE_FLOOR_SE * noise_std * math.sqrt(1.0 + 4.0 * m * m) / n, 1.0)
        var = float(np.clip(s2 / n - m * m, floor, 1.0))
        mean_x, var_x = c + h * m, h * h * var
        vec[3 * i + 1] = n * mean_x
        vec[3 * i + 2] = n * (var_x + mean_x * mean_x)
    pos = 3 * len(layout.numeric_names) + sum(len(v) for v in layout.categorical_vocab.values())
    for _col in layout.boolean_names:
        n = vec[pos]
        vec[pos + 1] = float(np.clip(vec[pos + 1], 0.0, max(n, 0.0)))
        pos += 2
    return preprocessing.Preprocessor.from_moments(layout, vec)


def _coarse(y: npt.ArrayLike, p: npt.ArrayLike, *, bins: int) -> np.ndarray:
    """Coarse per-class counts at the midpoints of the ``bins``-wide layout, head zero."""
    if bins % DP_EVAL_BINS:
        raise PrivacyError(
            f"{bins} evaluation bins are not a multiple of {DP_EVAL_BINS}", hint="a bug"
        )
    exact = evaluation.local_eval_vector(y, p, bins=DP_EVAL_BINS)[3:]
    width = bins // DP_EVAL_BINS
    out = np.zeros(evaluation.eval_vector_length(bins=bins))
    mids = 3 + np.arange(DP_EVAL_BINS) * width + width // 2
    out[mids] = exact[:DP_EVAL_BINS]
    out[mids + bins] = exact[DP_EVAL_BINS:]
    return out


def _slots(bins: int) -> np.ndarray:
    width = bins // DP_EVAL_BINS
    mids = 3 + np.arange(DP_EVAL_BINS) * width + width // 2
    return np.concatenate([mids, mids + bins])


def private_eval_vector(
    y: npt.ArrayLike, p: npt.ArrayLike, *, bins: int, noise_std: float
) -> np.ndarray:
    """An evaluation vector (``bins`` layout) of coarse histograms plus Gaussian noise of
    std ``noise_std`` on their ``2 * DP_EVAL_BINS`` slots; every other slot is 0."""
    vec = _coarse(y, p, bins=bins)
    slots = _slots(bins)
    vec[slots] += _gaussian(slots.size, noise_std)
    return vec


def private_permutation_vector(
    predict_proba: Callable[[np.ndarray], np.ndarray],
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    groups: Sequence[ColumnGroup],
    *,
    bins: int,
    noise_multiplier: float,
) -> np.ndarray:
    """``[baseline | column j at its pooled mean, per j]`` coarse evaluation vectors, with
    noise of std ``noise_multiplier * sqrt(1 + C)`` on every histogram slot."""
    feats = np.asarray(x, dtype=np.float32)
    std = noise_multiplier * math.sqrt(1 + len(groups))
    parts = [private_eval_vector(y, predict_proba(feats), bins=bins, noise_std=std)]
    for g in groups:
        ablated = feats.copy()
        ablated[:, list(g.indices)] = 0.0  # the pooled mean (standardised), or "unknown"
        parts.append(private_eval_vector(y, predict_proba(ablated), bins=bins, noise_std=std))
    return np.concatenate(parts)
