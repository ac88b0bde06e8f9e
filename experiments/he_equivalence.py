"""Encrypted vs plaintext jobs, side by side: does CKKS change what is learned?

    python -m experiments.he_equivalence --out results/experiments [--rounds N]

Runs the demo's two jobs (:func:`experiments.horizontal.default_jobs`) on the 9
Online Shoppers region partners in Flower's simulation engine, each twice with
the same seeds: in plaintext and with ``privacy.encryption = "ckks"`` (CKKS:
Cheon, Kim, Kim, Song 2017; :mod:`privacy.ckks`). Purchase prediction keeps
the demo's settings, early stopping included; segmentation uses ``seeding =
"summed"`` in both runs (k-FED seeding cannot run encrypted). Every job
writes ``trace.npz``: the global model after each round (``round-<i>``) or
the centroids after each Lloyd iteration (``lloyd-<i>``).

Reported per round: max abs difference between the encrypted and plaintext
global models, the parameter scale (max abs parameter of the plaintext
model) and their ratio; per Lloyd iteration the same for centroids; rounds
run, final test AUC, final objectives, wall times. A table goes to the
console, everything to ``<out>/he_equivalence.json``.

Targets: per round, difference <= 1e-6 x parameter scale; final test AUC
equal to 3 decimals. Early stopping decides on AUCs from decrypted (rounded)
histograms, so the runs may stop at different rounds: that is reported as a
finding, and models are compared over the common rounds.

Notes
-----
Why 1e-6: decryption rounds the summed update to a grid of 2^-12
(``compact``; CKKS noise can tip a value to the next grid point) and FedAvg
divides the sum by the total example count (~8,600 train rows here): an
averaged parameter moves by about 2^-12 / 8600 ~ 3e-8, far below 1e-6 of
parameters of order 0.1..1. Differences may grow over rounds, as a model off
by 3e-8 trains on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from fedcollab.common.job_files import load_metrics
from fedcollab.common.jobspec import JobSpec

__all__ = [
    "RELATIVE_TARGET",
    "code_version",
    "compare_prediction",
    "compare_segmentation",
    "compare_traces",
    "main",
]

RELATIVE_TARGET = 1e-6
_TASKS = ("prediction", "segmentation")


def _order(key: str) -> tuple[str, int]:
    prefix, _, index = key.rpartition("-")
    return prefix, int(index)


def compare_traces(
    plain: Mapping[str, np.ndarray], enc: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """Per step present in both traces: max abs difference, scale, ratio; maxima over steps.

    >>> r = compare_traces({"round-1": np.array([2.0])}, {"round-1": np.array([2.5])})
    >>> r["per_step"][0]["max_abs_diff"], r["max_ratio"]
    (0.5, 0.25)

    A NaN anywhere makes the maxima NaN, so a check ``<= target`` fails.
    """
    common = sorted(set(plain) & set(enc), key=_order)
    per_step = []
    for key in common:
        p, e = np.asarray(plain[key], np.float64), np.asarray(enc[key], np.float64)
        if p.shape != e.shape:
            raise ValueError(f"{key}: plaintext shape {p.shape} != encrypted shape {e.shape}")
        diff = float(np.max(np.abs(e - p))) if p.size else 0.0
        scale = float(np.max(np.abs(p))) if p.size else 0.0
        ratio = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
        per_step.append(
            {"step": key, "max_abs_diff": diff, "parameter_scale": scale, "ratio": ratio}
        )

    def peak(field: str) -> float | None:
        return float(np.max([s[field] for s in per_step])) if per_step else None

    return {
        "steps_plaintext": len(plain),
        "steps_encrypted": len(enc),
        "common_steps": len(common),
        "only_plaintext": sorted(set(plain) - set(enc), key=_order),
        "only_encrypted": sorted(set(enc) - set(plain), key=_order),
        "per_step": per_step,
        "max_abs_diff": peak("max_abs_diff"),
        "max_parameter_scale": peak("parameter_scale"),
        "max_ratio": peak("ratio"),
    }


def _pair(plaintext: Any, encrypted: Any) -> dict[str, Any]:
    return {"plaintext": plaintext, "encrypted": encrypted}


def _within(trace: Mapping[str, Any]) -> bool:
    return trace["max_ratio"] is not None and bool(trace["max_ratio"] <= RELATIVE_TARGET)


def compare_prediction(
    plain: Mapping[str, Any],
    enc: Mapping[str, Any],
    plain_trace: Mapping[str, np.ndarray],
    enc_trace: Mapping[str, np.ndarray],
) -> dict[str, Any]:
    """Purchase prediction: ``plain``/``enc`` are the jobs' ``metrics.json`` documents."""
    trace = compare_traces(plain_trace, enc_trace)
    auc_p, auc_e = plain["final"]["test"]["auc"], enc["final"]["test"]["auc"]
    same_rounds = plain["rounds_run"] == enc["rounds_run"]
    findings = []
    if not same_rounds:
        findings.append(
            f"early stopping ended the plaintext run after {plain['rounds_run']} rounds and "
            f"the encrypted run after {enc['rounds_run']}; models compared over the "
            f"{trace['common_steps']} common rounds"
        )
    return {
        "trace": trace,
        "rounds_run": _pair(plain["rounds_run"], enc["rounds_run"]),
        "best_round": _pair(plain["best_round"], enc["best_round"]),
        "same_rounds_run": same_rounds,
        "test_auc": {
            **_pair(auc_p, auc_e),
            "plaintext_3dp": None if auc_p is None else round(auc_p, 3),
            "encrypted_3dp": None if auc_e is None else round(auc_e, 3),
        },
        "findings": findings,
        "checks": {
            "prediction: max |enc - plain| <= 1e-6 x parameter scale, every common round": (
                _within(trace)
            ),
            "prediction: final test AUC equal to 3 decimals": (
                auc_p is not None and auc_e is not None and round(auc_p, 3) == round(auc_e, 3)
            ),
        },
    }


def compare_segmentation(
    plain: Mapping[str, Any],
    enc: Mapping[str, Any],
    plain_trace: Mapping[str, np.ndarray],
    enc_trace: Mapping[str, np.ndarray],
) -> dict[str, Any]:
    """Segmentation: centroids per Lloyd iteration, objectives per iteration and final."""
    trace = compare_traces(plain_trace, enc_trace)
    enc_obj = {h["iteration"]: h["objective"] for h in enc["history"]}
    objectives = [
        {"iteration": i, **_pair(o, enc_obj[i]), "abs_diff": abs(enc_obj[i] - o)}
        for i, o in ((h["iteration"], h["objective"]) for h in plain["history"])
        if i in enc_obj
    ]
    obj_p, obj_e = plain["objective"], enc["objective"]
    findings = []
    if plain["iterations"] != enc["iterations"]:
        findings.append(
            f"the plaintext run converged after {plain['iterations']} Lloyd iterations and "
            f"the encrypted run after {enc['iterations']}"
        )
    return {
        "trace": trace,
        "iterations": _pair(plain["iterations"], enc["iterations"]),
        "objective_per_iteration": objectives,
        "final_objective": {
            **_pair(obj_p, obj_e),
            "abs_diff": abs(obj_e - obj_p),
            "relative_diff": abs(obj_e - obj_p) / abs(obj_p) if obj_p else None,
        },
        "findings": findings,
        "checks": {
            "segmentation: max |enc - plain| <= 1e-6 x centroid scale, every iteration "
            "(the prediction target, applied to centroids)": _within(trace),
        },
    }


def _specs(schema: Path, rounds: int | None, *, dealer: str) -> dict[str, JobSpec]:
    from experiments.horizontal import default_jobs

    prediction, segmentation = default_jobs(schema)
    specs = {}
    for task, spec in zip(_TASKS, (prediction, segmentation), strict=True):
        for mode in ("plaintext", "ckks"):
            d = spec.model_dump(mode="json", by_alias=True)
            d["privacy"]["encryption"] = "none" if mode == "plaintext" else "ckks"
            d["privacy"]["aggregation"] = ""  # the encryption's default ("ckks+masked")
            d["privacy"]["key_dealer"] = "" if mode == "plaintext" else dealer
            if task == "segmentation":
                d["segmentation"]["seeding"] = "summed"
                if rounds is not None:
                    d["segmentation"]["lloyd_iterations"] = rounds
            elif rounds is not None:
                d["rounds"] = rounds
            specs[f"{task}-{mode}"] = JobSpec.model_validate(d, strict=False)
    return specs


def _load_trace(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _run_all(
    out: Path, rounds: int | None, num_cpus: int | None, console: Console
) -> dict[str, Any]:
    # Imported here: the comparison functions above stay importable without Flower.
    from experiments.horizontal import prepare_partners
    from fedcollab.federation.simulation import run_simulation_job

    sources = prepare_partners(out / "partners")
    runs: dict[str, Any] = {}
    loaded: dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]] = {}
    dealer = min(s.partner for s in sources)
    for name, spec in _specs(sources[0].schema, rounds, dealer=dealer).items():
        job_out = out / "he-equivalence" / name
        t = time.monotonic()
        run_simulation_job(spec, sources, job_out, num_cpus=num_cpus, trace=True)
        wall = time.monotonic() - t
        metrics = load_metrics(job_out).document()
        runs[name] = {
            "output_dir": str(job_out),
            "wall_time_s": round(wall, 2),
            "job_wall_time_s": metrics["wall_time_s"],
        }
        loaded[name] = (metrics, _load_trace(job_out / "trace.npz"))
        console.print(f"{name}: {wall:.1f} s")
    (pm, pt), (em, et) = loaded["prediction-plaintext"], loaded["prediction-ckks"]
    (sm, st), (sem, set_) = loaded["segmentation-plaintext"], loaded["segmentation-ckks"]
    ratio = {
        t: {
            "wall_time": runs[f"{t}-ckks"]["wall_time_s"] / runs[f"{t}-plaintext"]["wall_time_s"],
            "job_wall_time": runs[f"{t}-ckks"]["job_wall_time_s"]
            / runs[f"{t}-plaintext"]["job_wall_time_s"],
        }
        for t in _TASKS
    }
    return {
        "partners": [s.partner for s in sources],
        "purchase_prediction": compare_prediction(pm, em, pt, et),
        "segmentation": compare_segmentation(sm, sem, st, set_),
        "runs": runs,
        "wall_time_ratio": ratio,
    }


def code_version() -> dict[str, Any]:
    """Which code ran: its folder, and its git commit and modified files when a checkout."""
    root = Path(__file__).resolve().parent.parent

    def git(*cmd: str) -> str:
        proc = subprocess.run(
            ["git", "-C", str(root), *cmd], capture_output=True, text=True, check=False
        )
        return proc.stdout.strip() if proc.returncode == 0 else ""

    return {
        "root": str(root),
        "git_commit": git("rev-parse", "HEAD") or None,
        "git_modified": git("status", "--porcelain", "--untracked-files=no").splitlines(),
    }


def _e(x: float | None) -> str:
    return "-" if x is None else f"{x:.2e}"


def render(result: Mapping[str, Any]) -> Table:
    pp, seg, runs = result["purchase_prediction"], result["segmentation"], result["runs"]
    table = Table(title="CKKS-encrypted vs plaintext jobs (9 partners, simulation)")
    table.add_column("measure")
    table.add_column("purchase prediction", justify="right")
    table.add_column("segmentation (summed seeding)", justify="right")
    tp, ts = pp["trace"], seg["trace"]
    rows: list[tuple[str, ...]] = [
        ("rounds / iterations run (plain, enc)",
         "{plaintext}, {encrypted}".format(**pp["rounds_run"]),
         "{plaintext}, {encrypted}".format(**seg["iterations"])),
        ("steps compared", str(tp["common_steps"]), str(ts["common_steps"])),
        ("max abs diff (max over steps)", _e(tp["max_abs_diff"]), _e(ts["max_abs_diff"])),
        ("parameter scale (max over steps)",
         _e(tp["max_parameter_scale"]), _e(ts["max_parameter_scale"])),
        ("diff / scale (max over steps)", _e(tp["max_ratio"]), _e(ts["max_ratio"])),
        ("final test AUC plain / enc (3 dp)",
         "{plaintext_3dp} / {encrypted_3dp}".format(**pp["test_auc"]), ""),
        ("final test AUC plain / enc (raw)",
         "{plaintext:.6f} / {encrypted:.6f}".format(**pp["test_auc"]), ""),
        ("final objective plain / enc", "",
         "{plaintext:.6f} / {encrypted:.6f}".format(**seg["final_objective"])),
        ("final objective relative diff", "", _e(seg["final_objective"]["relative_diff"])),
    ]  # fmt: skip
    wall, ratio = "{wall_time_s:.1f} s ({job_wall_time_s:.1f} s)", result["wall_time_ratio"]
    rows += [
        ("wall time plain (job's own)", *(wall.format(**runs[f"{t}-plaintext"]) for t in _TASKS)),
        ("wall time enc (job's own)", *(wall.format(**runs[f"{t}-ckks"]) for t in _TASKS)),
        ("wall time enc / plain (job's own)",
         *("{wall_time:.2f}x ({job_wall_time:.2f}x)".format(**ratio[t]) for t in _TASKS)),
    ]  # fmt: skip
    for row in rows:
        table.add_row(*row)
    return table


def _per_step_json(trace: Mapping[str, Any]) -> str:
    return json.dumps(
        {s["step"]: [float(f"{s['max_abs_diff']:.3e}"), float(f"{s['ratio']:.3e}")]
         for s in trace["per_step"]}
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    fmt = argparse.RawTextHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--out", type=Path, default=Path("results/experiments"))
    parser.add_argument(
        "--rounds", type=int, default=None,
        help="cap prediction rounds and Lloyd iterations (default: the demo's 40 and 30)",
    )  # fmt: skip
    parser.add_argument("--num-cpus", type=int, default=None, help="simulation CPUs")
    args = parser.parse_args(argv)
    given = list(sys.argv[1:] if argv is None else argv)
    console = Console(width=None if sys.stdout.isatty() else 110)
    t0 = time.monotonic()
    result = _run_all(args.out, args.rounds, args.num_cpus, console)
    result = {
        "experiment": "he_equivalence",
        "command": ["python", "-m", "experiments.he_equivalence", *given],
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "flwr": version("flwr"),
            "tenseal": version("tenseal"),
            "loadavg_1min_at_end": os.getloadavg()[0],
        },
        "code": code_version(),
        "relative_target": RELATIVE_TARGET,
        **result,
        "wall_time_s": round(time.monotonic() - t0, 1),
    }
    console.print(render(result))
    for task in ("purchase_prediction", "segmentation"):
        console.print(f"per step, {task} (step: [max abs diff, ratio]):", markup=False)
        console.print(_per_step_json(result[task]["trace"]), soft_wrap=True, markup=False)
    for task in ("purchase_prediction", "segmentation"):
        for finding in result[task]["findings"]:
            console.print(f"  [yellow]FINDING[/] {finding}")
        for name, ok in result[task]["checks"].items():
            console.print(f"  {'[green]PASS' if ok else '[red]FAIL'}[/] {name}")
    path = args.out / "he_equivalence.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {path} ({result['wall_time_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
