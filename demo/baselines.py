"""Baselines a federated result is judged against (the demo and the experiments).

- *centralized*: the same model and preprocessing trained on the pooled
  training rows of every partner, evaluated on the pooled test rows. This is
  what fedcollab exists to avoid in production; the demo (which holds every
  partner's file on one machine) and the experiments build it to measure what
  federation costs.
- *alone*: each partner trains on its own rows only (its own standardisation
  and vocabulary) and is evaluated on its own test rows.
- *federated model per partner*: the federated model evaluated on each
  partner's own test rows, for a like-for-like comparison with *alone*.

The train/validation/test rows are the same ones the federated job uses
(:func:`common.dataset.split_indices` hashes ids), so every number here is
measured on identical rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedcollab.client.partner_data import PartnerData, PartnerSource, load_partner
from fedcollab.common.dataset import Dataset
from fedcollab.common.jobspec import JobSpec
from fedcollab.protocols import kmeans, models, preprocessing
from fedcollab.protocols.early_stopping import EarlyStopping
from fedcollab.protocols.local_training import predict_proba, train_local

__all__ = [
    "Pooled",
    "centralized_kmeans_objective",
    "federated_model_per_partner",
    "load_all",
    "train_alone",
    "train_centralized",
]


def load_all(sources: Sequence[PartnerSource], spec: JobSpec) -> list[PartnerData]:
    ev = spec.evaluation
    return [
        load_partner(
            s,
            validation_fraction=ev.validation_fraction,
            test_fraction=ev.test_fraction,
            split_seed=ev.split_seed,
        )
        for s in sources
    ]


def _layout(ds: Dataset, vocab: dict[str, list[str]]) -> preprocessing.MomentsLayout:
    schema = ds.schema
    return preprocessing.MomentsLayout(
        numeric_names=tuple(f.name for f in schema.numeric_features),
        categorical_vocab={
            f.name: tuple(f.vocabulary if f.vocabulary is not None else vocab[f.name])
            for f in schema.categorical_features
        },
        boolean_names=tuple(f.name for f in schema.boolean_features),
    )


def fit_preprocessor(parts: Sequence[tuple[Dataset, np.ndarray]]) -> preprocessing.Preprocessor:
    """Preprocessor from the given rows (pooled when several datasets are given)."""
    schema = parts[0][0].schema
    open_cols = [f.name for f in schema.categorical_features if f.vocabulary is None]
    vocabs = [
        preprocessing.local_vocabulary(ds.subset(rows).categorical, open_cols) for ds, rows in parts
    ]
    vocab = preprocessing.merge_vocabularies(vocabs)
    layout = _layout(parts[0][0], vocab)
    total = np.zeros(layout.length)
    for ds, rows in parts:
        sub = ds.subset(rows)
        total += preprocessing.local_moments(layout, sub.numeric, sub.categorical, sub.boolean)
    return preprocessing.Preprocessor.from_moments(layout, total)


def _xy(
    pre: preprocessing.Preprocessor, parts: Sequence[tuple[Dataset, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for ds, rows in parts:
        sub = ds.subset(rows)
        xs.append(pre.transform(sub.numeric, sub.categorical, sub.boolean))
        assert sub.labels is not None
        ys.append(sub.labels)
    return np.concatenate(xs), np.concatenate(ys)


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, p))


@dataclass(frozen=True)
class Pooled:
    """A model trained on some rows, with its test AUC."""

    test_auc: float | None
    epochs: int
    n_train: int
    n_test: int


def _train_with_early_stopping(
    spec: JobSpec,
    pre: preprocessing.Preprocessor,
    train: Sequence[tuple[Dataset, np.ndarray]],
    val: Sequence[tuple[Dataset, np.ndarray]],
    test: Sequence[tuple[Dataset, np.ndarray]],
    *,
    max_epochs: int,
) -> Pooled:
    x_tr, y_tr = _xy(pre, train)
    x_val, y_val = _xy(pre, val)
    x_te, y_te = _xy(pre, test)
    t = spec.training
    model = models.build_model(
        spec.model.kind,
        n_features=pre.n_features,
        hidden_sizes=spec.model.hidden_sizes,
        seed=t.seed,
    )
    stopper = EarlyStopping(
        patience=max(spec.evaluation.early_stopping_patience, 1),
        min_delta=spec.evaluation.early_stopping_min_delta,
        mode="max",
    )
    best_state, best_auc, epochs = models.get_weights(model), -1.0, 0
    for epoch in range(1, max_epochs + 1):
        train_local(
            model,
            x_tr,
            y_tr,
            epochs=1,
            batch_size=t.batch_size,
            learning_rate=t.learning_rate,
            optimizer=t.optimizer,
            seed=t.seed + epoch,
        )
        epochs = epoch
        auc = _auc(y_val, predict_proba(model, x_val)) or 0.0
        if auc > best_auc:
            best_auc, best_state = auc, models.get_weights(model)
        if stopper.update(auc):
            break
    models.set_weights(model, best_state)
    return Pooled(
        test_auc=_auc(y_te, predict_proba(model, x_te)),
        epochs=epochs,
        n_train=len(y_tr),
        n_test=len(y_te),
    )


def train_centralized(data: Sequence[PartnerData], spec: JobSpec, *, max_epochs: int) -> Pooled:
    """The same model on the pooled rows of all partners (standardised on pooled train rows)."""
    torch.set_num_threads(1)
    train = [(d.dataset, d.train) for d in data]
    pre = fit_preprocessor(train)
    return _train_with_early_stopping(
        spec,
        pre,
        train,
        [(d.dataset, d.validation) for d in data],
        [(d.dataset, d.test) for d in data],
        max_epochs=max_epochs,
    )


def train_alone(data: PartnerData, spec: JobSpec, *, max_epochs: int) -> Pooled:
    """One partner on its own rows only."""
    torch.set_num_threads(1)
    train = [(data.dataset, data.train)]
    pre = fit_preprocessor(train)
    return _train_with_early_stopping(
        spec,
        pre,
        train,
        [(data.dataset, data.validation)],
        [(data.dataset, data.test)],
        max_epochs=max_epochs,
    )


def _released_model(
    out_dir: Path, spec: JobSpec
) -> tuple[preprocessing.Preprocessor, torch.nn.Module]:
    import json

    pre = preprocessing.Preprocessor.from_dict(
        json.loads((out_dir / "preprocessor.json").read_text())
    )
    model = models.build_model(
        spec.model.kind,
        n_features=pre.n_features,
        hidden_sizes=spec.model.hidden_sizes,
        seed=spec.training.seed,
    )
    model.load_state_dict(torch.load(out_dir / "model.pt", weights_only=True))
    return pre, model


def federated_model_per_partner(
    out_dir: Path, data: Sequence[PartnerData], spec: JobSpec
) -> dict[str, float | None]:
    """Test AUC of a finished job's model on each partner's own test rows."""
    pre, model = _released_model(out_dir, spec)
    result: dict[str, float | None] = {}
    for d in data:
        x, y = _xy(pre, [(d.dataset, d.test)])
        result[d.partner] = _auc(y, predict_proba(model, x))
    return result


def federated_model_pooled(
    out_dir: Path, data: Sequence[PartnerData], spec: JobSpec
) -> float | None:
    """Exact test AUC of a finished job's model on every partner's test rows pooled.

    Only a demo or a study that holds every partner's rows can compute it; in a DP
    job the coordinator itself sees a DP estimate (noised score histograms).
    """
    pre, model = _released_model(out_dir, spec)
    x, y = _xy(pre, [(d.dataset, d.test) for d in data])
    return _auc(y, predict_proba(model, x))


def centralized_kmeans_objective(
    data: Sequence[PartnerData], spec: JobSpec, centroids: np.ndarray, pre_dict: dict[str, Any]
) -> dict[str, float]:
    """Federated vs centralized k-means objective on the pooled rows, same preprocessing."""
    pre = preprocessing.Preprocessor.from_dict(pre_dict)
    xs = []
    for d in data:
        ds = d.dataset
        xs.append(pre.transform(ds.numeric, ds.categorical, ds.boolean))
    x = np.concatenate(xs).astype(np.float64)
    s = spec.segmentation
    central = kmeans.centralized_kmeans(x, k=s.k, seed=s.seed, n_init=10)
    fed_obj = kmeans.kmeans_objective(x, centroids)
    cen_obj = kmeans.kmeans_objective(x, central)
    return {"federated": fed_obj, "centralized": cen_obj, "ratio": fed_obj / cen_obj}
