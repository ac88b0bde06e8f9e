"""The partner's Flower ClientApp (Message API).

Long module: one concept, the partner's request path, kept in one file so that the
order its safety rests on reads top to bottom: log the request, check it, charge the
budget, compute, log what leaves, send.

Every request goes through :func:`_serve`: decode, log its receipt, admit it
(:func:`_admit`: load and validate the partner's data, check the job is one this
partner takes part in and the step one its plan holds, charge the privacy budget),
answer it (:func:`_dispatch`: an action with a function of its own in
:data:`_ROUTES` when the job's kind allows it, else its HANDLERS entry; issue 17),
log the reply, encode. Any fedcollab error becomes a refusal reply that names the
error class only: no data values, file paths or row contents leave the partner;
the full diagnostics go to the node's own log.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedcollab.client import budget, encryption, secagg_node, vertical
from fedcollab.client.audit import PartnerAudit, request_digest
from fedcollab.client.contribution import (
    check_bindings,
    shared_request_digest,
    sign_contribution,
)
from fedcollab.client.grant_check import check_grant
from fedcollab.client.handlers import HANDLERS, check_job, dp_plan
from fedcollab.client.he_keys import load_peer_keys
from fedcollab.client.node_settings import NodeOptions
from fedcollab.client.partner_data import (
    PartnerData,
    PartnerSource,
    load_partner,
    partner_config,
    source_from_config,
)
from fedcollab.client.run_contract import (
    RequestPlan,
    RunContract,
    check_split,
    max_runs_per_day,
    node_split,
)
from fedcollab.client.vertical_store import VerticalStore
from fedcollab.common import batch
from fedcollab.common.errors import (
    CiphertextError,
    ComplianceError,
    FedcollabError,
    PolicyRefusal,
    ProtocolError,
)
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.keys import Signer
from fedcollab.common.messages import (
    CosignRequest,
    DecryptRequest,
    FedAvgRequest,
    PreprocessedRequest,
    RequestHead,
    request_model,
)
from fedcollab.common.serde import Payload, decode, encode
from fedcollab.compliance.trail import digest_bytes, digest_parts, digest_vector
from fedcollab.privacy.budget_ledger import BudgetLedger
from fedcollab.privacy.dp_plan import VALIDATION_STEP_SUFFIX, DpPlan, validates_rounds
from fedcollab.privacy.secagg_ckks import ckks_plaintext

__all__ = ["app", "make_client_app"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Request:
    """An admitted request: what every action's function reads. Built by :func:`_admit`
    only after every check and budget charge passed, so no action computes before them."""

    action: str
    step: str
    run: str
    config: Mapping[str, str]
    data: PartnerData
    spec: JobSpec
    payload: Payload
    audit: PartnerAudit | None
    contract: RunContract
    #: The request's digest as every partner of the step computes it (client.contribution):
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
class _Outcome:
    """An action's reply. What leaves is ``parts`` if any, else ``ciphertext`` if set, else
    ``vector`` (or meta alone): :func:`_reply`, and the data.sent record digests the same."""

    meta: dict[str, Any]
    vector: np.ndarray | None
    #: How the reply is aggregated, as the data.sent record names it.
    aggregation: str
    ciphertext: bytes | None = None
    parts: dict[str, bytes] = field(default_factory=dict)


def _serve(msg: Message, context: Context, overrides: Mapping[str, str]) -> Message:
    if msg.metadata.message_type == batch.ACTION:
        return Message(_serve_batch(msg.content, context, overrides), reply_to=msg)
    content = _answer_one(
        msg.metadata.message_type, msg.metadata.group_id, msg.content, context, overrides
    )
    return Message(content, reply_to=msg)


def _serve_batch(content: RecordDict, context: Context, overrides: Mapping[str, str]) -> RecordDict:
    """A ``query.batch`` message (:mod:`common.batch`): each request answered exactly as
    if it had come alone, in order (its own admission, plan, charge and trail records);
    a malformed envelope is refused whole and nothing in it is answered."""
    try:
        items = batch.unpack(content)
    except Exception as exc:  # any malformed envelope: refused whole, like a bad request
        text = exc.diagnostics() if isinstance(exc, FedcollabError) else repr(exc)[:200]
        log.error("refusing %s: %s", batch.ACTION, text)
        with contextlib.suppress(FedcollabError, KeyError, ValueError, TypeError):
            config = partner_config(context.node_config, overrides)
            audit = PartnerAudit.from_config(source_from_config(config).partner, config)
            if audit is not None:  # no job is named: the refusal is all there is to log
                audit.record("request.refused", {"action": batch.ACTION, "error": "ProtocolError"})
        reason = "ProtocolError at the partner; see its node log"
        return encode({"refused": "ProtocolError", "reason": reason})
    return batch.pack_replies(
        [_answer_one(item.action, item.step, item.content, context, overrides) for item in items]
    )


def _answer_one(
    action: str,
    step: str,
    content: RecordDict,
    context: Context,
    overrides: Mapping[str, str],
) -> RecordDict:
    """The reply content to one request (``action`` is its message type, ``step`` its
    group): the action's reply, or a refusal that carries no data."""
    audit: PartnerAudit | None = None
    trail_body: dict[str, object] = {"action": action, "step": step}
    try:
        # The node's own settings, validated first (client.node_settings): an unknown,
        # missing or malformed setting is refused before anything is computed. Never
        # from the run config the coordinator writes: a simulated node's come from the
        # overrides this process built its ClientApp with (client.partner_data).
        config = partner_config(context.node_config, overrides)
        source = source_from_config(config)
        payload = decode(content)
        # Digests of the meta as received (every key): what the trail and signatures name.
        shared = shared_request_digest(payload.meta, payload.vector)
        head = payload.as_(RequestHead)
        spec = JobSpec.from_json(head.job)
        trail_body.update(job=spec.name, digest=spec.digest(), run=head.run)
        # Bound here, not in _admit: the refusal of any later check is logged to it.
        audit = PartnerAudit.from_config(source.partner, config)
        if audit is not None:
            audit.record("request.received", _received(trail_body, payload, shared))
        request = _admit(
            config, source, spec, payload, audit,
            action=action, step=step, run=head.run, shared=shared, trail_body=trail_body,
            flower_run=str(context.run_id),
        )  # fmt: skip
        outcome = _dispatch(request)
        if audit is not None:
            # Logged before the reply leaves: an unlogged send cannot happen.
            audit.record("data.sent", _sent(request, outcome))
        log.debug("answered %s step %s of job %s (run %s)", action, step, spec.name, head.run)
        return _reply(outcome)
    except Exception as exc:
        if isinstance(exc, FedcollabError):
            kind, text = type(exc).__name__, exc.diagnostics()
        elif isinstance(exc, KeyError | ValueError | TypeError):
            kind, text = "ProtocolError", f"malformed request: {exc!r}"
        else:
            kind, text = "PartnerError", f"{type(exc).__name__}: {exc}"
            log.exception("unexpected failure in %s", action)
        log.error("refusing %s: %s", action, text)
        if audit is not None:
            with contextlib.suppress(FedcollabError):
                audit.record("request.refused", {**trail_body, "error": kind})
        return encode({"refused": kind, "reason": f"{kind} at the partner; see its node log"})


def _admit(
    config: Mapping[str, str],
    source: PartnerSource,
    spec: JobSpec,
    payload: Payload,
    audit: PartnerAudit | None,
    *,
    action: str,
    step: str,
    run: str,
    shared: str,
    trail_body: Mapping[str, object],
    flower_run: str,
) -> _Request:
    """Load and validate the partner's data, check that the job, its split and DP policy,
    and this step are ones this partner accepts, and charge the privacy budget: all
    before any action computes (over the cap, nothing is released)."""
    contract = RunContract.from_config(config)
    _erase_expired(contract, config)
    split = node_split(config)  # the partner's constant, never the coordinator's
    data = load_partner(
        source,
        validation_fraction=split.validation_fraction,
        test_fraction=split.test_fraction,
        split_seed=split.split_seed,
    )
    check_job(data, spec)
    check_grant(config, data, spec)
    check_split(split, spec)
    check_dp_policy(config, spec, dataset=budget.dataset_key(data))
    _check_plan(
        contract,
        spec,
        data.partner,
        action=action,
        step=step,
        run=run,
        payload=payload,
        shared=shared,
        flower_run=flower_run,
        max_runs=max_runs_per_day(config),
    )
    plan = dp_plan(spec)
    if plan is not None and action == "query.handshake":
        budget.check_job(config, data, spec, plan)  # refuse a job that would not fit
    elif plan is not None:
        # Charged before anything is computed: over the cap, nothing is released.
        budget.charge(config, data, spec, plan, action=action, run=run, step=step, audit=audit)
        if action == "train.fedavg" and validates_rounds(spec):
            # The round's validation histogram is a release of its own (dp_plan, Notes).
            budget.charge(
                config,
                data,
                spec,
                plan,
                action="train.validation",
                run=run,
                step=step + VALIDATION_STEP_SUFFIX,
                audit=audit,
            )
    return _Request(
        action=action,
        step=step,
        run=run,
        config=config,
        data=data,
        spec=spec,
        payload=payload,
        audit=audit,
        contract=contract,
        shared=shared,
        trail_body=trail_body,
        plan=plan,
        encrypted=spec.privacy.encrypted,
    )


def _dispatch(request: _Request) -> _Outcome:
    """The action's function from :data:`_ROUTES` when its job condition holds; else
    :func:`_answer` (HANDLERS), which refuses an action it does not know."""
    route = _ROUTES.get(request.action)
    if route is not None and route.applies(request):
        return route.handle(request)
    return _answer(request)


def _cosign(request: _Request) -> _Outcome:
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
    return _Outcome(meta, None, request.summed)


def _vertical(request: _Request) -> _Outcome:
    """``query.vertical`` of a vertical job: its protocol relays blobs (client.vertical)."""
    meta, parts = vertical.handle(
        request.config, request.data, request.spec, request.payload, request.audit
    )
    return _Outcome(meta, None, "vertical-relay", parts=parts)


def _secagg_stage(request: _Request) -> _Outcome:
    """One secure-aggregation stage of a masked job (client.secagg_node)."""
    meta, parts = secagg_node.handle(
        request.config,
        request.spec,
        request.payload,
        run=request.run,
        step=request.step,
        me=request.data.partner,
    )
    return _Outcome(meta, None, "secagg-stage", parts=parts)


def _he_keygen(request: _Request) -> _Outcome:
    """``query.he_keygen`` of an encrypted job: this node's share of the job key."""
    meta = encryption.keygen(
        request.config, partner=request.data.partner, run=request.run, payload=request.payload
    )
    return _Outcome(meta, None, request.summed)


def _he_decrypt(request: _Request) -> _Outcome:
    """``query.he_decrypt`` of an encrypted job: only after every contributor's signed
    binding checks out, and logged (he.decrypted) before the result leaves."""
    replies = _check_contributions(
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
    return _Outcome(meta, vector, "ckks-decrypted-aggregate")


def _answer(request: _Request) -> _Outcome:
    """Every other request: its HANDLERS function (an action it lacks raises KeyError,
    refused as a ProtocolError), the job's protection of the reply (masks, CKKS), then
    this partner's signed binding of what it answered (client.contribution)."""
    _limit_threads(request.action)
    meta, vector = HANDLERS[request.action](request.data, request.spec, request.payload)
    if request.action == "query.handshake":
        _handshake_offers(request, meta)
        outcome = _Outcome(meta, vector, request.summed)
    elif request.spec.privacy.masked and vector is not None:
        outcome = _mask(request, meta, vector)
    elif request.encrypted and vector is not None:
        # Fails closed: without the job key this raises and nothing leaves.
        ciphertext, meta["he"] = encryption.encrypt_reply(
            request.config, partner=request.data.partner, run=request.run,
            request=request.payload, vector=vector, dealer=request.spec.privacy.key_dealer,
        )  # fmt: skip
        outcome = _Outcome(meta, vector, request.summed, ciphertext=ciphertext)
    else:
        outcome = _Outcome(meta, vector, request.summed)
    if request.audit is not None and (outcome.vector is not None or outcome.ciphertext is not None):
        meta["binding"] = sign_contribution(
            Signer.load(request.audit.key), partner=request.data.partner, run=request.run,
            action=request.action, step=request.step, request=request.shared,
            reply=_reply_digest(meta, outcome.vector, outcome.ciphertext),
        )  # fmt: skip
    return outcome


def _handshake_offers(request: _Request, meta: dict[str, Any]) -> None:
    """What the handshake adds for the job's later steps: the cosigned trail's size, the
    job-key offer (encrypted or vertical jobs), a vertical feature party's mask offer."""
    spec, partner = request.spec, request.data.partner
    if request.audit is not None:
        meta["cosigned_size"] = request.audit.cosigned_size()
    if request.encrypted or spec.task == "vertical":
        meta["he_offer"] = encryption.offer(request.config, partner=partner, run=request.run)
    if spec.task == "vertical" and partner in spec.vertical.feature_parties:
        meta["mask_offer"] = vertical.mask_offer(request.config, partner=partner, run=request.run)


def _mask(request: _Request, meta: dict[str, Any], vector: np.ndarray) -> _Outcome:
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
        return _Outcome(meta, None, "ckks+masked-sum", ciphertext=ciphertext)
    return _Outcome(meta, None, "masked-sum", parts={"masked": masked.to_bytes()})


@dataclass(frozen=True)
class _Route:
    """An action answered outside HANDLERS, and the job condition it needs."""

    applies: Callable[[_Request], bool]
    handle: Callable[[_Request], _Outcome]


#: The actions with a function of their own, each only for the jobs its condition names:
#: a request whose condition fails goes to _answer like any other action and, as
#: HANDLERS holds none of these actions, is refused there as a ProtocolError (tested).
_ROUTES: Mapping[str, _Route] = {
    "query.cosign": _Route(lambda request: True, _cosign),
    "query.vertical": _Route(lambda request: request.spec.task == "vertical", _vertical),
    secagg_node.ACTION: _Route(lambda request: request.spec.privacy.masked, _secagg_stage),
    "query.he_keygen": _Route(lambda request: request.encrypted, _he_keygen),
    "query.he_decrypt": _Route(lambda request: request.encrypted, _he_decrypt),
}


def _received(trail_body: Mapping[str, object], payload: Payload, shared: str) -> dict[str, object]:
    """The request.received body: the request's own and shared digests (and its parts')."""
    return {
        **trail_body,
        "request": request_digest(payload.meta, payload.vector),
        "request_shared": shared,
        **({"request_parts": digest_parts(payload.parts)} if payload.parts else {}),
    }


def _sent(request: _Request, outcome: _Outcome) -> dict[str, object]:
    """The data.sent body: the digest and size of what leaves, and how it is protected."""
    return {
        **request.trail_body,
        "reply": digest_parts(outcome.parts)
        if outcome.parts
        else _reply_digest(outcome.meta, outcome.vector, outcome.ciphertext),
        "n_values": _n_values(outcome.meta, outcome.vector, outcome.ciphertext, outcome.parts),
        "privacy": {
            "mechanism": request.plan.level if request.plan is not None else "none",
            "aggregation": outcome.aggregation,
        },
    }


def _reply(outcome: _Outcome) -> RecordDict:
    """The reply's content: the parts, else the ciphertext, else the vector (or none)."""
    if outcome.parts:
        return encode(outcome.meta, parts=outcome.parts)
    if outcome.ciphertext is not None:
        return encode(outcome.meta, ciphertext=outcome.ciphertext)
    return encode(outcome.meta, outcome.vector)


def _check_plan(
    contract: RunContract,
    spec: JobSpec,
    partner: str,
    *,
    action: str,
    step: str,
    run: str,
    payload: Payload,
    shared: str,
    flower_run: str,
    max_runs: int,
) -> None:
    """Answer only what the accepted job plans, each step once (client.run_contract),
    in the one run of this Flower run, and only a request that fits its kind's model
    (common.messages: checked here, before the budget is charged)."""
    RequestPlan.for_job(spec, partner=partner).check(action, step)
    body = payload.as_(request_model(action, step))
    if action == "query.handshake":
        contract.pin(run, spec, flower_run=flower_run, max_runs=max_runs)
        return
    contract.check_pinned(run, spec, flower_run=flower_run)
    if isinstance(body, FedAvgRequest) and step != f"round-{body.round}":
        raise ProtocolError(
            f"training request {step!r} names round {body.round}",
            hint="a round's request must name its own round; refused",
        )
    if isinstance(body, DecryptRequest) and f"{body.he.step}.decrypt" != step:
        raise ProtocolError(
            "decryption request names another aggregate than its step",
            hint="each aggregate is decrypted once, at its own step; refused",
        )
    if spec.task != "vertical" or action == "query.cosign":
        contract.claim(run, action, step, request=shared)
    if isinstance(body, PreprocessedRequest):
        pre = {"preprocessor": body.preprocessor.model_dump()}
        contract.pin_value(run, "preprocessor", request_digest(pre, None))


def _check_contributions(
    contract: RunContract, config: Mapping[str, str], *, run: str, payload: Payload
) -> dict[str, str]:
    """Before a decryption: every contributor signed an answer to the request this node
    answered in that step (client.contribution)."""
    request = payload.as_(DecryptRequest)
    step = request.he.step
    own = contract.request_of(run, step)
    if own is None:
        raise CiphertextError(
            f"this node did not answer step {step!r}, so it cannot check what was asked",
            hint="the coordinator asks a contributor of the step to decrypt it; refused",
        )
    return check_bindings(
        request.bindings,
        peers=load_peer_keys(config),
        run=run,
        step=step,
        request=own,
        contributors=request.he.contributors,
    )


def check_dp_policy(config: Mapping[str, str], spec: JobSpec, *, dataset: str) -> None:
    """A node started with ``dp-only`` serves differentially private jobs only (the setting
    parsed by client.node_settings: true, false or auto); by default
    (``auto``) that holds for a dataset with a privacy-budget cap: a job without DP would
    release exact statistics that no ledger can charge, so the cap would bound nothing.
    Vertical jobs are outside ``auto``: the label holder charges its label-DP noise to
    that cap (client.vertical_training); ``true`` refuses them like any job without DP."""
    dp_only = NodeOptions.of(config).dp_only  # None: auto
    if spec.privacy.dp != "none" or dp_only is False:
        return
    if dp_only:
        raise PolicyRefusal(
            f"this partner serves only differentially private jobs; job {spec.name!r} has "
            "privacy.dp = 'none'",
            hint="set [privacy] dp = 'sample' (or 'client') with a target_epsilon, or ask "
            "the partner to start its node without --dp-only",
        )
    if spec.task == "vertical":
        # The label holder charges label-DP on every residual it releases to its own
        # ledger (client.vertical_training), which needs the cap: "auto" does not apply.
        return
    if _has_cap(config, dataset):
        raise PolicyRefusal(
            f"dataset {dataset!r} has a privacy-budget cap at this partner, and job "
            f"{spec.name!r} has privacy.dp = 'none': its exact releases cannot be charged",
            hint="set [privacy] dp = 'sample' (or 'client') with a target_epsilon, or ask "
            "the partner to allow jobs without DP on this dataset (`fedcollab node start "
            "--no-dp-only`)",
        )


def _has_cap(config: Mapping[str, str], dataset: str) -> bool:
    """Whether the node's ledger (if it has one on disk) caps ``dataset``."""
    try:
        path = budget.ledger_path(config)
    except FedcollabError:
        return False
    if not path.exists():
        return False
    with BudgetLedger.open(path) as ledger:
        return any(b.dataset == dataset for b in ledger.datasets())


def _erase_expired(contract: RunContract, config: Mapping[str, str]) -> None:
    """Per-run secrets of runs pinned more than KEY_TTL_S ago (a failed job's too)."""
    for run in contract.expired():
        with contextlib.suppress(FedcollabError, OSError):
            encryption.erase(config, run=run)
        with contextlib.suppress(FedcollabError, OSError):
            VerticalStore.from_config(config, run).erase_secrets()


def _n_values(
    meta: Mapping[str, object],
    vector: np.ndarray | None,
    ciphertext: bytes | None,
    parts: Mapping[str, bytes],
) -> int:
    """How much data a reply carries: values, or bytes of relayed blobs (vertical)."""
    if parts:
        return sum(len(b) for b in parts.values())
    if ciphertext is not None:
        he = meta["he"]
        assert isinstance(he, Mapping)
        return int(he["length"])
    return 0 if vector is None else int(vector.size)


def _reply_digest(
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


def make_client_app(overrides: Mapping[str, str] | None = None) -> ClientApp:
    """A ClientApp; ``overrides`` add run-config keys (the simulation's partner files)."""
    fixed = dict(overrides or {})
    client_app = ClientApp()

    def serve(msg: Message, context: Context) -> Message:
        return _serve(msg, context, fixed)

    for category, action in (
        ("query", "handshake"),
        ("query", "moments"),
        ("train", "fedavg"),
        ("evaluate", "fedavg"),
        ("evaluate", "permutation"),
        ("query", "kmeans_seed"),
        ("query", "kmeans_step"),
        ("query", "segment_profile"),
        ("query", "cosign"),
        ("query", "he_keygen"),
        ("query", "he_decrypt"),
        ("query", "vertical"),
        ("query", "secagg"),
        ("query", "batch"),
    ):
        getattr(client_app, category)(action)(serve)
    return client_app


#: The ClientApp a real SuperNode runs (pyproject ``[tool.flwr.app.components]``).
app = make_client_app()
