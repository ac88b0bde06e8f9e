"""A vertical party's model steps: the glue between the relay and the pure roles.

Each function serves one phase of :mod:`client.vertical` for this party: it
loads the party's state from its :class:`~client.vertical_store.VerticalStore`,
rebuilds its feature matrix on the aligned rows (:mod:`protocols.vertical_data`),
runs one step of the pure role (:mod:`protocols.vertical_lr`), saves the state
and returns what may leave the party: every value for another party is sealed
to it (:mod:`privacy.envelope`); the relay gets only sealed blobs.

Label privacy (the label holder's own policy, whatever the job asks): its node
refuses a plaintext job unless started with ``allow-plaintext-vertical`` (for
testing), adds label-DP noise to every residual it releases, calibrated to its
``label-epsilon`` (default :data:`DEFAULT_LABEL_EPSILON`) at its ledger's delta
and charged to its privacy-budget ledger before the first residual leaves
(:func:`protocols.vertical_lr.label_mechanism`), decrypts exactly one value per
declared column of each feature party per planned iteration, and keeps the
training loss at its node (a loss is a function of every label: a party that
crafts its scores could read labels from it).

Topics name the protocol position of every sealed payload
(``it-<t>/scores``, ``it-<t>/residual``, ``it-<t>/decrypted``, ``eval/scores``),
so a payload replayed from another step or party is refused.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.metrics import roc_auc_score

from fedcollab.client.budget import charge_mechanism, dataset_key, ledger_path
from fedcollab.client.node_settings import NodeOptions
from fedcollab.client.vertical_rows import PartyRows, iteration
from fedcollab.client.vertical_store import array_bytes, bytes_array
from fedcollab.common.errors import ProtocolError
from fedcollab.common.schema import DatasetSchema
from fedcollab.common.serde import pack_blobs, unpack_blobs
from fedcollab.privacy.budget_ledger import BudgetLedger
from fedcollab.privacy.key_transport import verify_offer
from fedcollab.privacy.masking import MaskingKey, pairwise_seeds
from fedcollab.privacy.vertical_he import LabelKeys, PublicContext
from fedcollab.protocols.vertical_data import declared_columns
from fedcollab.protocols.vertical_explain import PartyExplanation, lr_party_explanation, redact
from fedcollab.protocols.vertical_lr import (
    FeatureParty,
    LabelHolder,
    VerticalLRConfig,
    averaged_iterates,
    label_mechanism,
    label_noise_for,
)

if TYPE_CHECKING:
    from fedcollab.client.vertical import Parts, PartyContext, Reply

__all__ = [
    "DEFAULT_LABEL_EPSILON",
    "feature_eval",
    "feature_setup",
    "feature_step",
    "label_eval",
    "label_setup",
    "label_step",
]


#: The label holder's label-DP epsilon when its node sets no ``label-epsilon``.
DEFAULT_LABEL_EPSILON = 8.0


def _label_noise(p: PartyContext, config: VerticalLRConfig, n_train: int) -> float:
    """Calibrate the label noise to this node's epsilon and charge it, before any
    residual leaves (refused over the cap, or without a cap: fail closed)."""
    # A positive, finite number (client.node_settings refuses any other), else the default.
    own = NodeOptions.of(p.config).label_epsilon
    eps = DEFAULT_LABEL_EPSILON if own is None else own
    with BudgetLedger.open(ledger_path(p.config)) as ledger:
        delta = ledger.budget(dataset_key(p.data)).delta
    z = label_noise_for(eps, iterations=config.iterations, target_delta=delta)
    charge_mechanism(
        p.config,
        p.data,
        p.spec,
        label_mechanism(replace(config, label_noise=z)),
        run=p.run,
        step="vertical-label-residuals",
        audit=p.audit,
    )
    return z


class _Model(PartyRows):
    """This party's matrices, config and keys for the job (rebuilt per message)."""

    @property
    def config(self) -> VerticalLRConfig:
        v = self.p.spec.vertical
        if v.model != "logreg":
            raise ProtocolError(
                f"vertical model {v.model!r} is not served by this node",
                hint="this fedcollab version runs vertical.model = 'logreg' over the relay",
            )
        return VerticalLRConfig(
            iterations=v.iterations,
            learning_rate=v.step_size,
            l2=v.l2,
            encrypted=self.p.spec.privacy.encrypted,
            # Every party derives the same tail from the spec (post-processing of the
            # label-DP residuals: averages out the noise of the last steps, issue 15).
            average_last=averaged_iterates(v.iterations),
        )

    @property
    def encrypted(self) -> bool:
        return self.p.spec.privacy.encrypted

    def label_keys(self) -> LabelKeys | None:
        return LabelKeys.from_bytes(self.p.store.get("ckks.key")) if self.encrypted else None

    def public(self) -> PublicContext | None:
        return PublicContext.from_bytes(self.p.store.get("context")) if self.encrypted else None

    def holder(self) -> LabelHolder:
        return LabelHolder.from_state(
            self.p.store.get("model"), self.matrix.train, self.labels[0], keys=self.label_keys()
        )

    def party(self) -> FeatureParty:
        return FeatureParty.from_state(
            self.p.store.get("model"), self.matrix.train, public=self.public()
        )

    def save(self, role: LabelHolder | FeatureParty) -> None:
        self.p.store.put("model", role.state_bytes())

    def save_results(self, explanation: PartyExplanation, weights: np.ndarray) -> dict[str, Any]:
        """Keep the model share and the full explanation here; return what this party
        lets others see."""
        self.p.store.put_array("weights.npy", weights)
        self.p.store.put("explanation.json", json.dumps(explanation.to_dict()).encode())
        self.p.store.put("columns.json", json.dumps(self.matrix.feature_names).encode())
        self.p.store.put(
            "preprocessor.json", json.dumps(self.matrix.preprocessor.to_dict()).encode()
        )
        # The latest model of this training job, for joint inference (predict_with).
        self.p.store.save_model(
            self.p.spec.name,
            {
                "weights.npy": array_bytes(weights),
                "preprocessor.json": json.dumps(self.matrix.preprocessor.to_dict()).encode(),
                "meta.json": json.dumps(
                    {"run": self.p.run, "job_digest": self.p.spec.digest(), "model": "logreg"}
                ).encode(),
            },
        )
        shared = NodeOptions.of(self.p.config).share_explanations
        return {**redact(explanation, shared).to_dict(), "shared": shared}


# -- label holder ----------------------------------------------------------------
def label_setup(p: PartyContext) -> Reply:
    """After the intersection: keys, preprocessing and the initial model at L."""
    m = _Model(p)
    y_train, y_test = m.labels
    config = replace(m.config, label_noise=_label_noise(p, m.config, len(y_train)))
    keys: LabelKeys | None = None
    parts: Parts = {}
    if m.encrypted:
        keys = LabelKeys.generate()
        p.store.put("ckks.key", keys.to_bytes())
        parts["context"] = keys.public_bytes()
    n_train = len(y_train)
    columns = {
        q: declared_columns(DatasetSchema.model_validate(p.v.parties[q].data_schema), n_train)
        for q in p.v.feature_parties
    }
    holder = LabelHolder(
        m.matrix.train,
        y_train,
        config,
        parties=p.v.feature_parties,
        keys=keys,
        name=p.me,
        columns=columns,
    )
    m.save(holder)
    alignment = {
        "intersection": len(p.store.get_array("aligned")),
        "train_rows": len(y_train),
        "test_rows": len(y_test),
        "label_noise_multiplier": round(config.label_noise, 6),
    }
    return {"alignment": alignment}, parts


def label_step(p: PartyContext) -> Reply:
    it = iteration(p)
    m = _Model(p)
    holder = m.holder()
    if it != holder.step_count:
        raise ProtocolError(
            f"label step {it} requested at the label holder's step {holder.step_count}"
        )
    parts = p.payload.parts
    scores = {
        q: bytes_array(
            p.open_from(q, f"it-{it}/scores", p.payload.part(f"scores/{q}")),
            what=f"{q}'s masked scores",
        )
        for q in p.v.feature_parties
    }
    grads: dict[str, list[bytes] | np.ndarray] = {}
    for q in p.v.feature_parties:
        if f"grad/{q}" not in parts:
            continue
        raw = p.open_from(q, f"it-{it}/grad", parts[f"grad/{q}"])
        if m.encrypted:
            grads[q] = unpack_blobs(raw, what=f"{q}'s gradient ciphertexts")
        else:
            grads[q] = bytes_array(raw, what=f"{q}'s gradient")
    out = holder.step(scores, grads)
    m.save(holder)
    reply: Parts = {}
    residual = out.residual if isinstance(out.residual, bytes) else array_bytes(out.residual)
    for q in p.v.feature_parties:
        reply[f"residual/{q}"] = p.seal_to(q, f"it-{it}/residual", residual)
        if q in out.decrypted:
            reply[f"grad/{q}"] = p.seal_to(q, f"it-{it}/decrypted", array_bytes(out.decrypted[q]))
    losses = json.loads(p.store.get("losses.json")) if p.store.has("losses.json") else []
    p.store.put("losses.json", json.dumps([*losses, round(float(out.loss), 6)]).encode())
    return {"loss": None}, reply  # the loss stays here (see the module docstring)


def label_eval(p: PartyContext) -> Reply:
    m = _Model(p)
    holder = m.holder()
    masked = {
        q: bytes_array(
            p.open_from(q, "eval/scores", p.payload.part(f"scores/{q}")),
            what=f"{q}'s masked test scores",
        )
        for q in p.v.feature_parties
    }
    y_test = m.labels[1]
    prob = holder.predict(masked, m.matrix.test)
    metrics = {
        "test_auc": float(roc_auc_score(y_test, prob)) if len(set(y_test.tolist())) > 1 else None,
        "test_rows": len(y_test),
        "test_accuracy": float(np.mean((prob >= 0.5) == (y_test >= 0.5))),
    }
    explanation = lr_party_explanation(
        p.me,
        m.matrix.feature_names,
        holder.explanation().coefficients,
        m.matrix.train @ holder.weights,
    )
    weights = np.append(holder.weights, holder.intercept)  # the intercept last
    return {"metrics": metrics, "explanation": m.save_results(explanation, weights)}, {}


# -- feature parties -------------------------------------------------------------
def _mask_seeds(p: PartyContext) -> dict[str, bytes]:
    """Pairwise seeds with the other feature parties, from their signed mask keys."""
    offers = p.keys.mask_offers
    publics: dict[str, bytes] = {}
    for q in p.v.feature_parties:
        if q not in offers:
            raise ProtocolError(f"the request carries no masking key of {q!r}")
        publics[q] = verify_offer(offers[q], run=f"{p.run}#mask", partner=q, peers=p.peers)
    key = MaskingKey.from_bytes(p.store.get("mask.key"))
    return pairwise_seeds(key, me=p.me, peers=publics, run=p.run)


def feature_setup(p: PartyContext) -> None:
    """With the aligned rows: preprocessing, the label holder's context, masks, model."""
    m = _Model(p)
    public: PublicContext | None = None
    if m.encrypted:
        raw = p.payload.part("context")
        public = PublicContext.from_bytes(raw)  # refuses a context holding a secret key
        p.store.put("context", raw)
    party = FeatureParty(p.me, m.matrix.train, m.config, seeds=_mask_seeds(p), public=public)
    m.save(party)


def _decrypted(p: PartyContext, it: int) -> np.ndarray | None:
    """The label holder's decryption of our masked gradient of ``it``, if it sent one."""
    if "grad" not in p.payload.parts:
        return None
    raw = p.open_from(p.label, f"it-{it}/decrypted", p.payload.part("grad"))
    return bytes_array(raw, what="decrypted masked gradient")


def feature_step(p: PartyContext) -> Reply:
    it = iteration(p)
    m = _Model(p)
    party = m.party()
    residual: bytes | np.ndarray | None = None
    if "residual" in p.payload.parts:
        raw = p.open_from(p.label, f"it-{it - 1}/residual", p.payload.part("residual"))
        residual = raw if m.encrypted else bytes_array(raw, what="residual")
    out = party.step(residual, _decrypted(p, it - 1))
    m.save(party)
    parts: Parts = {"scores": p.seal_to(p.label, f"it-{it}/scores", array_bytes(out.masked_scores))}
    if out.masked_grad is not None:
        grad = (
            pack_blobs(out.masked_grad)
            if isinstance(out.masked_grad, list)
            else array_bytes(out.masked_grad)
        )
        parts["grad"] = p.seal_to(p.label, f"it-{it}/grad", grad)
    return {}, parts


def feature_eval(p: PartyContext) -> Reply:
    m = _Model(p)
    party = m.party()
    party.step(None, _decrypted(p, p.v.iterations - 1))  # the last update
    m.save(party)
    masked = party.scores(m.matrix.test, step=0)
    explanation = lr_party_explanation(
        p.me,
        m.matrix.feature_names,
        party.explanation().coefficients,
        m.matrix.train @ party.weights,
    )
    visible = m.save_results(explanation, party.weights)
    return {"explanation": visible}, {
        "scores": p.seal_to(p.label, "eval/scores", array_bytes(masked))
    }
