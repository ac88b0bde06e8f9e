from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fedcollab.common.errors import ProtocolError
from fedcollab.protocols.models import (
    build_model,
    flatten,
    get_weights,
    set_weights,
    shapes_of,
    unflatten,
)


@pytest.mark.parametrize("kind", ["logreg", "mlp"])
def test_output_is_one_logit(kind: str) -> None:
    model = build_model(kind, n_features=5, seed=0)  # type: ignore[arg-type]
    out = model(torch.zeros(7, 5))
    assert out.shape == (7, 1)


def test_shapes() -> None:
    assert shapes_of(get_weights(build_model("logreg", n_features=4, seed=0))) == [(1, 4), (1,)]
    mlp = build_model("mlp", n_features=4, hidden_sizes=(8, 3), seed=0)
    assert shapes_of(get_weights(mlp)) == [(8, 4), (8,), (3, 8), (3,), (1, 3), (1,)]


def test_seed_determines_weights_and_leaves_global_rng() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = flatten(get_weights(build_model("mlp", n_features=6, seed=7)))
    assert torch.rand(1).item() == before.item()
    b = flatten(get_weights(build_model("mlp", n_features=6, seed=7)))
    c = flatten(get_weights(build_model("mlp", n_features=6, seed=8)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_set_get_round_trip() -> None:
    src = build_model("mlp", n_features=3, seed=1)
    dst = build_model("mlp", n_features=3, seed=2)
    set_weights(dst, get_weights(src))
    x = torch.randn(4, 3)
    torch.testing.assert_close(src(x), dst(x))
    assert all(w.dtype == np.float64 for w in get_weights(dst))


def test_set_weights_errors() -> None:
    model = build_model("logreg", n_features=3, seed=0)
    with pytest.raises(ProtocolError, match="expected 2"):
        set_weights(model, [np.zeros((1, 3))])
    with pytest.raises(ProtocolError, match="shape"):
        set_weights(model, [np.zeros((1, 4)), np.zeros(1)])
    with pytest.raises(ProtocolError, match="NaN"):
        set_weights(model, [np.full((1, 3), np.nan), np.zeros(1)])


def test_build_errors() -> None:
    with pytest.raises(ProtocolError):
        build_model("forest", n_features=3, seed=0)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError):
        build_model("logreg", n_features=0, seed=0)
    with pytest.raises(ProtocolError):
        build_model("mlp", n_features=2, hidden_sizes=(4, 0), seed=0)


@given(st.lists(st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple), max_size=4))
def test_flatten_unflatten_round_trip(shapes: list[tuple[int, ...]]) -> None:
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=s) for s in shapes]
    back = unflatten(flatten(weights), shapes)
    for got, want in zip(back, weights, strict=True):
        np.testing.assert_array_equal(got, want)


def test_unflatten_wrong_length() -> None:
    with pytest.raises(ProtocolError):
        unflatten(np.zeros(5), [(2, 2)])
