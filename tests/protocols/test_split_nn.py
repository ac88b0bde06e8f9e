"""Split neural network roles: equivalence to a joint model, state, DP, accounting."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

import fedcollab.protocols.split_nn as split_nn
import fedcollab.protocols.split_nn_dp as split_nn_dp
from fedcollab.common.errors import PrivacyError, ProtocolError
from fedcollab.privacy.accounting import Gaussian
from fedcollab.protocols.split_nn import (
    BottomParty,
    SplitNNConfig,
    TopModel,
    batch_rows,
    embedding_mechanism,
    epsilon_for,
    noise_for,
    releases_per_row,
)
from fedcollab.protocols.vertical_local import run_split_nn_local

N = 64


def _data(n: int = N, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    own, a, b = rng.normal(size=(n, 3)), rng.normal(size=(n, 4)), rng.normal(size=(n, 2))
    logit = 1.5 * own[:, 0] + 2.0 * a[:, 0] * a[:, 1] - 1.5 * b[:, 0] + a[:, 2]
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-2.0 * logit))).astype(np.float64)
    return own, y, {"b": b, "a": a}


def _roles(
    config: SplitNNConfig, noise_seed: int | None = None
) -> tuple[TopModel, dict[str, BottomParty], np.ndarray, dict[str, np.ndarray]]:
    own, y, parties = _data()
    top = TopModel(y, own, config, feature_parties=list(parties))
    bottoms = {
        p: BottomParty(x, config, party=p, unsafe_noise_seed=noise_seed) for p, x in parties.items()
    }
    return top, bottoms, own, parties


def _train(top: TopModel, bottoms: dict[str, BottomParty], steps: range) -> None:
    for step in steps:
        grads = top.step({p: b.forward(step) for p, b in bottoms.items()})
        for p, b in bottoms.items():
            b.backward(grads[p])


def _params(top: TopModel, bottoms: dict[str, BottomParty]) -> list[torch.Tensor]:
    modules = [top.model, top.own.model, *(bottoms[p].model for p in sorted(bottoms))]
    return [t.detach().clone() for m in modules for t in m.state_dict().values()]


def test_roles_equal_one_joint_model() -> None:
    config = SplitNNConfig(steps=8, batch_size=24, hidden_sizes=(6,), learning_rate=0.05)
    top, bottoms, own, parties = _roles(config)
    y = _data()[1]
    # the joint model: the same initial modules, one optimiser, concatenated features
    joint_top, joint_own = copy.deepcopy(top.model), copy.deepcopy(top.own.model)
    joint_bottoms = {p: copy.deepcopy(bottoms[p].model) for p in sorted(bottoms)}
    params = [
        *joint_top.parameters(),
        *joint_own.parameters(),
        *(q for m in joint_bottoms.values() for q in m.parameters()),
    ]
    opt = torch.optim.Adam(params, lr=config.learning_rate)
    f32 = {p: torch.tensor(x, dtype=torch.float32) for p, x in parties.items()}
    own32, y32 = torch.tensor(own, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    joint_losses = []
    for step in range(config.steps):
        rows = batch_rows(config, N, step)
        opt.zero_grad()
        parts = [joint_own(own32[rows]), *(joint_bottoms[p](f32[p][rows]) for p in joint_bottoms)]
        logits = joint_top(torch.cat(parts, 1)).reshape(-1)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y32[rows])
        torch.autograd.backward(loss)
        opt.step()
        joint_losses.append(float(loss.detach()))

    _train(top, bottoms, range(config.steps))

    np.testing.assert_allclose(top.losses, joint_losses, atol=1e-5)
    joint_modules = [joint_top, joint_own, *joint_bottoms.values()]
    joint = [t for m in joint_modules for t in m.state_dict().values()]
    for ours, theirs in zip(_params(top, bottoms), joint, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_batches_are_public_and_cover_each_epoch() -> None:
    config = SplitNNConfig(batch_size=24)
    epoch = np.concatenate([batch_rows(config, N, s) for s in range(3)])  # 24 + 24 + 16
    assert sorted(epoch.tolist()) == list(range(N))
    np.testing.assert_array_equal(batch_rows(config, N, 4), batch_rows(config, N, 4))
    assert releases_per_row(dataclasses.replace(config, steps=7), N) == 3


@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_state_round_trip_mid_training(noise: float) -> None:
    config = SplitNNConfig(steps=6, batch_size=24, noise_multiplier=noise, clip_norm=2.0)
    top, bottoms, own, parties = _roles(config, noise_seed=7)
    _train(top, bottoms, range(6))
    expected = _params(top, bottoms)

    top, bottoms, own, parties = _roles(config, noise_seed=7)
    _train(top, bottoms, range(3))
    first = bottoms["a"].forward(3)  # resume between forward and backward
    y = _data()[1]
    top = TopModel.from_state(top.state_bytes(), y, own, config)
    bottoms = {
        p: BottomParty.from_state(b.state_bytes(), parties[p], config, unsafe_noise_seed=7)
        for p, b in bottoms.items()
    }
    grads = top.step({"a": first, "b": bottoms["b"].forward(3)})
    for p, b in bottoms.items():
        b.backward(grads[p])
    _train(top, bottoms, range(4, 6))
    for ours, theirs in zip(_params(top, bottoms), expected, strict=True):
        torch.testing.assert_close(ours, theirs, atol=0, rtol=0)
    assert len(top.losses) == 6


def test_state_of_another_config_or_foreign_bytes_is_refused() -> None:
    config = SplitNNConfig(steps=2, batch_size=24)
    _top, bottoms, own, parties = _roles(config)
    other = dataclasses.replace(config, learning_rate=0.5)
    with pytest.raises(ProtocolError, match="another configuration"):
        BottomParty.from_state(bottoms["a"].state_bytes(), parties["a"], other)
    with pytest.raises(ProtocolError):
        BottomParty.from_state(b"not a state", parties["a"], config)
    with pytest.raises(ProtocolError):
        TopModel.from_state(bottoms["a"].state_bytes(), _data()[1], own, config)


def test_steps_are_released_once_and_in_order() -> None:
    config = SplitNNConfig(steps=2, batch_size=24, noise_multiplier=1.0)
    _, bottoms, _, _ = _roles(config)
    a = bottoms["a"]
    with pytest.raises(ProtocolError, match="gradient"):
        a.backward(np.zeros((24, 8)))
    a.forward(0)
    with pytest.raises(ProtocolError, match="cannot release"):
        a.forward(0)  # a second noise draw of the same rows would be uncounted
    with pytest.raises(ProtocolError, match="shape"):
        a.backward(np.zeros((23, 8)))
    a.backward(np.zeros((24, 8)))
    a.forward(1)
    a.backward(np.zeros((24, 8)))
    with pytest.raises(ProtocolError, match="cannot release"):
        a.forward(2)  # beyond the steps the accounting counted


def test_embeddings_are_clipped_and_noised() -> None:
    clip, noise = 0.05, 2.0
    config = SplitNNConfig(steps=1, batch_size=N, noise_multiplier=noise, clip_norm=clip)
    top, bottoms, own, parties = _roles(config)
    a = bottoms["a"]
    clean = a.local_embedding(parties["a"])
    np.testing.assert_allclose(np.linalg.norm(clean, axis=1), clip, rtol=1e-5)  # all clipped
    released = a.forward(0)
    residual = released - clean
    assert abs(residual.std() - noise * clip) < 0.15 * noise * clip
    assert abs(residual.mean()) < 0.2 * noise * clip
    inference = a.embed(parties["a"])
    assert abs((inference - clean).std() - noise * clip) < 0.15 * noise * clip
    # L's own embedding never leaves L and is neither clipped nor noised
    np.testing.assert_array_equal(top.embed_own(own), top.embed_own(own))
    assert np.linalg.norm(top.embed_own(own), axis=1).max() > clip


def test_without_noise_embeddings_are_exact() -> None:
    config = SplitNNConfig(steps=1, batch_size=N)
    _, bottoms, _, parties = _roles(config)
    a = bottoms["a"]
    np.testing.assert_allclose(a.forward(0), a.local_embedding(parties["a"]), atol=1e-7)
    np.testing.assert_allclose(a.embed(parties["a"]), a.local_embedding(parties["a"]))


def test_mechanism_counts_training_and_inference_releases() -> None:
    full = SplitNNConfig(steps=30, batch_size=N, noise_multiplier=4.0)
    assert embedding_mechanism(full, N) == Gaussian(noise_multiplier=2.0, count=30)
    assert embedding_mechanism(full, N, inference_releases=2).count == 32
    quarter = dataclasses.replace(full, batch_size=16)  # each row in one step of four
    assert embedding_mechanism(quarter, N).count == math.ceil(30 / 4)
    with pytest.raises(PrivacyError, match="not DP"):
        embedding_mechanism(dataclasses.replace(full, noise_multiplier=0.0), N)


def test_epsilon_decreases_with_noise_and_calibration_meets_target() -> None:
    base = SplitNNConfig(steps=20, batch_size=16)
    eps = [
        epsilon_for(dataclasses.replace(base, noise_multiplier=z), N, target_delta=1e-5)
        for z in (2.0, 4.0, 8.0)
    ]
    assert eps[0] > eps[1] > eps[2] > 0
    z = noise_for(3.0, config=base, n_rows=N, target_delta=1e-5, inference_releases=1)
    calibrated = dataclasses.replace(base, noise_multiplier=z)
    got = epsilon_for(calibrated, N, target_delta=1e-5, inference_releases=1)
    assert 2.9 < got <= 3.0


def test_invalid_config_is_refused() -> None:
    with pytest.raises(PrivacyError):
        SplitNNConfig(noise_multiplier=-1.0)
    with pytest.raises(PrivacyError):
        SplitNNConfig(clip_norm=0.0)
    with pytest.raises(ProtocolError):
        SplitNNConfig(batch_size=0)


def test_wrong_parties_or_shapes_are_refused() -> None:
    config = SplitNNConfig(steps=1, batch_size=24)
    top, bottoms, _own, _parties = _roles(config)
    with pytest.raises(ProtocolError, match="expected"):
        top.step({"a": bottoms["a"].forward(0)})
    with pytest.raises(ProtocolError, match="shape"):
        top.step({"a": np.zeros((24, 8)), "b": np.zeros((24, 3))})


def test_synthetic_auc_well_above_chance() -> None:
    torch.manual_seed(0)
    own, y, parties = _data(n=800, seed=1)
    train, test = slice(0, 600), slice(600, 800)
    config = SplitNNConfig(steps=60, batch_size=600, learning_rate=0.03)
    result = run_split_nn_local(
        own[train],
        y[train],
        {p: x[train] for p, x in parties.items()},
        config,
        test=(own[test], y[test], {p: x[test] for p, x in parties.items()}),
    )
    assert result.test_auc is not None and result.test_auc > 0.8
    assert result.losses[-1] < result.losses[0]
    assert result.round_trips == 61
    assert result.test_probabilities is not None and result.test_probabilities.shape == (200,)


def test_public_surface() -> None:
    assert set(split_nn.__all__) == {
        "BottomParty",
        "SplitNNConfig",
        "TopModel",
        "batch_rows",
        "embedding_mechanism",
        "epsilon_for",
        "noise_for",
        "releases_per_row",
    }
    assert set(split_nn_dp.__all__) == {"embedding_mechanism", "epsilon_for", "noise_for"}
    for name in split_nn_dp.__all__:  # re-exported, the very same functions
        assert getattr(split_nn, name) is getattr(split_nn_dp, name)


def test_dp_docstring_example() -> None:
    import doctest

    result = doctest.testmod(split_nn_dp)
    assert result.attempted > 0 and result.failed == 0
