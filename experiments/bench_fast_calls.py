"""A deployed round with and without fedcollab's fast calls, side by side in one run.

    python -m experiments.bench_fast_calls --out results/experiments [--rounds 14]
    python -m experiments.bench_fast_calls --compare executor [--encryption ckks]

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

``--compare executor`` runs the same side by side for where each partner's executor
runs (:mod:`fedcollab.client.runtime_local`): ``FEDCOLLAB_NODE_EXECUTOR=process`` (a
process of its own, every runtime call over HTTPS to its SuperNode) against the
default (a thread of the SuperNode's process, runtime calls as function calls); it
writes ``<out>/bench_node_executor.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from experiments.bench_deployment import _deployment, pooled, spec_for
from experiments.he_equivalence import code_version
from experiments.horizontal import prepare_partners
from fedcollab.client.runtime_local import EXECUTOR_ENV
from fedcollab.common.protobuf_fast import ENV

__all__ = ["COMPARISONS", "MODES", "Comparison", "main", "ratios"]

#: Mode -> the value of FEDCOLLAB_FAST_CALLS it runs with (None: unset, on).
MODES: Mapping[str, str | None] = {"app_layers": "0", "fast_calls": None}


@dataclass(frozen=True)
class Comparison:
    """Two settings of one environment variable the federation's processes inherit:
    the first mode is the baseline, the second what it is compared with."""

    env: str
    modes: Mapping[str, str | None]  # mode -> value (None: unset)
    labels: tuple[str, str]
    output: str


COMPARISONS: Mapping[str, Comparison] = {
    "fast_calls": Comparison(ENV, MODES, ("Flower's app layers", "fast calls"), "bench_fast_calls"),
    "executor": Comparison(
        EXECUTOR_ENV,
        {"executor_process": "process", "executor_thread": None},
        ("executor process (HTTPS)", "executor in the SuperNode"),
        "bench_node_executor",
    ),
}


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


def _run(
    mode: str, spec: Any, sources: Any, root: Path, compare: str = "fast_calls"
) -> dict[str, Any]:
    env = COMPARISONS[compare].env
    value = COMPARISONS[compare].modes[mode]
    before = os.environ.pop(env, None)
    if value is not None:
        os.environ[env] = value  # the federation's processes inherit it
    try:
        return _deployment(spec, sources, root)
    finally:
        os.environ.pop(env, None)
        if before is not None:
            os.environ[env] = before


def render(res: Mapping[str, Any]) -> Table:
    comparison = COMPARISONS[res.get("compare", "fast_calls")]
    layers, fast = (res["modes"][mode] for mode in comparison.modes)
    table = Table(
        title=f"Deployed round, {len(res['partners'])} partners, encryption "
        f"{res['job']['encryption']}, {res['job']['rounds']} rounds"
    )
    for col in ("measure", *comparison.labels, "second / first"):
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
    ap.add_argument("--compare", choices=sorted(COMPARISONS), default="fast_calls")
    args = ap.parse_args(argv)
    comparison = COMPARISONS[args.compare]
    if args.rounds < 3:
        ap.error("--rounds must be at least 3 (round 1 is not timed)")
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    given = list(sys.argv[1:] if argv is None else argv)
    console = Console(width=None if sys.stdout.isatty() else 110)
    out: Path = args.out.resolve()
    t0, load_start = time.monotonic(), os.getloadavg()[0]
    root = out / comparison.output.replace("_", "-")
    sources = prepare_partners(root / "partners")
    spec = spec_for(
        sources[0].schema, rounds=args.rounds, encryption=args.encryption,
        dealer=min(s.partner for s in sources),
    )  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in comparison.modes}
    for rep in range(args.repeats):
        for mode in comparison.modes:
            run = _run(mode, spec, sources, root / f"{mode}-{rep + 1}", args.compare)
            runs[mode].append(run)
            console.print(f"{mode} (run {rep + 1}/{args.repeats}): median round "
                          f"{run['median_round_s']:.2f} s")  # fmt: skip
    modes = {mode: pooled(r) for mode, r in runs.items()}
    res: dict[str, Any] = {
        "benchmark": comparison.output,
        "command": ["python", "-m", "experiments.bench_fast_calls", *given],
        "compare": args.compare,
        "environment_variable": comparison.env,
        "partners": [s.partner for s in sources],
        "job": {"rounds": args.rounds, "encryption": args.encryption, "model": "logreg"},
        "repeats": args.repeats,
        "modes": modes,
        "ratios": ratios(*(modes[mode] for mode in comparison.modes)),
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
    path = out / f"{comparison.output}.json"
    path.write_text(json.dumps(res, indent=2) + "\n")
    console.print(f"wrote {path} ({res['wall_time_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
