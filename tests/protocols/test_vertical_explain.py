"""Vertical interpretability: explanations, permutation importances, per-viewer views."""

from __future__ import annotations

import doctest
import json
from collections.abc import Mapping

import numpy as np
import pytest
import torch

import fedcollab.protocols.vertical_explain as vertical_explain
from fedcollab.common.errors import ProtocolError
from fedcollab.protocols.split_nn import BottomParty, SplitNNConfig, TopModel
from fedcollab.protocols.vertical_explain import (
    OPERATOR,
    PartyExplanation,
    combine,
    feature_permutation_importance,
    lr_party_explanation,
    party_permutation_importance,
    redact,
)


def _explanations() -> list[PartyExplanation]:
    return [
        PartyExplanation("platform", 0.9, [("AGE", 0.5), ("LIMIT_BAL", -0.3)]),
        PartyExplanation("payment", 1.4, [("PAY_0", 1.1), ("PAY_AMT1", -0.2)]),
        PartyExplanation("billing", 0.2, [("BILL_AMT1", 0.1)]),
    ]


def test_redact_keeps_only_party_and_importance() -> None:
    e = _explanations()[1]
    assert redact(e, shared=False).to_dict() == {
        "party": "payment",
        "importance": 1.4,
        "top_features": [],
    }
    assert redact(e, shared=True) == e
    assert json.loads(json.dumps(e.to_dict()))["top_features"][0] == ["PAY_0", 1.1]


def test_lr_explanation_from_own_coefficients() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3))
    w = np.array([0.2, -1.5, 0.7])
    e = lr_party_explanation("p", ["a", "b", "c"], w, x @ w, top_k=2)
    assert e.top_features == [("b", -1.5), ("c", 0.7)]
    assert e.importance == pytest.approx(float(np.std(x @ w)))
    assert e.importance == pytest.approx(np.linalg.norm(w), rel=0.1)  # independent columns
    with pytest.raises(ProtocolError):
        lr_party_explanation("p", ["a", "b"], w, x @ w)
    with pytest.raises(ProtocolError):
        lr_party_explanation("p", ["a", "b", "c"], w, [])


def _predict(e: Mapping[str, np.ndarray]) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(3.0 * e["a"][:, 0] + 0.5 * e["own"][:, 0])))


def test_party_permutation_importance_ranks_the_party_the_model_uses() -> None:
    rng = np.random.default_rng(1)
    emb = {p: rng.normal(size=(400, 4)) for p in ("own", "a", "ignored")}
    y = (rng.random(400) < _predict(emb)).astype(float)
    drops = party_permutation_importance(_predict, emb, y, seed=0, repeats=3)
    assert set(drops) == {"own", "a", "ignored"}
    assert drops["a"] > drops["own"] > 0.01
    assert drops["ignored"] == 0.0
    with pytest.raises(ProtocolError, match="both classes"):
        party_permutation_importance(_predict, emb, np.zeros(400), seed=0)
    with pytest.raises(ProtocolError, match="rows"):
        party_permutation_importance(_predict, emb, y[:10], seed=0)


def test_feature_permutation_importance_is_the_embedding_shift() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 3))
    weights = np.array([[2.0, 0.0], [0.0, 0.0], [0.5, 0.5]])
    scores = feature_permutation_importance(
        lambda rows: rows @ weights, x, ["big", "unused", "small"], seed=0
    )
    assert [name for name, _ in scores] == ["big", "small", "unused"]
    assert dict(scores)["unused"] == 0.0
    assert dict(scores)["big"] > 2.0  # E|x - x'| * 2 = 2 * 2/sqrt(pi) ~ 2.26
    with pytest.raises(ProtocolError):
        feature_permutation_importance(lambda rows: rows, x, ["a"], seed=0)


def test_views_never_show_a_non_sharing_partys_features_to_others() -> None:
    explanations = _explanations()
    shared = {"platform": True, "payment": False}  # billing: absent, hence not shared
    hidden = {"PAY_0", "PAY_AMT1", "BILL_AMT1"}
    for viewer in ("platform", "payment", "billing", OPERATOR):
        view = combine(explanations, shared, viewer)
        text = json.dumps(view)
        own = {"payment": {"PAY_0", "PAY_AMT1"}, "billing": {"BILL_AMT1"}}.get(viewer, set())
        for feature in hidden - own:
            assert feature not in text, (viewer, feature)
        for feature in own:
            assert feature in text
        assert "AGE" in text  # platform shares
        assert [p["party"] for p in view["parties"]] == ["payment", "platform", "billing"]
        assert all("importance" in p for p in view["parties"])


def test_views_refuse_unknown_viewers_and_ambiguous_parties() -> None:
    explanations = _explanations()
    with pytest.raises(ProtocolError, match="viewer"):
        combine(explanations, {}, "someone")
    with pytest.raises(ProtocolError, match="distinct"):
        combine([*explanations, explanations[0]], {}, OPERATOR)
    with pytest.raises(ProtocolError, match="distinct"):
        combine([PartyExplanation(OPERATOR, 1.0, [("x", 1.0)])], {}, OPERATOR)
    truthy = combine(explanations, {"payment": "yes"}, OPERATOR)  # type: ignore[dict-item]
    assert "PAY_0" not in json.dumps(truthy)  # only an explicit True shares


def test_with_split_nn_roles() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    own, a = rng.normal(size=(300, 2)), rng.normal(size=(300, 3))
    y = (a[:, 0] + 0.3 * own[:, 0] + 0.3 * rng.normal(size=300) > 0).astype(float)
    config = SplitNNConfig(steps=40, batch_size=300, learning_rate=0.05, hidden_sizes=(8,))
    top = TopModel(y, own, config, feature_parties=["a"], own_party="own")
    party = BottomParty(a, config, party="a")
    for step in range(config.steps):
        party.backward(top.step({"a": party.forward(step)})["a"])
    emb = {"own": top.embed_own(own), "a": party.embed(a)}
    drops = party_permutation_importance(
        lambda e: top.predict(e["own"], {"a": e["a"]}), emb, y, seed=0, repeats=2
    )
    assert drops["a"] > drops["own"] > 0
    scores = feature_permutation_importance(party.local_embedding, a, ["x0", "x1", "x2"], seed=0)
    assert scores[0][0] == "x0"


def test_docstring_examples() -> None:
    result = doctest.testmod(vertical_explain)
    assert result.attempted > 0 and result.failed == 0


def test_public_surface() -> None:
    assert set(vertical_explain.__all__) == {
        "OPERATOR",
        "PartyExplanation",
        "combine",
        "feature_permutation_importance",
        "lr_party_explanation",
        "party_permutation_importance",
        "redact",
    }
