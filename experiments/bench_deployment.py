"""The demo's purchase job in a real deployment vs Flower's simulation engine, side by side.

    python -m experiments.bench_deployment --out results/experiments [--rounds 6]

Goal (issue 18): "a deployment round <= 1.5x the simulation round for the demo's
purchase job". The same job spec (the demo's: logistic regression on nine Online
Shoppers Region partners, 3 local epochs, CKKS-encrypted aggregates; early stopping
off so both engines run every round) runs twice on the same partner files:

* **simulation**: :func:`federation.simulation.run_simulation_job` (Flower's
  simulation engine, one virtual node per partner, Ray actors in this process tree);
* **deployment**: :class:`federation.local_federation.LocalFederation` (a SuperLink
  behind the TLS Fleet gateway, node authentication, one SuperNode process per
  partner with its long-lived executor, on loopback), the job submitted with
  :func:`coordinator.submit.submit_job` as ``fedcollab job submit`` does.

Round time: the difference between consecutive ``round`` events' ``time`` in each
job's ``progress.jsonl``, median over rounds 2..R (round 1 has no predecessor of
its kind) of every run of the mode: each mode runs ``--repeats`` times (default 2),
interleaved (simulation, deployment, simulation, ...), so both see the same spells of
load. Where each mode's CPU goes: core-seconds per round by kind of process, sampled
from ``/proc`` between the first and the last ``round`` event
(:mod:`experiments.proc_cpu`). ``--encryption none`` measures the plaintext job
instead. Writes ``<out>/bench_deployment.json``. Both engines share this machine's cores, and the
deployment's partners run in series on 2 cores what partners on their own machines
would run in parallel: the ratio is an upper bound for a real deployment.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from experiments.deployment_timeline import round_times
from experiments.he_equivalence import code_version
from experiments.horizontal import default_jobs, prepare_partners
from experiments.proc_cpu import CpuSampler
from fedcollab.client.partner_data import PartnerSource
from fedcollab.common.job_files import load_metrics
from fedcollab.common.jobspec import JobSpec, PrivacySpec

__all__ = ["GOAL", "REPEATS", "compare", "main", "pooled", "spec_for"]

GOAL = 1.5
#: Runs of each mode, interleaved.
REPEATS = 2


def spec_for(schema: Path, *, rounds: int, encryption: str, dealer: str) -> JobSpec:
    """The demo's purchase job (fedcollab.demo.run), every round run; ``dealer`` deals
    an encrypted job's key."""
    prediction, _ = default_jobs(schema)
    return prediction.model_copy(
        update={
            "name": "bench-deployment",
            "privacy": PrivacySpec(
                encryption=encryption,  # type: ignore[arg-type]
                key_dealer=dealer if encryption == "ckks" else "",
            ),
            "rounds": rounds,
            "training": prediction.training.model_copy(update={"local_epochs": 3}),
            "evaluation": prediction.evaluation.model_copy(update={"early_stopping_patience": 0}),
        }
    )


def _summary(out: Path, seconds: float, cpu: CpuSampler) -> dict[str, Any]:
    from fedcollab.common.job_files import read_progress

    events, _ = read_progress(out)
    metrics = load_metrics(out).document()
    rounds = round_times(events)
    later = [rounds[r] for r in sorted(rounds) if r >= 2]
    at = sorted(float(e["time"]) for e in events if e.get("event") == "round")
    used = cpu.between(at[0], at[-1])
    return {
        "output_dir": str(out),
        "rounds_run": metrics["rounds_run"],
        "round_times_s": {str(r): round(s, 3) for r, s in rounds.items()},
        "median_round_s": statistics.median(later),
        "job_wall_time_s": metrics["wall_time_s"],
        "start_to_end_s": round(seconds, 2),
        "test_auc": metrics["final"]["test"]["auc"],
        "partners_per_round": sorted(
            {int(e["partners"]) for e in events if e.get("event") == "round" and "partners" in e}
        ),
        "cpu_per_round_s": {k: round(v / (len(at) - 1), 3) for k, v in used.items() if v > 0},
    }


def pooled(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One mode's runs as one: the median over every timed round of every run, the
    medians of the other measures, and each run as measured.

    >>> p = pooled([{"round_times_s": {"2": 1.0, "3": 3.0}, "job_wall_time_s": 10.0,
    ...              "start_to_end_s": 20.0, "test_auc": 0.9, "cpu_per_round_s": {"a": 1.0}},
    ...             {"round_times_s": {"2": 2.0}, "job_wall_time_s": 12.0,
    ...              "start_to_end_s": 22.0, "test_auc": 0.9, "cpu_per_round_s": {"a": 3.0}}])
    >>> p["median_round_s"], p["job_wall_time_s"], p["cpu_per_round_s"], len(p["runs"])
    (2.0, 11.0, {'a': 2.0}, 2)
    """
    times = [t for run in runs for t in run["round_times_s"].values()]
    kinds = sorted({k for run in runs for k in run.get("cpu_per_round_s", {})})
    return {
        "round_times_s": {
            f"{i + 1}.{r}": t for i, run in enumerate(runs) for r, t in run["round_times_s"].items()
        },
        "median_round_s": statistics.median(times),
        "job_wall_time_s": statistics.median(run["job_wall_time_s"] for run in runs),
        "start_to_end_s": statistics.median(run["start_to_end_s"] for run in runs),
        "test_auc": runs[-1]["test_auc"],
        "cpu_per_round_s": {
            k: round(statistics.median(r.get("cpu_per_round_s", {}).get(k, 0.0) for r in runs), 3)
            for k in kinds
        },
        "runs": list(runs),
    }


def _simulation(spec: JobSpec, sources: list[PartnerSource], out: Path) -> dict[str, Any]:
    from fedcollab.federation.simulation import run_simulation_job

    shutil.rmtree(out, ignore_errors=True)
    t = time.monotonic()
    with CpuSampler() as cpu:
        result = run_simulation_job(spec, sources, out)
    if result.status != "completed":
        raise RuntimeError(f"simulation job failed: {result.status}")
    return _summary(out, time.monotonic() - t, cpu)


def _deployment(
    spec: JobSpec, sources: list[PartnerSource], root: Path, *, pull_s: float | None = None
) -> dict[str, Any]:
    from fedcollab.coordinator.submit import follow, submit_job
    from fedcollab.federation.local_federation import LocalFederation, free_port_block

    shutil.rmtree(root, ignore_errors=True)  # fresh workspace, fresh ports
    os.environ["PATH"] = f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    # The nodes inherit it (client/fleet_poll.py); unset: fedcollab's own interval.
    os.environ.pop("FEDCOLLAB_ACTIVE_PULL_S", None)
    if pull_s is not None:
        os.environ["FEDCOLLAB_ACTIVE_PULL_S"] = str(pull_s)
    with CpuSampler() as cpu, LocalFederation(
        root / "federation", sources, port=free_port_block(1),
        node_port_base=free_port_block(len(sources)),
    ) as fed:  # fmt: skip
        # Every partner online first: a job starts with the nodes online when it begins,
        # and the 9-partner round must be compared with the simulation's 9 (a run on
        # 2026-12-06 started with 5 of them while 4 nodes were still connecting).
        fed.wait_online()
        out = root / "job"
        t = time.monotonic()
        submit_job(fed.ws, spec, out)
        end = follow(out, on_event=lambda _e: None, is_alive=lambda: fed.superlink.poll() is None,
                     timeout_s=3600)  # fmt: skip
        seconds = time.monotonic() - t
    os.environ.pop("FEDCOLLAB_ACTIVE_PULL_S", None)
    if end.get("status") != "completed":
        raise RuntimeError(f"deployment job failed: {end}")
    return _summary(out, seconds, cpu)


def compare(simulation: Mapping[str, Any], deployment: Mapping[str, Any]) -> dict[str, Any]:
    """Ratios deployment / simulation and the goal's verdict.

    >>> g = compare({"median_round_s": 2.0, "job_wall_time_s": 30.0, "start_to_end_s": 40.0},
    ...             {"median_round_s": 2.5, "job_wall_time_s": 45.0, "start_to_end_s": 80.0})
    >>> g["goal"]["value"], g["goal"]["passed"], g["ratio_deployment_to_simulation"]["start_to_end"]
    (1.25, True, 2.0)
    """
    ratio = {
        k.removesuffix("_s"): deployment[k] / simulation[k]
        for k in ("median_round_s", "job_wall_time_s", "start_to_end_s")
    }
    value = ratio["median_round"]
    return {
        "ratio_deployment_to_simulation": ratio,
        "goal": {
            "goal": f"deployment round <= {GOAL:g}x simulation round (median of rounds 2..R)",
            "value": value,
            "target": GOAL,
            "passed": value <= GOAL,
        },
    }


def render(res: Mapping[str, Any]) -> Table:
    s, d = res["modes"]["simulation"], res["modes"]["deployment"]
    f = res["modes"].get("deployment_flower_pull")
    r = res["ratio_deployment_to_simulation"]
    table = Table(
        title=f"The demo's purchase job ({len(res['partners'])} partners, "
        f"encryption {res['job']['encryption']}, {res['job']['rounds']} rounds)"
    )
    cols = ["measure", "simulation", "deployment (TLS, loopback)", "dep / sim"]
    if f is not None:
        cols.append("deployment, Flower's 3 s pull")
    for col in cols:
        table.add_column(col, justify="left" if col == "measure" else "right")
    extra = (lambda key, fmt: [fmt.format(f[key])]) if f is not None else (lambda _k, _f: [])
    times = [", ".join(f"{v:.2f}" for k, v in x["round_times_s"].items()) for x in (s, d)]
    flower_times = [", ".join(f"{v:.2f}" for v in f["round_times_s"].values())] if f else []
    table.add_row("round 2..R times (s)", *times, "", *flower_times)
    table.add_row("median round", f"{s['median_round_s']:.2f} s", f"{d['median_round_s']:.2f} s",
                  f"{r['median_round']:.2f}x", *extra("median_round_s", "{:.2f} s"))  # fmt: skip
    table.add_row("job wall time (ServerApp)", f"{s['job_wall_time_s']:.1f} s",
                  f"{d['job_wall_time_s']:.1f} s", f"{r['job_wall_time']:.2f}x",
                  *extra("job_wall_time_s", "{:.1f} s"))  # fmt: skip
    table.add_row("start to job end", f"{s['start_to_end_s']:.1f} s",
                  f"{d['start_to_end_s']:.1f} s", f"{r['start_to_end']:.2f}x",
                  *extra("start_to_end_s", "{:.1f} s"))  # fmt: skip
    table.add_row("final test AUC", f"{s['test_auc']:.4f}", f"{d['test_auc']:.4f}", "",
                  *extra("test_auc", "{:.4f}"))  # fmt: skip
    cpus = [x.get("cpu_per_round_s", {}) for x in (s, d, *([f] if f is not None else []))]
    for kind in sorted({k for c in cpus for k in c}):
        table.add_row(f"CPU per round: {kind}", *(f"{c.get(kind, 0.0):.2f} s" for c in cpus[:2]),
                      "", *(f"{c.get(kind, 0.0):.2f} s" for c in cpus[2:]))  # fmt: skip
    totals = [sum(c.values()) for c in cpus]
    if totals[0] > 0:
        ratio = f"{totals[1] / totals[0]:.2f}x"
        table.add_row("CPU per round, all processes", *(f"{t:.2f} s" for t in totals[:2]),
                      ratio, *(f"{t:.2f} s" for t in totals[2:]))  # fmt: skip
    return table


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("results/experiments"))
    ap.add_argument("--rounds", type=int, default=6, help="rounds per job (at least 3)")
    ap.add_argument("--encryption", choices=("ckks", "none"), default="ckks")
    ap.add_argument("--repeats", type=int, default=REPEATS, help="runs of each mode, interleaved")
    ap.add_argument(
        "--flower-pace",
        action="store_true",
        help="also run the deployment with Flower's own 3 s idle pull (client/fleet_poll.py)",
    )
    args = ap.parse_args(argv)
    if args.rounds < 3:
        ap.error("--rounds must be at least 3 (round 1 is not timed)")
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    given = list(sys.argv[1:] if argv is None else argv)
    console = Console(width=None if sys.stdout.isatty() else 110)
    out: Path = args.out.resolve()
    t0, load_start = time.monotonic(), os.getloadavg()[0]
    root = out / "bench-deployment"
    sources = prepare_partners(root / "partners")
    spec = spec_for(
        sources[0].schema, rounds=args.rounds, encryption=args.encryption,
        dealer=min(s.partner for s in sources),
    )  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {"simulation": [], "deployment": []}
    for rep in range(args.repeats):
        for mode, go in (("simulation", _simulation), ("deployment", _deployment)):
            run = go(spec, sources, root / f"{mode}-{rep + 1}")
            runs[mode].append(run)
            console.print(f"{mode} (run {rep + 1}/{args.repeats}): {run['start_to_end_s']:.1f} s, "
                          f"median round {run['median_round_s']:.2f} s")  # fmt: skip
    modes = {mode: pooled(r) for mode, r in runs.items()}
    if args.flower_pace:
        modes["deployment_flower_pull"] = _deployment(
            spec, sources, root / "deployment-flower-pull", pull_s=3.0
        )
        took = modes["deployment_flower_pull"]["start_to_end_s"]
        console.print(f"deployment, Flower's 3 s pull: {took:.1f} s")
    res: dict[str, Any] = {
        "benchmark": "bench_deployment",
        "command": ["python", "-m", "experiments.bench_deployment", *given],
        "partners": [s.partner for s in sources],
        "job": {
            "rounds": args.rounds,
            "encryption": args.encryption,
            "model": "logreg",
            "local_epochs": 3,
            "early_stopping_patience": 0,
        },
        "repeats": args.repeats,
        "modes": modes,
        **compare(modes["simulation"], modes["deployment"]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "flwr": version("flwr"),
            "loadavg_1min_at_start": load_start,
            "loadavg_1min_at_end": os.getloadavg()[0],
        },
        "code": code_version(),
        "wall_time_s": round(time.monotonic() - t0, 1),
    }
    console.print(render(res))
    g = res["goal"]
    mark = "[green]PASS[/]" if g["passed"] else "[red]FAIL[/]"
    console.print(f"{mark} {g['goal']}: {g['value']:.2f}x (target {g['target']:g}x)")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench_deployment.json"
    path.write_text(json.dumps(res, indent=2) + "\n")
    console.print(f"wrote {path} ({res['wall_time_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
