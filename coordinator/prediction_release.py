"""How a purchase-prediction job reports the model it released, and how far to trust it.

Used by :mod:`coordinator.prediction`. A split's pooled metrics and its rows per class
come from the same summed evaluation vector (:func:`score`); every metrics entry says
whether its figures (``n`` included) are DP estimates from noised histograms
(:func:`metrics_entry`); and the ``released`` progress event carries what makes the
released model's figures weak (:func:`release_warnings`): the initial, untrained model,
or a split with fewer than :data:`MIN_MINORITY_ROWS` rows of one class (new-user review,
2026-12-06: an untrained model was released with nothing but "(best: the initial
model)" to show for it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcollab.protocols import evaluation

__all__ = ["EVAL_BINS", "MIN_MINORITY_ROWS", "Scored", "metrics_entry", "release_warnings", "score"]

EVAL_BINS = 1000

#: An AUC from fewer rows of one class than this is not a figure to act on, and the job
#: says so. For a model that cannot tell the classes apart, the Mann-Whitney AUC has
#: variance (n_pos + n_neg + 1) / (12 n_pos n_neg) (Hanley & McNeil 1982), about
#: 1 / (12 n_min) when the other class is much larger: with 10 rows of the minority
#: class its 95% range is 0.5 +- 0.18 (a useless model scores anywhere in 0.32-0.68),
#: with 5 rows 0.5 +- 0.25. Below 10 a reported AUC cannot be told from chance.
MIN_MINORITY_ROWS = 10


def metrics_entry(m: evaluation.EvalMetrics, *, noisy: bool) -> dict[str, Any]:
    # dp_estimate: every figure (n too) comes from Gaussian-noised histograms
    # (protocols.dp_statistics), not from the rows themselves.
    return {
        "n": m.n,
        "auc": m.auc,
        "accuracy": m.accuracy,
        "log_loss": m.log_loss,
        "dp_estimate": noisy,
    }


@dataclass(frozen=True)
class Scored:
    """One split's pooled metrics and its rows per class, from the same summed vector."""

    metrics: evaluation.EvalMetrics
    positives: int
    negatives: int

    @property
    def minority(self) -> tuple[int, int]:
        """(label, rows) of the rarer class."""
        return (1, self.positives) if self.positives <= self.negatives else (0, self.negatives)


def score(summed: np.ndarray, *, noisy: bool) -> Scored:
    vec = np.asarray(summed, dtype=np.float64)
    # The vector ends with the positives' and the negatives' score histograms
    # (protocols.evaluation). Their plain sums are the class counts; in a DP job they are
    # unbiased estimates (post-processing of the noisy release: no further charge),
    # whereas summing the bins after clipping them at 0, as the metrics do, adds the
    # positive part of every bin's noise.
    pos = float(vec[-2 * EVAL_BINS : -EVAL_BINS].sum())
    neg = float(vec[-EVAL_BINS:].sum())
    return Scored(
        evaluation.metrics_from_vector(vec, bins=EVAL_BINS, noisy=noisy),
        positives=max(round(pos), 0),
        negatives=max(round(neg), 0),
    )


def release_warnings(
    released: int, selection: str, val: Scored, test: Scored
) -> list[dict[str, Any]]:
    """What makes the released model's figures weak (the ``released`` event's warnings)."""
    warnings: list[dict[str, Any]] = []
    if released == 0:
        warnings.append({"kind": "initial_model"})
    # The test split scored the reported AUC; the validation split chose the model
    # (only when it was chosen by validation).
    splits = [("test", test)] + ([("validation", val)] if selection == "validation" else [])
    for name, scored in splits:
        label, rows = scored.minority
        if rows < MIN_MINORITY_ROWS:  # 0 rows: no AUC at all
            # n: both classes' counts alike (in a DP job the unbiased estimates, not the
            # metrics' n, which the clipped noise inflates).
            warnings.append(
                {"kind": "few_minority_rows", "split": name, "label": label, "rows": rows,
                 "n": scored.positives + scored.negatives, "threshold": MIN_MINORITY_ROWS}
            )  # fmt: skip
    return warnings
