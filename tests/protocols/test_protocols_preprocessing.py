from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcollab.common.errors import ProtocolError
from fedcollab.protocols.preprocessing import (
    MomentsLayout,
    Preprocessor,
    local_moments,
    local_vocabulary,
    merge_vocabularies,
)
from fedcollab.protocols.vector_sum import VectorSum


def _table(n: int, rng: np.random.Generator) -> tuple[dict, dict, dict]:
    revenue = rng.normal(50.0, 12.0, size=n)
    revenue[rng.random(n) < 0.1] = np.nan
    pages = rng.poisson(4.0, size=n).astype(np.float64)
    month = rng.choice(np.array(["Feb", "Mar", "May", "Nov"]), size=n)
    weekend = (rng.random(n) < 0.3).astype(np.float64)
    weekend[rng.random(n) < 0.05] = np.nan
    return (
        {"revenue": revenue, "pages": pages},
        {"Month": month},
        {"Weekend": weekend},
    )


def _slice(cols: dict, idx: np.ndarray) -> dict:
    return {k: v[idx] for k, v in cols.items()}


def test_local_vocabulary_sorted_distinct_without_missing() -> None:
    cat = {"Month": np.array(["Mar", "Feb", "Mar", "", "Dec"]), "Other": np.array(["x"] * 5)}
    assert local_vocabulary(cat, ["Month"]) == {"Month": ["Dec", "Feb", "Mar"]}
    assert local_vocabulary(cat, ["Month"], min_count=2) == {"Month": ["Mar"]}
    with pytest.raises(ProtocolError):
        local_vocabulary(cat, ["Missing"])


def test_merge_vocabularies_union_and_declared_precedence() -> None:
    a = {"Month": ["Feb", "Mar"], "Browser": ["1"]}
    b = {"Month": ["Dec", "Mar"], "Browser": ["2"]}
    merged = merge_vocabularies([a, b], declared={"Browser": ["9", "1", "2"]})
    assert merged == {"Month": ["Dec", "Feb", "Mar"], "Browser": ["9", "1", "2"]}
    assert merge_vocabularies([]) == {}


def test_merge_vocabularies_errors() -> None:
    with pytest.raises(ProtocolError, match="partner #2"):
        merge_vocabularies([{"A": ["x"]}, {"B": ["x"]}])
    with pytest.raises(ProtocolError, match="duplicate"):
        merge_vocabularies([], declared={"A": ["x", "x"]})
    with pytest.raises(ProtocolError, match="strings"):
        merge_vocabularies([{"A": [1]}])  # type: ignore[list-item]


def test_layout_length_and_errors() -> None:
    layout = MomentsLayout(
        numeric_names=("a", "b"), categorical_vocab={"c": ("x", "y", "z")}, boolean_names=("d",)
    )
    assert layout.length == 3 * 2 + 3 + 2
    with pytest.raises(ProtocolError):
        MomentsLayout(numeric_names=("a",), boolean_names=("a",))
    with pytest.raises(ProtocolError):
        MomentsLayout(categorical_vocab={"c": ("x", "x")})


def test_fixed_small_example() -> None:
    layout = MomentsLayout(
        numeric_names=("v",), categorical_vocab={"c": ("a", "b")}, boolean_names=("f",)
    )
    vec = local_moments(
        layout,
        {"v": np.array([1.0, 3.0, np.nan])},
        {"c": np.array(["a", "zzz", "a"])},
        {"f": np.array([1.0, 0.0, np.nan])},
    )
    np.testing.assert_array_equal(vec, [2.0, 4.0, 10.0, 2.0, 0.0, 2.0, 1.0])
    pre = Preprocessor.from_moments(layout, vec)
    assert pre.means == (2.0,) and pre.stds == (1.0,) and pre.boolean_means == (0.5,)
    assert pre.feature_names == ["v", "c=a", "c=b", "f"]
    x = pre.transform(
        {"v": np.array([3.0, np.nan])},
        {"c": np.array(["b", "new"])},
        {"f": np.array([1.0, np.nan])},
    )
    assert x.dtype == np.float32 and x.shape == (2, 4)
    np.testing.assert_array_equal(x, [[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.5]])


def test_constant_column_gets_unit_std() -> None:
    layout = MomentsLayout(numeric_names=("c",))
    vec = local_moments(layout, {"c": np.full(10, 0.1)}, {}, {})
    pre = Preprocessor.from_moments(layout, vec)
    assert pre.stds == (1.0,)
    np.testing.assert_array_equal(pre.transform({"c": np.full(3, 0.1)}, {}, {}), np.zeros((3, 1)))


@given(st.integers(0, 2**32 - 1), st.integers(1, 6))
def test_federated_moments_equal_pooled(seed: int, n_partners: int) -> None:
    rng = np.random.default_rng(seed)
    numeric, categorical, boolean = _table(400, rng)
    vocab = merge_vocabularies([local_vocabulary(categorical, ["Month"])], declared=None)
    layout = MomentsLayout(
        numeric_names=("revenue", "pages"), categorical_vocab=vocab, boolean_names=("Weekend",)
    )
    cuts = np.sort(rng.choice(np.arange(1, 400), size=n_partners - 1, replace=False))
    acc = VectorSum(layout.length)
    for idx in np.split(rng.permutation(400), cuts):
        acc.add(
            local_moments(
                layout, _slice(numeric, idx), _slice(categorical, idx), _slice(boolean, idx)
            )
        )
    pre = Preprocessor.from_moments(layout, acc.total)
    for i, col in enumerate(layout.numeric_names):
        assert pre.means[i] == pytest.approx(np.nanmean(numeric[col]), rel=0, abs=1e-9)
        assert pre.stds[i] == pytest.approx(np.nanstd(numeric[col]), rel=0, abs=1e-9)
    assert pre.boolean_means[0] == pytest.approx(np.nanmean(boolean["Weekend"]), abs=1e-12)
    x = pre.transform(numeric, categorical, boolean)
    revenue = x[:, 0][~np.isnan(numeric["revenue"])]
    assert abs(float(revenue.mean())) < 1e-5
    assert float(revenue.std()) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(x[:, 2:6].sum(axis=1), np.ones(400))


def test_partition_vocabularies_merge_to_pooled() -> None:
    rng = np.random.default_rng(1)
    _, categorical, _ = _table(300, rng)
    parts = np.array_split(np.arange(300), 3)
    merged = merge_vocabularies(
        [local_vocabulary(_slice(categorical, p), ["Month"]) for p in parts]
    )
    assert merged == local_vocabulary(categorical, ["Month"])


def test_to_dict_from_dict_round_trip_through_json() -> None:
    pre = Preprocessor(
        numeric_names=("a",),
        means=(1.5,),
        stds=(2.0,),
        categorical_vocab={"c": ("x", "y")},
        boolean_names=("b",),
        boolean_means=(0.25,),
    )
    back = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert back == pre


def test_from_dict_refuses_malformed() -> None:
    good = Preprocessor(
        numeric_names=("a",),
        means=(0.0,),
        stds=(1.0,),
        categorical_vocab={},
        boolean_names=(),
        boolean_means=(),
    ).to_dict()
    with pytest.raises(ProtocolError):
        Preprocessor.from_dict({**good, "format": "other"})
    with pytest.raises(ProtocolError):
        Preprocessor.from_dict({**good, "extra": 1})
    with pytest.raises(ProtocolError):
        Preprocessor.from_dict({**good, "numeric": [{"name": "a", "mean": 0.0}]})
    with pytest.raises(ProtocolError):
        Preprocessor.from_dict({**good, "numeric": [{"name": "a", "mean": 0.0, "std": 0.0}]})


def test_errors() -> None:
    layout = MomentsLayout(numeric_names=("v",), boolean_names=("f",))
    ok_bool = {"f": np.array([0.0, 1.0])}
    with pytest.raises(ProtocolError, match="missing"):
        local_moments(layout, {}, {}, ok_bool)
    with pytest.raises(ProtocolError, match="rows"):
        local_moments(layout, {"v": np.zeros(3)}, {}, ok_bool)
    with pytest.raises(ProtocolError, match="infinite"):
        local_moments(layout, {"v": np.array([np.inf, 0.0])}, {}, ok_bool)
    with pytest.raises(ProtocolError, match="0, 1"):
        local_moments(layout, {"v": np.zeros(2)}, {}, {"f": np.array([0.0, 2.0])})
    with pytest.raises(ProtocolError, match="length"):
        Preprocessor.from_moments(layout, np.zeros(4))
    with pytest.raises(ProtocolError, match="no non-missing"):
        Preprocessor.from_moments(layout, np.array([0.0, 0.0, 0.0, 2.0, 1.0]))
