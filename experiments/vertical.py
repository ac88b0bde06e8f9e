"""The vertical study: PSI, vertical LR (encrypted and plaintext), split NN, baselines.

    .venv/bin/python -m experiments.vertical --out results/experiments
    .venv/bin/python -m experiments.vertical --rows 1500 --lr-iterations 3 --snn-steps 5

Not a test: prints a table and met/not-met lines, writes ``<out>/vertical.json``
and ``<out>/vertical.png`` (test AUC per model). Everything runs here, in one
process and on the same rows, with the in-process drivers of
:mod:`protocols.vertical_local` (no relay, no Flower; a deployment runs the
same role objects in separate processes):

1. *PSI* (:func:`protocols.psi.run_psi_local`) over the credit-default data
   split by :func:`fedcollab.demo.vertical.prepare_vertical` (platform =
   label holder, payment, billing); checked against the plaintext join
   :func:`fedcollab.demo.vertical_summary.true_alignment`: the same ids, and in
   every party's result row ``j`` is the same id.
2. Each party preprocesses its own columns on the aligned rows
   (:func:`protocols.vertical_data.party_matrix`; train/test decided per id).
3. *Vertical LR* (:mod:`protocols.vertical_lr`), CKKS-encrypted and plaintext,
   same schedule: ``--lr-iterations`` (30) iterations, ``l2 = 1 / n_train``
   (sklearn's default ``C = 1``; the job default ``l2 = 1e-4`` is within a
   factor 1.4 of it here, and its plaintext AUC is recorded beside).
4. *Baselines*, the columns pooled in one place (what fedcollab avoids): the
   same objective fitted by sklearn on all columns
   (:func:`protocols.vertical_local.centralized_reference`) and on the label
   holder's columns alone. Goal: vertical LR >= centralized - 0.005 AUC. In
   a full run :func:`fedcollab.demo.vertical_summary.baselines` repeats the
   centralized fit on the plaintext join, as a cross-check of the rows.
5. *Split NN* (:mod:`protocols.split_nn`): without noise and with embedding
   DP calibrated by :func:`protocols.split_nn.noise_for` to each ``--epsilons``
   target (delta 1e-5, training releases plus the one test-set embedding),
   epsilon reported by :func:`protocols.split_nn.epsilon_for`.

Wall times are of this process on a shared machine (its load average is in
the JSON); encrypted/plaintext is their ratio. Round trips count relay
exchanges of training (feature parties -> label holder -> feature parties);
test scoring adds one message from each feature party.
"""

from __future__ import annotations

import argparse
import dataclasses
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

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.metrics import roc_auc_score

from fedcollab.client.partner_data import PartnerSource
from fedcollab.common.dataset import Dataset, load_dataset
from fedcollab.common.schema import load_schema
from fedcollab.protocols.psi import run_psi_local
from fedcollab.protocols.split_nn import SplitNNConfig, epsilon_for, noise_for, releases_per_row
from fedcollab.protocols.vertical_data import aligned_split, party_matrix
from fedcollab.protocols.vertical_local import (
    centralized_reference,
    run_lr_local,
    run_split_nn_local,
)
from fedcollab.protocols.vertical_lr import (
    LabelData,
    VerticalLRConfig,
    averaged_iterates,
    label_noise_for,
)

__all__ = ["Aligned", "align", "load_parties", "main", "matrices", "models", "study"]

TARGET_DELTA = 1e-5
TOLERANCE = 0.005  # vertical LR may trail the centralized fit by at most this AUC
DEFAULT_EPSILONS = (8.0, 32.0)


@dataclass(frozen=True)
class Aligned:
    """Every party's preprocessed features on the PSI rows, split by id."""

    label_holder: str
    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    y_train: np.ndarray
    y_test: np.ndarray

    @property
    def feature_parties(self) -> list[str]:
        return sorted(p for p in self.train if p != self.label_holder)

    def pooled(self, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return np.hstack([self.train[p] for p in names]), np.hstack([self.test[p] for p in names])


def load_parties(
    sources: Sequence[PartnerSource], *, label_holder: str, rows: int | None = None
) -> tuple[dict[str, Dataset], set[str]]:
    """Each party's dataset, and the true common ids (from the plaintext join).

    ``rows`` keeps only the customers in the label holder's first ``rows`` rows.
    """
    from fedcollab.demo.vertical_summary import true_alignment

    full = {s.partner: load_dataset(s.data, load_schema(s.schema)) for s in sources}
    truth = true_alignment(sources)
    truth_ids = [str(i) for i in full[label_holder].ids[truth[label_holder]]]
    for p, d in full.items():  # the join itself must be aligned
        assert [str(i) for i in d.ids[truth[p]]] == truth_ids, p
    if rows is None:
        return full, set(truth_ids)
    keep = {str(i) for i in full[label_holder].ids[:rows]}
    out = {}
    for p, d in full.items():
        mine = np.flatnonzero([str(i) in keep for i in d.ids])
        out[p] = d.subset(mine)
    return out, keep.intersection(truth_ids)


def align(
    datasets: Mapping[str, Dataset], truth: set[str], *, label_holder: str
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """PSI over all parties: each party's aligned rows, and the timing and checks."""
    sets = {p: [str(i) for i in d.ids] for p, d in datasets.items()}
    t = time.perf_counter()
    rows = run_psi_local(sets, label_holder=label_holder, run="experiments.vertical")
    wall = time.perf_counter() - t
    ids = {p: [sets[p][i] for i in r.tolist()] for p, r in rows.items()}
    reference = ids[label_holder]
    same_order = all(v == reference for v in ids.values())
    same_ids = set(reference) == truth and len(reference) == len(truth)
    return rows, {
        "set_sizes": {p: len(s) for p, s in sets.items()},
        "intersection": len(reference),
        "true_intersection": len(truth),
        "same_ids_as_true_join": same_ids,
        "same_id_in_same_position": same_order,
        "exact": same_ids and same_order,
        "wall_s": wall,
    }


def matrices(
    datasets: Mapping[str, Dataset],
    rows: Mapping[str, np.ndarray],
    *,
    label_holder: str,
    test_fraction: float,
    split_seed: int,
) -> Aligned:
    """Each party's own preprocessing of its columns on the aligned rows."""
    mats = {
        p: party_matrix(d, rows[p], test_fraction=test_fraction, split_seed=split_seed)
        for p, d in datasets.items()
    }
    lab, aligned = datasets[label_holder], rows[label_holder]
    assert lab.labels is not None
    train_pos, test_pos = aligned_split(
        lab, aligned, test_fraction=test_fraction, split_seed=split_seed
    )
    return Aligned(
        label_holder,
        train={p: m.train for p, m in mats.items()},
        test={p: m.test for p, m in mats.items()},
        y_train=lab.labels[aligned[train_pos]].astype(np.float64),
        y_test=lab.labels[aligned[test_pos]].astype(np.float64),
    )


def vertical_lr(data: Aligned, config: VerticalLRConfig) -> dict[str, Any]:
    lab = data.label_holder
    t = time.perf_counter()
    res = run_lr_local(
        LabelData(data.train[lab], data.y_train),
        {p: data.train[p] for p in data.feature_parties},
        config,
    )
    prob = res.predict_proba(data.test[lab], {p: data.test[p] for p in data.feature_parties})
    return {
        "test_auc": float(roc_auc_score(data.y_test, prob)),
        "wall_s": time.perf_counter() - t,
        "round_trips": config.iterations,
        "train_loss_first_last": [res.losses[0], res.losses[-1]],
    }


def sklearn_fit(data: Aligned, names: Sequence[str], l2: float) -> dict[str, Any]:
    x_train, x_test = data.pooled(names)
    t = time.perf_counter()
    model = centralized_reference(x_train, data.y_train, l2)
    return {
        "test_auc": float(roc_auc_score(data.y_test, model.decision_function(x_test))),
        "wall_s": time.perf_counter() - t,
        "columns": int(x_train.shape[1]),
    }


def split_nn(data: Aligned, config: SplitNNConfig, *, noise_seed: int) -> dict[str, Any]:
    lab, parties = data.label_holder, data.feature_parties
    t = time.perf_counter()
    res = run_split_nn_local(
        data.train[lab],
        data.y_train,
        {p: data.train[p] for p in parties},
        config,
        test=(data.test[lab], data.y_test, {p: data.test[p] for p in parties}),
        unsafe_noise_seed=noise_seed,
    )
    wall, n = time.perf_counter() - t, data.y_train.size
    eps = None
    if config.noise_multiplier > 0:  # the test set is embedded once: one more release
        eps = epsilon_for(config, n, target_delta=TARGET_DELTA, inference_releases=1)
    return {
        "test_auc": res.test_auc, "wall_s": wall, "round_trips": res.round_trips,
        "noise_multiplier": config.noise_multiplier, "epsilon": eps,
        "releases_per_row": releases_per_row(config, n) + 1,
    }  # fmt: skip


def study(
    sources: Sequence[PartnerSource],
    *,
    label_holder: str,
    test_fraction: float,
    split_seed: int,
    rows: int | None = None,
    lr_iterations: int = 30,
    job_l2: float | None = None,
    snn_steps: int = 200,
    epsilons: Sequence[float] = DEFAULT_EPSILONS,
    seed: int = 0,
    label_epsilon: float = 8.0,
    label_runs: int = 3,
) -> dict[str, Any]:
    """Every measurement of the study on one set of aligned rows (no output files)."""
    datasets, truth = load_parties(sources, label_holder=label_holder, rows=rows)
    aligned_rows, psi = align(datasets, truth, label_holder=label_holder)
    data = matrices(
        datasets, aligned_rows, label_holder=label_holder,
        test_fraction=test_fraction, split_seed=split_seed,
    )  # fmt: skip
    n = data.y_train.size
    l2 = 1.0 / n
    # As a deployment runs it: every party averages the tail of its iterates.
    job = VerticalLRConfig(
        iterations=lr_iterations, l2=l2, average_last=averaged_iterates(lr_iterations)
    )
    lr = {
        mode: vertical_lr(data, dataclasses.replace(job, encrypted=enc))
        for mode, enc in (("plaintext", False), ("encrypted", True))
    }
    lr["abs_auc_difference"] = abs(lr["encrypted"]["test_auc"] - lr["plaintext"]["test_auc"])
    # Label DP as a deployment runs it (the label holder's default epsilon): the noise
    # is fresh OS entropy each run, so the AUC is reported over several runs.
    z = label_noise_for(label_epsilon, iterations=lr_iterations, target_delta=TARGET_DELTA)
    noisy = dataclasses.replace(job, encrypted=False, label_noise=z)
    runs = [vertical_lr(data, noisy) for _ in range(label_runs)]
    aucs = [r["test_auc"] for r in runs]
    last = dataclasses.replace(noisy, average_last=0)  # the last iterate, for comparison
    last_aucs = [vertical_lr(data, last)["test_auc"] for _ in range(label_runs)]
    lr["label_dp"] = {
        "label_epsilon": label_epsilon, "target_delta": TARGET_DELTA, "noise_multiplier": z,
        "runs": label_runs, "test_auc_runs": aucs, "test_auc": float(np.mean(aucs)),
        "wall_s": float(np.mean([r["wall_s"] for r in runs])), "round_trips": lr_iterations,
        "average_last": noisy.average_last, "test_auc_runs_last_iterate": last_aucs,
    }  # fmt: skip
    lr["time_ratio_encrypted_to_plaintext"] = lr["encrypted"]["wall_s"] / lr["plaintext"]["wall_s"]
    if job_l2 is not None:
        job_cfg = dataclasses.replace(job, l2=job_l2, encrypted=False)
        lr["plaintext_with_job_l2"] = {"l2": job_l2, **vertical_lr(data, job_cfg)}
    central = sklearn_fit(data, sorted(data.train), l2)
    alone = sklearn_fit(data, [label_holder], l2)
    base = SplitNNConfig(steps=snn_steps, seed=seed)
    snn = {"none": split_nn(data, base, noise_seed=seed)}
    for eps in epsilons:
        z = noise_for(eps, config=base, n_rows=n, target_delta=TARGET_DELTA, inference_releases=1)
        cfg = dataclasses.replace(base, noise_multiplier=z)
        snn[f"{eps:g}"] = {"target_epsilon": eps, **split_nn(data, cfg, noise_seed=seed)}
    best_lr = min(lr["plaintext"]["test_auc"], lr["encrypted"]["test_auc"])
    checks = {
        "PSI equals the true intersection (same ids, same positions)": psi["exact"],
        f"vertical LR (both modes) >= centralized - {TOLERANCE}": bool(
            best_lr >= central["test_auc"] - TOLERANCE
        ),
        f"vertical LR with label DP (mean of runs) >= centralized - {TOLERANCE}": bool(
            lr["label_dp"]["test_auc"] >= central["test_auc"] - TOLERANCE
        ),
        "every DP split NN: epsilon <= target": all(
            r["epsilon"] <= r["target_epsilon"] for k, r in snn.items() if k != "none"
        ),
    }
    return {
        "rows": {"intersection": psi["intersection"], "train": n, "test": data.y_test.size},
        "columns": {p: int(x.shape[1]) for p, x in data.train.items()},
        "settings": {
            "label_holder": label_holder,
            "test_fraction": test_fraction,
            "split_seed": split_seed,
            "row_limit": rows,
            "vertical_lr": dataclasses.asdict(job),
            "l2_choice": "1 / n_train (sklearn C = 1)",
            "split_nn": {**dataclasses.asdict(base), "noise_seed": seed},
            "target_delta": TARGET_DELTA,
            "epsilons": list(epsilons),
        },
        "psi": psi,
        "vertical_lr": lr,
        "baselines": {"centralized": central, "label_holder_alone": alone},
        "centralized_minus_vertical_lr": central["test_auc"] - best_lr,
        "centralized_minus_vertical_lr_label_dp": central["test_auc"] - lr["label_dp"]["test_auc"],
        "centralized_minus_vertical_lr_label_dp_runs": [central["test_auc"] - a for a in aucs],
        "centralized_minus_vertical_lr_label_dp_runs_last_iterate": [
            central["test_auc"] - a for a in last_aucs
        ],
        "split_nn": snn,
        "checks": checks,
    }


def models(result: Mapping[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(label, figures, note) per model, in the order of the table and the chart."""
    lr, base = result["vertical_lr"], result["baselines"]
    ratio = lr["time_ratio_encrypted_to_plaintext"]
    out = [
        ("label holder alone", base["label_holder_alone"], "its own columns: sklearn"),
        ("vertical LR, plaintext", lr["plaintext"], "same schedule, no CKKS"),
        ("vertical LR, encrypted", lr["encrypted"],
         f"|Δ AUC| {lr['abs_auc_difference']:.1e}; {ratio:.0f}x plaintext time"),
        (f"vertical LR, label DP ε={lr['label_dp']['label_epsilon']:g}", lr["label_dp"],
         f"mean of {lr['label_dp']['runs']} runs, last {lr['label_dp']['average_last']} "
         f"iterates averaged (last iterate: "
         f"{np.mean(lr['label_dp']['test_auc_runs_last_iterate']):.5f}); noise multiplier "
         f"{lr['label_dp']['noise_multiplier']:.2f}"),
        ("centralized LR (pooled)", base["centralized"], "columns pooled: sklearn"),
    ]  # fmt: skip
    for key, r in result["split_nn"].items():
        if key == "none":
            out.append(("split NN", r, "no embedding noise"))
        else:
            z, count = r["noise_multiplier"], r["releases_per_row"]
            note = f"noise multiplier {z:.2f}, {count} releases/row"
            out.append((f"split NN + DP, ε={r['epsilon']:.3g}", r, note))
    return out


def render(result: Mapping[str, Any]) -> Table:
    psi = result["psi"]
    table = Table(title=f"vertical study: {psi['intersection']:,} common customers "
                  f"(PSI {psi['wall_s']:.1f} s, exact: {psi['exact']})")  # fmt: skip
    for col in ("model", "test AUC", "wall s", "round trips", "note"):
        table.add_column(col, justify="left" if col in ("model", "note") else "right")
    for label, r, note in models(result):
        auc, trips = r["test_auc"], r.get("round_trips")
        table.add_row(
            label, "-" if auc is None else f"{auc:.5f}", f"{r['wall_s']:.2f}",
            "" if trips is None else str(trips), note,
        )  # fmt: skip
    return table


def plot(result: Mapping[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = models(result)
    fig, ax = plt.subplots(figsize=(9, 4.8))
    values = [0.5 if r["test_auc"] is None else r["test_auc"] for _, r, _ in items]
    colors = ["C7", "C0", "C0", "C7", "C2", *(["C3"] * (len(items) - 5))]
    ax.bar(range(len(items)), values, color=colors)
    for i, v in enumerate(values):
        ax.text(i, v + 0.003, f"{v:.3f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(items)), [label for label, _, _ in items], rotation=25, ha="right")
    ax.set_ylim(0.5, max(values) + 0.05)
    ax.set_ylabel("test AUC")
    rows = result["rows"]
    ax.set_title(f"Vertical study, credit default: {rows['train']:,} train / {rows['test']:,} "
                 "test rows (PSI intersection)")  # fmt: skip
    ax.grid(axis="y", alpha=0.3)
    steps = result["settings"]["split_nn"]["steps"]
    fig.text(0.99, 0.01, f"split NN: {steps} steps; DP: noise on the feature parties' "
             "embeddings, δ = 1e-5", ha="right", fontsize=7, color="grey")  # fmt: skip
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _epsilons(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]  # ValueError: argparse says so


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("results/experiments"))
    parser.add_argument("--rows", type=int, default=None, help="label holder's first N rows")
    parser.add_argument("--lr-iterations", type=int, default=30)
    parser.add_argument("--snn-steps", type=int, default=200, help="split NN training steps")
    parser.add_argument("--epsilons", type=_epsilons, default=list(DEFAULT_EPSILONS))
    parser.add_argument("--seed", type=int, default=0, help="split NN init and noise seed")
    parser.add_argument("--label-epsilon", type=float, default=8.0, help="label holder's")
    parser.add_argument("--label-runs", type=int, default=3, help="label-DP runs averaged")
    args = parser.parse_args(argv)
    given = list(sys.argv[1:] if argv is None else argv)
    console = Console(width=None if sys.stdout.isatty() else 160)
    t0 = time.monotonic()
    load_start = os.getloadavg()[0]

    from experiments.he_equivalence import code_version
    from fedcollab.demo.vertical import LABEL_HOLDER, prepare_vertical, vertical_job

    sources = prepare_vertical(args.out / "vertical-parties")
    spec = vertical_job(sources)
    ev = spec.evaluation
    result: dict[str, Any] = {
        "experiment": "vertical",
        "command": ["python", "-m", "experiments.vertical", *given],
        "machine": {
            "cpus": os.cpu_count(),
            "cpus_available": len(os.sched_getaffinity(0)),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "tenseal": version("tenseal"),
            "torch": version("torch"),
            "loadavg_1min_at_start": load_start,
        },
        "code": code_version(),
        "dataset": "Default of Credit Card Clients (UCI), split by column over 3 parties",
        "parties": [s.partner for s in sources],
    }
    result.update(
        study(
            sources, label_holder=LABEL_HOLDER, test_fraction=ev.test_fraction,
            split_seed=ev.split_seed, rows=args.rows, lr_iterations=args.lr_iterations,
            job_l2=spec.vertical.l2, snn_steps=args.snn_steps, epsilons=args.epsilons,
            seed=args.seed, label_epsilon=args.label_epsilon, label_runs=args.label_runs,
        )
    )  # fmt: skip
    if args.rows is None:  # the plaintext-join baselines read the full files
        from fedcollab.demo.vertical_summary import baselines

        job = vertical_job(sources, l2=result["settings"]["vertical_lr"]["l2"])
        result["baselines"]["true_join_cross_check"] = baselines(sources, job)
    result["machine"]["loadavg_1min_at_end"] = os.getloadavg()[0]
    result["wall_time_s"] = round(time.monotonic() - t0, 1)
    console.print(render(result))
    for name, ok in result["checks"].items():
        console.print(f"  {'[green]MET' if ok else '[red]NOT MET'}[/] {name}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "vertical.json"
    path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    png = plot(result, args.out / "vertical.png")
    console.print(f"wrote {path} and {png} ({result['wall_time_s']:.0f} s in all)")
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
