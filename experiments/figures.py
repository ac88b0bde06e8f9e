"""The README's figures, drawn from the studies' JSON (matplotlib, Agg backend).

    from experiments.figures import draw_all
    written = draw_all(results, Path("docs/figures"))  # {"horizontal": Path(...), ...}

``results`` maps a study name (:data:`experiments.studies.STUDIES`) to the JSON
it wrote. Each figure needs some studies; a figure whose studies are missing is
not drawn (``draw_all`` leaves it out of its answer), one whose optional inputs
are missing (the deployment benchmarks, skipped by ``--quick``) is drawn
without them. File names are fixed: ``<figure>.png``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter, ScalarFormatter

__all__ = ["FIGURES", "Figure", "draw_all"]

Results = Mapping[str, Mapping[str, Any]]
DPI = 110
COLORS = {"fed": "#1f77b4", "alone": "#ff7f0e", "central": "#2ca02c", "dp": "#d62728"}


@dataclass(frozen=True)
class Figure:
    """One PNG: its name, title (the README's alt text), required studies and drawer."""

    name: str
    title: str
    needs: tuple[str, ...]
    draw: Callable[[Results, Path], None]


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    # No "Software" tag: the same JSON gives the same bytes on any matplotlib.
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    plt.close(fig)


def _plain_log_axis(axis: Any, ticks: Sequence[float] | None = None) -> None:
    """Log scale labelled 1, 3, 8 rather than 10^0, 3x10^0, ..."""
    if ticks is not None:
        axis.set_ticks(list(ticks))
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_formatter(NullFormatter())


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


def horizontal(results: Results, path: Path) -> None:
    pp = results["horizontal"]["purchase_prediction"]
    km = results["horizontal"]["segmentation"]["objective_pooled"]
    partners = list(pp["alone"])
    fed = [_nan(pp["federated_model_on_each_partner"].get(p)) for p in partners]
    alone = [_nan(pp["alone"][p]["test_auc"]) for p in partners]
    fig, ax = plt.subplots(figsize=(10, 4.2))
    xs = list(range(len(partners)))
    w = 0.38
    ax.bar([x - w / 2 for x in xs], fed, w, label="federated model", color=COLORS["fed"])
    ax.bar([x + w / 2 for x in xs], alone, w, label="partner alone", color=COLORS["alone"])
    pooled = len(partners) + 0.6
    w3 = 0.27
    ax.bar(pooled - w3, _nan(pp["federated"]["test_auc"]), w3, color=COLORS["fed"])
    ax.bar(pooled, _nan(pp["alone_mean_test_auc"]), w3, color=COLORS["alone"])
    ax.bar(pooled + w3, _nan(pp["centralized"]["test_auc"]), w3, color=COLORS["central"],
           label="centralized (pooled rows)")  # fmt: skip
    ax.set_xticks([*xs, pooled], [p.removeprefix("region-") for p in partners] + ["pooled"])
    ax.set_xlabel("partner (Online Shoppers region); pooled: all test rows, alone = mean")
    ax.set_ylabel("test AUC")
    finite = [v for v in [*fed, *alone, _nan(pp["centralized"]["test_auc"])] if not math.isnan(v)]
    ax.set_ylim(max(0.0, min(finite) - 0.05), max(finite) + 0.06)
    ax.set_title(
        f"Purchase prediction: federated vs partner alone vs centralized "
        f"(k-means objective federated/centralized {km['ratio']:.4f})"
    )
    ax.legend(loc="upper left", ncol=3, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def _series(summary: Sequence[Mapping[str, Any]], level: str, key: str) -> tuple[list[float], ...]:
    rows = sorted(
        (r for r in summary if r["level"] == level), key=lambda r: float(r["target_epsilon"])
    )
    return (
        [float(r["target_epsilon"]) for r in rows],
        [_nan(r[key]["mean"]) for r in rows],
        [_nan(r[key]["std"]) for r in rows],
    )


def privacy_utility(results: Results, path: Path) -> None:
    res = results["privacy_utility"]
    summary = res["summary"]
    (no_dp,) = [r for r in summary if r["level"] == "none"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = {"sample": "DP-SGD (record level)", "client": "DP-FedAvg (partner level), CKKS"}
    for level, color in (("sample", COLORS["fed"]), ("client", COLORS["dp"])):
        for ax, key in ((ax1, "test_auc"), (ax2, "mia_auc")):
            x, y, e = _series(summary, level, key)
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, color=color, label=labels[level])
    ax1.axhline(no_dp["test_auc"]["mean"], ls="--", color="gray", label="no DP (federated)")
    ax1.axhline(res["centralized"]["test_auc"], ls=":", color=COLORS["central"],
                label="centralized, no DP")  # fmt: skip
    ax1.set_ylabel("test AUC (mean ± std over seeds)")
    ax1.set_title(f"Utility, {len(res['settings']['seeds'])} seed(s)")
    null_std = no_dp["mia_null_auc_std"]["mean"]
    ax2.axhline(no_dp["mia_auc"]["mean"], ls="--", color="gray", label="no DP")
    ax2.axhspan(0.5 - 2 * null_std, 0.5 + 2 * null_std, color="gray", alpha=0.15,
                label="chance ± 2 null std")  # fmt: skip
    ax2.set_ylabel("membership-inference AUC (loss threshold)")
    ax2.set_title("Membership inference")
    epsilons = sorted({float(r["target_epsilon"]) for r in summary if r["level"] != "none"})
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        _plain_log_axis(ax.xaxis, epsilons)
        ax.set_xlabel("target ε (δ = 1e-5)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)


def _deployment(results: Results) -> Mapping[str, Any] | None:
    dep = results.get("bench_he_deployment") or results["bench_he"].get("deployment")
    return dep or None


def he_overhead(results: Results, path: Path) -> None:
    rows = sorted(results["bench_he"]["results"], key=lambda r: r["size"])
    sizes = [r["size"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax1.plot(sizes, [r["bytes"]["ratio_ciphertext_to_float32"] for r in rows], "o-",
             color=COLORS["dp"], label="CKKS reply / float32")  # fmt: skip
    ax1.axhline(15, ls="--", color="gray", label="goal 15x")
    ax1.axhline(8, ls=":", color="gray", label="stretch 8x")
    ax1.set_ylabel("bytes on the wire, ratio to float32")
    ax1.set_title("Ciphertext size")
    ratio = [r["seconds"]["ratio_round_encrypted_to_plaintext"] for r in rows]
    ax2.plot(sizes, ratio, "o-", color=COLORS["fed"], label="one process, no network")
    dep = _deployment(results)
    if dep is not None:
        x, y = dep["model"]["parameters"], dep["ratio_encrypted_to_plaintext"]["median_round"]
        ax2.plot([x], [y], "*", ms=14, color=COLORS["central"],
                 label=f"real federation ({len(dep['partners'])} nodes): {y:.2f}x")  # fmt: skip
        goal = dep["goal"]["target"]
        ax2.axhline(goal, ls="--", color="gray", label=f"deployment goal {goal:g}x")
    else:
        ax2.text(0.02, 0.95, "deployment benchmark not run", transform=ax2.transAxes, va="top")
    ax2.set_yscale("log")
    _plain_log_axis(ax2.yaxis)
    ax2.set_ylabel("round time, encrypted / plaintext")
    ax2.set_title("Round time")
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("model parameters")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    _save(fig, path)


def psi_scaling(results: Results, path: Path) -> None:
    res = results["bench_psi"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    by_parties: dict[int, list[Mapping[str, Any]]] = {}
    for r in res["results"]:
        by_parties.setdefault(r["parties"], []).append(r)
    for parties, rows in sorted(by_parties.items()):
        rows = sorted(rows, key=lambda r: r["n_per_party"])
        xs, ys = [r["n_per_party"] for r in rows], [r["seconds"]["wall"] for r in rows]
        ax.plot(xs, ys, "o-", label=f"{parties} parties (wall)")
        for x, y in zip(xs, ys, strict=True):
            ax.annotate(f"{y:.1f} s", (x, y), textcoords="offset points", xytext=(4, -10),
                        fontsize=8)  # fmt: skip
    target = res["summary"]["target"]
    ax.axhline(60, ls="--", color="gray", label="goal: 1M x 1M ids in 60 s")
    met = "met" if target["met"] else "not met"
    scope = "" if target["applies"] else " (main run below 1M ids: goal not tested)"
    ax.set_title(f"ECDH-PSI (X25519), {res['main']['cores_used']} cores: goal {met}{scope}",
                 fontsize=10)  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("ids per party (50% overlap)" if res["main"]["overlap"] == 0.5 else "ids")
    ax.set_ylabel("end-to-end time (s)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _save(fig, path)


def vertical(results: Results, path: Path) -> None:
    from experiments.vertical import models

    res = results["vertical"]
    rows = models(res)
    labels = [label for label, _, _ in rows]
    aucs = [_nan(r.get("test_auc")) for _, r, _ in rows]
    colors = [
        COLORS["alone"] if "alone" in label else COLORS["central"] if "centralized" in label
        else COLORS["dp"] if "DP" in label else COLORS["fed"]
        for label in labels
    ]  # fmt: skip
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.6))
    ax.barh(range(len(rows)), aucs, color=colors)
    for i, v in enumerate(aucs):
        ax.text(v + 0.002, i, f"{v:.4f}", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), labels)
    ax.invert_yaxis()
    finite = [v for v in aucs if not math.isnan(v)]
    ax.set_xlim(max(0.0, min(finite) - 0.05), min(1.0, max(finite) + 0.04))
    ax.set_xlabel("test AUC")
    n = res["rows"]
    title = f"Vertical: credit default over {len(res['parties'])} parties "
    ax.set_title(f"{title}({n['train']:,} train / {n['test']:,} test rows)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def secagg_costs(results: Results, path: Path) -> None:
    """Per-partner time and bytes sent, and coordinator time, per aggregation mode."""
    rows = results["bench_secagg"]["results"]
    n = max(r["partners"] for r in rows)
    drop = max(r["dropout"] for r in rows if r["partners"] == n)
    pick = sorted((r for r in rows if r["partners"] == n and r["dropout"] == drop),
                  key=lambda r: r["size"])  # fmt: skip
    sizes = [r["size"] for r in pick]
    modes = ("plaintext", "masked", "ckks", "ckks+masked")
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for mode in modes:
        ms = [r[mode] for r in pick]
        axes[0].plot(sizes, [m["partner_seconds"] for m in ms], "o-", label=mode)
        sent = [m.get("partner_bytes_sent", m["reply_bytes"]) for m in ms]
        axes[1].plot(sizes, sent, "o-", label=mode)
        axes[2].plot(sizes, [m["coordinator_seconds"] for m in ms], "o-", label=mode)
    goal = results["bench_secagg"]["goals"]["unmask_time"]["goal_seconds"]
    axes[2].axhline(goal, ls="--", color="gray", label=f"unmask goal {goal:g} s (100k)")
    titles = ("partner time per round (s)", "partner bytes sent per round",
              "coordinator time per round (s)")  # fmt: skip
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("model parameters")
        ax.set_title(f"{title}\n{n} partners, {drop:.0%} dropouts", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    _save(fig, path)


FIGURES: tuple[Figure, ...] = (
    Figure("horizontal", "Federated vs partner alone vs centralized", ("horizontal",), horizontal),
    Figure("privacy_utility", "Test AUC and membership inference vs epsilon",
           ("privacy_utility",), privacy_utility),
    Figure("he_overhead", "CKKS overhead: bytes and round time vs parameters",
           ("bench_he",), he_overhead),
    Figure("secagg_costs", "Secure aggregation: partner and coordinator cost per mode",
           ("bench_secagg",), secagg_costs),
    Figure("psi_scaling", "PSI time vs ids per party", ("bench_psi",), psi_scaling),
    Figure("vertical", "Vertical: single party vs vertical LR vs centralized vs split NN",
           ("vertical",), vertical),
)  # fmt: skip


def draw_all(results: Results, folder: Path) -> dict[str, Path]:
    """Every figure whose studies are in ``results``, as ``folder/<name>.png``."""
    written = {}
    for figure in FIGURES:
        if all(name in results for name in figure.needs):
            path = folder / f"{figure.name}.png"
            figure.draw(results, path)
            written[figure.name] = path
    return written
