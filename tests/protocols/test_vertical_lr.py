"""Vertical logistic regression: matches sklearn on the joined columns, encrypted equals
plaintext, state survives a round trip through bytes, and protocol misuse is refused."""

from __future__ import annotations

import doctest
import types

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import fedcollab.protocols.vertical_local as vlocal
import fedcollab.protocols.vertical_lr as vlr
from fedcollab.common.errors import PrivacyError, ProtocolError
from fedcollab.privacy.masking import MaskingKey, encode, pairwise_seeds
from fedcollab.privacy.vertical_he import LabelKeys
from fedcollab.protocols.vertical_local import VerticalLRResult, centralized_reference, run_lr_local
from fedcollab.protocols.vertical_lr import (
    FeatureParty,
    LabelData,
    LabelHolder,
    VerticalLRConfig,
)

Split = tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray]


@pytest.fixture(scope="module")
def split() -> Split:
    """Label-holder features, labels, train/test rows and two feature parties (standardised)."""
    rng = np.random.default_rng(11)
    n = 1600
    latent = rng.normal(size=(n, 3))
    XL = np.c_[latent[:, 0] + 0.5 * rng.normal(size=n), rng.normal(size=n)]
    XA = np.c_[0.7 * latent[:, 0] + latent[:, 1], latent[:, 1] + rng.normal(size=n)]
    XB = np.c_[latent[:, 2], latent[:, 0] - latent[:, 2] + 0.3 * rng.normal(size=n)]
    X_all = np.c_[XL, XA, XB]
    logits = X_all @ np.array([0.8, -0.3, 0.6, 0.4, -0.7, 0.5]) - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(float)
    train = np.arange(1200)
    std = {
        k: (v - v[train].mean(0)) / v[train].std(0) for k, v in {"L": XL, "a": XA, "b": XB}.items()
    }
    return std.pop("L"), y, train, std, np.arange(1200, n)


def _fit(split: Split, config: VerticalLRConfig) -> tuple[VerticalLRResult, float]:
    XL, y, tr, parties, te = split
    res = run_lr_local(LabelData(XL[tr], y[tr]), {k: v[tr] for k, v in parties.items()}, config)
    prob = res.predict_proba(XL[te], {k: v[te] for k, v in parties.items()})
    return res, float(roc_auc_score(y[te], prob))


def _l2(split: Split) -> float:
    return 1.0 / split[2].size  # sklearn's default C = 1


def test_public_surface() -> None:
    assert set(vlr.__all__) == {
        "Explanation",
        "FeatureOut",
        "FeatureParty",
        "LabelData",
        "LabelHolder",
        "LabelOut",
        "VerticalLRConfig",
        "averaged_iterates",
        "label_mechanism",
        "label_noise_for",
    }
    assert set(vlocal.__all__) == {
        "SplitNNResult",
        "VerticalLRResult",
        "centralized_reference",
        "run_lr_local",
        "run_split_nn_local",
    }


@pytest.fixture(scope="module")
def plain(split: Split) -> tuple[VerticalLRResult, float]:
    return _fit(split, VerticalLRConfig(iterations=30, l2=_l2(split), encrypted=False))


def test_matches_sklearn_on_joined_columns(
    split: Split, plain: tuple[VerticalLRResult, float]
) -> None:
    XL, y, tr, parties, te = split
    X_all = np.c_[XL, parties["a"], parties["b"]]
    ref = centralized_reference(X_all[tr], y[tr], _l2(split))
    auc_ref = roc_auc_score(y[te], ref.decision_function(X_all[te]))
    res, auc = plain
    assert abs(auc - auc_ref) < 0.005
    assert res.losses[-1] < res.losses[0]
    coef = np.r_[res.label_holder.weights, *(p.weights for p in res.feature_parties.values())]
    np.testing.assert_allclose(coef, ref.coef_[0], atol=0.1)
    assert not res.exposes_single_party_scores


def test_encrypted_equals_plaintext(split: Split) -> None:
    plain, auc_plain = _fit(split, VerticalLRConfig(iterations=15, l2=_l2(split), encrypted=False))
    enc, auc_enc = _fit(split, VerticalLRConfig(iterations=15, l2=_l2(split), encrypted=True))
    assert abs(auc_enc - auc_plain) < 5e-4
    np.testing.assert_allclose(enc.label_holder.weights, plain.label_holder.weights, atol=1e-3)
    for name, fp in enc.feature_parties.items():
        np.testing.assert_allclose(fp.weights, plain.feature_parties[name].weights, atol=1e-3)


def _roles(split: Split, config: VerticalLRConfig) -> tuple[LabelHolder, dict[str, FeatureParty]]:
    XL, y, tr, parties, _ = split
    keys = {n: MaskingKey.generate() for n in parties}
    pubs = {n: k.public_bytes() for n, k in keys.items()}
    fps = {
        n: FeatureParty(n, X[tr], config, seeds=pairwise_seeds(keys[n], me=n, peers=pubs, run="r"))
        for n, X in parties.items()
    }
    return LabelHolder(XL[tr], y[tr], config, parties=list(fps)), fps


def _train(
    split: Split,
    holder: LabelHolder,
    fps: dict[str, FeatureParty],
    iterations: int,
    *,
    restore: int,
) -> tuple[LabelHolder, dict[str, FeatureParty]]:
    XL, y, tr, parties, _ = split
    residual: bytes | np.ndarray | None = None
    decrypted: dict[str, np.ndarray] = {}
    for t in range(iterations):
        if t == restore:  # every role restarts from its bytes, as in another process
            holder = LabelHolder.from_state(holder.state_bytes(), XL[tr], y[tr])
            fps = {
                n: FeatureParty.from_state(fp.state_bytes(), parties[n][tr])
                for n, fp in fps.items()
            }
        outs = {n: fp.step(residual, decrypted.get(n)) for n, fp in fps.items()}
        grads = {n: o.masked_grad for n, o in outs.items() if o.masked_grad is not None}
        lab = holder.step({n: o.masked_scores for n, o in outs.items()}, grads)
        residual, decrypted = lab.residual, lab.decrypted
    return holder, fps


@pytest.mark.parametrize("average_last", [0, 8])
def test_state_round_trip_mid_training_is_identical(split: Split, average_last: int) -> None:
    config = VerticalLRConfig(
        iterations=12, l2=_l2(split), encrypted=False, average_last=average_last
    )
    a = _train(split, *_roles(split, config), 12, restore=-1)
    b = _train(split, *_roles(split, config), 12, restore=6)
    np.testing.assert_array_equal(a[0].weights, b[0].weights)
    assert a[0].intercept == b[0].intercept
    for n in a[1]:
        np.testing.assert_array_equal(a[1][n].weights, b[1][n].weights)


def test_tail_averaging_returns_the_mean_of_each_partys_last_iterates(split: Split) -> None:
    XL, y, tr, parties, te = split
    T, K = 10, 4
    plain = VerticalLRConfig(iterations=T, l2=_l2(split), encrypted=False)
    holder, fps = _roles(split, plain)
    own: list[np.ndarray] = []
    theirs: dict[str, list[np.ndarray]] = {n: [] for n in fps}
    residual: bytes | np.ndarray | None = None
    decrypted: dict[str, np.ndarray] = {}
    for _ in range(T):
        outs = {n: fp.step(residual, decrypted.get(n)) for n, fp in fps.items()}
        for n, fp in fps.items():
            if n in decrypted:
                theirs[n].append(fp.weights)
        grads = {n: o.masked_grad for n, o in outs.items() if o.masked_grad is not None}
        lab = holder.step({n: o.masked_scores for n, o in outs.items()}, grads)
        own.append(np.r_[holder.weights, holder.intercept])
        residual, decrypted = lab.residual, lab.decrypted
    for n, fp in fps.items():
        fp.step(None, decrypted[n])
        theirs[n].append(fp.weights)
    assert len(own) == T and all(len(v) == T - 1 for v in theirs.values())

    res = run_lr_local(
        LabelData(XL[tr], y[tr]),
        {k: v[tr] for k, v in parties.items()},
        VerticalLRConfig(iterations=T, l2=_l2(split), encrypted=False, average_last=K),
    )
    mean_own = np.mean(own[-K:], axis=0)
    np.testing.assert_allclose(res.label_holder.weights, mean_own[:-1], rtol=1e-12)
    assert res.label_holder.intercept == pytest.approx(mean_own[-1], rel=1e-12)
    for n, fp in res.feature_parties.items():
        np.testing.assert_allclose(fp.weights, np.mean(theirs[n][-K:], axis=0), rtol=1e-12)
        assert not np.allclose(fp.weights, theirs[n][-1])  # not the last iterate
    # Scoring uses the averaged blocks: the joint model is the average of the joint iterates.
    prob = res.predict_proba(XL[te], {k: v[te] for k, v in parties.items()})
    z = XL[te] @ mean_own[:-1] + mean_own[-1]
    z = z + sum(parties[n][te] @ np.mean(theirs[n][-K:], axis=0) for n in fps)
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-z)), atol=1e-9)


def test_tail_averaging_is_refused_beyond_the_plan() -> None:
    with pytest.raises(ProtocolError, match="average_last"):
        VerticalLRConfig(iterations=4, average_last=4)
    assert [vlr.averaged_iterates(t) for t in (1, 2, 10, 30)] == [0, 1, 7, 22]
    with pytest.raises(ProtocolError):
        vlr.averaged_iterates(0)


def test_encrypted_state_keeps_the_in_flight_masks(split: Split) -> None:
    XL, y, tr, parties, _ = split
    keys = LabelKeys.generate()
    config = VerticalLRConfig(l2=_l2(split), encrypted=True)
    holder = LabelHolder(XL[tr], y[tr], config, parties=["a"], keys=keys)
    fp = FeatureParty("a", parties["a"][tr], config, seeds={}, public=keys.public())
    lab = holder.step({"a": fp.step(None, None).masked_scores}, {})
    out = fp.step(lab.residual, None)
    assert isinstance(out.masked_grad, list)
    lab = holder.step({"a": out.masked_scores}, {"a": out.masked_grad})
    copy = FeatureParty.from_state(fp.state_bytes(), parties["a"][tr], public=keys.public())
    fp.step(None, lab.decrypted["a"])
    copy.step(None, lab.decrypted["a"])
    np.testing.assert_array_equal(fp.weights, copy.weights)
    assert np.any(fp.weights != 0)
    stored_keys = LabelKeys.from_bytes(keys.to_bytes())
    restored = LabelHolder.from_state(holder.state_bytes(), XL[tr], y[tr], keys=stored_keys)
    np.testing.assert_array_equal(restored.weights, holder.weights)


def test_single_feature_party_is_reported_and_unmasked(split: Split) -> None:
    XL, y, tr, parties, _ = split
    config = VerticalLRConfig(iterations=5, l2=_l2(split), encrypted=False)
    res = run_lr_local(LabelData(XL[tr], y[tr]), {"a": parties["a"][tr]}, config)
    assert res.exposes_single_party_scores
    fp = res.feature_parties["a"]
    np.testing.assert_array_equal(
        fp.scores(parties["a"][:5], step=0), encode(parties["a"][:5] @ fp.weights)
    )


def test_scores_are_masked_and_explanations_are_local(
    split: Split, plain: tuple[VerticalLRResult, float]
) -> None:
    res, _ = plain
    XL, _, tr, parties, te = split
    fp = res.feature_parties["a"]
    partial = parties["a"][te] @ fp.weights
    assert not np.any(fp.scores(parties["a"][te], step=3) == encode(partial))
    exp = fp.explanation()
    assert exp.party == "a"
    assert exp.score_std == pytest.approx(float(np.std(parties["a"][tr] @ fp.weights)))
    np.testing.assert_allclose(exp.coefficients, fp.weights * parties["a"][tr].std(axis=0))
    label = res.label_holder.explanation()
    assert label.coefficients.shape == (XL.shape[1],)


def test_protocol_misuse_is_refused(split: Split) -> None:
    XL, y, tr, parties, _ = split
    config = VerticalLRConfig(l2=_l2(split), encrypted=False)
    holder, fps = _roles(split, config)
    outs = {n: fp.step(None, None) for n, fp in fps.items()}
    with pytest.raises(ProtocolError, match="every feature party"):
        holder.step({"a": outs["a"].masked_scores}, {})  # partial sum: masks don't cancel
    with pytest.raises(ProtocolError, match="gradients"):
        holder.step({n: o.masked_scores for n, o in outs.items()}, {"a": np.zeros(2)})
    with pytest.raises(ProtocolError, match="distinct"):
        LabelHolder(XL[tr], y[tr], config, parties=[])
    with pytest.raises(ProtocolError, match="unexpected"):
        fps["a"].step(np.zeros(tr.size), np.zeros(2))
    with pytest.raises(ProtocolError, match="other data"):
        FeatureParty.from_state(fps["a"].state_bytes(), parties["a"][tr] + 1.0)
    with pytest.raises(ProtocolError, match="state"):
        LabelHolder.from_state(fps["a"].state_bytes(), XL[tr], y[tr])
    with pytest.raises(ProtocolError):
        VerticalLRConfig(iterations=0)
    with pytest.raises(ProtocolError, match="public context"):
        FeatureParty("a", parties["a"][tr], VerticalLRConfig(), seeds={})


@pytest.mark.parametrize("module", [vlr, vlocal], ids=lambda m: m.__name__)
def test_docstring_examples(module: types.ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_label_holder_takes_one_value_per_declared_column_and_planned_iterations() -> None:
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(50, 2)), (rng.random(50) > 0.5).astype(float)
    cfg = VerticalLRConfig(iterations=2, encrypted=False, label_noise=1.0)
    holder = vlr.LabelHolder(X, y, cfg, parties=["p"], columns={"p": (3, 3)})
    scores = {"p": encode(np.zeros(50))}  # one party: no peer to mask with
    out = holder.step(scores, {})
    noise = np.asarray(out.residual) * 50 - (0.5 - y)  # n d = 0.5 - y + z N(0, 1)
    assert 0.5 < float(np.std(noise)) < 2.0  # the label noise is there (z = 1)
    with pytest.raises(ProtocolError, match="declared schema has 3"):
        holder.step(scores, {"p": np.zeros(64)})
    holder.step(scores, {"p": np.zeros(3)})
    with pytest.raises(ProtocolError, match="plans 2 iterations"):
        holder.step(scores, {"p": np.zeros(3)})


def test_label_mechanism_is_calibrated_to_the_target() -> None:
    from fedcollab.privacy.accounting import epsilon

    z = vlr.label_noise_for(8.0, iterations=30, target_delta=1e-5)
    cfg = VerticalLRConfig(iterations=30, label_noise=z)
    assert epsilon([vlr.label_mechanism(cfg)], target_delta=1e-5) <= 8.0
    with pytest.raises(PrivacyError):
        vlr.label_mechanism(VerticalLRConfig(iterations=30))
