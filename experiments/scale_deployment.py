"""Twenty real partner processes on this machine complete encrypted purchase-prediction jobs.

    python -m experiments.scale_deployment --out results/experiments [--partners 20]

Splits Online Shoppers IID over ``--partners`` partners (ids are row numbers, so
the pooled test rows are the same rows as the demo's nine Region partners') and
starts a real federation with :class:`federation.local_federation.LocalFederation`:
a workspace with its own CA, a SuperLink behind the TLS Fleet gateway with node
authentication, every partner's key and grant registered, and one SuperNode
process per partner (with its long-lived executor), as ``fedcollab coordinator
start`` and ``fedcollab node start`` would. Once every node is online it submits
the demo's purchase job (logistic regression, CKKS-encrypted aggregates, early
stopping off so every round runs) once per ``--aggregation`` to the same
federation, as ``fedcollab job submit`` does, then stops everything and checks
that no process it started is left.

Measured: time until every node is online, each job's wall time and round times
(difference between consecutive ``round`` events, median over rounds 2..R),
peak total resident memory of this process tree (SuperLink, ServerApp, every
SuperNode and executor; sampled every 0.2 s from /proc), and each job's test AUC
next to the same job spec run on the demo's nine Region partners in the
simulation engine (the reference: same rows in the test set, same rounds).
Writes ``<out>/scale_deployment.json``. All partners share this machine's 2
cores, so rounds here are what 20 partners cost in series, an upper bound for
partners on their own machines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from experiments.deployment_timeline import round_times
from experiments.he_equivalence import code_version
from experiments.horizontal import DATA_DIR, default_jobs, prepare_partners
from experiments.scale_simulation import PeakMemory, _children, _tree_rss_bytes
from fedcollab.client.partner_data import PartnerSource
from fedcollab.common.job_files import load_metrics, read_progress
from fedcollab.common.jobspec import JobSpec, PrivacySpec
from fedcollab.common.schema import load_schema
from fedcollab.common.split import split_horizontal
from fedcollab.federation.simulation import discover_partner_files

__all__ = ["main", "spec_for"]

AGGREGATIONS = ("ckks", "ckks+masked")


def spec_for(schema: Path, *, partners: int, rounds: int, aggregation: str, dealer: str) -> JobSpec:
    """The demo's purchase job, every partner required, every round run; ``dealer``
    deals the key."""
    prediction, _ = default_jobs(schema)
    return prediction.model_copy(
        update={
            "name": f"scale-deployment-{aggregation.replace('+', '-')}",
            "min_partners": partners,
            "privacy": PrivacySpec.model_validate(
                {"encryption": "ckks", "aggregation": aggregation, "key_dealer": dealer}
            ),
            "rounds": rounds,
            "evaluation": prediction.evaluation.model_copy(update={"early_stopping_patience": 0}),
        }
    )


def split_partners(out: Path, n: int) -> list[PartnerSource]:
    if not list(out.glob("*.schema.json")):
        split_horizontal(
            DATA_DIR / "online_shoppers_intention.csv",
            load_schema(DATA_DIR / "online_shoppers.schema.json"),
            out,
            mode="iid",
            n_partners=n,
            prefix="brand",
            id_from_row_number=True,
        )
    return discover_partner_files(out)


def _job_summary(out: Path, seconds: float) -> dict[str, Any]:
    events, _ = read_progress(out)
    metrics = load_metrics(out).document()
    rounds = round_times(events)
    later = [rounds[r] for r in sorted(rounds) if r >= 2]
    return {
        "output_dir": str(out),
        "status": "completed",
        "rounds_run": metrics["rounds_run"],
        "round_times_s": {str(r): round(s, 3) for r, s in rounds.items()},
        "median_round_s": round(statistics.median(later), 3) if later else None,
        "job_wall_time_s": metrics["wall_time_s"],
        "submit_to_end_s": round(seconds, 2),
        "test_auc": metrics["final"]["test"]["auc"],
    }


def _reference(sources: list[PartnerSource], out: Path, rounds: int) -> dict[str, Any]:
    """The same spec on the demo's nine Region partners, simulation engine."""
    from fedcollab.federation.simulation import run_simulation_job

    spec = spec_for(
        sources[0].schema, partners=len(sources), rounds=rounds, aggregation="ckks",
        dealer=min(s.partner for s in sources),
    )  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)
    t = time.monotonic()
    result = run_simulation_job(spec, sources, out)
    if result.status != "completed":
        raise RuntimeError(f"reference simulation job ended {result.status}")
    summary = _job_summary(out, time.monotonic() - t)
    return {"partners": len(sources), "engine": "simulation", **summary}


def _descendants(root: int) -> list[int]:
    tree, found, stack = _children(), [], [root]
    while stack:
        for child in tree.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _cmd(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()[:160]
    except OSError:
        return "?"


class Watch(PeakMemory):
    """Peak RSS of this process tree, and every process it ever held (pid, start time):
    a process re-parented away from the tree (an orphan) is still found after the stop."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[int, str] = {}

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss_bytes(os.getpid()))
            for pid in _descendants(os.getpid()):
                st = _stat(pid)
                if st is not None:
                    self.seen.setdefault(pid, st[19])  # field 22: start time
            self._stop.wait(self.interval_s)

    def alive(self) -> dict[int, str]:
        left = {}
        for pid, start in self.seen.items():
            st = _stat(pid)
            if st is not None and st[19] == start and st[0] != "Z":
                left[pid] = _cmd(pid)
        return left


def run_deployment(
    sources: list[PartnerSource], root: Path, *, rounds: int, aggregations: Sequence[str]
) -> dict[str, Any]:
    from fedcollab.coordinator.submit import follow, submit_job
    from fedcollab.federation.local_federation import LocalFederation, free_port_block

    shutil.rmtree(root, ignore_errors=True)  # fresh workspace, fresh ports
    os.environ["PATH"] = f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    jobs: dict[str, Any] = {}
    t0 = time.monotonic()
    mem = Watch()
    with mem:
        fed = LocalFederation(
            root / "federation", sources, port=free_port_block(1),
            node_port_base=free_port_block(len(sources)),
        )  # fmt: skip
        with fed:
            started = time.monotonic() - t0
            fed.wait_online(timeout_s=900)
            online = time.monotonic() - t0
            processes = len(_descendants(os.getpid()))
            for aggregation in aggregations:
                spec = spec_for(
                    sources[0].schema, partners=len(sources), rounds=rounds,
                    aggregation=aggregation, dealer=min(s.partner for s in sources),
                )  # fmt: skip
                out = root / f"job-{aggregation.replace('+', '-')}"
                t = time.monotonic()
                submit_job(fed.ws, spec, out)
                end = follow(out, on_event=lambda _e: None,
                             is_alive=lambda: fed.superlink is not None
                             and fed.superlink.poll() is None, timeout_s=3600)  # fmt: skip
                if end.get("status") != "completed":
                    jobs[aggregation] = {"status": "failed", "end": end}
                    continue
                jobs[aggregation] = _job_summary(out, time.monotonic() - t)
                jobs[aggregation]["peak_rss_mib_so_far"] = round(mem.peak / 2**20, 1)
        stopped = time.monotonic() - t0
    # What LocalFederation.stop left running, after a grace period to exit on its own;
    # then ended here (they are this run's processes) so the machine is left clean.
    grace = time.monotonic() + 30
    while mem.alive() and time.monotonic() < grace:
        time.sleep(1)
    left = mem.alive()
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    return {
        "partners": len(sources),
        "processes_while_running": processes,
        "federation_started_s": round(started, 1),
        "all_nodes_online_s": round(online, 1),
        "total_wall_time_s": round(stopped, 1),
        "peak_rss_mib": round(mem.peak / 2**20, 1),
        "processes_seen": len(mem.seen),
        "processes_left_after_stop": len(left),
        "left_after_stop": sorted(left.values()),
        "jobs": jobs,
    }


def render(res: dict[str, Any]) -> Table:
    d, ref = res["deployment"], res["reference"]
    table = Table(
        title=f"{d['partners']} real partner nodes (SuperLink over TLS, node authentication), "
        f"{res['job']['rounds']} rounds"
    )
    for col in ("measure", *d["jobs"], f"reference: {ref['partners']} partners, simulation"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    jobs = list(d["jobs"].values())

    def row(name: str, fmt: str, key: str) -> None:
        cells = [fmt.format(j[key]) if j.get(key) is not None else "-" for j in jobs]
        table.add_row(name, *cells, fmt.format(ref[key]) if ref.get(key) is not None else "-")

    table.add_row("status", *(j["status"] for j in jobs), ref["status"])
    row("median round (2..R)", "{:.1f} s", "median_round_s")
    row("job wall time (ServerApp)", "{:.1f} s", "job_wall_time_s")
    row("submit to job end", "{:.1f} s", "submit_to_end_s")
    row("test AUC", "{:.4f}", "test_auc")
    table.add_row("all nodes online after", f"{d['all_nodes_online_s']:.1f} s", "", "")
    table.add_row("peak resident memory (all processes)", f"{d['peak_rss_mib']:,.0f} MiB", "", "")
    table.add_row("processes left after stop", str(d["processes_left_after_stop"]), "", "")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("results/experiments"))
    ap.add_argument("--partners", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5, help="rounds per job (at least 3)")
    ap.add_argument(
        "--aggregation", default=",".join(AGGREGATIONS),
        help="comma-separated: one job per aggregation (ckks, ckks+masked)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    aggregations = [a.strip() for a in args.aggregation.split(",") if a.strip()]
    if args.rounds < 3:
        ap.error("--rounds must be at least 3 (round 1 is not timed)")
    if args.partners < 2:
        ap.error("--partners must be at least 2")
    if not aggregations or any(a not in AGGREGATIONS for a in aggregations):
        ap.error(f"--aggregation takes a comma-separated subset of {', '.join(AGGREGATIONS)}")
    given = list(sys.argv[1:] if argv is None else argv)
    out: Path = args.out.resolve()
    root = out / "scale-deployment"
    load_start = os.getloadavg()
    t0 = time.monotonic()
    sources = split_partners(root / f"partners-{args.partners}", args.partners)
    deployment = run_deployment(
        sources, root / "deployment", rounds=args.rounds, aggregations=aggregations
    )
    try:  # after the deployment, whose processes are gone by then
        reference = _reference(
            prepare_partners(root / "partners-region"), root / "reference", args.rounds
        )
    except Exception as exc:  # Ray's start-up can time out on a loaded machine
        reference = {"partners": 9, "engine": "simulation", "status": "failed",
                     "error": f"{type(exc).__name__}: {exc}"[:500]}  # fmt: skip
    res: dict[str, Any] = {
        "study": "scale_deployment",
        "job": {
            "task": "purchase_prediction",
            "encryption": "ckks",
            "rounds": args.rounds,
            "aggregations": aggregations,
            "split": "iid, ids = row numbers",
        },
        "deployment": deployment,
        "reference": reference,
        "completed": all(j["status"] == "completed" for j in deployment["jobs"].values())
        and deployment["processes_left_after_stop"] == 0,
        "wall_time_s": round(time.monotonic() - t0, 1),
        "cpus": os.cpu_count(),
        "load_average_at_start": load_start,
        "load_average_at_end": os.getloadavg(),
        "platform": platform.platform(),
        "flwr": version("flwr"),
        "code_version": code_version(),
        "command": ["python", "-m", "experiments.scale_deployment", *given],
    }
    Console(width=None if sys.stdout.isatty() else 120).print(render(res))
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale_deployment.json").write_text(json.dumps(res, indent=2) + "\n")
    return 0 if res["completed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
