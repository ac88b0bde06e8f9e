"""A deployed round with and without fedcollab's fast calls, side by side in one run.

    python -m experiments.bench_fast_calls --out results/experiments [--rounds 14]

The demo's purchase job (``experiments.bench_deployment.spec_for``) runs on a real
local federation (SuperLink behind the TLS Fleet gateway, one SuperNode and executor
per partner) ``--repeats`` times in each mode, interleaved so both see the same spells
of load:

* **app layers**: ``FEDCOLLAB_FAST_CALLS=0``, every Fleet and runtime-API call through
  Flower's FastAPI apps (as before commit 54d62d7);
* **fast calls**: the calls of every message answered by
  :mod:`fedcollab.common.protobuf_fast` (``coordinator/fleet_fast.py``,
  ``client/runtime_fast.py``).

It reports the median round (rounds 2..R of every run of the mode) and the CPU per
round of each kind of process, and the ratios fast / layers. Writes
``<out>/bench_fast_calls.json``. ``--encryption`` defaults to ``none`` (one message
per partner per round: the calls are the largest share there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from experiments.bench_deployment import _deployment, pooled, spec_for
from experiments.he_equivalence import code_version
from experiments.horizontal import prepare_partners
from fedcollab.common.protobuf_fast import ENV

__all__ = ["MODES", "main", "ratios"]

#: Mode -> the value of FEDCOLLAB_FAST_CALLS it runs with (None: unset, on).
MODES: Mapping[str, str | None] = {"app_layers": "0", "fast_calls": None}


def ratios(layers: Mapping[str, Any], fast: Mapping[str, Any]) -> dict[str, float]:
    """fast / layers for the median round and the CPU per round of all processes (3 places).

    >>> ratios({"median_round_s": 0.8, "cpu_per_round_s": {"a": 1.0, "b": 1.0}},
    ...        {"median_round_s": 0.6, "cpu_per_round_s": {"a": 0.5, "b": 1.0}})
    {'median_round': 0.75, 'cpu_per_round': 0.75}
    """
    cpu = sum(fast["cpu_per_round_s"].values()) / sum(layers["cpu_per_round_s"].values())
    return {
        "median_round": round(fast["median_round_s"] / layers["median_round_s"], 3),
        "cpu_per_round": round(cpu, 3),
    }


def _run(mode: str, spec: Any, sources: Any, root: Path) -> dict[str, Any]:
    value = MODES[mode]
    before = os.environ.pop(ENV, None)
    if value is not None:
        os.environ[ENV] = value  # the federation's processes inherit it
    try:
        return _deployment(spec, sources, root)
    finally:
        os.environ.pop(ENV, None)
        if before is not None:
            os.environ[ENV] = before


def render(res: Mapping[str, Any]) -> Table:
    layers, fast = res["modes"]["app_layers"], res["modes"]["fast_calls"]
    table = Table(
        title=f"Deployed round, {len(res['partners'])} partners, encryption "
        f"{res['job']['encryption']}, {res['job']['rounds']} rounds"
    )
    for col in ("measure", "Flower's app layers", "fast calls", "fast / layers"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    median = [f"{x['median_round_s']:.2f} s" for x in (layers, fast)]
    table.add_row("median round", *median, f"{res['ratios']['median_round']:.2f}x")
    kinds = sorted(set(layers["cpu_per_round_s"]) | set(fast["cpu_per_round_s"]))
    for kind in kinds:
        a, b = layers["cpu_per_round_s"].get(kind, 0.0), fast["cpu_per_round_s"].get(kind, 0.0)
        table.add_row(f"CPU per round: {kind}", f"{a:.2f} s", f"{b:.2f} s", "")
    table.add_row("CPU per round, all processes",
                  f"{sum(layers['cpu_per_round_s'].values()):.2f} s",
                  f"{sum(fast['cpu_per_round_s'].values()):.2f} s",
                  f"{res['ratios']['cpu_per_round']:.2f}x")  # fmt: skip
    table.add_row("final test AUC", f"{layers['test_auc']:.4f}", f"{fast['test_auc']:.4f}", "")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("results/experiments"))
    ap.add_argument("--rounds", type=int, default=14, help="rounds per job (at least 3)")
    ap.add_argument("--encryption", choices=("ckks", "none"), default="none")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each mode, interleaved")
    args = ap.parse_args(argv)
    if args.rounds < 3:
        ap.error("--rounds must be at least 3 (round 1 is not timed)")
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    given = list(sys.argv[1:] if argv is None else argv)
    console = Console(width=None if sys.stdout.isatty() else 110)
    out: Path = args.out.resolve()
    t0, load_start = time.monotonic(), os.getloadavg()[0]
    root = out / "bench-fast-calls"
    sources = prepare_partners(root / "partners")
    spec = spec_for(sources[0].schema, rounds=args.rounds, encryption=args.encryption)
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for rep in range(args.repeats):
        for mode in MODES:
            run = _run(mode, spec, sources, root / f"{mode}-{rep + 1}")
            runs[mode].append(run)
            console.print(f"{mode} (run {rep + 1}/{args.repeats}): median round "
                          f"{run['median_round_s']:.2f} s")  # fmt: skip
    modes = {mode: pooled(r) for mode, r in runs.items()}
    res: dict[str, Any] = {
        "benchmark": "bench_fast_calls",
        "command": ["python", "-m", "experiments.bench_fast_calls", *given],
        "partners": [s.partner for s in sources],
        "job": {"rounds": args.rounds, "encryption": args.encryption, "model": "logreg"},
        "repeats": args.repeats,
        "modes": modes,
        "ratios": ratios(modes["app_layers"], modes["fast_calls"]),
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
    out.mkdir(parents=True, exist_ok=True)
    path = out / "bench_fast_calls.json"
    path.write_text(json.dumps(res, indent=2) + "\n")
    console.print(f"wrote {path} ({res['wall_time_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
