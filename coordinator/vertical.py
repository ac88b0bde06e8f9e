"""The coordinator's side of a vertical job: a relay that sees only opaque blobs.

A vertical job (``task = "vertical"``) trains one model over parties that hold
different columns for the same users: the *label holder* (the platform, with
the labels) and *feature parties* (a brand, a payment processor). The
coordinator orchestrates every step through Flower messages
(``query.vertical``, the step named in ``meta["phase"]``) but computes nothing
on the data: it forwards

1. **PSI** (:mod:`protocols.psi`): each party's id set blinded by its own key
   (``psi_own``), then along a ring through every other party's key
   (``psi_hop``); the fully blinded sets go to the label holder sealed
   end-to-end (:mod:`privacy.envelope`), which intersects them (``intersect``)
   and returns each party's aligned row positions, sealed to that party. With
   ``vertical.psi = "cm20"`` the label holder runs the OT-based PSI of
   :mod:`protocols.psi_oprf` with each feature party instead (four sealed steps
   between them, :mod:`client.vertical_oprf`), then intersects the same way;
2. **training** (:mod:`protocols.vertical_lr`): per iteration one hop to the
   feature parties (``step``: masked partial scores sealed to the label holder,
   masked gradients encrypted under the label holder's CKKS key) and one to the
   label holder (``label_step``: the residual encrypted under its key, each
   party's decrypted masked gradient sealed to that party);
3. **evaluation** (``eval`` then ``label_eval``): masked test-row scores to the
   label holder, which reports the test AUC and each party's explanation as the
   party allowed it to be shared.

Every hop is logged in the coordinator's audit trail with the digest of each
blob relayed (``round.aggregated``, ``protection: "relay"``), and every party
logs the same digests for what it sent, so ``audit crossref`` and cosigning
cover vertical jobs too. The leakage table is in ``docs/privacy.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from flwr.serverapp import Grid

from fedcollab.common.errors import NotEnoughPartnersError, ProtocolError
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.messages.replies import (
    PsiSizeReply,
    Reply,
    VerticalAlignmentReply,
    VerticalFeatureEvalReply,
    VerticalLabelEvalReply,
    VerticalLabelStepReply,
    VerticalPredictReply,
)
from fedcollab.common.serde import Payload, encode
from fedcollab.compliance.trail import digest_parts
from fedcollab.coordinator.broadcast import broadcast
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.coordinator.roster import Roster
from fedcollab.protocols.psi import PsiConfig, ring_route

__all__ = ["Relay", "VerticalResult", "drive", "run_vertical"]

ACTION = "query.vertical"

R = TypeVar("R", bound=Reply)


@dataclass
class VerticalResult:
    iterations: int
    final: dict[str, Any]
    explanations: list[dict[str, Any]]
    history: list[dict[str, Any]] = field(default_factory=list)
    alignment: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Relay:
    grid: Grid
    roster: Roster
    spec: JobSpec

    def node(self, party: str) -> int:
        for node, p in self.roster.active.items():
            if p.name == party:
                return node
        raise NotEnoughPartnersError(
            f"vertical party {party!r} has left the job",
            hint="a vertical job needs every party: restart its node and resubmit the job",
        )

    def send(
        self,
        step: str,
        requests: Mapping[str, tuple[dict[str, Any], Mapping[str, bytes]]],
    ) -> dict[str, Payload]:
        """Send one request per party (meta, parts); every party must answer."""
        nodes = {self.node(party): party for party in requests}
        base = self.roster.job_meta()
        replies: dict[str, Payload] = {}
        sent: dict[str, str] = {}

        def content_for(node: int) -> Any:
            meta, parts = requests[nodes[node]]
            sent[nodes[node]] = digest_parts(parts)
            return encode({**base, **meta, "step": step}, parts=dict(parts))

        outcome = broadcast(
            self.grid,
            node_ids=list(nodes),
            message_type=ACTION,
            content_for=content_for,
            on_reply=lambda node, payload: replies.__setitem__(nodes[node], payload),
            group_id=step,
            timeout_s=self.spec.round_timeout_s,
        )
        for node, reason in {**outcome.dropped, **outcome.refused}.items():
            self.roster.drop(node, step=step, reason=reason)
        missing = sorted(set(requests) - set(replies))
        if missing:
            raise NotEnoughPartnersError(
                f"vertical step {step}: no usable reply from {', '.join(missing)}",
                hint="a vertical job needs every party; see the partners' node logs (what "
                "`fedcollab node start` prints) and the job's dropouts, then resubmit",
            )
        # As each party logs it: a reply that carries bytes is a contribution (an empty
        # reply, e.g. the label holder keeping a PSI set, is not).
        carried = {
            party: digest_parts(payload.parts)
            for party, payload in replies.items()
            if sum(len(b) for b in payload.parts.values()) > 0
        }
        if carried:
            self.roster.audit.aggregated(step, carried, None, protection="relay")
        return replies


def _psi(relay: Relay, config: PsiConfig) -> dict[str, bytes]:
    """Run the PSI ring; returns the label holder's input: owner -> fully blinded set."""
    parties = config.parties
    label = config.label_holder
    salts = relay.send("psi-salt", {label: ({"phase": "psi_salt"}, {})})[label]
    replies = relay.send(
        "psi-own",
        {
            p: ({"phase": "psi_own"}, {} if p == label else {"salt": salts.part(f"salt/{p}")})
            for p in parties
        },
    )
    current = {owner: replies[owner].part("set") for owner in parties}
    routes = {owner: ring_route(config, owner) for owner in parties}
    for hop in range(1, len(parties)):
        requests: dict[str, tuple[dict[str, Any], Mapping[str, bytes]]] = {}
        for owner in parties:
            party = routes[owner][hop]  # each party derives "final" from the route itself
            requests[party] = (
                {"phase": "psi_hop", "owner": owner, "hop": hop},
                {"set": current[owner]},
            )
        replies = relay.send(f"psi-hop-{hop}", requests)
        for owner in parties:
            current[owner] = replies[routes[owner][hop]].part("set")
    return current


def _psi_cm20(relay: Relay, spec: JobSpec) -> dict[str, bytes]:
    """Run CM20 between the label holder and each feature party (client.vertical_oprf);
    returns the label holder's input to ``intersect``: each party's sealed OPRF values."""
    v = spec.vertical
    label, features = v.label_holder, v.feature_parties
    first = relay.send(
        "psi-salt",
        {label: ({"phase": "psi_salt"}, {}), **{f: ({"phase": "oprf_size"}, {}) for f in features}},
    )
    sizes = {f: _size(first[f], f) for f in features}
    setup = relay.send("psi-setup", {label: ({"phase": "oprf_start", "sizes": sizes}, {})})[label]
    n_label = _size(first[label], label)
    answers = relay.send(
        "psi-answer",
        {
            f: (
                {"phase": "oprf_answer", "n_receiver": n_label},
                {"salt": first[label].part(f"salt/{f}"), "setup": setup.part(f"setup/{f}")},
            )
            for f in features
        },
    )
    replies = {f"reply/{f}": answers[f].part("reply") for f in features}
    matrices = relay.send("psi-matrix", {label: ({"phase": "oprf_matrix"}, replies)})[label]
    values = relay.send(
        "psi-values",
        {f: ({"phase": "oprf_values"}, {"matrix": matrices.part(f"matrix/{f}")}) for f in features},
    )
    return {f"values/{f}": values[f].part("values") for f in features}


def _size(reply: Payload, party: str) -> int:
    return _read(reply, PsiSizeReply, party).n_values


def _read(reply: Payload, model: type[R], party: str) -> R:
    """``party``'s reply as ``model``; a reply that does not fit fails the job with a
    ProtocolError naming the party (a vertical job needs every party's every reply)."""
    try:
        return reply.as_(model)
    except ProtocolError as exc:
        raise ProtocolError(f"vertical party {party!r}: {exc.message}", hint=exc.hint) from None


class Relay(Protocol):
    """Sends one request per party and returns every party's reply (or raises)."""

    def send(
        self, step: str, requests: Mapping[str, tuple[dict[str, Any], Mapping[str, bytes]]]
    ) -> dict[str, Payload]: ...


@dataclass
class _WithOffers:
    """Adds the parties' signed keys to every request: each party checks them against
    its own pinned peer keys before sealing anything to another party."""

    inner: Relay
    extra: dict[str, Any]

    def send(
        self, step: str, requests: Mapping[str, tuple[dict[str, Any], Mapping[str, bytes]]]
    ) -> dict[str, Payload]:
        return self.inner.send(
            step, {p: ({**meta, **self.extra}, parts) for p, (meta, parts) in requests.items()}
        )


def run_vertical(grid: Grid, roster: Roster, spec: JobSpec, outputs: JobOutputs) -> VerticalResult:
    """Drive a vertical job over Flower; returns what the label holder reported."""
    offers = {p.name: p.he_offer for p in roster.active.values() if p.he_offer is not None}
    masks = {p.name: p.mask_offer for p in roster.active.values() if p.mask_offer is not None}
    return drive(
        _Relay(grid, roster, spec),
        spec,
        outputs,
        run=roster.audit.run_id,
        offers=offers,
        masks=masks,
    )


def _predict(
    relay: Relay, spec: JobSpec, pending: dict[str, dict[str, bytes]], alignment: dict[str, Any]
) -> VerticalResult:
    """Joint inference: masked partial scores to the label holder, which keeps the
    predictions; the coordinator learns how many users were scored."""
    v = spec.vertical
    replies = relay.send("predict", {p: ({"phase": "predict"}, pending[p]) for p in pending})
    parts = {f"{k}/{p}": b for p, r in replies.items() for k, b in r.parts.items()}
    final = relay.send("label-predict", {v.label_holder: ({"phase": "label_predict"}, parts)})[
        v.label_holder
    ]
    counts = _read(final, VerticalPredictReply, v.label_holder)
    return VerticalResult(
        iterations=0,
        final={
            "scored": counts.scored,
            "queried": counts.queried,
            "model": v.predict_with,
            "predictions": "kept at the label holder's node",
        },
        explanations=[],
        alignment=alignment,
    )


def drive(
    relay: Relay,
    spec: JobSpec,
    outputs: JobOutputs,
    *,
    run: str,
    offers: Mapping[str, Any],
    masks: Mapping[str, Any],
) -> VerticalResult:
    """The vertical protocol's message schedule, over any relay (Flower, or a test's)."""
    v = spec.vertical
    label, features = v.label_holder, v.feature_parties
    if set(offers) != set(v.parties) or set(masks) != set(features):
        raise ProtocolError(
            "vertical parties without signed transport or masking keys: "
            f"{sorted(set(v.parties) - set(offers))} {sorted(set(features) - set(masks))}",
            hint="vertical jobs need every node started with --audit-key and --peer-keys",
        )
    config = PsiConfig(run=run, parties=tuple(sorted(v.parties)), label_holder=label)
    relay = _WithOffers(relay, {"offers": dict(offers), "mask_offers": dict(masks)})
    outputs.event("vertical", phase="psi", parties=list(config.parties), label_holder=label)
    if v.psi == "cm20":
        inputs = _psi_cm20(relay, spec)
    else:
        inputs = {f"full/{o}": b for o, b in _psi(relay, config).items()}
    reply = relay.send("intersect", {label: ({"phase": "intersect"}, inputs)})[label]
    alignment = _read(reply, VerticalAlignmentReply, label).alignment.model_dump(exclude_unset=True)
    outputs.event("vertical", phase="aligned", **alignment)
    shared = {k: b for k, b in reply.parts.items() if k == "context"}
    to_feature = {p: reply.part(f"align/{p}") for p in features}
    # The first feature step also delivers each party's aligned rows and the job's
    # public context: one message saved per party (each costs its Fleet hops).
    pending: dict[str, dict[str, bytes]] = {p: {"align": to_feature[p], **shared} for p in features}
    if v.predict_with:
        return _predict(relay, spec, pending, alignment)
    history: list[dict[str, Any]] = []
    for it in range(v.iterations):
        step_replies = relay.send(
            f"step-{it}",
            {
                p: (
                    {"phase": "step", "iteration": it},
                    pending[p],
                )
                for p in features
            },
        )
        parts: dict[str, bytes] = {}
        for p, r in step_replies.items():
            parts.update({f"{k}/{p}": b for k, b in r.parts.items()})
        label_reply = relay.send(
            f"label-step-{it}", {label: ({"phase": "label_step", "iteration": it}, parts)}
        )[label]
        pending = {
            p: {
                k.split("/", 1)[0]: b
                for k, b in label_reply.parts.items()
                if k.endswith(f"/{p}") or "/" not in k
            }
            for p in features
        }
        loss = _read(label_reply, VerticalLabelStepReply, label).loss
        history.append({"iteration": it + 1, "train_loss": loss})
        outputs.event("round", round=it + 1, total=v.iterations, task="vertical", train_loss=loss)
    eval_replies = relay.send("eval", {p: ({"phase": "eval"}, pending[p]) for p in features})
    parts = {}
    explanations: list[dict[str, Any]] = []
    for p, r in eval_replies.items():
        parts.update({f"{k}/{p}": b for k, b in r.parts.items()})
        explanations.append(_read(r, VerticalFeatureEvalReply, p).explanation.model_dump())
    final = relay.send("label-eval", {label: ({"phase": "label_eval"}, parts)})[label]
    evaluated = _read(final, VerticalLabelEvalReply, label)
    explanations.append(evaluated.explanation.model_dump())
    # Split NN: party importance is measured at the label holder (AUC drop when a
    # party's embeddings are shuffled); it replaces the parties' placeholders.
    drops = evaluated.metrics.party_importance_auc_drop
    for e in explanations:
        if e["party"] in drops:
            e["importance"] = drops[e["party"]]
    return VerticalResult(
        iterations=v.iterations,
        final=evaluated.metrics.model_dump(exclude_unset=True),
        explanations=sorted(explanations, key=lambda e: str(e["party"])),
        history=history,
        alignment=alignment,
    )
