"""A partner's side of a vertical job (``query.vertical``; the phase's request model is
common.messages.vertical's, chosen by the meta's ``phase``).

The coordinator relays; this module decides what may leave the partner:

==============  ==============  =============================================
phase           who             sends back (through the relay)
==============  ==============  =============================================
``psi_salt``    label holder    a fresh PSI salt, sealed to each feature party
``psi_own``     every party     its ids, hashed with the salt and blinded with
                                its PSI key, sealed to the set's next hop
``psi_hop``     every party     the set its route's previous hop sealed to it,
                                blinded with its key too, sealed to the next
                                hop; at the last hop sealed to the label holder
``intersect``   label holder    each party's aligned positions, sealed to it;
                                the public CKKS context (no secret key)
``step``        feature party   masked partial scores sealed to the label
                                holder; masked gradient under its CKKS key
``label_step``  label holder    the residual under its CKKS key; each party's
                                decrypted masked gradient, sealed to it
``eval``        feature party   masked test-row scores sealed to the label
                                holder; its explanation as it allows
``label_eval``  label holder    test metrics; its explanation as it allows
==============  ==============  =============================================

Every sealed payload names its sender, recipient and protocol step and is
signed with the sender's audit key (:mod:`privacy.envelope`); a payload that
does not check against the pinned peer keys is refused. State between
messages lives in :class:`client.vertical_store.VerticalStore`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from fedcollab.client import vertical_oprf
from fedcollab.client.audit import PartnerAudit
from fedcollab.client.he_keys import NodeKeyStore, load_peer_keys
from fedcollab.client.node_settings import NodeOptions
from fedcollab.client.partner_data import PartnerData
from fedcollab.client.run_contract import RunContract, vertical_plan
from fedcollab.client.vertical_store import VerticalStore, array_bytes, bytes_array
from fedcollab.common.errors import PolicyRefusal, ProtocolError
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.keys import Signer
from fedcollab.common.messages import VerticalBase, VerticalRequest
from fedcollab.common.messages.vertical import ModelStepRequest, PsiHopRequest, VerticalPhase
from fedcollab.common.serde import Payload
from fedcollab.compliance.trail import digest_parts
from fedcollab.privacy.envelope import open_envelope, seal
from fedcollab.privacy.key_transport import PeerKeys, transport_offer, verify_offer
from fedcollab.privacy.masking import MaskingKey
from fedcollab.protocols import psi

__all__ = ["Parts", "PartyContext", "handle", "mask_offer"]

Parts = dict[str, bytes]
Reply = tuple[dict[str, Any], Parts]


class PartyContext:
    """Everything one request needs: who we are, our keys, the job, our store."""

    def __init__(
        self,
        config: Mapping[str, str],
        data: PartnerData,
        spec: JobSpec,
        payload: Payload,
        audit: PartnerAudit | None = None,
    ) -> None:
        self.config, self.data, self.spec, self.payload = config, data, spec, payload
        self.audit = audit
        self.me = data.partner
        self.keys = payload.as_(VerticalBase)  # the run and the parties' signed keys
        self.run = self.keys.run
        self.store = VerticalStore.from_config(config, self.run)
        self.v = spec.vertical
        self.label = self.v.label_holder
        self._peers: PeerKeys | None = None

    @property
    def request(self) -> VerticalPhase:
        """The request as its phase's model (common.messages.vertical)."""
        return self.payload.as_(VerticalRequest).root

    @property
    def peers(self) -> PeerKeys:
        if self._peers is None:
            self._peers = load_peer_keys(self.config)
        return self._peers

    @property
    def signer(self) -> Signer:
        key = self.config.get("audit-key")
        if not key:
            raise ProtocolError(
                "vertical jobs need this node's audit key (it signs sealed payloads)",
                hint="start the node with --audit-key",
            )
        return Signer.load(key)

    def offer_key(self, party: str) -> bytes:
        """``party``'s transport key from the relayed offers, checked against our pins."""
        offers = self.keys.offers
        if party not in offers:
            raise ProtocolError(f"the request carries no transport key offer of {party!r}")
        return verify_offer(offers[party], run=self.run, partner=party, peers=self.peers)

    def seal_to(self, party: str, topic: str, data: bytes) -> bytes:
        return seal(
            data,
            run=self.run,
            sender=self.me,
            recipient=party,
            topic=topic,
            recipient_key=self.offer_key(party),
            signer=self.signer,
        ).to_bytes()

    def open_from(self, party: str, topic: str, raw: bytes) -> bytes:
        key = NodeKeyStore.from_config(self.config).transport_key(self.run)
        return open_envelope(
            raw, run=self.run, me=self.me, sender=party, topic=topic, key=key, peers=self.peers
        )

    def psi_config(self) -> psi.PsiConfig:
        salt = self.store.get("psi.salt") if self.store.has("psi.salt") else b""
        return psi.PsiConfig(
            run=self.run, parties=tuple(sorted(self.v.parties)), label_holder=self.label, salt=salt
        )

    def psi_party(self) -> psi.PsiParty:
        key = self.store.get("psi.key") if self.store.has("psi.key") else None
        party = psi.PsiParty(self.me, self.psi_config(), key=key)
        if key is None:
            self.store.put("psi.key", party.key_bytes)
        return party


def mask_offer(config: Mapping[str, str], *, partner: str, run: str) -> dict[str, str]:
    """A feature party's per-run masking key (pairwise masks of partial scores), signed."""
    store = VerticalStore.from_config(config, run)
    if store.has("mask.key"):
        key = MaskingKey.from_bytes(store.get("mask.key"))
    else:
        key = MaskingKey.generate()
        store.put("mask.key", key.to_bytes())
    signer = Signer.load(config["audit-key"])
    return transport_offer(key, run=f"{run}#mask", partner=partner, signer=signer)


# -- PSI ----------------------------------------------------------------------
def _psi_rows(p: PartyContext) -> np.ndarray:
    """This party's rows in the PSI: all of them, or the label holder's query ids in a
    joint-inference job."""
    if p.v.predict_with and p.me == p.label:
        from fedcollab.client.vertical_inference import query_rows

        return query_rows(p)
    return np.arange(p.data.dataset.n_rows, dtype=np.int64)


def _psi_salt(p: PartyContext) -> Reply:
    """The label holder draws the run's PSI salt and seals it to every feature party
    (HPKE: X25519 agreement, HKDF-SHA256, AES-256-GCM; signed): the relay never holds it,
    so it cannot hash candidate ids."""
    if p.store.has("psi.salt"):
        raise ProtocolError("this run's PSI salt was already drawn")
    salt = secrets.token_bytes(psi.SALT_BYTES)
    p.store.put("psi.salt", salt)
    meta: dict[str, Any] = {}
    if p.v.psi == "cm20":  # the set size is a public input of CM20 (client.vertical_oprf)
        rows = _psi_rows(p)
        p.store.put_array("psi.rows", rows)
        meta["n_values"] = int(rows.size)
    return meta, {f"salt/{q}": p.seal_to(q, "psi/salt", salt) for q in p.v.feature_parties}


def _hop_topic(owner: str, hop: int) -> str:
    return f"psi/{owner}/hop-{hop}"


def _psi_own(p: PartyContext) -> Reply:
    if p.me != p.label:
        salt = p.open_from(p.label, "psi/salt", p.payload.part("salt"))
        if len(salt) != psi.SALT_BYTES:
            raise ProtocolError("the label holder's PSI salt has the wrong length")
        p.store.put("psi.salt", salt)
    elif not p.store.has("psi.salt"):
        raise ProtocolError("the label holder has drawn no PSI salt for this run")
    party = p.psi_party()
    rows = _psi_rows(p)
    p.store.put_array("psi.rows", rows)
    blob, permutation = party.blind_own([str(i) for i in p.data.dataset.ids[rows]])
    p.store.put_array("psi.permutation", permutation)
    route = psi.ring_route(p.psi_config(), p.me)
    return {"n_values": len(blob) // 32}, {"set": p.seal_to(route[1], _hop_topic(p.me, 1), blob)}


def _psi_hop(p: PartyContext) -> Reply:
    """Blind ``owner``'s set at ``hop``: only as sealed and signed by the route's previous
    hop for this (run, owner, hop), once; ``final`` follows from the route."""
    request = p.request
    if not isinstance(request, PsiHopRequest):
        raise ProtocolError("a PSI hop request names no owner and hop")
    owner, hop = request.owner, request.hop
    route = psi.ring_route(p.psi_config(), owner)
    if hop < 1 or hop >= len(route) or route[hop] != p.me:
        raise ProtocolError(f"this node is not hop {hop} of {owner!r}'s set")
    marker = f"psi.blinded.{owner}.{hop}"
    if p.store.has(marker):
        raise ProtocolError(f"{owner!r}'s set was already blinded at hop {hop} in this run")
    p.store.put(marker, b"1")
    incoming = p.open_from(route[hop - 1], _hop_topic(owner, hop), p.payload.part("set"))
    blinded = p.psi_party().blind(incoming)
    if hop < len(route) - 1:
        return {}, {"set": p.seal_to(route[hop + 1], _hop_topic(owner, hop + 1), blinded)}
    if p.me == p.label:
        p.store.put(f"psi.full.{owner}", blinded)  # stays here: the relay never sees it
        return {}, {"set": b""}
    return {}, {"set": p.seal_to(p.label, f"psi/full/{owner}", blinded)}


def _intersect_sets(p: PartyContext) -> dict[str, np.ndarray]:
    if p.v.psi == "cm20":
        return vertical_oprf.intersect(p)
    config = p.psi_config()
    full: dict[str, bytes] = {}
    for owner in config.parties:
        last = psi.ring_route(config, owner)[-1]
        if last == p.me:
            full[owner] = p.store.get(f"psi.full.{owner}")
        else:
            raw = p.payload.part(f"full/{owner}")
            full[owner] = p.open_from(last, f"psi/full/{owner}", raw)
    positions = psi.intersect(full)
    p.store.put("psi.sizes.json", json.dumps({o: len(b) // 32 for o, b in full.items()}).encode())
    return positions


def _aligned_label_rows(p: PartyContext, positions: Mapping[str, np.ndarray]) -> Parts:
    """Keep our own aligned rows; seal each other party's positions to it (padded
    to its set size, so the sealed length tells the relay nothing new)."""
    sizes = json.loads(p.store.get("psi.sizes.json"))
    rows = p.store.get_array("psi.rows")
    own = psi.aligned_rows(positions[p.me], p.store.get_array("psi.permutation"))
    p.store.put_array("aligned", rows[own])
    out: Parts = {}
    for party, pos in positions.items():
        if party == p.me:
            continue
        padded = np.full(int(sizes[party]), -1, dtype=np.int64)
        padded[: len(pos)] = pos
        out[f"align/{party}"] = p.seal_to(party, f"psi/align/{party}", array_bytes(padded))
    return out


def _accept_alignment(p: PartyContext) -> None:
    raw = p.open_from(p.label, f"psi/align/{p.me}", p.payload.part("align"))
    padded = bytes_array(raw, what="aligned positions")
    positions = padded[padded >= 0].astype(np.int64)
    rows = p.store.get_array("psi.rows")
    own = psi.aligned_rows(positions, p.store.get_array("psi.permutation"))
    p.store.put_array("aligned", rows[own])


def _check_label_policy(p: PartyContext) -> None:
    """The label holder's node refuses a plaintext job (its residuals would go to every
    feature party in the clear) unless started with ``allow-plaintext-vertical`` for
    testing; the coordinator cannot choose it for the label holder."""
    if not p.spec.privacy.encrypted and not NodeOptions.of(p.config).allow_plaintext_vertical:
        raise PolicyRefusal(
            f"job {p.spec.name!r} runs the vertical job without encryption; this node holds "
            "the labels and refuses to release its residuals in the clear",
            hint="set [privacy] encryption = 'ckks', or (tests only) start the label "
            "holder's node with --allow-plaintext-vertical",
        )


def _claim(p: PartyContext, phase: str) -> None:
    """Answer each planned step once per run (client.run_contract.vertical_plan).

    The step a request names must be a step of the pinned job's plan for this
    party, for this phase, with the iteration or hop its name carries; it is
    claimed in the node's run contract before anything is computed, so a repeat
    (another alignment, a fresh noisy embedding, a second decryption of an
    iteration) is refused.
    """
    request = p.request
    step = request.step
    if vertical_plan(p.spec, partner=p.me).get(step) != phase:
        raise ProtocolError(
            f"step {step!r} is not a {phase!r} step of this job's plan for {p.me!r}",
            hint="a vertical party answers only the steps its accepted job plans; refused",
        )
    number = step.rsplit("-", 1)[-1]
    if isinstance(request, PsiHopRequest) and str(request.hop) != number:
        raise ProtocolError(f"step {step!r} names hop {request.hop}")
    if isinstance(request, ModelStepRequest) and str(request.iteration) != number:
        raise ProtocolError(f"step {step!r} names iteration {request.iteration}")
    RunContract.from_config(p.config).claim(
        p.run, "query.vertical", step, request=digest_parts(p.payload.parts)
    )


class _Steps(Protocol):
    """The model steps of one vertical model (client.vertical_training / vertical_split)."""

    def label_setup(self, p: PartyContext) -> Reply: ...
    def label_step(self, p: PartyContext) -> Reply: ...
    def label_eval(self, p: PartyContext) -> Reply: ...
    def feature_setup(self, p: PartyContext) -> None: ...
    def feature_step(self, p: PartyContext) -> Reply: ...
    def feature_eval(self, p: PartyContext) -> Reply: ...


def handle(
    config: Mapping[str, str],
    data: PartnerData,
    spec: JobSpec,
    payload: Payload,
    audit: PartnerAudit | None = None,
) -> Reply:
    """Serve one ``query.vertical`` request; returns (meta, parts)."""
    # The model steps (imported here: they import this module's types).
    from fedcollab.client import vertical_inference, vertical_split, vertical_training

    training: _Steps = vertical_training if spec.vertical.model == "logreg" else vertical_split
    p = PartyContext(config, data, spec, payload, audit)
    phase = p.request.phase
    if p.me not in spec.vertical.parties:
        raise ProtocolError(f"{p.me!r} is not a party of this vertical job")
    role = spec.vertical.parties[p.me].role
    allowed = {
        "psi_salt": "label_holder",
        "psi_own": "any",
        "psi_hop": "any",
        **{phase: role for phase, (role, _) in vertical_oprf.PHASES.items()},
        "intersect": "label_holder",
        "label_step": "label_holder",
        "label_eval": "label_holder",
        "step": "feature_party",
        "eval": "feature_party",
        "predict": "feature_party",
        "label_predict": "label_holder",
    }
    if phase not in allowed:
        raise ProtocolError(f"unknown vertical phase {phase!r}")
    if allowed[phase] not in ("any", role):
        raise ProtocolError(f"phase {phase!r} is not for a {role}")
    if role == "label_holder":
        _check_label_policy(p)
    _claim(p, phase)
    if phase == "psi_salt":
        return _psi_salt(p)
    if phase == "psi_own":
        return _psi_own(p)
    if phase == "psi_hop":
        return _psi_hop(p)
    if phase in vertical_oprf.PHASES:
        return vertical_oprf.PHASES[phase][1](p)
    if phase in ("predict", "label_predict") and not spec.vertical.predict_with:
        raise ProtocolError(f"phase {phase!r} belongs to joint-inference jobs")
    if phase == "predict":
        if "align" in payload.parts:
            _accept_alignment(p)
        return vertical_inference.feature_predict(p)
    if phase == "label_predict":
        return vertical_inference.label_predict(p)
    if phase == "intersect" and spec.vertical.predict_with:
        parts = _aligned_label_rows(p, _intersect_sets(p))
        return {"alignment": {"intersection": len(p.store.get_array("aligned"))}}, parts
    if phase == "intersect":
        parts = _aligned_label_rows(p, _intersect_sets(p))
        meta, more = training.label_setup(p)
        return meta, {**parts, **more}
    if phase == "step":
        if "align" in payload.parts:
            _accept_alignment(p)
            training.feature_setup(p)
        return training.feature_step(p)
    if phase == "label_step":
        return training.label_step(p)
    if phase == "eval":
        return training.feature_eval(p)
    return training.label_eval(p)
