"""The actions a partner answers once a request is admitted, and the table that routes them.

:func:`dispatch` sends an admitted :class:`Request` to its action's function in
:data:`ROUTES` when the job's kind allows it, else to :func:`answer` (the HANDLERS
of :mod:`client.handlers`), which protects the reply as the job says (masks, CKKS)
and adds this partner's signed binding of what it answered (:mod:`compliance.contribution`).
Each returns an :class:`Outcome`: what leaves, and how it is aggregated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedcollab.client import encryption, secagg_node, vertical
from fedcollab.client.admission import check_contributions
from fedcollab.client.audit import PartnerAudit, request_digest
from fedcollab.client.handlers import HANDLERS
from fedcollab.client.partner_data import PartnerData
from fedcollab.client.run_contract import RunContract
from fedcollab.client.vertical_store import VerticalStore
from fedcollab.common.errors import ComplianceError
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.keys import Signer
from fedcollab.common.messages import CosignRequest, DecryptRequest
from fedcollab.common.serde import Payload
from fedcollab.compliance.contribution import sign_contribution, sign_sum_receipt
from fedcollab.compliance.trail import digest_bytes, digest_parts, digest_vector
from fedcollab.privacy.dp_plan import DpPlan
from fedcollab.privacy.secagg_ckks import ckks_plaintext

__all__ = ["ROUTES", "Outcome", "Request", "Route", "answer", "dispatch", "reply_digest"]


@dataclass(frozen=True)
class Request:
    """An admitted request: what every action's function reads. Built by
    :func:`client.client_app._admit` only after every check and budget charge passed, so
    no action computes before them."""

    action: str
    step: str
    run: str
    config: Mapping[str, str]
    data: PartnerData
    spec: JobSpec
    payload: Payload
    audit: PartnerAudit | None
    contract: RunContract
    #: The request's digest as every partner of the step computes it (compliance.contribution):
    #: what a contribution's signed binding names.
    shared: str
    #: action, step, job, digest and run: the head of every trail event of this request.
    trail_body: Mapping[str, object]
    plan: DpPlan | None
    encrypted: bool

    @property
    def summed(self) -> str:
        """The aggregation a reply joins when its action names no other."""
        return "ckks-sum" if self.encrypted else "plaintext-sum"


@dataclass(frozen=True)
class Outcome:
    """An action's reply. What leaves is ``parts`` if any, else ``ciphertext`` if set, else
    ``vector`` (or meta alone): :func:`client.client_app._reply`, and the data.sent record
    digests the same."""

    meta: dict[str, Any]
    vector: np.ndarray | None
    #: How the reply is aggregated, as the data.sent record names it.
    aggregation: str
    ciphertext: bytes | None = None
    parts: dict[str, bytes] = field(default_factory=dict)


def dispatch(request: Request) -> Outcome:
    """The action's function from :data:`ROUTES` when its job condition holds; else
    :func:`answer` (HANDLERS), which refuses an action it does not know."""
    route = ROUTES.get(request.action)
    if route is not None and route.applies(request):
        return route.handle(request)
    return answer(request)


def _cosign(request: Request) -> Outcome:
    """``query.cosign``: cosign the coordinator's audit checkpoint (client.audit), then
    erase the run's job keys and vertical secrets (keys rotate per job)."""
    if request.audit is None:
        raise ComplianceError(
            "this node keeps no audit trail and cannot cosign",
            hint="start it with --audit-key (see `fedcollab node start --help`)",
        )
    cosigned = request.audit.cosign(
        request.payload.as_(CosignRequest).cosign.model_dump(),
        job_digest=request.spec.digest(),
        run=request.run,
    )
    meta: dict[str, Any] = {"cosigned": cosigned.encode()}
    spec = request.spec
    if request.encrypted or spec.privacy.masked or spec.task == "vertical":
        encryption.erase(request.config, run=request.run)  # keys rotate per job
    if spec.task == "vertical":
        VerticalStore.from_config(request.config, request.run).erase_secrets()
    return Outcome(meta, None, request.summed)


def _vertical(request: Request) -> Outcome:
    """``query.vertical`` of a vertical job: its protocol relays blobs (client.vertical)."""
    meta, parts = vertical.handle(
        request.config, request.data, request.spec, request.payload, request.audit
    )
    return Outcome(meta, None, "vertical-relay", parts=parts)


def _secagg_stage(request: Request) -> Outcome:
    """One secure-aggregation stage of a masked job (client.secagg_node)."""
    meta, parts = secagg_node.handle(
        request.config,
        request.spec,
        request.payload,
        run=request.run,
        step=request.step,
        me=request.data.partner,
        answered=lambda step: request.contract.request_of(request.run, step),
    )
    return Outcome(meta, None, "secagg-stage", parts=parts)


def _he_keygen(request: Request) -> Outcome:
    """``query.he_keygen`` of an encrypted job: this node's share of the job key."""
    meta = encryption.keygen(
        request.config, partner=request.data.partner, run=request.run, payload=request.payload
    )
    return Outcome(meta, None, request.summed)


def _he_decrypt(request: Request) -> Outcome:
    """``query.he_decrypt`` of an encrypted job: only after every contributor's signed
    binding checks out, and logged (he.decrypted) before the result leaves."""
    replies = check_contributions(
        request.contract, request.config, run=request.run, payload=request.payload
    )
    meta, vector = encryption.decrypt(
        request.config,
        partner=request.data.partner,
        run=request.run,
        payload=request.payload,
        spec=request.spec,
        replies=replies,
    )
    decrypted = meta.pop("decrypted")
    key = request.audit.key if request.audit is not None else request.config.get("audit-key")
    own = request.contract.request_of(request.run, str(meta["step"]))
    if key and own is not None:
        # What partners derive the next k-means step from (client.centroid_chain): this
        # node's signature that these values are the sum of the answers to ``own``.
        meta["receipt"] = sign_sum_receipt(
            Signer.load(key), partner=request.data.partner, run=request.run,
            step=str(meta["step"]), request=own, values=vector,
            contributors=[str(c) for c in meta["contributors"]],
        )  # fmt: skip
    if request.audit is not None:
        # What was decrypted, logged before the result leaves (audit crossref
        # checks it against the coordinator's aggregate and contributions): the
        # sum this node recomputed and each contributor's ciphertext digest.
        request.audit.record(
            "he.decrypted",
            {
                **request.trail_body,
                "step": str(meta["step"]),
                "ciphertext": decrypted["sum"],
                "inputs": decrypted["inputs"],
                # name -> the reply digest its signed statement names
                "contributors": {
                    str(b.statement["partner"]): str(b.statement["reply"])
                    for b in request.payload.as_(DecryptRequest).bindings
                    if b is not None
                },
            },
        )
    return Outcome(meta, vector, "ckks-decrypted-aggregate")


def answer(request: Request) -> Outcome:
    """Every other request: its HANDLERS function (an action it lacks raises KeyError,
    refused as a ProtocolError), the job's protection of the reply (masks, CKKS), then
    this partner's signed binding of what it answered (compliance.contribution)."""
    _limit_threads(request.action)
    meta, vector = HANDLERS[request.action](request.data, request.spec, request.payload)
    if request.action == "query.handshake":
        _handshake_offers(request, meta)
        outcome = Outcome(meta, vector, request.summed)
    elif request.spec.privacy.masked and vector is not None:
        outcome = _mask(request, meta, vector)
    elif request.encrypted and vector is not None:
        # Fails closed: without the job key this raises and nothing leaves.
        ciphertext, meta["he"] = encryption.encrypt_reply(
            request.config, partner=request.data.partner, run=request.run,
            request=request.payload, vector=vector, dealer=request.spec.privacy.key_dealer,
        )  # fmt: skip
        outcome = Outcome(meta, vector, request.summed, ciphertext=ciphertext)
    else:
        outcome = Outcome(meta, vector, request.summed)
    masked = outcome.aggregation == "masked-sum" and bool(outcome.parts)
    # The node's audit key signs, trail or not: a node with the key and no trail used to
    # send no statement, and every survivor of a masked step then refused to unmask it.
    key = request.audit.key if request.audit is not None else request.config.get("audit-key")
    if key and (outcome.vector is not None or outcome.ciphertext is not None or masked):
        # Masked words too: every survivor checks these before it reveals any share.
        reply = (
            digest_parts(outcome.parts)
            if masked
            else reply_digest(meta, outcome.vector, outcome.ciphertext)
        )
        meta["binding"] = sign_contribution(
            Signer.load(key), partner=request.data.partner, run=request.run,
            action=request.action, step=request.step, request=request.shared, reply=reply,
        )  # fmt: skip
    return outcome


def _handshake_offers(request: Request, meta: dict[str, Any]) -> None:
    """What the handshake adds for the job's later steps: the cosigned trail's size, the
    job-key offer (encrypted or vertical jobs), a vertical feature party's mask offer."""
    spec, partner = request.spec, request.data.partner
    if request.audit is not None:
        meta["cosigned_size"] = request.audit.cosigned_size()
    if request.encrypted or spec.task == "vertical":
        meta["he_offer"] = encryption.offer(request.config, partner=partner, run=request.run)
    if spec.task == "vertical" and partner in spec.vertical.feature_parties:
        meta["mask_offer"] = vertical.mask_offer(request.config, partner=partner, run=request.run)


def _mask(request: Request, meta: dict[str, Any], vector: np.ndarray) -> Outcome:
    """A masked job's reply (client.secagg_node): the masked words, alone or as limbs
    inside CKKS ("ckks+masked"); the vector itself never leaves."""
    # Fails closed: without a session and its envelopes this raises.
    masked, session = secagg_node.mask_reply(
        request.config, request.spec, request.payload,
        run=request.run, step=request.step, me=request.data.partner, vector=vector,
    )  # fmt: skip
    meta.pop("train_loss", None)  # one partner's statistic: not sent under masks
    if request.encrypted:  # "ckks+masked": the masked words as limbs inside CKKS
        ciphertext, meta["he"] = encryption.encrypt_masked(
            request.config, partner=request.data.partner, run=request.run,
            request=request.payload, limbs=ckks_plaintext(masked.vector(session)),
            dealer=request.spec.privacy.key_dealer,
        )  # fmt: skip
        return Outcome(meta, None, "ckks+masked-sum", ciphertext=ciphertext)
    return Outcome(meta, None, "masked-sum", parts={"masked": masked.to_bytes()})


@dataclass(frozen=True)
class Route:
    """An action answered outside HANDLERS, and the job condition it needs."""

    applies: Callable[[Request], bool]
    handle: Callable[[Request], Outcome]


#: The actions with a function of their own, each only for the jobs its condition names:
#: a request whose condition fails goes to answer() like any other action and, as
#: HANDLERS holds none of these actions, is refused there as a ProtocolError (tested).
ROUTES: Mapping[str, Route] = {
    "query.cosign": Route(lambda request: True, _cosign),
    "query.vertical": Route(lambda request: request.spec.task == "vertical", _vertical),
    secagg_node.ACTION: Route(lambda request: request.spec.privacy.masked, _secagg_stage),
    "query.he_keygen": Route(lambda request: request.encrypted, _he_keygen),
    "query.he_decrypt": Route(lambda request: request.encrypted, _he_decrypt),
}


def reply_digest(
    meta: Mapping[str, object], vector: np.ndarray | None, ciphertext: bytes | None
) -> str:
    """The digest both ends log for a reply: of the ciphertext, the vector, or the meta."""
    if ciphertext is not None:
        return digest_bytes(ciphertext)
    if vector is not None:
        return digest_vector(vector)
    return request_digest(meta, None)


def _limit_threads(action: str) -> None:
    """One core per partner process: simulations and demos run many side by side."""
    if action.startswith(("train.", "evaluate.")):
        import torch

        torch.set_num_threads(1)
