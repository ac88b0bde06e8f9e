"""What a partner admits before it computes: the accepted job's plan, its DP policy,
and, before a decryption, every contributor's signed answer.

Called by :func:`client.client_app._admit` (and by :mod:`client.actions` for a
decryption) in the order the partner's safety rests on: the request must be a step
of the job this partner pinned at its handshake (:class:`client.run_contract.RunContract`,
:class:`client.run_contract.RequestPlan`), of a job its DP policy serves
(:func:`check_dp_policy`), and, for a decryption, of a step whose every contributor
signed an answer to the request this node answered (:mod:`compliance.contribution`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from fedcollab.client import budget, encryption
from fedcollab.client.audit import request_digest
from fedcollab.client.he_keys import load_peer_keys
from fedcollab.client.node_settings import NodeOptions
from fedcollab.client.run_contract import RequestPlan, RunContract
from fedcollab.client.vertical_store import VerticalStore
from fedcollab.common.errors import CiphertextError, FedcollabError, PolicyRefusal, ProtocolError
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.messages import (
    DecryptRequest,
    FedAvgRequest,
    MomentsRequest,
    PreprocessedRequest,
    request_model,
)
from fedcollab.common.serde import Payload
from fedcollab.compliance.contribution import check_bindings
from fedcollab.privacy.budget_ledger import BudgetLedger

__all__ = ["check_contributions", "check_dp_policy", "check_plan", "erase_expired"]


def check_plan(
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
    if isinstance(body, MomentsRequest):  # what a k-means chain derives the preprocessor with
        layout = {"layout": body.layout.model_dump()}
        contract.pin_value(run, "layout", request_digest(layout, None))
    if isinstance(body, PreprocessedRequest):
        pre = {"preprocessor": body.preprocessor.model_dump()}
        contract.pin_value(run, "preprocessor", request_digest(pre, None))


def check_contributions(
    contract: RunContract, config: Mapping[str, str], *, run: str, payload: Payload
) -> dict[str, str]:
    """Before a decryption: every contributor signed an answer to the request this node
    answered in that step (compliance.contribution)."""
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


def erase_expired(contract: RunContract, config: Mapping[str, str]) -> None:
    """Per-run secrets of runs pinned more than KEY_TTL_S ago (a failed job's too)."""
    for run in contract.expired():
        with contextlib.suppress(FedcollabError, OSError):
            encryption.erase(config, run=run)
        with contextlib.suppress(FedcollabError, OSError):
            VerticalStore.from_config(config, run).erase_secrets()
