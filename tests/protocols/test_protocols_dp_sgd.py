"""protocols.dp_sgd: DP-SGD trains, clips each example, adds fresh noise, runs the planned
number of steps, and hands back a plain module."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch import nn

from fedcollab.common.errors import PrivacyError, ProtocolError
from fedcollab.privacy import dp_plan
from fedcollab.protocols import dp_sgd
from fedcollab.protocols.dp_sgd import train_local_dp
from fedcollab.protocols.local_training import predict_proba, train_local
from fedcollab.protocols.models import build_model, flatten, get_weights

torch.set_num_threads(1)


def toy(n: int = 300, d: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A linearly separable set with a margin."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    x[:, 0] += np.where(x[:, 0] > 0, 0.5, -0.5)
    return x, (x[:, 0] > 0).astype(np.float64)


def bce(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(predict_proba(model, x), 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, **kwargs: Any) -> Any:
    args: dict[str, Any] = {
        "epochs": 1,
        "sample_rate": 0.1,
        "learning_rate": 0.5,
        "optimizer": "sgd",
        "noise_multiplier": 0.3,
        "max_grad_norm": 1.0,
    }
    return train_local_dp(model, x, y, **{**args, **kwargs})


def change(before: list[np.ndarray], model: nn.Module) -> float:
    return float(np.linalg.norm(flatten(get_weights(model)) - flatten(before)))


def test_public_surface_is_what_was_meant() -> None:
    assert set(dp_sgd.__all__) == {"steps_per_epoch", "train_local_dp"}
    assert dp_sgd.steps_per_epoch is dp_plan.steps_per_epoch


@pytest.mark.parametrize("kind", ["logreg", "mlp"])
def test_trains_with_low_noise(kind: str) -> None:
    x, y = toy()
    model = build_model(kind, n_features=x.shape[1], seed=0)  # type: ignore[arg-type]
    before = bce(model, x, y)
    result = train(model, x, y, epochs=5)
    after = bce(model, x, y)
    assert after < 0.6 * before
    assert np.mean((predict_proba(model, x) > 0.5) == y) > 0.9
    assert result.n_examples == x.shape[0]
    assert np.isfinite(result.mean_loss) and result.mean_loss < before


@pytest.mark.parametrize("kind", ["logreg", "mlp"])
def test_output_has_the_models_shapes_and_is_the_model(kind: str) -> None:
    x, y = toy(n=50)
    model = build_model(kind, n_features=x.shape[1], seed=1)  # type: ignore[arg-type]
    shapes = [w.shape for w in get_weights(model)]
    result = train(model, x, y, optimizer="adam", learning_rate=0.01)
    assert [w.shape for w in result.weights] == shapes
    assert all(w.dtype == np.float64 for w in result.weights)
    assert result.n_examples == 50
    for got, now in zip(result.weights, get_weights(model), strict=True):
        np.testing.assert_array_equal(got, now)


def test_the_model_comes_back_unwrapped() -> None:
    x, y = toy(n=60)
    model = build_model("mlp", n_features=x.shape[1], seed=2)
    train(model, x, y)
    assert type(model) is nn.Sequential
    for module in model.modules():
        assert not module._forward_hooks and not module._backward_hooks
        assert not hasattr(module, "autograd_grad_sample_hooks")
    for p in model.parameters():
        for attr in ("grad_sample", "summed_grad", "_forward_counter", "_current_grad_sample"):
            assert not hasattr(p, attr)
        assert p.grad is None
    # It trains normally afterwards, with or without DP.
    train_local(model, x, y, epochs=1, batch_size=16, learning_rate=0.01, seed=0)
    train(model, x, y)


def test_per_example_clipping_bounds_each_step() -> None:
    # Sample rate 1: every row in the one batch of an epoch; no noise. The step is the mean of
    # n clipped gradients, so SGD moves the weights by at most lr * max_grad_norm.
    x, y = toy(n=100)
    model = build_model("logreg", n_features=x.shape[1], seed=3)
    lr, clip = 0.1, 1e-3
    w0 = get_weights(model)
    train(model, x, y, sample_rate=1.0, noise_multiplier=0.0, max_grad_norm=clip, learning_rate=lr)
    one_step = change(w0, model)
    assert 0 < one_step <= lr * clip * (1 + 1e-4)
    w1 = get_weights(model)
    train(
        model,
        x,
        y,
        epochs=3,
        sample_rate=1.0,
        noise_multiplier=0.0,
        max_grad_norm=clip,
        learning_rate=lr,
    )
    assert change(w1, model) <= 3 * lr * clip * (1 + 1e-4)
    # Without clipping the same step is far larger: the bound above is the clipping's doing.
    unclipped = build_model("logreg", n_features=x.shape[1], seed=3)
    train(
        unclipped, x, y, sample_rate=1.0, noise_multiplier=0.0, max_grad_norm=1e6, learning_rate=lr
    )
    assert change(w0, unclipped) > 50 * lr * clip


def test_huge_noise_moves_the_weights_a_lot() -> None:
    x, y = toy(n=100)
    model = build_model("logreg", n_features=x.shape[1], seed=4)
    w0 = get_weights(model)
    lr, clip, z = 0.1, 1.0, 1e5
    train(model, x, y, sample_rate=1.0, noise_multiplier=z, max_grad_norm=clip, learning_rate=lr)
    # One step; noise per coordinate has std lr * z * clip / n = 100, against a signal <= lr * clip.
    assert change(w0, model) > 10 * lr * clip


def test_noise_and_batches_are_not_reproducible_from_the_seed() -> None:
    x, y = toy(n=80)
    runs = []
    for _ in range(2):
        model = build_model("logreg", n_features=x.shape[1], seed=5)
        runs.append(flatten(train(model, x, y, seed=7).weights))
    assert not np.allclose(runs[0], runs[1])
    batches = []  # no noise: only the Poisson batches can differ
    for _ in range(2):
        model = build_model("logreg", n_features=x.shape[1], seed=5)
        batches.append(flatten(train(model, x, y, seed=7, noise_multiplier=0.0).weights))
    assert not np.allclose(batches[0], batches[1])


@pytest.mark.parametrize(("epochs", "rate"), [(1, 0.1), (2, 0.3), (3, 0.02)])
def test_runs_the_steps_the_plan_charges(
    monkeypatch: pytest.MonkeyPatch, epochs: int, rate: float
) -> None:
    counted: list[int] = []

    class CountingSampler(UniformWithReplacementSampler):  # type: ignore[misc]
        def __iter__(self) -> Any:
            for batch in super().__iter__():
                counted.append(len(batch))
                yield batch

    monkeypatch.setattr(dp_sgd, "UniformWithReplacementSampler", CountingSampler)
    x, y = toy(n=200)
    model = build_model("logreg", n_features=x.shape[1], seed=6)
    train(model, x, y, epochs=epochs, sample_rate=rate)
    assert len(counted) == epochs * dp_plan.steps_per_epoch(rate)
    # Poisson batches: sizes vary around n * q rather than being fixed.
    assert abs(np.mean(counted) - 200 * rate) < 5 * np.sqrt(200 * rate)


def test_empty_poisson_batches_still_step() -> None:
    x, y = toy(n=3)
    model = build_model("logreg", n_features=x.shape[1], seed=7)
    result = train(model, x, y, epochs=2, sample_rate=0.01, noise_multiplier=1.0)
    assert result.n_examples == 3 and np.isfinite(result.mean_loss)


def test_a_layer_opacus_cannot_train_is_refused() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    x, y = toy(n=20)
    with pytest.raises(PrivacyError, match="cannot train"):
        train(model, x, y)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"noise_multiplier": -1.0}, PrivacyError),
        ({"noise_multiplier": float("nan")}, PrivacyError),
        ({"max_grad_norm": 0.0}, PrivacyError),
        ({"sample_rate": 0.0}, PrivacyError),
        ({"sample_rate": 1.5}, PrivacyError),
        ({"learning_rate": 0.0}, ProtocolError),
        ({"epochs": 0}, ProtocolError),
        ({"optimizer": "rmsprop"}, ProtocolError),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, Any], error: type[Exception]) -> None:
    x, y = toy(n=20)
    model = build_model("logreg", n_features=x.shape[1], seed=8)
    with pytest.raises(error):
        train(model, x, y, **kwargs)


def test_bad_data_is_refused() -> None:
    x, y = toy(n=20)
    model = build_model("logreg", n_features=x.shape[1], seed=9)
    with pytest.raises(ProtocolError):
        train(model, x, y[:-1])
    with pytest.raises(ProtocolError):
        train(model, x[:0], y[:0])
    with pytest.raises(ProtocolError):
        train(model, x, y + 0.5)
