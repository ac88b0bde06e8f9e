"""The demo federation: a coordinator and nine brand partners on one machine.

What ``fedcollab demo`` (the README's first command) does:

1. splits the shipped Online Shoppers data by Region into 9 partner files;
2. creates a federation workspace (CA, TLS certificate, a key per partner),
   starts the coordinator (Flower SuperLink, TLS, node authentication),
   registers each partner's key and starts one SuperNode process per partner;
3. submits a purchase-prediction job and a segmentation job and follows them; the
   purchase job sums under "ckks+masked" (pairwise masks inside CKKS, issue 14) and
   loses a partner mid-job: the key dealer's node is killed once round
   :data:`KILL_AFTER_ROUND` is in, and the job completes without it (the node is
   started again for the next jobs);
4. trains the centralized and partner-alone baselines on the same rows and
   prints one table; everything lands in the output folder.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import tomli_w
from rich.console import Console

from fedcollab.client.partner_data import PartnerSource
from fedcollab.common.errors import FederationError
from fedcollab.common.jobspec import JobSpec, PrivacySpec
from fedcollab.compliance.report import write_report
from fedcollab.compliance.trail import load_verifier_key
from fedcollab.compliance.trust import TrustPolicy
from fedcollab.coordinator.policy_gate import registry_path
from fedcollab.coordinator.submit import follow, submit_job
from fedcollab.demo import baselines
from fedcollab.demo.checks import export_and_verify, insights, render_insights
from fedcollab.demo.console_accounts import setup_console
from fedcollab.demo.horizontal import (
    ONLINE_SHOPPERS_BOUNDS,
    compare,
    default_jobs,
    prepare_partners,
    render,
)
from fedcollab.demo.vertical import LABEL_HOLDER, prepare_vertical, vertical_job
from fedcollab.demo.vertical_summary import render_vertical, vertical_summary
from fedcollab.federation.local_federation import LocalFederation

__all__ = ["Event", "ProgressDisplay", "run_demo"]

#: One progress event of a job (``progress.jsonl``: ``round``, ``job_end``, ...).
Event = dict[str, Any]
#: The caller's progress display: called with a job's name, it returns a context
#: manager that yields the function each of that job's events is passed to (the CLI
#: passes its rich progress bar, :class:`fedcollab.cli.progress.JobProgress`).
ProgressDisplay = Callable[[str], AbstractContextManager[Callable[[Event], None]]]


def _no_display(title: str) -> AbstractContextManager[Callable[[Event], None]]:
    def ignore(event: Event) -> None:
        del event

    return nullcontext(ignore)


#: Full-batch steps of the demo's vertical logistic regression (two relay hops each).
VERTICAL_ITERATIONS = 20

#: Each demo partner's privacy-budget cap (epsilon, over all jobs) on its dataset.
DEMO_CAP = 10.0

#: The purchase job's key dealer is killed (SIGKILL of its node) once this round is in.
KILL_AFTER_ROUND = 2


def mid_job_killer(
    kill: Callable[[], None], *, after_round: int, on_event: Callable[[dict[str, Any]], None]
) -> tuple[Callable[[dict[str, Any]], None], Callable[[], bool]]:
    """An ``on_event`` for :func:`coordinator.submit.follow` that passes every event on and
    calls ``kill`` once, at the ``round`` event of ``after_round``; and whether it did."""
    done = False

    def handle(event: dict[str, Any]) -> None:
        nonlocal done
        on_event(event)
        if not done and event.get("event") == "round" and event.get("round") == after_round:
            done = True
            kill()

    return handle, lambda: done


def _free_port(preferred: int) -> int:
    for port in [preferred, *range(preferred + 1, preferred + 200)]:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return int(port)
    raise FederationError(f"no free port near {preferred}", hint="free a port or pass --port")


def _demo_jobs(
    schema_path: Path, *, brands: tuple[str, ...], encrypted: bool = True
) -> tuple[JobSpec, JobSpec]:
    """The experiment's jobs over ``brands``, with fewer, longer rounds: every Flower
    message costs each partner its own hops through the Fleet API, so rounds are what a
    real deployment pays for.
    Encrypted by default: every aggregate is a CKKS sum (docs/privacy.md), its key dealt
    by the first brand by name (the spec's resolved ``privacy.key_dealer``)."""
    prediction, segmentation = default_jobs(schema_path)
    # Every encrypted job runs "ckks+masked", the encrypted default (issue 14): the
    # purchase job (and the DP job made from it) and the segmentation job. A demo run
    # under load once lost every node at round 12 of such a job when the SuperLink's
    # SQLite store stayed locked; nodes now retry the Fleet API's 500s
    # (client/fleet_poll.py) and the SuperLink keeps its state in memory.
    masked = (
        PrivacySpec(encryption="ckks", aggregation="ckks+masked")
        if encrypted
        else PrivacySpec(encryption="none")
    )
    prediction = prediction.model_copy(
        update={
            "privacy": masked,
            "rounds": 12,
            "training": prediction.training.model_copy(update={"local_epochs": 3}),
            "evaluation": prediction.evaluation.model_copy(update={"early_stopping_patience": 3}),
        }
    )
    segmentation = segmentation.model_copy(
        update={
            "privacy": masked,
            "segmentation": segmentation.segmentation.model_copy(
                update={"lloyd_iterations": 15, "tolerance": 1e-4}
            ),
        }
    )
    return _validated(prediction, brands), _validated(segmentation, brands)


def _validated(spec: JobSpec, brands: tuple[str, ...]) -> JobSpec:
    """``spec`` over ``brands``, validated again (``model_copy`` skips the resolution of
    defaults the spec digest pins, such as the key dealer)."""
    doc = spec.model_dump(mode="json", by_alias=True)
    doc["participants"] = list(brands)
    doc["privacy"]["key_dealer"] = ""
    return JobSpec.model_validate(doc, strict=False)


def _dp_job(prediction: JobSpec) -> JobSpec:
    """Purchase prediction with record-level DP (DP-SGD at every partner, epsilon 3 for
    the whole job at delta 1e-5), encrypted like the others: what a partner's budget
    ledger records and the compliance report shows."""
    doc = prediction.model_dump(mode="json", by_alias=True)
    doc.update(name="purchase-prediction-dp", rounds=6)
    doc["training"]["local_epochs"] = 1
    doc["evaluation"]["early_stopping_patience"] = 0
    doc["privacy"] = {
        **doc["privacy"],
        "dp": "sample",
        "target_epsilon": 3.0,
        "sample_rate": 0.02,
        "max_grad_norm": 1.0,
        "value_bounds": ONLINE_SHOPPERS_BOUNDS,
    }
    return JobSpec.model_validate(doc, strict=False)


def _vertical_jobs(vsources: list[PartnerSource], *, encrypted: bool) -> tuple[JobSpec, ...]:
    """The vertical jobs: logistic regression over platform + payment + billing, with the
    residuals under the platform's CKKS key, then joint inference with the trained
    shares (docs/vertical.md)."""
    training = vertical_job(vsources, encrypted=encrypted, iterations=VERTICAL_ITERATIONS)
    # Joint inference: the platform's customers scored with the parties' model shares.
    scoring = vertical_job(
        vsources, name="payment-risk-scores", encrypted=encrypted, predict_with=training.name
    )
    return training, scoring


def _write_vertical_job_file(spec: JobSpec, vsources: list[PartnerSource], path: Path) -> None:
    doc: dict[str, Any] = _without_none(json.loads(spec.to_json()))
    doc.pop("schema")
    for src in vsources:
        doc["vertical"]["parties"][src.partner]["schema"] = str(src.schema.resolve())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(doc))


def _without_none(doc: dict[str, Any]) -> dict[str, Any]:
    """TOML has no null: an unset optional field is simply left out."""
    return {
        k: _without_none(v) if isinstance(v, dict) else v for k, v in doc.items() if v is not None
    }


def _write_job_file(spec: JobSpec, schema_path: Path, path: Path) -> None:
    doc: dict[str, Any] = _without_none(json.loads(spec.to_json()))
    doc["schema"] = str(schema_path.resolve())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(doc))


def run_demo(
    out: Path,
    *,
    port: int = 9092,
    console: Console | None = None,
    encrypted: bool = True,
    progress_display: ProgressDisplay = _no_display,
) -> dict[str, Any]:
    """Run the demo into ``out``; returns what it writes to ``out/summary.json``.

    ``console`` takes the demo's narration and tables; ``progress_display`` shows
    each job's progress events (default: none).
    """
    console = console or Console()
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "federation", ignore_errors=True)
    sources = prepare_partners(out / "partners")
    console.print(
        f"[bold]fedcollab demo[/]: {len(sources)} brand partners (Online Shoppers by Region)"
    )
    brands = tuple(s.partner for s in sources)
    prediction, segmentation = _demo_jobs(sources[0].schema, brands=brands, encrypted=encrypted)
    private = _dp_job(prediction)
    vsources = prepare_vertical(out / "vertical-parties")
    console.print(
        f"and {len(vsources)} vertical parties (credit-default data split by column: "
        + ", ".join(s.partner for s in vsources)
        + ")"
    )
    vertical_jobs = _vertical_jobs(vsources, encrypted=encrypted)
    jobs = (prediction, segmentation, private, *vertical_jobs)
    for spec in (prediction, segmentation, private):
        _write_job_file(spec, sources[0].schema, out / "jobs" / f"{spec.name}.toml")
    for spec in vertical_jobs:
        _write_vertical_job_file(spec, vsources, out / "jobs" / f"{spec.name}.toml")
    port = _free_port(port)
    node_base = _free_port(port + 100)
    with LocalFederation(
        out / "federation",
        [*sources, *vsources],
        port=port,
        node_port_base=node_base,
        budget_cap=DEMO_CAP,
        purposes_for={s.partner: ("payment-risk-scoring",) for s in vsources},
        share_explanations=(LABEL_HOLDER,),
        # --no-encryption: the brands run a plaintext segmentation job, whose centroids
        # they cannot derive themselves (client/centroid_chain.py); the user is every one.
        allow_unverified_centroids=() if encrypted else brands,
    ) as fed:
        console.print(
            f"coordinator on 127.0.0.1:{port} (TLS, node authentication); "
            f"{len(fed.nodes)} partner nodes started; logs in {fed.logs}"
        )
        # The purchase job's key dealer (the spec's; without encryption, the first brand).
        victim = prediction.privacy.key_dealer or min(brands)
        for spec in jobs:
            job_out = out / spec.name
            fed.wait_online()  # every partner in every job (the victim was started again)
            submit_job(fed.ws, spec, job_out)
            with progress_display(spec.name) as progress:
                if spec is prediction:
                    on_event, killed = mid_job_killer(
                        lambda: fed.kill_node(victim),
                        after_round=KILL_AFTER_ROUND,
                        on_event=progress,
                    )
                    end = follow(job_out, on_event=on_event, timeout_s=3600)
                else:
                    end = follow(job_out, on_event=progress, timeout_s=3600)
            if end.get("status") != "completed":
                raise FederationError(
                    f"demo job {spec.name!r} failed: {end.get('error')}",
                    hint=f"see {job_out}/result.json and the logs in {fed.logs}",
                )
            if spec is prediction:
                dropout = {"partner": victim, "killed": killed(), "after_round": KILL_AFTER_ROUND}
                console.print(
                    f"{spec.name}: partner {victim} (the key dealer) was killed after round "
                    f"{KILL_AFTER_ROUND} and the job completed without it; restarting its node"
                    if killed()
                    else f"{spec.name}: ended before round {KILL_AFTER_ROUND}; nobody killed"
                )
                if killed():
                    fed.restart_node(victim)
    everyone = [s.partner for s in (*sources, *vsources)]
    result_audit = export_and_verify(fed.ws, everyone, out / "audit")
    console.print(
        f"audit: coordinator log of {result_audit['coordinator_entries']} entries verified, "
        f"cosigned by {len(result_audit['cosigners'])} partners under their pinned keys "
        f"(unverified cosigners: {', '.join(result_audit['unverified_cosigners']) or 'none'}); "
        "each partner's log verified; "
        f"{sum(result_audit['matched'].values())} contributions match across logs "
        f"(bundles in {out / 'audit'})"
    )
    names = everyone
    html, pdf = write_report(
        out / "audit" / "coordinator",
        registry=registry_path(fed.ws),
        jobs=[out / spec.name for spec in jobs],
        policy=TrustPolicy.from_keys(
            {
                "coordinator": load_verifier_key(fed.ws.audit_pub)[1],
                **{p: load_verifier_key(fed.ws.node_dir(p) / "audit.pub")[1] for p in names},
            },
            required_cosigners=names,
        ),
        out_dir=out / "audit" / "report",
        ledger_bundles=[out / "audit" / p for p in names],
    )
    console.print(f"compliance report: {html} and {pdf}")
    creds = setup_console(
        fed.ws,
        jobs_dir=out,
        ledgers={p: fed.budget_db(p) for p in everyone},
        bundles={p: out / "audit" / p for p in names},
        partner_user=brands[0],
        out=out / "console",
    )
    console.print(
        f"web console: `make console` (fedcollab console start -w {fed.ws.root}), then "
        f"http://127.0.0.1:8080/; accounts with fresh random passwords in {creds}"
    )
    console.print("training the centralized and partner-alone baselines on the same rows ...")
    result = compare(
        sources, prediction, segmentation, out / prediction.name, out / segmentation.name
    )
    result["mode"] = "deployment: SuperLink + SuperNodes over TLS on loopback"
    result["encryption"] = prediction.privacy.encryption
    dp_metrics = json.loads((out / private.name / "metrics.json").read_text())
    result["purchase_prediction_dp"] = {
        # What the job reports: a DP estimate from noised score histograms.
        "test_auc": dp_metrics["final"]["test"]["auc"],
        # The released model on the pooled test rows (the demo holds every row).
        "test_auc_exact": baselines.federated_model_pooled(
            out / private.name, baselines.load_all(sources, private), private
        ),
        "epsilon": dp_metrics["epsilon"],
        "target_epsilon": private.privacy.target_epsilon,
        "delta": private.privacy.target_delta,
        "mechanism": "DP-SGD (Opacus) at every partner, record level",
        "partner_cap": DEMO_CAP,
    }
    metrics = json.loads((out / prediction.name / "metrics.json").read_text())
    result["purchase_prediction_dropout"] = {
        **dropout,
        "aggregation": prediction.privacy.aggregation,
        "dropouts": [d["partner"] for d in metrics.get("dropouts", [])],
    }
    result["vertical"] = vertical_summary(out, vsources, vertical_jobs)
    result["audit"] = result_audit
    result["insights"] = insights(out / prediction.name, out / segmentation.name)
    result["wall_time_s"] = round(time.monotonic() - t0, 1)
    render(result, console)
    dp = result["purchase_prediction_dp"]
    console.print(
        f"purchase prediction with DP-SGD: test AUC {dp['test_auc_exact']:.4f} on the "
        f"pooled test rows (the job's own DP estimate: {dp['test_auc']:.4f}) at epsilon "
        f"{dp['epsilon']:.2f} (delta {dp['delta']:g}; target {dp['target_epsilon']:g}); "
        f"each partner's ledger: `fedcollab budget show --ledger "
        f"{out}/federation/workspace/nodes/<partner>/budget.db`"
    )
    render_vertical(result["vertical"], console)
    render_insights(result["insights"], console)
    (out / "summary.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    console.print(f"results in {out}/ (summary.json, model cards, models, segments)")
    return result
