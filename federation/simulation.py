"""Run a job in Flower's simulation engine on local partner files.

``fedcollab run JOB --partners DIR`` tries a job before a real federation
exists: each ``<name>.csv`` + ``<name>.schema.json`` pair in ``DIR`` (as
written by ``fedcollab data split``) becomes one virtual SuperNode, and the
very same ServerApp and ClientApp code runs, writing the same outputs.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from fedcollab.client.client_app import make_client_app
from fedcollab.client.partner_data import PartnerSource
from fedcollab.client.run_contract import split_settings
from fedcollab.common.atomic import write_json_atomic
from fedcollab.common.errors import FederationError, JobSpecError, error_class
from fedcollab.common.job_files import JobResult, read_result
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.schema import load_schema
from fedcollab.common.third_party_noise import quiet_third_party, verbose_requested
from fedcollab.compliance.policy import ParticipantFacts
from fedcollab.compliance.registry import Registry, load_registry
from fedcollab.compliance.trail import create_party_key, load_verifier_key
from fedcollab.coordinator.local_grants import EXAMPLE_REGISTRY, demo_grant
from fedcollab.coordinator.policy_gate import PolicyBundle
from fedcollab.coordinator.ray_start import start_ray
from fedcollab.coordinator.server_app import make_server_app
from fedcollab.privacy.budget_ledger import BudgetLedger

__all__ = ["discover_partner_files", "run_simulation_job", "simulated_partners"]


def discover_partner_files(directory: Path) -> list[PartnerSource]:
    """Every ``<name>.csv`` with a ``<name>.schema.json`` beside it, sorted by name."""
    if not directory.is_dir():
        raise JobSpecError(
            f"partner folder {directory} does not exist",
            hint="create partner files with `fedcollab data split`",
        )
    sources = []
    for schema in sorted(directory.glob("*.schema.json")):
        name = schema.name.removesuffix(".schema.json")
        csv = directory / f"{name}.csv"
        if csv.exists():
            sources.append(PartnerSource(partner=name, data=csv.resolve(), schema=schema.resolve()))
    if not sources:
        raise JobSpecError(
            f"no partner files (<name>.csv + <name>.schema.json) in {directory}",
            hint="create them with `fedcollab data split`",
        )
    return sources


def _audit_dir(root: Path, partners: list[str]) -> Path:
    """Audit keys for a simulated federation: the coordinator's and each partner's.

    Kept across runs in the same output folder, so repeated simulations extend
    the same logs (and partners check consistency when they cosign).
    """
    if not (root / "coordinator" / "audit.key").exists():
        create_party_key(root / "coordinator", "coordinator")
    for partner in partners:
        if not (root / "partners" / partner / "audit.key").exists():
            create_party_key(root / "partners" / partner, partner)
    return root


def _simulated_policy(
    spec: JobSpec, sources: list[PartnerSource], audit: Path, registry: Registry
) -> PolicyBundle:
    registry.purpose(spec.purpose)  # an unregistered purpose is refused before anything runs
    grants, keys = {}, {}
    for s in sources:
        pdir = audit / "partners" / s.partner
        grants[s.partner] = demo_grant(
            partner=s.partner,
            dataset=load_schema(s.schema).dataset,
            audit_key=pdir / "audit.key",
            registry=registry,
            purposes=[spec.purpose],
            out=pdir / "grant.json",
        )
        keys[s.partner] = load_verifier_key(pdir / "audit.pub")[1]
    policy = PolicyBundle(registry=registry, grants=grants, partner_keys=keys)
    policy.decide(
        spec,
        {
            s.partner: ParticipantFacts(s.partner, grants[s.partner].grant.dataset, None)
            for s in sources
        },
    )
    return policy


def simulated_partners(
    spec: JobSpec, sources: list[PartnerSource], audit: Path
) -> list[dict[str, str]]:
    """Each simulated partner's node settings (the ``sim-partners`` entries): its files,
    its audit key, trail and grant under ``audit``, the pinned peer keys, its split."""
    return [
        {
            "partner": s.partner,
            "data": str(s.data),
            "schema": str(s.schema),
            "audit-db": str(audit / "partners" / s.partner / "audit.db"),
            "audit-key": str(audit / "partners" / s.partner / "audit.key"),
            "coordinator-key": str(audit / "coordinator" / "audit.pub"),
            "grant": str(audit / "partners" / s.partner / "grant.json"),
            "peer-keys": str(audit / "peers.json"),
            # The split is a partner's setting; in a simulation the user is every partner,
            # whose own rows a coordinator's chosen centroids could only show to itself.
            **split_settings(spec),
            "allow-unverified-centroids": "true",
        }
        for s in sources
    ]


def run_simulation_job(
    spec: JobSpec,
    sources: list[PartnerSource],
    out_dir: Path,
    *,
    num_cpus: int | None = None,
    verbose: bool = False,
    registry: Path = EXAMPLE_REGISTRY,
    trace: bool = False,
    budget_cap: float | None = None,
) -> JobResult:
    """Run ``spec`` with one virtual node per source; returns the result document.

    The job's purpose must be registered in ``registry``; each simulated partner
    signs a grant for that purpose with its own audit key, and the coordinator
    and the partners check those grants exactly as in a real federation.
    With ``trace``, the job writes ``trace.npz`` (every round's global model or
    centroids). ``budget_cap`` sets every simulated partner's privacy-budget cap
    (epsilon, over all jobs) on its dataset, for a DP job (which needs one; a job without DP
    on a capped dataset would be refused by the partners).
    """
    from flwr.simulation import run_simulation

    spec.check_value_bounds()  # before anything runs or is charged
    if spec.participants:
        known = {s.partner for s in sources}
        unknown = sorted(set(spec.participants) - known)
        if unknown:
            raise JobSpecError(
                f"participants {unknown} have no partner files",
                hint="fix the job's participants or the --partners folder",
            )
        sources = [s for s in sources if s.partner in spec.participants]
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("progress.jsonl", "result.json", "trace.npz"):
        (out_dir / stale).unlink(missing_ok=True)
    audit = _audit_dir(out_dir / "audit", [s.partner for s in sources])
    peer_keys = {
        s.partner: (audit / "partners" / s.partner / "audit.pub").read_text().strip()
        for s in sources
    }
    if budget_cap is not None and spec.privacy.dp != "none":
        # Only a DP job has anything to charge; a job without DP on a capped dataset is
        # refused by the partners (client.admission.check_dp_policy).
        for s in sources:
            with BudgetLedger.open(audit / "partners" / s.partner / "budget.db") as ledger:
                ledger.set_cap(
                    load_schema(s.schema).dataset,
                    epsilon_cap=budget_cap,
                    delta=spec.privacy.target_delta,
                )
    # Every simulated partner pins the others' audit keys (the key ceremony checks them).
    write_json_atomic(audit / "peers.json", peer_keys)
    partners = simulated_partners(spec, sources, audit)
    policy = _simulated_policy(spec, sources, audit, load_registry(registry))
    overrides = {
        "job": spec.to_json(),
        "output-dir": str(out_dir),
        "mode": "simulation",
        "sim-partners": json.dumps(partners),
        "audit-db": str(audit / "coordinator" / "audit.db"),
        "audit-key": str(audit / "coordinator" / "audit.key"),
        "policy": policy.to_json(),
        "partner-keys": json.dumps(peer_keys),
        "trace": "true" if trace else "false",
    }
    cpus = num_cpus or os.cpu_count() or 1
    backend_config: Any = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": cpus,
            "num_gpus": 0,
            "include_dashboard": False,
            # Ray forwards its actors' logs ("Manually terminating ClientAppActor", ...)
            # to this terminal; -v / --verbose shows them, partners' refusals say why anyway.
            "log_to_driver": verbose or verbose_requested(),
            # ray.init sets its own loggers' level (INFO by default): "Started a local Ray
            # instance." reached every user's terminal whatever quiet_third_party set.
            "logging_level": logging.INFO if verbose or verbose_requested() else logging.WARNING,
        },
    }
    with quiet_third_party(verbose):
        started = start_ray(backend_config["init_args"])  # retries a start under load
        try:
            run_simulation(
                server_app=make_server_app(overrides),
                client_app=make_client_app(overrides),
                num_supernodes=len(sources),
                backend_config=backend_config,
                verbose_logging=verbose or verbose_requested(),
            )
        finally:
            if started:
                import ray

                ray.shutdown()  # Flower's backend shuts it down too; a no-op then
    result = read_result(out_dir)
    if result is None:
        raise FederationError(
            "the simulation ended without a result", hint="rerun with --verbose to see Flower's log"
        )
    if result.status != "completed":
        # The reason is the error's diagnostics: its message, then "What to do: <hint>".
        reason, _, hint = str(result.reason).partition("\nWhat to do: ")
        raise error_class(str(result.error))(
            f"job {spec.name!r} failed: {result.error}: {reason}",
            hint=hint or "see progress.jsonl in the output folder",
        )
    return result
