"""Many virtual partners in Flower's simulation engine: wall time and peak memory.

    python -m experiments.scale_simulation --partners 100,500 --rounds 3 --out results/scale

Splits Online Shoppers IID over N virtual partners and runs an N-partner
purchase-prediction job (every partner in every round) in the simulation
engine, once per size in ``--partners``, each size in a fresh Python process
(``python -m experiments.scale_simulation --partners N --single``) so one
size's Ray cluster and heap do not count towards the next. Peak memory is the
largest sum of resident set sizes over that process and all its descendants
(Ray's GCS, raylet and workers included), sampled every 0.2 s from /proc;
wall time is the job's, from the split files on disk to the final metrics
(Ray's start and stop included, Python's imports not). A table is printed and
``scale.json`` written (one entry per size in ``runs``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from experiments.horizontal import DATA_DIR
from fedcollab.common.job_files import load_metrics
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.schema import load_schema
from fedcollab.common.split import split_horizontal
from fedcollab.federation.simulation import discover_partner_files, run_simulation_job

__all__ = ["main"]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _tree_rss_bytes(root: int) -> int:
    tree, total, stack = _children(), 0, [root]
    page = os.sysconf("SC_PAGE_SIZE")
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
        stack.extend(tree.get(pid, []))
    return total


class PeakMemory:
    """Samples the RSS of this process tree in a background thread."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss_bytes(os.getpid()))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--partners takes N[,N...], not {text!r}") from exc
    if not sizes or min(sizes) < 2:
        raise argparse.ArgumentTypeError("--partners: every size must be at least 2")
    return sizes


def run_one(partners: int, rounds: int, out: Path) -> dict[str, object]:
    """One size in this process: split (reused when on disk), run, measure."""
    load_start = os.getloadavg()
    parts = out / f"partners-{partners}"
    if not list(parts.glob("*.schema.json")):
        split_horizontal(
            DATA_DIR / "online_shoppers_intention.csv",
            load_schema(DATA_DIR / "online_shoppers.schema.json"),
            parts,
            mode="iid",
            n_partners=partners,
            prefix="brand",
            id_from_row_number=True,
        )
    sources = discover_partner_files(parts)
    spec = JobSpec.model_validate(
        {
            "name": f"scale-{partners}",
            "task": "purchase_prediction",
            "purpose": "purchase-prediction",
            "schema": json.loads(sources[0].schema.read_text()),
            "min_partners": partners,
            "rounds": rounds,
            "round_timeout_s": 600.0,
            "startup_timeout_s": 600.0,
            "evaluation": {"early_stopping_patience": 0},
        },
        strict=False,
    )
    t0 = time.monotonic()
    with PeakMemory() as mem:
        result = run_simulation_job(spec, sources, out / f"job-{partners}")
    wall = time.monotonic() - t0
    if result.status != "completed":
        raise RuntimeError(f"{partners}-partner simulation job ended {result.status}")
    metrics = load_metrics(out / f"job-{partners}").document()
    return {
        "partners": partners,
        "rounds": metrics["rounds_run"],
        "wall_time_s": round(wall, 1),
        "peak_rss_mib": round(mem.peak / 2**20, 1),
        "test_auc": metrics["final"]["test"]["auc"],
        "cpus": os.cpu_count(),
        "load_average_at_start": load_start,
        "load_average_at_end": os.getloadavg(),
        "command": ["python", "-m", "experiments.scale_simulation", "--single",
                    "--partners", str(partners), "--rounds", str(rounds), "--out", str(out)],
    }  # fmt: skip


def _in_child(partners: int, rounds: int, out: Path, *, reuse: bool) -> dict[str, object]:
    one = out / f"scale-{partners}.json"
    if reuse and one.is_file():
        kept: dict[str, object] = json.loads(one.read_text())
        if kept.get("rounds") == rounds:
            return {**kept, "reused": True}
    one.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "experiments.scale_simulation", "--single"]
    cmd += ["--partners", str(partners), "--rounds", str(rounds), "--out", str(out)]
    code = subprocess.run(cmd, check=False).returncode
    if code != 0 or not one.is_file():
        raise RuntimeError(
            f"the {partners}-partner run failed (exit code {code}): {shlex.join(cmd)}"
        )
    loaded: dict[str, object] = json.loads(one.read_text())
    return loaded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partners", type=_sizes, default=[100, 500], help="N[,N...]")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results/scale"))
    parser.add_argument(
        "--single", action="store_true", help="one size in this process (writes scale-N.json)"
    )
    parser.add_argument(
        "--reuse", action="store_true",
        help="take a size's scale-N.json from an earlier --single run instead of rerunning it",
    )  # fmt: skip
    args = parser.parse_args(argv)
    given = list(sys.argv[1:] if argv is None else argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.single:
        if len(args.partners) != 1:
            parser.error("--single takes one size")
        one = run_one(args.partners[0], args.rounds, out)
        (out / f"scale-{args.partners[0]}.json").write_text(json.dumps(one, indent=2) + "\n")
        return 0
    runs = [_in_child(n, args.rounds, out, reuse=args.reuse) for n in args.partners]
    table = Table(title="Simulation engine scale (each size in its own process)")
    for key in ("partners", "rounds", "wall time", "peak RSS (Ray incl.)", "test AUC", "load"):
        table.add_column(key, justify="right")
    for r in runs:
        load = f"{r['load_average_at_start'][0]:.1f} → {r['load_average_at_end'][0]:.1f}"  # type: ignore[index]
        table.add_row(
            str(r["partners"]), str(r["rounds"]), f"{r['wall_time_s']} s",
            f"{r['peak_rss_mib']:,.0f} MiB", f"{r['test_auc']:.4f}", load,
        )  # fmt: skip
    Console().print(table)
    result = {
        "runs": runs,
        "cpus": os.cpu_count(),
        "command": ["python", "-m", "experiments.scale_simulation", *given],
    }
    (out / "scale.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
