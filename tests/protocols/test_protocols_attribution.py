"""protocols.attribution: coefficient mapping, permutation AUC drop, the CSV."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcollab.common.errors import ProtocolError
from fedcollab.protocols import evaluation
from fedcollab.protocols.attribution import (
    ColumnGroup,
    attribution_csv,
    coefficient_document,
    column_groups,
    csv_text,
    local_permutation_vector,
    permutation_document,
    permutation_importance,
    permutation_vector_length,
)
from fedcollab.protocols.preprocessing import Preprocessor

BINS = 100
PRE = Preprocessor(
    numeric_names=("PageValues", "BounceRates"),
    means=(5.0, 0.02),
    stds=(10.0, 0.05),
    categorical_vocab={"Month": ("Feb", "Mar", "Nov"), "Visitor": ("New", "Returning")},
    boolean_names=("Weekend",),
    boolean_means=(0.2,),
)


def test_coefficients_map_to_inputs_including_one_hot() -> None:
    coef = [0.9, -1.2, 0.1, -0.05, 0.6, 0.3, -0.3, 0.0]
    doc = coefficient_document(job="j", coefficients=coef, pre=PRE)
    by = {f["feature"]: f for f in doc["features"]}
    assert list(by) == ["BounceRates", "PageValues", "Month=Nov", "Visitor=New",
                        "Visitor=Returning", "Month=Feb", "Month=Mar", "Weekend"]  # fmt: skip
    assert by["BounceRates"]["coefficient"] == -1.2 and by["BounceRates"]["direction"] == "-"
    assert by["BounceRates"]["importance"] == 1.2 and by["BounceRates"]["unit"] == "per SD"
    assert by["Month=Nov"]["odds_ratio"] == pytest.approx(math.exp(0.6), abs=1e-6)
    assert by["Month=Nov"]["column"] == "Month" and by["Month=Nov"]["unit"] == "level vs none"
    assert by["Weekend"]["direction"] is None and by["Weekend"]["unit"] == "true vs false"
    cols = {c["column"]: c for c in doc["columns"]}
    assert [c["column"] for c in doc["columns"]] == [
        "BounceRates", "PageValues", "Month", "Visitor", "Weekend"]  # fmt: skip
    assert cols["Month"]["importance"] == 0.6 and cols["Month"]["top_level"] == "Month=Nov"
    assert cols["Month"]["direction"] is None and cols["Month"]["levels"] == 3
    assert cols["Visitor"]["aggregation"] == "max |coefficient| over levels"
    assert cols["PageValues"]["direction"] == "+"
    assert (doc["method"], doc["metric"], doc["baseline"]) == ("coefficients", "log-odds per SD",
                                                               None)  # fmt: skip
    with pytest.raises(ProtocolError):
        coefficient_document(job="j", coefficients=coef[:-1], pre=PRE)


def test_column_groups_follow_the_feature_order() -> None:
    groups = column_groups(PRE)
    assert [(g.column, g.kind, g.indices) for g in groups] == [
        ("PageValues", "numeric", (0,)), ("BounceRates", "numeric", (1,)),
        ("Month", "categorical", (2, 3, 4)), ("Visitor", "categorical", (5, 6)),
        ("Weekend", "boolean", (7,)),
    ]  # fmt: skip


def _signal_model(x: np.ndarray) -> np.ndarray:
    """Uses column 0 only: column 1 carries no signal for it."""
    return 1.0 / (1.0 + np.exp(-3.0 * x[:, 0].astype(np.float64)))


def _partner(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(float)
    return x, y


GROUPS = [ColumnGroup("signal", "numeric", (0,)), ColumnGroup("noise", "numeric", (1,))]


def test_permutation_drop_on_signal_column_only() -> None:
    parts = [_partner(s, 400) for s in (1, 2)]
    replies = [local_permutation_vector(_signal_model, x, y, GROUPS, seed=7, bins=BINS)
               for x, y in parts]  # fmt: skip
    assert all(r.shape == (permutation_vector_length(n_columns=2, bins=BINS),) for r in replies)
    result = permutation_importance(sum(replies), columns=["signal", "noise"], bins=BINS)
    assert result is not None and result.n == 800
    (sig, sig_auc, sig_drop), (noise, _, noise_drop) = result.columns
    assert (sig, noise) == ("signal", "noise")
    assert result.baseline_auc > 0.9 and sig_drop > 0.35 and sig_auc < 0.6
    assert noise_drop == 0.0  # the model ignores it: identical scores
    doc = permutation_document(job="j", model="mlp", result=result, groups=GROUPS)
    assert [f["feature"] for f in doc["features"]] == ["signal", "noise"]
    assert doc["baseline"] == pytest.approx(result.baseline_auc, abs=1e-6)
    assert "own" in doc["note"] and doc["features"][0]["direction"] is None


def test_the_sum_of_replies_is_the_pooled_histogram() -> None:
    (x1, y1), (x2, y2) = _partner(3, 50), _partner(4, 70)
    total = sum(local_permutation_vector(_signal_model, x, y, GROUPS, seed=5, bins=BINS)
                for x, y in ((x1, y1), (x2, y2)))  # fmt: skip
    n_eval = evaluation.eval_vector_length(bins=BINS)
    pooled = evaluation.local_eval_vector(
        np.concatenate([y1, y2]), _signal_model(np.vstack([x1, x2])), bins=BINS
    )
    np.testing.assert_allclose(total[:n_eval], pooled)
    # Each partner shuffles within its own rows, seeded by (seed, column index).
    shuffled = []
    for x in (x1, x2):
        s = x.copy()
        s[:, 0] = x[np.random.default_rng([5, 0]).permutation(len(x)), 0]
        shuffled.append(s)
    y = np.concatenate([y1, y2])
    expect = evaluation.local_eval_vector(y, _signal_model(np.vstack(shuffled)), bins=BINS)
    np.testing.assert_allclose(total[n_eval : 2 * n_eval], expect)


def test_same_request_same_reply() -> None:
    x, y = _partner(9, 60)
    a = local_permutation_vector(_signal_model, x, y, GROUPS, seed=1, bins=BINS)
    b = local_permutation_vector(_signal_model, x, y, GROUPS, seed=1, bins=BINS)
    np.testing.assert_array_equal(a, b)


def test_one_class_or_no_rows_gives_none_and_bad_vectors_are_refused() -> None:
    x, _ = _partner(1, 30)
    one_class = local_permutation_vector(_signal_model, x, np.ones(30), GROUPS, seed=0, bins=BINS)
    assert permutation_importance(one_class, columns=["a", "b"], bins=BINS) is None
    length = permutation_vector_length(n_columns=2, bins=BINS)
    assert permutation_importance(np.zeros(length), columns=["a", "b"], bins=BINS) is None
    with pytest.raises(ProtocolError):
        permutation_importance(np.zeros(length - 1), columns=["a", "b"], bins=BINS)
    x, y = _partner(2, 40)
    good = local_permutation_vector(_signal_model, x, y, GROUPS, seed=0, bins=BINS)
    n_eval = evaluation.eval_vector_length(bins=BINS)
    bad = good.copy()
    bad[n_eval : 2 * n_eval] *= 2  # a permuted block over other rows than the baseline
    with pytest.raises(ProtocolError, match="other rows"):
        permutation_importance(bad, columns=["a", "b"], bins=BINS)
    with pytest.raises(ProtocolError):
        local_permutation_vector(_signal_model, x, y, [ColumnGroup("z", "numeric", (5,))],
                                 seed=0, bins=BINS)  # fmt: skip


@given(st.integers(0, 2**31), st.integers(5, 60))
def test_permuted_blocks_keep_the_label_counts(seed: int, n: int) -> None:
    x, y = _partner(seed, n)
    vec = local_permutation_vector(_signal_model, x, y, GROUPS, seed=seed, bins=BINS)
    blocks = vec.reshape(3, -1)
    pos = blocks[:, 3 : 3 + BINS].sum(axis=1)
    assert np.all(blocks[:, 0] == n) and np.all(pos == y.sum())


def test_csv_rows_and_formula_guard() -> None:
    doc = coefficient_document(job="j", coefficients=[0.9, -1.2, 0, 0, 0, 0, 0, 0.4], pre=PRE)
    rows = list(csv.DictReader(io.StringIO(attribution_csv(doc))))
    odds = str(round(math.exp(-1.2), 6))
    assert len(rows) == 8 and rows[0] == {
        "feature": "BounceRates", "importance": "1.2", "direction": "-",
        "method": "coefficients", "coefficient": "-1.2", "odds_ratio": odds,
    }  # fmt: skip
    assert csv_text("=cmd()") == "'=cmd()" and csv_text("Month=Feb") == "Month=Feb"


# --- population effect ----------------------------------------------------------------


def test_population_effect_ranks_by_what_inputs_do_to_the_population() -> None:
    shares = {"Month": (0.5, 0.49, 0.01), "Visitor": (0.3, 0.7)}
    # A rare Month level with the largest coefficient; PageValues moderate.
    coef = [0.9, -0.2, 0.1, -0.05, -2.5, 0.3, -0.3, 0.4]
    doc = coefficient_document(job="j", coefficients=coef, pre=PRE, level_shares=shares)
    by = {f["feature"]: f for f in doc["features"]}
    assert doc["features"][0]["feature"] == "PageValues"
    assert by["Month=Nov"]["coefficient"] == -2.5  # the raw coefficient stays beside
    assert by["Month=Nov"]["importance"] == pytest.approx(2.5 * math.sqrt(0.01 * 0.99), abs=1e-6)
    assert by["Month=Nov"]["share"] == 0.01
    assert by["Weekend"]["importance"] == pytest.approx(0.4 * math.sqrt(0.2 * 0.8), abs=1e-6)
    cols = {c["column"]: c for c in doc["columns"]}
    p, b = np.array(shares["Month"]), np.array(coef[2:5])
    assert cols["Month"]["importance"] == pytest.approx(
        math.sqrt(p @ (b * b) - (p @ b) ** 2), abs=1e-6
    )
    assert doc["columns"][0]["column"] == "PageValues"
    assert doc["metric"].startswith("population effect")
    # Without shares: the old |coefficient| ranking, where the rare level leads.
    plain = coefficient_document(job="j", coefficients=coef, pre=PRE)
    assert plain["features"][0]["feature"] == "Month=Nov"
    with pytest.raises(ProtocolError):
        coefficient_document(job="j", coefficients=coef, pre=PRE, level_shares={"Month": (1.0,)})


def test_pagevalues_leads_the_population_ranking_on_the_demo_data() -> None:
    """A logistic regression on the demo's data, preprocessed as the federation does:
    by |coefficient| a rare one-hot level leads; by population effect PageValues does."""
    from pathlib import Path

    from sklearn.linear_model import LogisticRegression

    from fedcollab.common.dataset import load_dataset
    from fedcollab.common.schema import load_schema
    from fedcollab.protocols.preprocessing import MomentsLayout, level_shares, local_moments

    repo = Path(__file__).resolve().parents[2]
    schema = load_schema(repo / "data" / "online_shoppers.schema.json")
    ds = load_dataset(
        repo / "data" / "online_shoppers_intention.csv", schema, id_from_row_number=True
    )
    vocab = {c: tuple(sorted(set(ds.categorical[c].tolist()))) for c in ds.categorical}
    layout = MomentsLayout(
        numeric_names=tuple(ds.numeric), categorical_vocab=vocab, boolean_names=tuple(ds.boolean)
    )
    moments = local_moments(layout, ds.numeric, ds.categorical, ds.boolean)
    pre = Preprocessor.from_moments(layout, moments)
    x = pre.transform(ds.numeric, ds.categorical, ds.boolean)
    assert ds.labels is not None
    model = LogisticRegression(C=10.0, max_iter=2000).fit(x, ds.labels)
    coef = model.coef_.ravel()
    doc = coefficient_document(
        job="demo", coefficients=coef, pre=pre, level_shares=level_shares(layout, moments)
    )
    assert doc["features"][0]["feature"] == "PageValues"
    assert doc["columns"][0]["column"] == "PageValues"
    plain = coefficient_document(job="demo", coefficients=coef, pre=pre)
    assert plain["features"][0]["feature"] != "PageValues"
