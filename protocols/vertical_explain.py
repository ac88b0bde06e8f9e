"""Vertical interpretability: which party's features matter, and which of its features.

Each party's explanation is a :class:`PartyExplanation`: a party-level
``importance`` and its ``top_features``.  The feature detail stays with its
party unless the party agrees to share it: a party sends ``redact(own,
shared)`` to the coordinator, and :func:`combine` builds the view one viewer
may see (its own full detail; for the others, the party importance plus the
detail of those that share).

* Logistic regression (:func:`lr_party_explanation`): from the party's own
  coefficients on standardised columns and its partial scores ``X_i w_i``.
* Split neural network (:mod:`protocols.split_nn`):
  :func:`party_permutation_importance` runs at the label holder on the
  embeddings it already received (shuffle one party's embedding rows, AUC
  drop); :func:`feature_permutation_importance` runs at each party with its own
  bottom model (shuffle one column, mean L2 shift of its embeddings).

References: permutation importance, Breiman 2001 ("Random Forests", Machine
Learning 45(1)) and Fisher, Rudin & Dominici 2019 (arXiv:1801.01489); party
grouping of features in vertical FL, Wang 2019 ("Interpret Federated Learning
with Shapley Values", arXiv:1905.04519).

Notes
-----
* The importances of the two model kinds have different units (logit scale
  for logistic regression, AUC points for the split NN): compare parties
  within one model, never across.
* The embedding shift is a *proxy*: a feature party has no labels, so it
  measures how much a column moves its embeddings, not the loss; a column can
  move embeddings in directions the top model ignores.  It uses noise-free
  embeddings (``BottomParty.local_embedding``), which never leave the party.
* Permutation importance at the label holder is post-processing of released
  embeddings (no new release), but the evaluation rows' embeddings are
  inference releases that :func:`protocols.split_nn.embedding_mechanism` must
  count.
* ``combine`` fails closed: a party missing from ``shared`` does not share, and
  an unknown viewer is refused rather than shown the public part.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from fedcollab.common.errors import ProtocolError
from fedcollab.protocols._checks import as_binary_labels, as_matrix, as_vector, check_positive_int

__all__ = [
    "OPERATOR",
    "PartyExplanation",
    "combine",
    "feature_permutation_importance",
    "lr_party_explanation",
    "party_permutation_importance",
    "redact",
]

OPERATOR = "operator"
"""The viewer name of the platform operator (no party may be called so)."""


@dataclass(frozen=True)
class PartyExplanation:
    """One party's explanation; ``top_features`` are ``(name, score)``, best first."""

    party: str
    importance: float
    top_features: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "party": self.party,
            "importance": float(self.importance),
            "top_features": [[name, float(score)] for name, score in self.top_features],
        }


def redact(explanation: PartyExplanation, shared: bool) -> PartyExplanation:
    """``explanation`` as others may see it: without feature detail unless ``shared``."""
    return explanation if shared else replace(explanation, top_features=[])


def lr_party_explanation(
    party: str,
    feature_names: Sequence[str],
    coef: npt.ArrayLike,
    partial_scores: npt.ArrayLike,
    *,
    top_k: int = 5,
) -> PartyExplanation:
    """A party's explanation of a logistic regression on standardised columns.

    ``importance`` is the standard deviation over the training rows of the
    party's partial score ``X_i w_i`` (how far its columns move the logit);
    a feature's score is its signed coefficient, the logit change per standard
    deviation of the column, ranked by absolute value.

    >>> e = lr_party_explanation("p", ["a", "b"], [0.5, -2.0], [1.0, -1.0], top_k=1)
    >>> e.importance, e.top_features
    (1.0, [('b', -2.0)])
    """
    check_positive_int(top_k, name="top_k")
    w = as_vector(coef, length=len(feature_names), name=f"{party} coefficients")
    scores = as_vector(partial_scores, name=f"{party} partial scores")
    if scores.size == 0:
        raise ProtocolError(f"{party}: no partial scores", hint="pass the training rows' X_i w_i")
    order = sorted(range(w.size), key=lambda j: (-abs(w[j]), feature_names[j]))[:top_k]
    return PartyExplanation(
        party=party,
        importance=float(np.std(scores)),
        top_features=[(feature_names[j], float(w[j])) for j in order],
    )


def _auc(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, scores))


def party_permutation_importance(
    predict: Callable[[Mapping[str, np.ndarray]], npt.ArrayLike],
    embeddings: Mapping[str, npt.ArrayLike],
    y: npt.ArrayLike,
    *,
    seed: int,
    repeats: int = 5,
) -> dict[str, float]:
    """Mean AUC drop when one party's embedding rows are shuffled, per party.

    ``embeddings`` holds every party's embeddings of the same evaluation rows
    (the label holder's own included) and ``predict`` maps such a mapping to
    probabilities, e.g. at the label holder of a split NN::

        lambda e: top.predict(e["label"], {p: e[p] for p in top.parties})
    """
    check_positive_int(repeats, name="repeats")
    labels = as_binary_labels(y)
    if not 0 < labels.sum() < labels.size:
        raise ProtocolError("permutation importance needs both classes among the rows")
    rows = {p: as_matrix(e, name=f"{p} embeddings") for p, e in embeddings.items()}
    for p, e in rows.items():
        if e.shape[0] != labels.size:
            raise ProtocolError(f"{p}: {e.shape[0]} embedding rows but {labels.size} labels")

    def auc_of(current: Mapping[str, np.ndarray]) -> float:
        probs = as_vector(predict(current), length=labels.size, name="predictions")
        return _auc(labels, probs)

    base = auc_of(rows)
    rng = np.random.default_rng(seed)
    drops: dict[str, float] = {}
    for party in sorted(rows):
        losses = [
            base - auc_of({**rows, party: rows[party][rng.permutation(labels.size)]})
            for _ in range(repeats)
        ]
        drops[party] = float(np.mean(losses))
    return drops


def feature_permutation_importance(
    embed: Callable[[np.ndarray], npt.ArrayLike],
    features: npt.ArrayLike,
    feature_names: Sequence[str],
    *,
    seed: int,
    repeats: int = 3,
) -> list[tuple[str, float]]:
    """Per column, the mean L2 shift of the party's embeddings when it is shuffled.

    A label-free proxy computed by the party alone (see the module notes);
    ``embed`` is the party's noise-free ``BottomParty.local_embedding``.  Sorted
    by decreasing shift.
    """
    check_positive_int(repeats, name="repeats")
    x = as_matrix(features, name="features")
    if x.shape[1] != len(feature_names) or x.shape[0] < 2:
        raise ProtocolError(
            f"{x.shape} features for {len(feature_names)} names; need >= 2 rows, one name a column"
        )
    base = as_matrix(embed(x), name="embeddings")
    rng = np.random.default_rng(seed)
    scores: list[tuple[str, float]] = []
    for j, name in enumerate(feature_names):
        shifts = []
        for _ in range(repeats):
            shuffled = x.copy()
            shuffled[:, j] = x[rng.permutation(x.shape[0]), j]
            moved = as_matrix(embed(shuffled), name="embeddings") - base
            shifts.append(float(np.linalg.norm(moved, axis=1).mean()))
        scores.append((name, float(np.mean(shifts))))
    return sorted(scores, key=lambda item: (-item[1], item[0]))


def combine(
    explanations: Sequence[PartyExplanation], shared: Mapping[str, bool], viewer: str
) -> dict[str, Any]:
    """The explanations ``viewer`` (a party, or :data:`OPERATOR`) may see.

    A party sees its own full detail; everyone sees every party's importance
    and the feature detail of parties whose ``shared`` entry is True.
    """
    names = [e.party for e in explanations]
    if len(set(names)) != len(names) or OPERATOR in names:
        raise ProtocolError(
            f"party names must be distinct and not {OPERATOR!r}, got {names}",
            hint="give each party one explanation",
        )
    if viewer != OPERATOR and viewer not in names:
        raise ProtocolError(
            f"unknown viewer {viewer!r}", hint=f"use one of {sorted(names)} or {OPERATOR!r}"
        )
    visible = [
        redact(e, shared=e.party == viewer or shared.get(e.party, False) is True)
        for e in sorted(explanations, key=lambda e: (-e.importance, e.party))
    ]
    return {"viewer": viewer, "parties": [e.to_dict() for e in visible]}
