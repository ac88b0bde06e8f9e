"""A vertical party's own feature matrix over the aligned rows.

In a vertical job every party holds *all* aligned rows of its own columns, so
it fits its preprocessing (means, standard deviations, one-hot vocabularies)
locally on its training rows: no statistic leaves the party. Numeric columns
are standardised, categories one-hot encoded over the values held at least
``min_category_count`` times (rarer values become all zeros), booleans 0/1.

The train/test split is decided per id (:func:`common.dataset.split_indices`),
so every party puts the same user in the same split without talking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedcollab.common.dataset import Dataset, split_indices
from fedcollab.common.schema import DatasetSchema
from fedcollab.protocols.preprocessing import (
    MomentsLayout,
    Preprocessor,
    local_moments,
    local_vocabulary,
)

__all__ = ["PartyMatrix", "aligned_split", "declared_columns", "party_matrix"]


@dataclass(frozen=True)
class PartyMatrix:
    """One party's standardised features on the aligned train and test rows."""

    preprocessor: Preprocessor
    train: np.ndarray
    test: np.ndarray

    @property
    def feature_names(self) -> list[str]:
        return self.preprocessor.feature_names


def aligned_split(
    dataset: Dataset, aligned: np.ndarray, *, test_fraction: float, split_seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Positions (into ``aligned``) of the training and the test rows, by id.

    Validation rows (by the same per-id rule) are folded into training: a
    vertical job trains for a fixed number of iterations.
    """
    ids = dataset.ids[aligned]
    train, validation, test = split_indices(
        ids, validation_fraction=0.0, test_fraction=test_fraction, seed=split_seed
    )
    return np.sort(np.concatenate([train, validation])), test


def party_matrix(
    dataset: Dataset,
    aligned: np.ndarray,
    *,
    test_fraction: float,
    split_seed: int,
    min_category_count: int = 10,
) -> PartyMatrix:
    """Fit this party's preprocessing on its aligned training rows; transform both splits."""
    train_pos, test_pos = aligned_split(
        dataset, aligned, test_fraction=test_fraction, split_seed=split_seed
    )
    schema = dataset.schema
    train_ds = dataset.subset(aligned[train_pos])
    vocab = local_vocabulary(
        train_ds.categorical,
        [f.name for f in schema.categorical_features],
        min_count=min_category_count,
    )
    for f in schema.categorical_features:
        if f.vocabulary is not None:
            vocab[f.name] = list(f.vocabulary)
    layout = MomentsLayout(
        numeric_names=tuple(f.name for f in schema.numeric_features),
        categorical_vocab={k: tuple(v) for k, v in vocab.items()},
        boolean_names=tuple(f.name for f in schema.boolean_features),
    )
    moments = local_moments(layout, train_ds.numeric, train_ds.categorical, train_ds.boolean)
    pre = Preprocessor.from_moments(layout, moments)

    def transform(rows: np.ndarray) -> np.ndarray:
        sub = dataset.subset(aligned[rows])
        return pre.transform(sub.numeric, sub.categorical, sub.boolean).astype(np.float64)

    return PartyMatrix(preprocessor=pre, train=transform(train_pos), test=transform(test_pos))


def declared_columns(
    schema: DatasetSchema, n_train: int, *, min_category_count: int = 10
) -> tuple[int, int]:
    """The fewest and most columns :func:`party_matrix` can give a party with ``schema``.

    Exact for a schema whose categories all have a declared vocabulary; an open
    category adds between 0 and ``n_train // min_category_count`` columns (the
    values held at least that often). The label holder refuses a gradient with
    another number of entries (:class:`protocols.vertical_lr.LabelHolder`).
    """
    fixed = len(schema.numeric_features) + len(schema.boolean_features)
    open_bound = 0
    for f in schema.categorical_features:
        if f.vocabulary is not None:
            fixed += len(f.vocabulary)
        else:
            open_bound += n_train // min_category_count
    return fixed, fixed + open_bound
