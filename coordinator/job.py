"""Run one job end to end on a Grid: partners, preprocessing, task, outputs.

The same function runs inside the coordinator's ServerApp on a real
federation and inside Flower's simulation engine (``fedcollab run``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
import traceback
from typing import Any

from flwr.serverapp import Grid

from fedcollab import common
from fedcollab.common.errors import FedcollabError
from fedcollab.common.job_files import JobResult
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.schema import DatasetSchema
from fedcollab.compliance.trail import digest_bytes
from fedcollab.coordinator.audit import AuditConfig, JobAudit
from fedcollab.coordinator.cosign import FAILED_COSIGN_TIMEOUT_S, request_cosignatures
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.coordinator.policy_gate import PolicyBundle
from fedcollab.coordinator.prediction import run_prediction
from fedcollab.coordinator.preprocess import federated_preprocessor, federated_statistics
from fedcollab.coordinator.roster import Roster
from fedcollab.coordinator.segmentation import run_segmentation
from fedcollab.coordinator.vertical import run_vertical
from fedcollab.privacy.dp_plan import resolve

__all__ = ["run_job"]

log = logging.getLogger(__name__)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def run_job(
    grid: Grid,
    spec: JobSpec,
    outputs: JobOutputs,
    *,
    mode: str,
    audit_config: AuditConfig | None = None,
    policy: PolicyBundle | None = None,
) -> dict[str, Any]:
    """Run ``spec``; writes every output file and returns the metrics document."""
    started, t0 = _now(), time.monotonic()
    audit = JobAudit(audit_config, spec)
    roster = Roster(
        spec=spec,
        outputs=outputs,
        audit=audit,
        policy=policy,
        require_registered_names=mode == "deployment",
        all_nodes_online=mode == "simulation",
    )
    # A vertical job with predict_with only scores: it has no rounds to show.
    scoring = spec.task == "vertical" and bool(spec.vertical.predict_with)
    # The audit run id: the compliance report matches this folder to its run by it.
    outputs.event(
        "job_start", job=spec.name, task=spec.task, digest=spec.digest(), mode=mode,
        scoring=scoring, run=audit.run_id,
    )  # fmt: skip
    try:
        audit.event("job.started", task=spec.task, purpose=spec.purpose, mode=mode)
        schema = DatasetSchema.model_validate(spec.data_schema)
        spec.check_value_bounds()  # before any partner is asked (or charged) anything
        roster.discover(grid)
        if spec.privacy.encrypted and spec.task != "vertical":
            roster.setup_encryption(grid)
        plan = resolve(spec)
        if plan is not None:
            audit.event("privacy.plan", **plan.to_dict())
            outputs.event("privacy", **plan.to_dict())
        metrics: dict[str, Any] = {"job": spec.name, "task": spec.task}
        if spec.task == "vertical":
            vert = run_vertical(grid, roster, spec, outputs)
            metrics.update(
                rounds_run=vert.iterations,
                history=vert.history,
                final=vert.final,
                alignment=vert.alignment,
                explanations=vert.explanations,
            )
            outputs.write_json("explanations.json", vert.explanations)
        elif spec.task == "purchase_prediction":
            pre, shares = federated_statistics(
                grid, roster, schema, plan=plan, bounds=spec.privacy.value_bounds
            )
            pred = run_prediction(grid, roster, spec, pre, outputs, level_shares=shares)
            metrics.update(
                rounds_run=pred.rounds_run,
                best_round=pred.best_round,
                history=pred.history,
                final=pred.final,
                epsilon=pred.epsilon,
            )
            if pred.noise_to_signal is not None:
                metrics["noise_to_signal"] = pred.noise_to_signal
        else:
            pre = federated_preprocessor(
                grid, roster, schema, plan=plan, bounds=spec.privacy.value_bounds
            )
            seg = run_segmentation(grid, roster, spec, schema, pre, outputs)
            metrics.update(
                iterations=seg.iterations,
                objective=seg.objective,
                history=seg.history,
                segments=seg.profiles,
                epsilon=seg.epsilon,
            )
        metrics["dropouts"] = roster.dropped
        metrics["refused"] = roster.refused
        metrics["wall_time_s"] = round(time.monotonic() - t0, 3)
        outputs.write_metrics(metrics)
        card = _model_card(spec, roster, metrics, started, mode)
        outputs.write_json("model_card.json", card)
        audit.event(
            "model.released",
            outputs=_output_digests(outputs),
            recipients=["platform-operator", *roster.names],
            metrics=card["metrics"],
        )
        audit.event("job.completed", wall_time_s=metrics["wall_time_s"])
        if audit_config is not None:
            # Its own file: metrics.json was released (and hashed in the log) above.
            metrics["audit"] = request_cosignatures(grid, roster, audit)
            outputs.write_json("audit.json", metrics["audit"])
        outputs.write_result(JobResult.completed())
        outputs.event(
            "job_end",
            status="completed",
            final=metrics.get("final"),
            objective=metrics.get("objective"),
            dropouts=roster.dropped,
            audit=metrics.get("audit"),
        )
        return metrics
    except FedcollabError as exc:
        cosign = audit_config is not None
        _fail(grid, outputs, roster, audit, type(exc).__name__, exc.diagnostics(), cosign=cosign)
        raise
    except Exception as exc:
        reason = "".join(traceback.format_exception(exc))
        cosign = audit_config is not None
        _fail(grid, outputs, roster, audit, type(exc).__name__, reason, cosign=cosign)
        raise


def _output_digests(outputs: JobOutputs) -> dict[str, str]:
    names = ("model.pt", "preprocessor.json", "centroids.json", "segments.json", "segments.csv",
             "attributions.json", "attributions.csv", "metrics.json", "model_card.json",
             "explanations.json")  # fmt: skip
    return {
        n: digest_bytes((outputs.dir / n).read_bytes()) for n in names if (outputs.dir / n).exists()
    }


def _fail(
    grid: Grid,
    outputs: JobOutputs,
    roster: Roster,
    audit: JobAudit,
    kind: str,
    reason: str,
    *,
    cosign: bool,
) -> None:
    log.warning("job %s failed: %s: %s", audit.spec.name, kind, reason.splitlines()[0][:500])
    with contextlib.suppress(FedcollabError):
        audit.event("job.failed", error=kind, reason=reason.splitlines()[0][:500])
    if cosign:
        _cosign_failure(grid, roster, audit, outputs)
    outputs.write_result(JobResult.failed(kind, reason, dropouts=roster.dropped))
    outputs.event("job_end", status="failed", error=kind, reason=reason, dropouts=roster.dropped)


def _cosign_failure(grid: Grid, roster: Roster, audit: JobAudit, outputs: JobOutputs) -> None:
    """A failed job's log is cosigned too, best effort, by the partners still active: its
    ``job.failed`` record becomes tamper-evident at the partners, and each partner erases
    the run's keys at the cosign, as after a completed job (before, they stayed on disk
    until the 24 h key TTL). Nothing here hides the job's own error: a failure to cosign
    is logged, and the job's exception is raised as it was."""
    if not roster.active:
        return
    try:
        summary = request_cosignatures(grid, roster, audit, timeout_s=FAILED_COSIGN_TIMEOUT_S)
    except Exception:  # the grid or the log may be what failed
        log.warning("job %s failed; its log could not be cosigned", audit.spec.name,
                    exc_info=True)  # fmt: skip
        return
    with contextlib.suppress(OSError):
        outputs.write_json("audit.json", summary)


def _model_card(
    spec: JobSpec, roster: Roster, metrics: dict[str, Any], started: str, mode: str
) -> dict[str, Any]:
    return {
        "fedcollab_version": common.__version__,
        "job": {
            "name": spec.name,
            "digest": spec.digest(),
            "task": spec.task,
            "purpose": spec.purpose,
            "mode": mode,
        },
        "started": started,
        "finished": _now(),
        "partners": [
            {"name": p.name, "dataset_hash": p.dataset_hash, "n_rows": p.n_rows}
            for p in roster.all_partners
        ],
        "completed_by": roster.names,
        "dropouts": roster.dropped,
        "data_schema_fingerprint": DatasetSchema.model_validate(spec.data_schema).fingerprint(),
        "parameters": {
            **({"vertical": _vertical_params(spec)} if spec.task == "vertical" else {}),
            "model": spec.model.model_dump(mode="json"),
            "training": spec.training.model_dump(mode="json"),
            "evaluation": spec.evaluation.model_dump(mode="json"),
            "segmentation": spec.segmentation.model_dump(mode="json"),
            "privacy": spec.privacy.model_dump(mode="json"),
            "rounds": spec.rounds,
            "min_partners": spec.min_partners,
        },
        "protections": {
            "raw_rows_shared": False,
            "aggregation": _aggregation(spec, roster),
            "differential_privacy": _dp_summary(spec, metrics),
        },
        "metrics": {
            k: v
            for k, v in metrics.items()
            if k
            in (
                "final",
                "objective",
                "rounds_run",
                "best_round",
                "iterations",
                "epsilon",
                "alignment",
            )
        },
    }


def _vertical_params(spec: JobSpec) -> dict[str, Any]:
    v = spec.vertical.model_dump(mode="json", by_alias=True)
    # Each party's contract is summarised, not copied: roles and column names.
    v["parties"] = {
        name: {
            "role": p.role,
            "features": [f["name"] for f in p.data_schema.get("features", [])],
        }
        for name, p in spec.vertical.parties.items()
    }
    return v


def _aggregation(spec: JobSpec, roster: Roster) -> str:
    if spec.task == "vertical":
        return "vertical: the coordinator relays sealed, masked payloads only; " + (
            "residuals encrypted under the label holder's CKKS key"
            if spec.privacy.encrypted
            else "residuals sealed end to end in plaintext (no homomorphic encryption)"
        )
    if roster.he is not None and spec.privacy.aggregation == "ckks+masked":
        return (
            f"pairwise-masked sums inside CKKS (key {roster.he.key_digest}, dealt by "
            f"{roster.he.dealer}): one partner decrypts only the verified sum of one-time-padded "
            "words; the coordinator unmasks only the survivors' sum"
        )
    if roster.he is not None:
        return (
            f"CKKS homomorphic sums (key {roster.he.key_digest}, dealt by {roster.he.dealer}); "
            "each aggregate decrypted by one partner"
        )
    if spec.privacy.aggregation == "masked":
        return (
            "pairwise-masked sums with dropout recovery (secure aggregation, Bonawitz et al. "
            "2017): the coordinator unmasks only the survivors' sum"
        )
    return "plaintext sums at the coordinator"


def _dp_summary(spec: JobSpec, metrics: dict[str, Any]) -> dict[str, Any] | None:
    plan = resolve(spec)
    if plan is None:
        return None
    return {
        **plan.to_dict(),
        "achieved_epsilon": metrics.get("epsilon"),
        # Moments, final evaluation and permutation importance are Gaussian releases
        # charged to every partner's ledger (protocols.dp_statistics); at record level they
        # are part of the achieved epsilon, at partner level they are not.
        "not_covered": [
            "category vocabularies (values each partner holds at least 10 times)",
            *(
                ["the statistics' record-level releases (partner-level epsilon: the model)"]
                if plan.level == "client"
                else []
            ),
        ],
    }
