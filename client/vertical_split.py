"""A vertical party's split-NN steps (``vertical.model = "split_nn"``).

Same phases as :mod:`client.vertical_training` (logistic regression), with the
roles of :mod:`protocols.split_nn`: each feature party sends the embeddings of
the step's batch, sealed to the label holder; the label holder answers with
each party's gradient w.r.t. its embeddings, sealed to that party.

Embedding DP (``privacy.dp = "sample"``): each released embedding row is
clipped and noised (:mod:`protocols.split_nn`). A feature party charges the
whole job's releases of its rows (every training step and the one inference
release) to its privacy-budget ledger *before its first embedding leaves*
(:func:`client.budget.charge_mechanism`); a job over the cap is refused with
``BudgetExceededError`` and nothing is sent.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.metrics import roc_auc_score

from fedcollab.client.budget import charge_mechanism
from fedcollab.client.node_settings import NodeOptions
from fedcollab.client.vertical_rows import PartyRows, iteration
from fedcollab.client.vertical_store import array_bytes, bytes_array
from fedcollab.protocols.split_nn import (
    BottomParty,
    SplitNNConfig,
    TopModel,
    embedding_mechanism,
    noise_for,
)
from fedcollab.protocols.vertical_explain import (
    PartyExplanation,
    feature_permutation_importance,
    party_permutation_importance,
    redact,
)

if TYPE_CHECKING:
    from fedcollab.client.vertical import Parts, PartyContext, Reply

__all__ = [
    "feature_eval",
    "feature_setup",
    "feature_step",
    "label_eval",
    "label_setup",
    "label_step",
]

#: One inference release per row (the test rows' embeddings) is counted with training.
INFERENCE_RELEASES = 1


class _Split(PartyRows):
    @cached_property
    def config(self) -> SplitNNConfig:
        """The job's parameters; the noise is derived here from the spec, at every party
        alike (the training row count is known to all after the PSI)."""
        v, priv = self.p.spec.vertical, self.p.spec.privacy
        base = SplitNNConfig(
            hidden_sizes=v.hidden_sizes,
            embedding_dim=v.embedding_dim,
            steps=v.iterations,
            batch_size=v.batch_size,
            learning_rate=v.step_size,
            seed=v.seed,
            clip_norm=v.embedding_clip_norm,
        )
        if priv.dp != "sample":
            return base
        if priv.noise_multiplier is not None:
            z = priv.noise_multiplier
        else:
            assert priv.target_epsilon is not None  # the spec holds exactly one
            z = noise_for(
                priv.target_epsilon,
                config=base,
                n_rows=len(self.matrix.train),
                target_delta=priv.target_delta,
                inference_releases=INFERENCE_RELEASES,
            )
        return SplitNNConfig(**{**base.__dict__, "noise_multiplier": z})

    def top(self) -> TopModel:
        return TopModel.from_state(
            self.p.store.get("model"), self.labels[0], self.matrix.train, self.config
        )

    def bottom(self) -> BottomParty:
        return BottomParty.from_state(self.p.store.get("model"), self.matrix.train, self.config)

    def save(self, role: TopModel | BottomParty) -> None:
        self.p.store.put("model", role.state_bytes())

    def results(self, explanation: PartyExplanation) -> dict[str, Any]:
        store = self.p.store
        store.put("explanation.json", json.dumps(explanation.to_dict()).encode())
        store.put("columns.json", json.dumps(self.matrix.feature_names).encode())
        store.put("preprocessor.json", json.dumps(self.matrix.preprocessor.to_dict()).encode())
        shared = NodeOptions.of(self.p.config).share_explanations
        return {**redact(explanation, shared).to_dict(), "shared": shared}


# -- label holder ----------------------------------------------------------------
def label_setup(p: PartyContext) -> Reply:
    s = _Split(p)
    y_train, y_test = s.labels
    top = TopModel(y_train, s.matrix.train, s.config, feature_parties=p.v.feature_parties,
                   own_party=p.me)  # fmt: skip
    s.save(top)
    alignment = {
        "intersection": len(p.store.get_array("aligned")),
        "train_rows": len(y_train),
        "test_rows": len(y_test),
    }
    return {"alignment": alignment}, {}


def _embeddings(p: PartyContext, topic: str, what: str) -> dict[str, np.ndarray]:
    return {
        q: bytes_array(
            p.open_from(q, topic, p.payload.part(f"embedding/{q}")), what=f"{q}'s {what}"
        )
        for q in p.v.feature_parties
    }


def label_step(p: PartyContext) -> Reply:
    it = iteration(p)
    s = _Split(p)
    top = s.top()
    grads = top.step(_embeddings(p, f"it-{it}/embedding", "embeddings"))
    s.save(top)
    reply: Parts = {
        f"grad/{q}": p.seal_to(q, f"it-{it}/embedding-grad", array_bytes(g))
        for q, g in grads.items()
    }
    return {"loss": round(float(top.losses[-1]), 6)}, reply


def label_eval(p: PartyContext) -> Reply:
    s = _Split(p)
    top = s.top()
    embeddings = _embeddings(p, "eval/embedding", "test embeddings")
    own = top.embed_own(s.matrix.test)
    prob = top.predict(own, embeddings)
    y_test = s.labels[1]
    two_classes = len(set(y_test.tolist())) > 1
    metrics: dict[str, Any] = {
        "test_auc": float(roc_auc_score(y_test, prob)) if two_classes else None,
        "test_rows": len(y_test),
        "test_accuracy": float(np.mean((prob >= 0.5) == (y_test >= 0.5))),
        "embedding_noise_multiplier": s.config.noise_multiplier,
    }
    importance = (
        party_permutation_importance(
            lambda e: top.predict(e[p.me], {q: e[q] for q in p.v.feature_parties}),
            {p.me: own, **embeddings},
            y_test,
            seed=0,
        )
        if two_classes
        else {}
    )
    metrics["party_importance_auc_drop"] = {k: float(v) for k, v in importance.items()}
    own_features = feature_permutation_importance(
        top.own.local_embedding, s.matrix.test, s.matrix.feature_names, seed=0
    )
    p.store.put("bottom.pt", top.state_bytes())
    explanation = PartyExplanation(p.me, float(importance.get(p.me, 0.0)), own_features[:5])
    return {"metrics": metrics, "explanation": s.results(explanation)}, {}


# -- feature parties -------------------------------------------------------------
def feature_setup(p: PartyContext) -> None:
    s = _Split(p)
    if s.config.noise_multiplier > 0:
        # The whole job's releases of this party's rows, charged before the first one.
        charge_mechanism(
            p.config,
            p.data,
            p.spec,
            embedding_mechanism(
                s.config, len(s.matrix.train), inference_releases=INFERENCE_RELEASES
            ),
            run=p.run,
            step="vertical-embeddings",
            audit=p.audit,
        )
    s.save(BottomParty(s.matrix.train, s.config, party=p.me))


def _gradient(p: PartyContext, it: int) -> np.ndarray | None:
    if "grad" not in p.payload.parts:
        return None
    raw = p.open_from(p.label, f"it-{it}/embedding-grad", p.payload.part("grad"))
    return bytes_array(raw, what="embedding gradient")


def feature_step(p: PartyContext) -> Reply:
    it = iteration(p)
    s = _Split(p)
    bottom = s.bottom()
    grad = _gradient(p, it - 1)
    if grad is not None:
        bottom.backward(grad)
    out = bottom.forward(it)
    s.save(bottom)
    return {}, {"embedding": p.seal_to(p.label, f"it-{it}/embedding", array_bytes(out))}


def feature_eval(p: PartyContext) -> Reply:
    s = _Split(p)
    bottom = s.bottom()
    grad = _gradient(p, p.v.iterations - 1)
    if grad is not None:
        bottom.backward(grad)
    released = bottom.embed(s.matrix.test)
    s.save(bottom)
    p.store.put("bottom.pt", bottom.state_bytes())
    features = feature_permutation_importance(
        bottom.local_embedding, s.matrix.test, s.matrix.feature_names, seed=0
    )
    # Party importance is measured at the label holder (it holds every embedding).
    visible = s.results(PartyExplanation(p.me, 0.0, features[:5]))
    return {"explanation": visible}, {
        "embedding": p.seal_to(p.label, "eval/embedding", array_bytes(released))
    }
