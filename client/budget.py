"""A partner node's privacy-budget checks, before anything leaves it.

The node keeps one ledger (:class:`privacy.budget_ledger.BudgetLedger`,
``budget-db`` in its config; by default ``budget.db`` beside its audit log).
Each dataset (keyed by the dataset name in its schema) has a cap set by the
partner (``fedcollab budget set``; ``fedcollab run --budget-cap`` in a simulation).

- At the handshake of a DP job, the node checks that the whole job at its
  maximum length fits in what is left (:func:`check_job`). If it does not, the
  node refuses to join (``BudgetExceededError``), and the job runs without it.
- Before each request that releases a DP output, the node charges that
  request's mechanism (:func:`charge`). The charge is atomic and keyed by
  (run, step), so a round is counted exactly once. A charge over the cap is
  refused before the output is computed. A request that was already charged
  is refused: a fresh noisy answer to the same step would be a second release.

Every charge is logged in the partner's audit trail as ``privacy.spent``
(the compliance report's privacy-budget section).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedcollab.client.audit import PartnerAudit
from fedcollab.client.partner_data import PartnerData
from fedcollab.common.errors import BudgetExceededError, PrivacyError
from fedcollab.common.jobspec import JobSpec
from fedcollab.privacy.accounting import Mechanism, epsilon
from fedcollab.privacy.budget_ledger import BudgetLedger, Charge
from fedcollab.privacy.dp_plan import DpPlan

__all__ = ["charge", "charge_mechanism", "check_job", "dataset_key", "ledger_path"]


def ledger_path(config: Mapping[str, str]) -> Path:
    if config.get("budget-db"):
        return Path(config["budget-db"])
    if config.get("state-dir"):
        return Path(config["state-dir"]) / "budget.db"
    if config.get("audit-db"):
        return Path(config["audit-db"]).with_name("budget.db")
    raise PrivacyError(
        "this node has no privacy-budget ledger and cannot take part in DP jobs",
        hint="start it with --audit-key (the ledger lives beside the audit log) or --budget-db",
    )


def dataset_key(data: PartnerData) -> str:
    """Budgets are per dataset name, so a new version of the same data shares its budget."""
    return data.dataset.schema.dataset


def check_job(
    config: Mapping[str, str], data: PartnerData, spec: JobSpec, plan: DpPlan
) -> dict[str, Any]:
    """Refuse a job whose planned spend would exceed this dataset's cap."""
    dataset = dataset_key(data)
    with BudgetLedger.open(ledger_path(config)) as ledger:
        budget = ledger.budget(dataset)  # no cap: PrivacyError (fail closed)
        past = [c.mechanism for c in ledger.charges(dataset)]
    planned = plan.planned()
    total = epsilon([*past, *planned], target_delta=budget.delta)
    if total > budget.cap_epsilon * (1 + 1e-9):
        raise BudgetExceededError(
            f"job {spec.name!r} would bring dataset {dataset!r} to epsilon {total:.3f}, over "
            f"its cap {budget.cap_epsilon:g} (spent so far {budget.spent_epsilon:.3f})",
            hint="the partner may raise its cap (`fedcollab budget set`; in a simulation "
            "`fedcollab run --budget-cap`); the operator may lower the job's rounds or raise "
            "its noise",
        )
    return {"spent": budget.spent_epsilon, "cap": budget.cap_epsilon, "after_job": total}


def charge(
    config: Mapping[str, str],
    data: PartnerData,
    spec: JobSpec,
    plan: DpPlan,
    *,
    action: str,
    run: str,
    step: str,
    audit: PartnerAudit | None,
) -> Charge | None:
    """Charge one request's mechanism (None if it releases nothing DP-protected)."""
    mechanism = plan.mechanism_for(action)
    if mechanism is None:
        return None
    return charge_mechanism(config, data, spec, mechanism, run=run, step=step, audit=audit)


def charge_mechanism(
    config: Mapping[str, str],
    data: PartnerData,
    spec: JobSpec,
    mechanism: Mechanism,
    *,
    run: str,
    step: str,
    audit: PartnerAudit | None,
) -> Charge:
    """Charge ``mechanism`` as step ``step`` of ``run`` (refused over the cap or replayed)."""
    dataset = dataset_key(data)
    with BudgetLedger.open(ledger_path(config)) as ledger:
        spent = ledger.charge(dataset, job=spec.name, run=run, step=step, mechanism=mechanism)
    if spent.replay:
        raise PrivacyError(
            f"step {step!r} of run {run} was already answered and charged",
            hint="a repeated request would be a second noisy release; refused",
        )
    if audit is not None:
        audit.record(
            "privacy.spent",
            {
                "job": spec.name,
                "digest": spec.digest(),
                "run": run,
                "step": step,
                "dataset": dataset,
                "mechanism": mechanism.to_dict(),
                "epsilon": round(spent.epsilon_after - spent.epsilon_before, 6),
                "delta": spent.delta,
                "accountant": "rdp (dp-accounting)",
                "cumulative_epsilon": round(spent.epsilon_after, 6),
                "cap": spent.cap_epsilon,
            },
        )
    return spent
