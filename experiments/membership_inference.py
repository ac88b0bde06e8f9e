"""Loss-threshold membership inference on released models (pure functions).

Yeom, Giacomelli, Fredrikson, Jha 2018, "Privacy Risk in Machine Learning:
Analyzing the Connection to Overfitting", arXiv:1709.01604: the attacker scores
each row by its negative loss under the released model and guesses "member"
above a threshold. Reported as the attack's AUC and its advantage
max(TPR - FPR), beside the advantage bound an (epsilon, delta)-DP release
guarantees (:func:`advantage_bound`). Used by :mod:`experiments.privacy_utility`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "advantage_bound",
    "attack_advantage",
    "attack_auc",
    "loss_threshold_attack",
    "per_example_loss",
]

_LOSS_FLOOR = 1e-12
#: Mean of the Kolmogorov distribution, sqrt(pi / 2) * ln 2: the advantage max(TPR - FPR)
#: is the two-sample KS statistic, ~ this times sqrt((m + n) / (m n)) with no leakage.
_KS_MEAN = math.sqrt(math.pi / 2.0) * math.log(2.0)


def per_example_loss(y: npt.ArrayLike, p: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Binary cross-entropy of each row; probabilities clipped to [1e-12, 1 - 1e-12].

    >>> per_example_loss([1, 0], [0.5, 0.5]).round(4).tolist()
    [0.6931, 0.6931]
    """
    yy = np.asarray(y, np.float64)
    pp = np.clip(np.asarray(p, np.float64), _LOSS_FLOOR, 1.0 - _LOSS_FLOOR)
    if yy.shape != pp.shape:
        raise ValueError(f"{yy.shape[0]} labels but {pp.shape[0]} probabilities")
    return np.asarray(-(yy * np.log(pp) + (1.0 - yy) * np.log1p(-pp)), np.float64)


def _attack_inputs(
    member_losses: npt.ArrayLike, nonmember_losses: npt.ArrayLike
) -> tuple[npt.NDArray[np.int_], npt.NDArray[np.float64]]:
    m = np.asarray(member_losses, np.float64).reshape(-1)
    n = np.asarray(nonmember_losses, np.float64).reshape(-1)
    if m.size == 0 or n.size == 0:
        raise ValueError("the attack needs at least one member and one non-member")
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(n))):
        raise ValueError("losses must be finite")
    labels = np.concatenate([np.ones(m.size, np.int_), np.zeros(n.size, np.int_)])
    return labels, -np.concatenate([m, n])  # score: a low loss says "member"


def attack_auc(member_losses: npt.ArrayLike, nonmember_losses: npt.ArrayLike) -> float:
    """ROC AUC of the loss-threshold attack (score ``-loss``); 0.5 is chance.

    >>> attack_auc([0.1, 0.2], [0.9, 1.0]), attack_auc([1.0, 1.0], [1.0])
    (1.0, 0.5)
    """
    from sklearn.metrics import roc_auc_score

    labels, scores = _attack_inputs(member_losses, nonmember_losses)
    return float(roc_auc_score(labels, scores))


def attack_advantage(member_losses: npt.ArrayLike, nonmember_losses: npt.ArrayLike) -> float:
    """Membership advantage of the best loss threshold: ``max(TPR - FPR)``, in [0, 1].

    >>> attack_advantage([0.1, 0.2], [0.9, 1.0])
    1.0
    """
    from sklearn.metrics import roc_curve

    labels, scores = _attack_inputs(member_losses, nonmember_losses)
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(max(np.max(tpr - fpr), 0.0))


def loss_threshold_attack(
    member_losses: npt.ArrayLike, nonmember_losses: npt.ArrayLike
) -> dict[str, Any]:
    """Attack AUC, advantage, sample sizes and the AUC's null standard deviation."""
    m = np.asarray(member_losses, np.float64).reshape(-1)
    n = np.asarray(nonmember_losses, np.float64).reshape(-1)
    return {
        "auc": attack_auc(m, n),
        "advantage": attack_advantage(m, n),
        "n_members": int(m.size),
        "n_nonmembers": int(n.size),
        "mean_member_loss": float(np.mean(m)),
        "mean_nonmember_loss": float(np.mean(n)),
        "null_auc_std": math.sqrt((m.size + n.size + 1) / (12.0 * m.size * n.size)),
        "null_advantage_mean": _KS_MEAN * math.sqrt((m.size + n.size) / (m.size * n.size)),
    }


def advantage_bound(epsilon: float | None, *, target_delta: float) -> float:
    """Largest ``TPR - FPR`` of any test between neighbouring datasets under (eps, delta)-DP.

    >>> round(advantage_bound(1.0, target_delta=0.0), 4)
    0.4621
    """
    if epsilon is None or math.isinf(epsilon):
        return 1.0
    if epsilon > 50:  # e^eps overflows long before the bound differs from 1
        return 1.0
    e = math.exp(epsilon)
    return min(1.0, (e - 1.0 + 2.0 * target_delta) / (e + 1.0))
