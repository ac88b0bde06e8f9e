"""Many virtual partners in Flower's simulation engine: wall time and peak memory.

    python -m experiments.scale_simulation --partners 100 --rounds 3 --out results/scale

Splits Online Shoppers IID over N virtual partners and runs an N-partner
purchase-prediction job (every partner in every round) in the simulation
engine. Peak memory is the largest sum of resident set sizes over this
process and all its descendants (Ray's raylet and workers included), sampled
every 0.2 s from /proc; a table is printed and ``scale.json`` written.
"""

from __future__ import annotations

import argparse
import json
import os
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
from fedcollab.coordinator.simulation import discover_partner_files, run_simulation_job

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partners", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results/scale"))
    args = parser.parse_args(argv)
    given = list(sys.argv[1:] if argv is None else argv)
    out: Path = args.out
    load_start = os.getloadavg()
    parts = out / f"partners-{args.partners}"
    if not list(parts.glob("*.schema.json")):
        split_horizontal(
            DATA_DIR / "online_shoppers_intention.csv",
            load_schema(DATA_DIR / "online_shoppers.schema.json"),
            parts,
            mode="iid",
            n_partners=args.partners,
            prefix="brand",
            id_from_row_number=True,
        )
    sources = discover_partner_files(parts)
    spec = JobSpec.model_validate(
        {
            "name": f"scale-{args.partners}",
            "task": "purchase_prediction",
            "purpose": "purchase-prediction",
            "schema": json.loads(sources[0].schema.read_text()),
            "min_partners": args.partners,
            "rounds": args.rounds,
            "round_timeout_s": 600.0,
            "startup_timeout_s": 600.0,
            "evaluation": {"early_stopping_patience": 0},
        },
        strict=False,
    )
    t0 = time.monotonic()
    with PeakMemory() as mem:
        run_simulation_job(spec, sources, out / f"job-{args.partners}")
    wall = time.monotonic() - t0
    metrics = load_metrics(out / f"job-{args.partners}").document()
    result = {
        "partners": args.partners,
        "rounds": metrics["rounds_run"],
        "wall_time_s": round(wall, 1),
        "peak_rss_mib": round(mem.peak / 2**20, 1),
        "test_auc": metrics["final"]["test"]["auc"],
        "cpus": os.cpu_count(),
        "load_average_at_start": load_start,
        "load_average_at_end": os.getloadavg(),
        "command": ["python", "-m", "experiments.scale_simulation", *given],
    }
    table = Table(title="Simulation engine scale")
    shown = {k: v for k, v in result.items() if k != "command"}
    for key in shown:
        table.add_column(key)
    table.add_row(*(str(v) for v in shown.values()))
    Console().print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
