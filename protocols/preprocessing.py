"""Federated preprocessing: vocabularies and standardisation without pooled data.

Long module: vocabularies and standardisation: one federated pipeline.

Two phases, each one message per partner:

1. **Vocabularies** -- each partner lists the distinct values of the
   categorical columns whose vocabulary the schema does not declare
   (:func:`local_vocabulary`); the coordinator takes the sorted union
   (:func:`merge_vocabularies`).  Declared vocabularies win.
2. **Moments** -- over the agreed :class:`MomentsLayout`, each partner sends
   one flat vector of counts, sums and sums of squares
   (:func:`local_moments`); the coordinator adds them
   (:class:`protocols.vector_sum.VectorSum`) and :meth:`Preprocessor.from_moments`
   turns the sum into pooled means and population standard deviations.

Counts, sums and sums of squares are additive sufficient statistics, so the
pooled mean and variance are exact, not an approximation (the pairwise-update
view of these moments is Chan, Golub, LeVeque 1983, "Algorithms for Computing
the Sample Variance: Analysis and Recommendations", The American Statistician
37(3)).

Notes
-----
*Leakage.* Phase 1 is the one exchange here that is a set union, not a sum: the
coordinator sees each partner's list of distinct values.  ``min_count`` lets a
partner withhold values it holds fewer times than that (rare values can
identify a customer); withheld values are encoded as all zeros, like unknown
ones.  Phase 2 reveals only the sum over partners (under CKKS, not even each
partner's vector).

*Numerics.* The variance is ``E[x^2] - E[x]^2``, which loses relative precision
when ``|mean| >> std``; a computed variance below ``1e3 * eps * E[x^2]`` is
indistinguishable from rounding noise and is treated as a constant column
(std 1, so the standardised column is all zeros).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fedcollab.common.errors import ProtocolError
from fedcollab.protocols._checks import EMPTY_COUNT, as_column, as_vector, check_positive_int

__all__ = [
    "MomentsLayout",
    "Preprocessor",
    "level_shares",
    "local_moments",
    "local_vocabulary",
    "merge_vocabularies",
]

_FORMAT = "fedcollab.preprocessor/1"
_CONSTANT_VARIANCE = 1e3 * float(np.finfo(np.float64).eps)


def _as_str_column(values: npt.ArrayLike, *, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ProtocolError(f"column {name!r}: expected 1-D, got shape {arr.shape}")
    return arr.astype(str)


def local_vocabulary(
    categorical: Mapping[str, npt.ArrayLike],
    columns_needing_vocab: Sequence[str],
    *,
    min_count: int = 1,
) -> dict[str, list[str]]:
    """Sorted distinct values of each column in ``columns_needing_vocab``.

    The empty string means "missing" and never enters a vocabulary.  Values a
    partner holds fewer than ``min_count`` times are withheld (see Notes).
    """
    check_positive_int(min_count, name="min_count")
    out: dict[str, list[str]] = {}
    for col in columns_needing_vocab:
        if col not in categorical:
            raise ProtocolError(f"categorical column {col!r} is missing from the local data")
        values, counts = np.unique(_as_str_column(categorical[col], name=col), return_counts=True)
        out[col] = sorted(
            str(v) for v, c in zip(values, counts, strict=True) if v and c >= min_count
        )
    return out


def merge_vocabularies(
    local_vocabs: Sequence[Mapping[str, Sequence[str]]],
    *,
    declared: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, list[str]]:
    """Sorted union of partners' vocabularies; ``declared`` ones are kept as given.

    Every partner must report the same columns (ProtocolError otherwise).  The
    result has the partners' columns in sorted order, then declared columns.
    """
    declared = dict(declared or {})
    columns: set[str] | None = None
    for i, vocab in enumerate(local_vocabs):
        if columns is None:
            columns = set(vocab)
        elif set(vocab) != columns:
            raise ProtocolError(
                f"partner #{i + 1} reported vocabularies for {sorted(vocab)}, "
                f"others for {sorted(columns)}"
            )
    merged: dict[str, list[str]] = {}
    for col in sorted(columns or ()):
        if col in declared:
            continue
        union: set[str] = set()
        for vocab in local_vocabs:
            values = vocab[col]
            if isinstance(values, str) or not all(isinstance(v, str) for v in values):
                raise ProtocolError(f"vocabulary of {col!r} must be a list of strings")
            union.update(values)
        union.discard("")
        merged[col] = sorted(union)
    for col, values in declared.items():
        if len(set(values)) != len(values):
            raise ProtocolError(f"declared vocabulary of {col!r} has duplicate values")
        merged[col] = [str(v) for v in values]
    return merged


@dataclass(frozen=True, kw_only=True)
class MomentsLayout:
    """Which columns (and categories) a moments vector covers, and in what order.

    Vector layout: per numeric column ``[count_non_missing, sum, sum_of_squares]``,
    per categorical column one count per vocabulary value, per boolean column
    ``[count_non_missing, sum]``.
    """

    numeric_names: tuple[str, ...] = ()
    categorical_vocab: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    boolean_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "numeric_names", tuple(self.numeric_names))
        object.__setattr__(self, "boolean_names", tuple(self.boolean_names))
        vocab = {str(k): tuple(str(v) for v in vs) for k, vs in self.categorical_vocab.items()}
        object.__setattr__(self, "categorical_vocab", vocab)
        names = [*self.numeric_names, *vocab, *self.boolean_names]
        if len(set(names)) != len(names):
            raise ProtocolError("a column appears more than once in the moments layout")
        for col, values in vocab.items():
            if len(set(values)) != len(values):
                raise ProtocolError(f"vocabulary of {col!r} has duplicate values")

    @property
    def length(self) -> int:
        """Length of a moments vector."""
        n_cat = sum(len(v) for v in self.categorical_vocab.values())
        return 3 * len(self.numeric_names) + n_cat + 2 * len(self.boolean_names)


def level_shares(layout: MomentsLayout, summed: npt.ArrayLike) -> dict[str, tuple[float, ...]]:
    """Each categorical level's share of the counted rows, from the summed moments.

    The counts are in the moments vector already (they are what the vocabulary
    of the one-hot inputs is checked against), so this reveals nothing the sum
    did not.  A column with no counted value gets all-zero shares.

    >>> layout = MomentsLayout(numeric_names=("x",), categorical_vocab={"c": ("a", "b")})
    >>> level_shares(layout, [4, 10, 30, 3, 1])
    {'c': (0.75, 0.25)}
    """
    vec = as_vector(summed, length=layout.length, name="summed moments")
    pos = 3 * len(layout.numeric_names)
    shares: dict[str, tuple[float, ...]] = {}
    for col, vocab in layout.categorical_vocab.items():
        counts = np.clip(vec[pos : pos + len(vocab)], 0.0, None)
        pos += len(vocab)
        total = float(counts.sum())
        shares[col] = tuple(float(c / total) if total > 0 else 0.0 for c in counts)
    return shares


def local_moments(
    layout: MomentsLayout,
    numeric: Mapping[str, npt.ArrayLike],
    categorical: Mapping[str, npt.ArrayLike],
    boolean: Mapping[str, npt.ArrayLike],
    *,
    min_category_count: int = 1,
) -> np.ndarray:
    """One partner's moments vector over ``layout`` (see :class:`MomentsLayout`).

    Missing values (NaN; empty string for categories) are not counted; a
    category outside the vocabulary is not counted either, nor one this partner
    holds fewer than ``min_category_count`` times: the layout's vocabulary comes
    from the coordinator, which could otherwise name a rare value and read its
    count.

    >>> layout = MomentsLayout(categorical_vocab={"c": ("a", "b")})
    >>> local_moments(layout, {}, {"c": ["a", "a", "b"]}, {}, min_category_count=2)
    array([2., 0.])
    """
    check_positive_int(min_category_count, name="min_category_count")
    parts: list[np.ndarray] = []
    n_rows: int | None = None

    def rows(col: str, arr: np.ndarray) -> None:
        nonlocal n_rows
        if n_rows is None:
            n_rows = len(arr)
        elif len(arr) != n_rows:
            raise ProtocolError(f"column {col!r} has {len(arr)} rows, expected {n_rows}")

    for col in layout.numeric_names:
        x = as_column(_get(numeric, col, kind="numeric"), name=col)
        rows(col, x)
        present = x[~np.isnan(x)]
        parts.append(np.array([present.size, present.sum(), np.square(present).sum()]))
    for col, vocab in layout.categorical_vocab.items():
        s = _as_str_column(_get(categorical, col, kind="categorical"), name=col)
        rows(col, s)
        values, counts = np.unique(s, return_counts=True)
        by_value = dict(zip(values.tolist(), counts.tolist(), strict=True))
        parts.append(
            np.array(
                [c if (c := by_value.get(v, 0)) >= min_category_count else 0 for v in vocab],
                dtype=np.float64,
            )
        )
    for col in layout.boolean_names:
        b = _as_boolean(_get(boolean, col, kind="boolean"), name=col)
        rows(col, b)
        present = b[~np.isnan(b)]
        parts.append(np.array([present.size, present.sum()]))
    if not parts:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate(parts).astype(np.float64)


def _get(columns: Mapping[str, npt.ArrayLike], col: str, *, kind: str) -> npt.ArrayLike:
    if col not in columns:
        raise ProtocolError(f"{kind} column {col!r} is missing from the data")
    return columns[col]


def _as_boolean(values: npt.ArrayLike, *, name: str) -> np.ndarray:
    b = as_column(values, name=name)
    present = b[~np.isnan(b)]
    if not np.all((present == 0.0) | (present == 1.0)):
        raise ProtocolError(f"boolean column {name!r}: values must be 0, 1 or NaN")
    return b


@dataclass(frozen=True, kw_only=True)
class Preprocessor:
    """Pooled feature transform, fitted from summed moments only.

    Output columns: standardised numeric columns (missing -> federated mean,
    i.e. 0), one-hot categories (unknown or missing -> all zeros), booleans as
    0/1 (missing -> federated share of ones).
    """

    numeric_names: tuple[str, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    categorical_vocab: Mapping[str, tuple[str, ...]]
    boolean_names: tuple[str, ...]
    boolean_means: tuple[float, ...]

    def __post_init__(self) -> None:
        if not (len(self.numeric_names) == len(self.means) == len(self.stds)):
            raise ProtocolError("numeric_names, means and stds must have the same length")
        if len(self.boolean_names) != len(self.boolean_means):
            raise ProtocolError("boolean_names and boolean_means must have the same length")
        values = [*self.means, *self.stds, *self.boolean_means]
        if not all(np.isfinite(values)) or any(s <= 0 for s in self.stds):
            raise ProtocolError("means must be finite and stds finite and positive")
        # Normalises the vocabulary and checks duplicates in one place.
        layout = MomentsLayout(
            numeric_names=self.numeric_names,
            categorical_vocab=self.categorical_vocab,
            boolean_names=self.boolean_names,
        )
        object.__setattr__(self, "numeric_names", layout.numeric_names)
        object.__setattr__(self, "categorical_vocab", layout.categorical_vocab)
        object.__setattr__(self, "boolean_names", layout.boolean_names)
        object.__setattr__(self, "means", tuple(float(v) for v in self.means))
        object.__setattr__(self, "stds", tuple(float(v) for v in self.stds))
        object.__setattr__(self, "boolean_means", tuple(float(v) for v in self.boolean_means))

    @classmethod
    def from_moments(cls, layout: MomentsLayout, summed: npt.ArrayLike) -> Preprocessor:
        """Decode the sum of partners' :func:`local_moments` vectors."""
        vec = as_vector(summed, length=layout.length, name="summed moments")
        pos = 0
        means: list[float] = []
        stds: list[float] = []
        for col in layout.numeric_names:
            count, total, total_sq = vec[pos : pos + 3]
            pos += 3
            if count < EMPTY_COUNT:
                raise ProtocolError(
                    f"numeric column {col!r} has no non-missing value at any partner",
                    hint="drop the column from the job or fix the partners' data",
                )
            mean = total / count
            second = total_sq / count
            var = max(second - mean * mean, 0.0)
            # var > 0 too: DP moments (protocols.dp_statistics) may sum to a negative second
            # moment, where the relative test alone would pass a zero variance.
            constant = var <= 0.0 or var <= _CONSTANT_VARIANCE * second
            std = 1.0 if constant else float(np.sqrt(var))
            means.append(float(mean))
            stds.append(std)
        pos += sum(len(v) for v in layout.categorical_vocab.values())
        boolean_means: list[float] = []
        for col in layout.boolean_names:
            count, total = vec[pos : pos + 2]
            pos += 2
            if count < EMPTY_COUNT:
                raise ProtocolError(f"boolean column {col!r} has no non-missing value anywhere")
            boolean_means.append(float(total / count))
        return cls(
            numeric_names=layout.numeric_names,
            means=tuple(means),
            stds=tuple(stds),
            categorical_vocab=layout.categorical_vocab,
            boolean_names=layout.boolean_names,
            boolean_means=tuple(boolean_means),
        )

    @property
    def feature_names(self) -> list[str]:
        """Names of the output columns, e.g. ``"Month=Feb"`` for a one-hot column."""
        names = list(self.numeric_names)
        for col, vocab in self.categorical_vocab.items():
            names.extend(f"{col}={v}" for v in vocab)
        names.extend(self.boolean_names)
        return names

    @property
    def n_features(self) -> int:
        """Number of output columns."""
        return len(self.feature_names)

    def transform(
        self,
        numeric: Mapping[str, npt.ArrayLike],
        categorical: Mapping[str, npt.ArrayLike],
        boolean: Mapping[str, npt.ArrayLike],
    ) -> np.ndarray:
        """Feature matrix ``(n_rows, n_features)`` as float32."""
        blocks: list[np.ndarray] = []
        for col, mean, std in zip(self.numeric_names, self.means, self.stds, strict=True):
            x = (as_column(_get(numeric, col, kind="numeric"), name=col) - mean) / std
            blocks.append(np.nan_to_num(x, nan=0.0)[:, None])
        for col, vocab in self.categorical_vocab.items():
            s = _as_str_column(_get(categorical, col, kind="categorical"), name=col)
            blocks.append((s[:, None] == np.asarray(vocab, dtype=str)[None, :]).astype(np.float64))
        for col, fill in zip(self.boolean_names, self.boolean_means, strict=True):
            b = _as_boolean(_get(boolean, col, kind="boolean"), name=col)
            blocks.append(np.where(np.isnan(b), fill, b)[:, None])
        if not blocks:
            raise ProtocolError("the preprocessor has no columns")
        n_rows = {len(b) for b in blocks}
        if len(n_rows) != 1:
            raise ProtocolError(f"columns have different row counts: {sorted(n_rows)}")
        return np.hstack(blocks).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form, for job outputs."""
        return {
            "format": _FORMAT,
            "numeric": [
                {"name": n, "mean": m, "std": s}
                for n, m, s in zip(self.numeric_names, self.means, self.stds, strict=True)
            ],
            "categorical": [
                {"name": c, "vocabulary": list(v)} for c, v in self.categorical_vocab.items()
            ],
            "boolean": [
                {"name": n, "mean": m}
                for n, m in zip(self.boolean_names, self.boolean_means, strict=True)
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessor:
        """Inverse of :meth:`to_dict`; ProtocolError on anything malformed."""
        if not isinstance(data, Mapping) or data.get("format") != _FORMAT:
            raise ProtocolError(f"not a saved preprocessor (expected format {_FORMAT!r})")
        if set(data) != {"format", "numeric", "categorical", "boolean"}:
            raise ProtocolError(f"unexpected preprocessor keys: {sorted(data)}")
        try:
            numeric = list(data["numeric"])
            boolean = list(data["boolean"])
            return cls(
                numeric_names=tuple(str(d["name"]) for d in numeric),
                means=tuple(float(d["mean"]) for d in numeric),
                stds=tuple(float(d["std"]) for d in numeric),
                categorical_vocab={
                    str(d["name"]): tuple(str(v) for v in d["vocabulary"])
                    for d in data["categorical"]
                },
                boolean_names=tuple(str(d["name"]) for d in boolean),
                boolean_means=tuple(float(d["mean"]) for d in boolean),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed saved preprocessor: {exc!r}") from exc
