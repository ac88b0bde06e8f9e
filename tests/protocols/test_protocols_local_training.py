from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fedcollab.common.errors import ProtocolError
from fedcollab.protocols.local_training import predict_proba, train_local
from fedcollab.protocols.models import build_model, flatten, get_weights


def _data(n: int = 400, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    logits = x @ np.linspace(1.5, -1.0, d) + 0.3
    y = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    return x, y


@pytest.mark.parametrize(
    ("kind", "optimizer"), [("logreg", "adam"), ("mlp", "adam"), ("logreg", "sgd")]
)
def test_training_learns(kind: str, optimizer: str) -> None:
    x, y = _data()
    model = build_model(kind, n_features=5, seed=0)  # type: ignore[arg-type]
    lr = 0.01 if optimizer == "adam" else 0.5
    result = train_local(
        model,
        x,
        y,
        epochs=5,
        batch_size=32,
        learning_rate=lr,
        optimizer=optimizer,
        seed=1,  # type: ignore[arg-type]
    )
    assert result.n_examples == 400
    assert 0.0 < result.mean_loss < 0.6
    assert roc_auc_score(y, predict_proba(model, x)) > 0.8
    np.testing.assert_array_equal(flatten(result.weights), flatten(get_weights(model)))


def test_deterministic_given_seed() -> None:
    x, y = _data()
    runs = []
    for seed in (3, 3, 4):
        model = build_model("mlp", n_features=5, seed=0)
        runs.append(
            flatten(
                train_local(
                    model, x, y, epochs=2, batch_size=16, learning_rate=0.01, seed=seed
                ).weights
            )
        )
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_proximal_term_limits_drift() -> None:
    x, y = _data()
    start = flatten(get_weights(build_model("logreg", n_features=5, seed=0)))
    drift = {}
    for mu in (0.0, 10.0):
        model = build_model("logreg", n_features=5, seed=0)
        res = train_local(
            model, x, y, epochs=5, batch_size=32, learning_rate=0.01, proximal_mu=mu, seed=0
        )
        drift[mu] = float(np.linalg.norm(flatten(res.weights) - start))
    assert drift[10.0] < 0.5 * drift[0.0]


def test_predict_proba_shape_and_mode() -> None:
    model = build_model("mlp", n_features=5, seed=0)
    model.train()
    p = predict_proba(model, np.zeros((3, 5)))
    assert p.shape == (3,) and p.dtype == np.float64
    assert np.all((p > 0) & (p < 1))
    assert model.training


def test_errors() -> None:
    x, y = _data(n=10)
    model = build_model("logreg", n_features=5, seed=0)
    kwargs = {"epochs": 1, "batch_size": 4, "learning_rate": 0.01, "seed": 0}
    with pytest.raises(ProtocolError, match="labels"):
        train_local(model, x, y[:5], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="0 or 1"):
        train_local(model, x, y + 2, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="no training"):
        train_local(model, x[:0], y[:0], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="non-finite"):
        train_local(model, np.full_like(x, np.nan), y, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="epochs"):
        train_local(model, x, y, **{**kwargs, "epochs": 0})  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="learning_rate"):
        train_local(model, x, y, **{**kwargs, "learning_rate": -1.0})  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="proximal_mu"):
        train_local(model, x, y, **{**kwargs, "proximal_mu": -1.0})  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="optimizer"):
        train_local(model, x, y, **{**kwargs, "optimizer": "lbfgs"})  # type: ignore[arg-type]
