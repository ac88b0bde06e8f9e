"""Global attributions for purchase prediction: coefficients and federated permutation importance.

Two methods, both from values the coordinator may hold:

* **Coefficients** (logistic regression).  Numeric inputs are standardised by
  the federated preprocessor, so a numeric input's coefficient is the change
  in log-odds of a purchase per one (pooled) standard deviation; a one-hot
  ``Column=value`` or boolean input's coefficient is the log-odds change from
  absent to present.  ``exp(coefficient)`` is the odds ratio.  A categorical
  column's importance is the largest ``|coefficient|`` over its levels.
  Ranked that way, a rare level with a large coefficient (``TrafficType=15``,
  seen in 0.3 % of sessions) outranks the input that moves most customers'
  odds.  So when the pooled level shares are known (they are in the summed
  preprocessing moments, :func:`protocols.preprocessing.level_shares`), the
  ranking is by **population effect**: the standard deviation, over the
  population, of the input's contribution to the log-odds, ``|b| * SD(x)``.
  A standardised numeric input has ``SD = 1``, a boolean or one-hot level
  with share ``p`` has ``SD = sqrt(p (1 - p))``, and a categorical column's
  contribution ``sum_k b_k x_k`` has ``SD = sqrt(sum_k p_k b_k^2 -
  (sum_k p_k b_k)^2)``.  The raw coefficients and odds ratios stay beside it.
  This is the "standardised coefficient" of the regression literature
  (Menard 2004, "Six approaches to calculating standardized logistic
  regression coefficients", The American Statistician 58(3)), computed per
  level and per column from federated statistics only.
* **Permutation importance** (Breiman 2001, "Random Forests", Machine
  Learning 45(1), section 10; the model-agnostic form of Fisher, Rudin,
  Dominici 2019, arXiv:1801.01489).  Each partner, on its own test rows,
  shuffles one original column at a time (a categorical's one-hot block
  together) and scores the released model; it sends the evaluation vectors
  of :mod:`protocols.evaluation` for the unshuffled rows and for every
  shuffled column, concatenated (:func:`local_permutation_vector`).  Every
  entry is a sum over rows, so the coordinator only adds the vectors (in
  plaintext or under CKKS) and :func:`permutation_importance` turns the sum
  into the pooled test AUC with each column shuffled; importance is the
  baseline AUC minus that.

>>> pre = Preprocessor(numeric_names=("PageValues",), means=(5.9,), stds=(18.6,),
...                    categorical_vocab={"Month": ("Feb", "Mar")}, boolean_names=("Weekend",),
...                    boolean_means=(0.23,))
>>> [(g.column, g.indices) for g in column_groups(pre)]
[('PageValues', (0,)), ('Month', (1, 2)), ('Weekend', (3,))]
>>> doc = coefficient_document(job="j", coefficients=[0.9, -0.2, 0.1, 0.0], pre=pre)
>>> [(f["feature"], f["direction"]) for f in doc["features"]]
[('PageValues', '+'), ('Month=Feb', '-'), ('Month=Mar', '+'), ('Weekend', None)]

Notes
-----
Each partner shuffles within its own rows, so a column is replaced by a draw
from *that partner's* marginal, not the pooled one: a partner whose customers
differ from the others' yields a smaller drop than pooled shuffling would.
The shuffle is seeded from the job seed and the column index, so a partner
gives the same answer to the same request.  The reply reveals, per column,
the per-class score histograms at a resolution of ``1 / bins``, like the
evaluation step; no per-row score leaves a partner.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedcollab.common.errors import ProtocolError
from fedcollab.protocols import evaluation
from fedcollab.protocols._checks import EMPTY_COUNT, as_vector, check_positive_int
from fedcollab.protocols.preprocessing import Preprocessor

__all__ = [
    "ColumnGroup",
    "PermutationImportance",
    "attribution_csv",
    "coefficient_document",
    "column_groups",
    "csv_text",
    "local_permutation_vector",
    "permutation_document",
    "permutation_importance",
    "permutation_vector_length",
]

_DIGITS = 6


@dataclass(frozen=True)
class ColumnGroup:
    """One original column and the model inputs (feature indices) it became."""

    column: str
    kind: str  # "numeric" | "categorical" | "boolean"
    indices: tuple[int, ...]


def column_groups(pre: Preprocessor) -> list[ColumnGroup]:
    """The original columns in the preprocessor's output order, with their input indices."""
    groups: list[ColumnGroup] = []
    pos = 0
    for name in pre.numeric_names:
        groups.append(ColumnGroup(name, "numeric", (pos,)))
        pos += 1
    for name, vocab in pre.categorical_vocab.items():
        if vocab:  # a column with an empty vocabulary has no model input
            groups.append(ColumnGroup(name, "categorical", tuple(range(pos, pos + len(vocab)))))
        pos += len(vocab)
    for name in pre.boolean_names:
        groups.append(ColumnGroup(name, "boolean", (pos,)))
        pos += 1
    return groups


def _direction(value: float) -> str | None:
    return "+" if value > 0 else "-" if value < 0 else None


def _r(value: float) -> float:
    return round(float(value), _DIGITS)


def _sorted(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (-r["importance"], r[key]))


def _input_sds(pre: Preprocessor, level_shares: dict[str, tuple[float, ...]]) -> list[float]:
    """Population SD of each model input (see the module docstring)."""
    sds: list[float] = [1.0] * len(pre.numeric_names)
    for col, vocab in pre.categorical_vocab.items():
        shares = level_shares.get(col, ())
        if len(shares) != len(vocab):
            raise ProtocolError(f"level shares of {col!r} do not match its vocabulary")
        sds += [math.sqrt(max(p * (1 - p), 0.0)) for p in shares]
    sds += [math.sqrt(max(p * (1 - p), 0.0)) for p in pre.boolean_means]
    return sds


def coefficient_document(
    *,
    job: str,
    coefficients: npt.ArrayLike,
    pre: Preprocessor,
    level_shares: dict[str, tuple[float, ...]] | None = None,
) -> dict[str, Any]:
    """``attributions.json`` for a logistic regression with these input ``coefficients``.

    With ``level_shares`` (pooled share of each categorical level) features and
    columns are ranked by population effect; without, by ``|coefficient|``.
    """
    coef = as_vector(coefficients, length=pre.n_features, name="coefficients")
    if level_shares is not None:
        return _population_document(job, coef, pre, level_shares)
    names = pre.feature_names
    features: list[dict[str, Any]] = []
    columns: list[dict[str, Any]] = []
    for g in column_groups(pre):
        unit = {"numeric": "per SD", "categorical": "level vs none", "boolean": "true vs false"}
        for i in g.indices:
            c = float(coef[i])
            features.append(
                {
                    "feature": names[i],
                    "column": g.column,
                    "importance": _r(abs(c)),
                    "direction": _direction(c),
                    "coefficient": _r(c),
                    "odds_ratio": _r(math.exp(c)),
                    "unit": unit[g.kind],
                }
            )
        top = max((abs(float(coef[i])), names[i], float(coef[i])) for i in g.indices)
        entry: dict[str, Any] = {
            "column": g.column,
            "importance": _r(top[0]),
            "direction": _direction(top[2]),
            "aggregation": "single input",
        }
        if g.kind == "categorical":  # levels point different ways: no single direction
            entry.update(direction=None, aggregation="max |coefficient| over levels",
                         top_level=top[1], levels=len(g.indices))  # fmt: skip
        columns.append(entry)
    return {
        "job": job,
        "model": "logreg",
        "method": "coefficients",
        "metric": "log-odds per SD",
        "baseline": None,
        "note": (
            "Coefficient = change in purchase log-odds per standard deviation of a numeric "
            "input (one-hot and boolean inputs: present vs absent); odds ratio = exp(coefficient); "
            "a categorical column's importance is its largest |coefficient| over levels."
        ),
        "features": _sorted(features, "feature"),
        "columns": _sorted(columns, "column"),
    }


def _population_document(
    job: str, coef: npt.NDArray[np.float64], pre: Preprocessor, shares: dict[str, tuple[float, ...]]
) -> dict[str, Any]:
    names = pre.feature_names
    sds = _input_sds(pre, shares)
    unit = {"numeric": "per SD", "categorical": "level vs none", "boolean": "true vs false"}
    features: list[dict[str, Any]] = []
    columns: list[dict[str, Any]] = []
    for g in column_groups(pre):
        for k, i in enumerate(g.indices):
            c = float(coef[i])
            entry = {
                "feature": names[i],
                "column": g.column,
                "importance": _r(abs(c) * sds[i]),
                "direction": _direction(c),
                "coefficient": _r(c),
                "odds_ratio": _r(math.exp(c)),
                "unit": unit[g.kind],
            }
            if g.kind == "categorical":
                entry["share"] = _r(shares[g.column][k])
            elif g.kind == "boolean":
                entry["share"] = _r(pre.boolean_means[pre.boolean_names.index(g.column)])
            features.append(entry)
        if g.kind == "categorical":
            p = np.asarray(shares[g.column], dtype=np.float64)
            b = coef[list(g.indices)]
            effect = math.sqrt(max(float(p @ (b * b)) - float(p @ b) ** 2, 0.0))
            top = max(g.indices, key=lambda i: (abs(float(coef[i])) * sds[i], names[i]))
            columns.append(
                {"column": g.column, "importance": _r(effect), "direction": None,
                 "aggregation": "SD of the column's log-odds contribution over its levels",
                 "top_level": names[top], "levels": len(g.indices)}
            )  # fmt: skip
        else:
            i = g.indices[0]
            columns.append(
                {"column": g.column, "importance": _r(abs(float(coef[i])) * sds[i]),
                 "direction": _direction(float(coef[i])), "aggregation": "single input"}
            )  # fmt: skip
    return {
        "job": job,
        "model": "logreg",
        "method": "coefficients",
        "metric": "population effect (SD of log-odds contribution)",
        "baseline": None,
        "note": (
            "Importance = how much the input moves purchase log-odds across the population: "
            "|coefficient| x the input's standard deviation (numeric inputs are standardised: "
            "SD 1; a level or boolean with share p: sqrt(p(1-p))), so a rare level with a large "
            "coefficient ranks low. coefficient = change in log-odds per SD of a numeric input "
            "or present vs absent; odds ratio = exp(coefficient); share = pooled share of rows."
        ),
        "features": _sorted(features, "feature"),
        "columns": _sorted(columns, "column"),
    }


def permutation_vector_length(*, n_columns: int, bins: int) -> int:
    """Length of a :func:`local_permutation_vector` reply."""
    return (1 + check_positive_int(n_columns, name="n_columns")) * evaluation.eval_vector_length(
        bins=bins
    )


def local_permutation_vector(
    predict_proba: Callable[[np.ndarray], np.ndarray],
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    groups: Sequence[ColumnGroup],
    *,
    seed: int,
    bins: int,
) -> np.ndarray:
    """One partner's ``[baseline eval vector | eval vector with column j shuffled, per j]``.

    Column ``j`` (a whole one-hot block) is shuffled among these rows with a
    generator seeded by ``(seed, j)``.
    """
    feats = np.asarray(x, dtype=np.float32)
    if feats.ndim != 2:
        raise ProtocolError(f"features must be 2-D, got shape {feats.shape}")
    if not groups:
        raise ProtocolError("no columns to permute")
    width = feats.shape[1]
    parts = [evaluation.local_eval_vector(y, predict_proba(feats), bins=bins)]
    for j, g in enumerate(groups):
        if not g.indices or min(g.indices) < 0 or max(g.indices) >= width:
            raise ProtocolError(f"column {g.column!r}: input indices outside 0..{width - 1}")
        rng = np.random.default_rng([seed, j])
        order = rng.permutation(feats.shape[0])
        shuffled = feats.copy()
        cols = list(g.indices)
        shuffled[:, cols] = feats[order][:, cols]
        parts.append(evaluation.local_eval_vector(y, predict_proba(shuffled), bins=bins))
    return np.concatenate(parts).astype(np.float64)


@dataclass(frozen=True)
class PermutationImportance:
    """Pooled test AUC, and per column the AUC with it shuffled and the drop."""

    n: int
    baseline_auc: float
    columns: tuple[tuple[str, float, float], ...]  # (column, permuted AUC, AUC drop)


def permutation_importance(
    summed: npt.ArrayLike, *, columns: Sequence[str], bins: int, noisy: bool = False
) -> PermutationImportance | None:
    """Decode the sum of :func:`local_permutation_vector` replies.

    None when the pooled test rows are empty or hold one class only (no AUC);
    ProtocolError when the blocks disagree on the number of rows. ``noisy``: DP
    replies (:func:`protocols.dp_statistics.private_permutation_vector`), decoded from
    their noisy histograms; their blocks' row counts differ by the noise.
    """
    length = permutation_vector_length(n_columns=len(columns), bins=bins)
    blocks = as_vector(summed, length=length, name="summed permutation").reshape(
        1 + len(columns), -1
    )
    if (np.maximum(blocks[0, 3:], 0.0).sum() < 1.0) if noisy else blocks[0, 0] < EMPTY_COUNT:
        return None
    base = evaluation.metrics_from_vector(blocks[0], bins=bins, noisy=noisy)
    if base.auc is None:
        return None
    out: list[tuple[str, float, float]] = []
    for name, block in zip(columns, blocks[1:], strict=True):
        m = evaluation.metrics_from_vector(block, bins=bins, noisy=noisy)
        if m.auc is None or (m.n != base.n and not noisy):
            raise ProtocolError(f"permutation block of {name!r} covers other rows than baseline")
        out.append((name, m.auc, base.auc - m.auc))
    return PermutationImportance(n=base.n, baseline_auc=base.auc, columns=tuple(out))


def permutation_document(
    *, job: str, model: str, result: PermutationImportance, groups: Sequence[ColumnGroup]
) -> dict[str, Any]:
    """``attributions.json`` for federated permutation importance."""
    kinds = {g.column: g.kind for g in groups}
    rows = [
        {
            "column": name,
            "importance": _r(drop),
            "direction": None,
            "permuted_auc": _r(auc),
            "kind": kinds.get(name, ""),
        }
        for name, auc, drop in result.columns
    ]
    features = [{"feature": r["column"], **{k: v for k, v in r.items() if k != "column"}}
                for r in rows]  # fmt: skip
    return {
        "job": job,
        "model": model,
        "method": "permutation",
        "metric": "test AUC drop",
        "baseline": _r(result.baseline_auc),
        "note": (
            "Importance = pooled test AUC minus the AUC with the column shuffled (a one-hot "
            "group together); each partner shuffles within its own test rows, so the "
            "marginal is per partner, not pooled; near 0 or negative: the model does not "
            "rely on the column."
        ),
        "features": _sorted(features, "feature"),
        "columns": _sorted(rows, "column"),
    }


def csv_text(value: object) -> str:
    """A CSV cell that a spreadsheet will not run as a formula (OWASP "CSV injection")."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def attribution_csv(doc: dict[str, Any]) -> str:
    """``attributions.csv``: one row per ``features`` entry of :func:`coefficient_document`
    or :func:`permutation_document`."""
    header = ["feature", "importance", "direction", "method"]
    coefficients = doc["method"] == "coefficients"
    if coefficients:
        header += ["coefficient", "odds_ratio"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for f in doc["features"]:
        direction = f["direction"] or ""  # "+"/"-" alone are not formulas
        row = [csv_text(f["feature"]), f["importance"], direction, doc["method"]]
        if coefficients:
            row += [f["coefficient"], f["odds_ratio"]]
        writer.writerow(row)
    return buf.getvalue()
