"""The partner's Flower ClientApp (Message API): the request path.

Every request goes through :func:`_serve`, in the order the partner's safety rests
on: decode, log its receipt, admit it (:func:`_admit`: load and validate the
partner's data; check the job is one this partner takes part in, the step one its
plan holds, the DP policy one it serves (:mod:`client.admission`); charge the privacy
budget), answer it (:func:`client.actions.dispatch`: an action with a function of its
own in :data:`client.actions.ROUTES` when the job's kind allows it, else its HANDLERS
entry; issue 17), log what leaves, encode. Nothing is computed before the checks and
the charge: :class:`client.actions.Request` is built only by :func:`_admit`. Any
fedcollab error becomes a refusal reply that names the error class only: no data
values, file paths or row contents leave the partner; the full diagnostics go to the
node's own log.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedcollab.client import budget
from fedcollab.client.actions import Outcome, Request, dispatch, reply_digest
from fedcollab.client.admission import check_dp_policy, check_plan, erase_expired
from fedcollab.client.audit import PartnerAudit, request_digest
from fedcollab.client.centroid_chain import check_centroids
from fedcollab.client.grant_check import check_grant
from fedcollab.client.handlers import check_job, dp_plan
from fedcollab.client.partner_data import (
    PartnerSource,
    load_partner,
    partner_config,
    source_from_config,
)
from fedcollab.client.run_contract import (
    RunContract,
    check_split,
    max_runs_per_day,
    node_split,
)
from fedcollab.common import batch
from fedcollab.common.errors import FedcollabError
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.messages import RequestHead
from fedcollab.common.serde import Payload, decode, encode
from fedcollab.compliance.contribution import shared_request_digest
from fedcollab.compliance.trail import digest_parts
from fedcollab.privacy.dp_plan import VALIDATION_STEP_SUFFIX, validates_rounds

__all__ = ["app", "make_client_app"]

log = logging.getLogger(__name__)


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
    with contextlib.ExitStack() as stack:
        # One open of the partner's trail for the whole batch (PartnerAudit.session); a
        # node whose settings are broken refuses each item on its own, as before.
        with contextlib.suppress(FedcollabError, KeyError, ValueError, TypeError):
            config = partner_config(context.node_config, overrides)
            audit = PartnerAudit.from_config(source_from_config(config).partner, config)
            if audit is not None:
                stack.enter_context(audit.session())
        return batch.pack_replies(
            [_answer_one(item.action, item.step, item.content, context, overrides)
             for item in items]
        )  # fmt: skip


def _answer_one(
    action: str,
    step: str,
    content: RecordDict,
    context: Context,
    overrides: Mapping[str, str],
) -> RecordDict:
    """The reply content to one request (``action`` is its message type, ``step`` its
    group): the action's reply, or a refusal that carries no data."""
    with contextlib.ExitStack() as stack:
        return _answer_in(action, step, content, context, overrides, stack)


def _answer_in(
    action: str,
    step: str,
    content: RecordDict,
    context: Context,
    overrides: Mapping[str, str],
    stack: contextlib.ExitStack,
) -> RecordDict:
    """:func:`_answer_one`, the partner's trail kept open on ``stack`` once known."""
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
            stack.enter_context(audit.session())  # one open for every record below
            audit.record("request.received", _received(trail_body, payload, shared))
        request = _admit(
            config, source, spec, payload, audit,
            action=action, step=step, run=head.run, shared=shared, trail_body=trail_body,
            flower_run=str(context.run_id),
        )  # fmt: skip
        outcome = dispatch(request)
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
) -> Request:
    """Load and validate the partner's data, check that the job, its split and DP policy,
    and this step are ones this partner accepts, and charge the privacy budget: all
    before any action computes (over the cap, nothing is released)."""
    contract = RunContract.from_config(config)
    erase_expired(contract, config)
    split = node_split(config)  # the partner's constant, never the coordinator's
    data = load_partner(
        source,
        validation_fraction=split.validation_fraction,
        test_fraction=split.test_fraction,
        split_seed=split.split_seed,
    )
    check_job(data, spec)
    spec.check_value_bounds()  # a DP job without them: refused before anything is charged
    check_grant(config, data, spec)
    check_split(split, spec)
    check_dp_policy(config, spec, dataset=budget.dataset_key(data))
    check_plan(
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
    # After the step is claimed: a refused k-means step stays answered (no retry).
    check_centroids(
        contract, config, spec, me=data.partner, action=action, step=step, run=run,
        payload=payload,
    )  # fmt: skip
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
    return Request(
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


def _received(trail_body: Mapping[str, object], payload: Payload, shared: str) -> dict[str, object]:
    """The request.received body: the request's own and shared digests (and its parts')."""
    return {
        **trail_body,
        "request": request_digest(payload.meta, payload.vector),
        "request_shared": shared,
        **({"request_parts": digest_parts(payload.parts)} if payload.parts else {}),
    }


def _sent(request: Request, outcome: Outcome) -> dict[str, object]:
    """The data.sent body: the digest and size of what leaves, and how it is protected."""
    return {
        **request.trail_body,
        "reply": digest_parts(outcome.parts)
        if outcome.parts
        else reply_digest(outcome.meta, outcome.vector, outcome.ciphertext),
        "n_values": _n_values(outcome.meta, outcome.vector, outcome.ciphertext, outcome.parts),
        "privacy": {
            "mechanism": request.plan.level if request.plan is not None else "none",
            "aggregation": outcome.aggregation,
        },
    }


def _reply(outcome: Outcome) -> RecordDict:
    """The reply's content: the parts, else the ciphertext, else the vector (or none)."""
    if outcome.parts:
        return encode(outcome.meta, parts=outcome.parts)
    if outcome.ciphertext is not None:
        return encode(outcome.meta, ciphertext=outcome.ciphertext)
    return encode(outcome.meta, outcome.vector)


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
