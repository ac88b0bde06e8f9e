"""Privacy vs utility: purchase-prediction AUC and membership inference under DP.

    python -m experiments.privacy_utility --out results/experiments \
        [--seeds 5] [--epsilons 1,3,8] [--rounds 12] [--client-rounds 3]
        [--client-local-epochs 3] [--quick]

Trains the demo's logistic-regression purchase-prediction job
(:func:`experiments.horizontal.default_jobs`) on the 9 Online Shoppers region
partners, as real jobs in Flower's simulation engine
(:func:`federation.simulation.run_simulation_job`: the same ServerApp and
ClientApp code as a deployment), in three families of settings:

* **no DP**, plaintext aggregation;
* **sample-level DP**: DP-SGD at every partner (Abadi et al. 2016,
  arXiv:1607.00133; :mod:`protocols.dp_sgd`), *plaintext* aggregation -- each
  partner adds its full noise, so the record-level guarantee holds even
  against a coordinator that sees one partner's update (:mod:`privacy.dp_plan`);
* **client-level DP**: DP-FedAvg (McMahan et al. 2018, arXiv:1710.06963;
  :mod:`protocols.client_dp`), CKKS-encrypted aggregation (required: the
  partners' noise shares only protect in the sum).

Each DP family runs at every target epsilon (delta = 1e-5), every setting for
every seed.  The seed is ``training.seed`` (model initialisation and, without
DP-SGD, batch order); the train/validation/test split (``evaluation.split_seed
= 0``) is fixed, so every setting is tested on the same rows.  DP noise and
DP-SGD batches come from OS entropy and are never seeded.

On every released model (``model.pt`` + ``preprocessor.json``) a loss-threshold
membership-inference attack (Yeom et al. 2018, "Privacy Risk in Machine
Learning: Analyzing the Connection to Overfitting", arXiv:1709.01604) scores
each row by ``-loss``: members are the partners' training rows, non-members
their test rows (all of them; an equal-size, fixed random sample of training
rows).  Reported: the attack's ROC AUC and its advantage ``max(TPR - FPR)``.

Output: a table, ``<out>/privacy_utility.json`` (every run, the summary per
setting, the settings, wall times, the command line) and
``<out>/privacy_utility.png`` (test AUC and attack AUC vs epsilon).  Each run
writes its job outputs, audit logs and budget ledgers to a fresh folder
``<out>/privacy-utility/<setting>/seed-<k>``.

Notes
-----
* *Budget caps are not under study*: every partner's ledger cap is 1e6, so no
  run is refused.  The ledger still records each run's record-level charges,
  reported as ``record_level_epsilon``.
* *Epsilons.* ``epsilon`` is the job's reported epsilon (``metrics.json``):
  per record for sample-level DP, per *partner* for client-level DP.  One
  record can replace a partner's clipped update by any other (sensitivity
  2C), so the record-level epsilon of a client-level job is that of noise
  ``z / 2`` -- larger than its partner-level epsilon; the ledger holds it.
* *Settings.* Early stopping is off so every run trains ``rounds`` rounds and
  spends the planned epsilon.  The released model: without DP the round with the
  best exact validation AUC; with DP the last round (``evaluation.dp_model_selection
  = "last_round"``, the default: no per-round validation).  ``min_partners`` is the number of
  partners, so the DP-FedAvg noise shares of all 9 partners add up to exactly
  ``z * C`` (with the demo's 5 they would be ``sqrt(9/5)`` times larger).
  DP-SGD uses ``sample_rate = 0.05`` (20 steps per epoch; expected batches
  of 11 to 167 rows across the partners) and the job's Adam optimiser.
* *DP-FedAvg runs few long rounds* (``--client-rounds 3``, ``--client-local-epochs
  3``; the other settings ``rounds`` rounds of the demo's 1 epoch).  Its noise is
  added once per round to the sum of 9 clipped updates: at a fixed partner-level
  epsilon the multiplier grows about as ``sqrt(rounds)`` (epsilon 1: z = 7.0 for 3
  rounds, 14.0 for 12), while a round's signal is at most ``9 * C`` however long the
  partners train, so the noise on the released model is about the same for 3 or 12
  rounds and 3 rounds of 3 epochs spend the signal better.  Measured with the same
  code in the stop of 2026-12-05 (5 seeds, 12 x 1 against 3 x 3 epochs): see
  docs/privacy.md ("Measured").  With 9 partners and 73 parameters the noise norm is
  still ``z * C * sqrt(73)``, several times the signal at epsilon 1.
* *Attack baseline.* With ``n`` members and ``n`` non-members an attack AUC
  has standard deviation ``sqrt((2n + 1) / (12 n^2))`` under the null of no
  leakage (``null_auc_std``), and the advantage, a two-sample Kolmogorov-Smirnov
  statistic, has mean ~``0.87 * sqrt(2 / n)`` (``null_advantage_mean``), not 0.
  For (epsilon, delta)-DP no test between neighbouring datasets exceeds
  advantage ``(e^eps - 1 + 2 delta) / (e^eps + 1)`` (Kairouz, Oh, Viswanath
  2015, arXiv:1311.0776), reported as ``advantage_bound`` at the record-level
  epsilon: a worst-case bound, which an average-case attack need not reach.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

from fedcollab.common.job_files import load_metrics
from fedcollab.common.jobspec import JobSpec

if TYPE_CHECKING:
    from fedcollab.client.partner_data import PartnerData

from experiments.membership_inference import (
    advantage_bound,
    attack_advantage,
    attack_auc,
    loss_threshold_attack,
    per_example_loss,
)

__all__ = [
    "BUDGET_CAP",
    "Setting",
    "advantage_bound",
    "attack_advantage",
    "attack_auc",
    "job_for",
    "loss_threshold_attack",
    "main",
    "mean_std",
    "per_example_loss",
    "settings_for",
    "summarise",
]

BUDGET_CAP = 1e6
DEFAULT_EPSILONS = (1.0, 3.0, 8.0)
DEFAULT_SEEDS = 5
DEFAULT_ROUNDS = 12
QUICK_ROUNDS = 3
#: DP-FedAvg: few long rounds (Notes).
DEFAULT_CLIENT_ROUNDS = 3
DEFAULT_CLIENT_LOCAL_EPOCHS = 3
SAMPLE_RATE = 0.05
#: The member sample of the attack is the same for every run (fixed rows).
MIA_SAMPLE_SEED = 0

Level = Literal["none", "sample", "client"]


@dataclass(frozen=True)
class Setting:
    """One privacy setting: DP level and target epsilon (None without DP)."""

    level: Level
    target_epsilon: float | None = None

    @property
    def key(self) -> str:
        return "no-dp" if self.level == "none" else f"{self.level}-eps{self.target_epsilon:g}"

    @property
    def encryption(self) -> Literal["none", "ckks"]:
        return "ckks" if self.level == "client" else "none"


def settings_for(epsilons: Iterable[float]) -> list[Setting]:
    """No DP, then sample-level and client-level DP at each epsilon (ascending)."""
    eps = sorted({float(e) for e in epsilons})
    return [
        Setting("none"),
        *(Setting("sample", e) for e in eps),
        *(Setting("client", e) for e in eps),
    ]


def job_for(
    base: JobSpec,
    setting: Setting,
    *,
    seed: int,
    rounds: int,
    n_partners: int,
    dealer: str,
    client_rounds: int = DEFAULT_CLIENT_ROUNDS,
    client_local_epochs: int = DEFAULT_CLIENT_LOCAL_EPOCHS,
) -> JobSpec:
    """The demo's prediction job with this experiment's settings (see Notes).

    Client-level DP runs ``min(client_rounds, rounds)`` rounds of
    ``client_local_epochs`` local epochs; the other settings ``rounds`` rounds of
    the demo's local epochs. ``dealer``: the partner that deals an encrypted setting's
    key (the spec pins it).
    """
    from experiments.horizontal import ONLINE_SHOPPERS_BOUNDS  # imports Flower: only here

    d = base.model_dump(mode="json", by_alias=True)
    d["name"] = f"pu-{setting.key}-s{seed}"
    d["rounds"] = rounds
    d["min_partners"] = n_partners
    d["training"]["seed"] = seed
    d["evaluation"]["early_stopping_patience"] = 0
    d["privacy"]["encryption"] = setting.encryption
    d["privacy"]["aggregation"] = ""  # the encryption's default (common.jobspec)
    d["privacy"]["key_dealer"] = dealer if setting.encryption == "ckks" else ""
    if setting.level == "client":
        d["rounds"] = min(client_rounds, rounds)
        d["training"]["local_epochs"] = client_local_epochs
    if setting.level != "none":
        d["privacy"].update(
            dp=setting.level,
            target_epsilon=setting.target_epsilon,
            sample_rate=SAMPLE_RATE,
            value_bounds=ONLINE_SHOPPERS_BOUNDS,
        )
    return JobSpec.model_validate(d, strict=False)


# --- aggregation over seeds (pure) ----------------------------------------------------


def mean_std(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof 1) of the non-missing values.

    >>> mean_std([1.0, 3.0])
    {'mean': 2.0, 'std': 1.4142135623730951, 'n': 2}
    >>> mean_std([2.0, None])
    {'mean': 2.0, 'std': None, 'n': 1}
    """
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return {"mean": None, "std": None, "n": 0}
    return {
        "mean": statistics.fmean(xs),
        "std": statistics.stdev(xs) if len(xs) > 1 else None,
        "n": len(xs),
    }


def _get(run: Mapping[str, Any], path: str) -> Any:
    value: Any = run
    for part in path.split("."):
        if value is None:
            return None
        value = value.get(part)
    return value


_SUMMARISED = {
    "test_auc": "test_auc",
    "test_auc_exact": "test_auc_exact",
    "epsilon": "epsilon",
    "record_level_epsilon": "record_level_epsilon",
    "mia_auc": "mia.auc",
    "mia_advantage": "mia.advantage",
    "mia_null_auc_std": "mia.null_auc_std",
    "mia_null_advantage_mean": "mia.null_advantage_mean",
    "advantage_bound": "advantage_bound",
    "wall_time_s": "wall_time_s",
}


def summarise(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per setting (in first-seen order): mean/std over seeds of each measure.

    Each run needs ``setting`` (key), ``level``, ``target_epsilon``, ``seed`` and the
    measures of ``_SUMMARISED`` (missing ones count as absent).  ``epsilon_max`` is the
    largest achieved epsilon, ``epsilon_within_target`` whether every run met its target.
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for run in runs:
        groups.setdefault(str(run["setting"]), []).append(run)
    out = []
    for key, members in groups.items():
        first = members[0]
        achieved = [r.get("epsilon") for r in members]
        eps = [float(e) for e in achieved if e is not None]
        target = first.get("target_epsilon")
        entry: dict[str, Any] = {
            "setting": key,
            "level": first["level"],
            "target_epsilon": target,
            "seeds": [r["seed"] for r in members],
            **{
                name: mean_std(_get(r, path) for r in members) for name, path in _SUMMARISED.items()
            },
            "epsilon_max": max(eps) if eps else None,
            "epsilon_within_target": (
                None if target is None else all(e is not None and e <= target for e in achieved)
            ),
        }
        for k in ("noise_multiplier", "aggregation"):
            entry[k] = first.get(k)
        out.append(entry)
    return out


# --- one run ----------------------------------------------------------------------------


def _ledger_epsilon(run_dir: Path) -> float:
    """The largest record-level epsilon any partner's ledger charged in this run."""
    from fedcollab.privacy.budget_ledger import BudgetLedger

    spent = 0.0
    for db in sorted((run_dir / "audit" / "partners").glob("*/budget.db")):
        with BudgetLedger.open(db) as ledger:
            for b in ledger.datasets():
                spent = max(spent, b.spent_epsilon)
    return spent


def _released_model_scores(
    run_dir: Path, spec: JobSpec, data: Sequence[PartnerData], member_sample: npt.NDArray[Any]
) -> dict[str, Any]:
    """Exact test AUC and the attack on the released model, loaded as a partner would."""
    import torch
    from sklearn.metrics import roc_auc_score

    from fedcollab.demo.baselines import _xy
    from fedcollab.protocols import models, preprocessing
    from fedcollab.protocols.local_training import predict_proba

    pre = preprocessing.Preprocessor.from_dict(
        json.loads((run_dir / "preprocessor.json").read_text())
    )
    model = models.build_model(
        spec.model.kind,
        n_features=pre.n_features,
        hidden_sizes=spec.model.hidden_sizes,
        seed=spec.training.seed,
    )
    model.load_state_dict(torch.load(run_dir / "model.pt", weights_only=True))
    x_tr, y_tr = _xy(pre, [(d.dataset, d.train) for d in data])
    x_te, y_te = _xy(pre, [(d.dataset, d.test) for d in data])
    p_te = predict_proba(model, x_te)
    x_m, y_m = x_tr[member_sample], y_tr[member_sample]
    return {
        "test_auc_exact": float(roc_auc_score(y_te, p_te)),
        "mia": loss_threshold_attack(
            per_example_loss(y_m, predict_proba(model, x_m)), per_example_loss(y_te, p_te)
        ),
    }


def _run_one(
    spec: JobSpec,
    setting: Setting,
    seed: int,
    sources: Sequence[Any],
    data: Sequence[PartnerData],
    member_sample: npt.NDArray[Any],
    run_dir: Path,
    num_cpus: int | None,
) -> dict[str, Any]:
    from fedcollab.federation.simulation import run_simulation_job

    if run_dir.exists():  # a fresh folder: a fresh audit trail and budget ledger per run
        shutil.rmtree(run_dir)
    t = time.monotonic()
    run_simulation_job(spec, list(sources), run_dir, num_cpus=num_cpus, budget_cap=BUDGET_CAP)
    wall = time.monotonic() - t
    metrics = load_metrics(run_dir).document()
    card = json.loads((run_dir / "model_card.json").read_text())
    dp = card["protections"]["differential_privacy"]
    record_eps = _ledger_epsilon(run_dir) if setting.level != "none" else None
    return {
        "setting": setting.key,
        "level": setting.level,
        "target_epsilon": setting.target_epsilon,
        "seed": seed,
        "aggregation": "CKKS" if "CKKS" in card["protections"]["aggregation"] else "plaintext",
        "output_dir": str(run_dir),
        "wall_time_s": round(wall, 2),
        "job_wall_time_s": metrics["wall_time_s"],
        "rounds_run": metrics["rounds_run"],
        "best_round": metrics["best_round"],
        "test_auc": metrics["final"]["test"]["auc"],
        "test_log_loss": metrics["final"]["test"]["log_loss"],
        "validation_auc": metrics["final"]["validation"]["auc"],
        "epsilon": metrics.get("epsilon"),
        "noise_multiplier": None if dp is None else dp["noise_multiplier"],
        # DP-FedAvg only: the noise over the largest signal (protocols.client_dp)
        "noise_to_signal": metrics.get("noise_to_signal"),
        "record_level_epsilon": record_eps,
        "advantage_bound": advantage_bound(record_eps, target_delta=spec.privacy.target_delta),
        **_released_model_scores(run_dir, spec, data, member_sample),
    }


def _run_with_retry(
    spec: JobSpec,
    setting: Setting,
    seed: int,
    sources: Sequence[Any],
    data: Sequence[PartnerData],
    member_sample: npt.NDArray[Any],
    run_dir: Path,
    num_cpus: int | None,
    console: Console,
) -> dict[str, Any]:
    """:func:`_run_one`, run again once when the federation itself failed.

    A partner that could not start (e.g. a ClientApp that failed to import on a
    busy shared machine) fails the job before any training: that says nothing
    about privacy or utility, so the run is repeated from scratch, once, and
    the first attempt's error is kept in the run's ``retried_after``.
    """
    from fedcollab.common.errors import FederationError

    try:
        return _run_one(spec, setting, seed, sources, data, member_sample, run_dir, num_cpus)
    except FederationError as exc:
        console.print(f"{setting.key} seed {seed}: {exc.message}; running it again", markup=False)
        run = _run_one(spec, setting, seed, sources, data, member_sample, run_dir, num_cpus)
        return {**run, "retried_after": exc.message}


# --- report -----------------------------------------------------------------------------


def _pm(s: Mapping[str, Any], digits: int = 3) -> str:
    if s["mean"] is None:
        return "-"
    std = "" if s["std"] is None else f" ± {s['std']:.{digits}f}"
    return f"{s['mean']:.{digits}f}{std}"


def render(summary: Sequence[Mapping[str, Any]], centralized: Mapping[str, Any]) -> Table:
    table = Table(title="Purchase prediction (logreg, 9 region partners): privacy vs utility")
    for name, justify in [
        ("setting", "left"), ("aggregation", "left"), ("target ε", "right"),
        ("achieved ε (max)", "right"), ("record-level ε", "right"), ("z", "right"),
        ("test AUC (model)", "right"), ("job's estimate", "right"), ("MIA AUC", "right"),
        ("MIA advantage", "right"),
        ("adv. bound", "right"), ("runs", "right"), ("s/run", "right"),
    ]:  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for s in summary:
        dp = s["level"] != "none"
        bound = s["advantage_bound"]["mean"]
        table.add_row(
            s["setting"],
            str(s["aggregation"]),
            f"{s['target_epsilon']:g}" if dp else "∞",
            f"{s['epsilon_max']:.3f}" if dp else "∞",
            f"{s['record_level_epsilon']['mean']:.2f}" if dp else "∞",
            f"{s['noise_multiplier']:.3f}" if dp else "0",
            _pm(s["test_auc_exact"]),
            _pm(s["test_auc"]),
            _pm(s["mia_auc"]),
            _pm(s["mia_advantage"]),
            f"{bound:.3f}" if dp else "1",
            str(s["test_auc"]["n"]),
            f"{s['wall_time_s']['mean']:.0f}",
        )
    table.add_section()
    auc = centralized["test_auc"]
    table.add_row(
        "centralized, no DP", "pooled rows", "∞", "∞", "∞", "0",
        "-" if auc is None else f"{auc:.3f}", "", "", "", "", "1", "",
    )  # fmt: skip
    return table


def findings(
    summary: Sequence[Mapping[str, Any]],
    centralized: Mapping[str, Any],
    *,
    n_partners: int,
    n_parameters: int | None,
) -> list[str]:
    """The reading of the numbers, as sentences (conclusions follow the measurements)."""
    by = {s["setting"]: s for s in summary}
    none = by.get("no-dp")
    out: list[str] = []
    base = none["test_auc_exact"]["mean"] if none else None
    for level, label in (("sample", "sample-level DP-SGD"), ("client", "client-level DP-FedAvg")):
        rows = [s for s in summary if s["level"] == level]
        if not rows or base is None:
            continue
        parts = ", ".join(
            f"ε={s['target_epsilon']:g}: {_pm(s['test_auc_exact'])} "
            f"({s['test_auc_exact']['mean'] - base:+.3f})"
            for s in rows
        )
        out.append(f"{label}: test AUC {parts} vs {base:.3f} without DP")
    client = [s for s in summary if s["level"] == "client"]
    if client and base is not None:
        best = max(client, key=lambda s: s["test_auc_exact"]["mean"])
        gap = base - best["test_auc_exact"]["mean"]
        z = best["noise_multiplier"]
        verdict = (
            f"client-level DP with only {n_partners} partners gives poor utility: even at "
            f"partner-level ε={best['target_epsilon']:g} the test AUC is "
            f"{best['test_auc_exact']['mean']:.3f}, {gap:.3f} below no DP"
            if gap > 0.02
            else f"client-level DP with {n_partners} partners stays within {gap:.3f} AUC of "
            f"no DP at ε={best['target_epsilon']:g}"
        )
        ratio = ""
        if n_parameters:
            ratio = (
                f"; with {n_parameters} parameters the noise on the averaged update has norm "
                f"~z*C*sqrt({n_parameters})/{n_partners} = "
                f"{z * math.sqrt(n_parameters) / n_partners:.2f}*C per round against a signal "
                f"of norm <= C"
            )
        out.append(
            f"{verdict}. The new model adds the mean of {n_partners} clipped updates (norm <= C "
            f"each) plus Gaussian noise of std z*C/{n_partners} per coordinate, z={z:.2f} at "
            f"that ε{ratio}. Partner-level DP needs many partners, since the noise is divided "
            f"by the number averaged (the notes: 10 partners, z=1, 100 rounds -> ε~92-96; "
            f"1,000 partners, 50 per round, z=1, 200 rounds -> ε~5). Its record-level ε "
            f"(one record can swap a partner's clipped update: sensitivity 2C) is larger "
            f"than the partner-level one: "
            + ", ".join(
                f"{s['target_epsilon']:g} -> {s['record_level_epsilon']['mean']:.2f}"
                for s in client
            )
            + ". With few partners, record-level DP-SGD at each partner is the meaningful "
            "guarantee."
        )
    gaps = [
        (s["test_auc_exact"]["mean"] - s["test_auc"]["mean"], s["setting"])
        for s in summary
        if s["test_auc_exact"]["mean"] is not None and s["test_auc"]["mean"] is not None
    ]
    if gaps and max(gaps)[0] > 0.005:
        gap, where = max(gaps)
        out.append(
            f"the job's test AUC (from 1/1000-wide score histograms summed over partners) is "
            f"below the exact AUC of the released model by {gap:.3f} on average in {where}: "
            f"models whose scores saturate near 0 or 1 put many rows into the same bin, and "
            f"tied pairs count 1/2; in DP jobs the histograms are also noised (20 bins per "
            f"class) and negative counts set to 0, which pulls the estimate towards 0.5. "
            f"The table and the figure report the released model's exact AUC; the JSON "
            f"has both."
        )
    mia = [s for s in summary if s["mia_auc"]["mean"] is not None]
    if mia:
        null = max(s["mia_null_auc_std"]["mean"] for s in mia)
        null_adv = max(s["mia_null_advantage_mean"]["mean"] for s in mia)
        hi = max(mia, key=lambda s: s["mia_auc"]["mean"])
        adv = max(mia, key=lambda s: s["mia_advantage"]["mean"])
        excess = (hi["mia_auc"]["mean"] - 0.5) / null
        reading = (
            "indistinguishable from chance in every setting, with or without DP: this "
            "average-case attack finds no usable overfitting in the model, so it cannot show "
            "what DP adds; the DP guarantee bounds the worst case (the 'adv. bound' column), "
            "which this attack is far from"
            if excess < 3
            else f"{excess:.1f} null standard deviations above chance at its highest "
            f"({hi['setting']}): the model leaks membership measurably"
        )
        out.append(
            f"membership inference (loss threshold, {hi['mia_auc']['n']} runs per setting): "
            f"the highest mean attack AUC is {hi['mia_auc']['mean']:.3f} ({hi['setting']}), the "
            f"highest mean advantage {adv['mia_advantage']['mean']:.3f} ({adv['setting']}); "
            f"chance is an AUC of 0.5 (null std {null:.3f} per run) and an advantage of "
            f"~{null_adv:.3f} (the KS statistic of two samples of one distribution): {reading}."
        )
    if centralized.get("test_auc") is not None and base is not None:
        out.append(
            f"reference: centralized training on the pooled rows, no DP: test AUC "
            f"{centralized['test_auc']:.3f} ({centralized['epochs']} epochs, early stopping "
            f"on validation AUC); federated without DP: {base:.3f}."
        )
    return out


def plot(summary: Sequence[Mapping[str, Any]], centralized: Mapping[str, Any], path: Path) -> Path:
    """AUC vs epsilon per DP level, no-DP mean as a line; attack AUC vs epsilon."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 5.2))
    none = next((s for s in summary if s["level"] == "none"), None)
    styles = {"sample": ("C0", "o", "sample-level (DP-SGD, per record)"),
              "client": ("C3", "s", "client-level (DP-FedAvg, per partner, CKKS)")}  # fmt: skip
    for ax, measure in ((ax1, "test_auc_exact"), (ax2, "mia_auc")):
        for level, (color, marker, label) in styles.items():
            rows = [s for s in summary if s["level"] == level]
            if not rows:
                continue
            ax.errorbar(
                [s["target_epsilon"] for s in rows],
                [s[measure]["mean"] for s in rows],
                yerr=[s[measure]["std"] or 0.0 for s in rows],
                color=color, marker=marker, capsize=4, label=label,
            )  # fmt: skip
        if none is not None:
            m, sd = none[measure]["mean"], none[measure]["std"] or 0.0
            ax.axhline(m, color="k", ls="--", lw=1, label=f"no DP (mean {m:.3f})")
            ax.axhspan(m - sd, m + sd, color="k", alpha=0.08, lw=0)
        ax.set_xscale("log")
        eps = sorted({s["target_epsilon"] for s in summary if s["target_epsilon"] is not None})
        ax.set_xticks(eps, [f"{e:g}" for e in eps])
        ax.xaxis.set_minor_locator(NullLocator())
        if eps:
            ax.set_xlim(min(eps) / 1.5, max(eps) * 1.5)
        ax.set_xlabel("target ε (δ = 1e-5)")
        ax.grid(alpha=0.3)
    if centralized.get("test_auc") is not None:
        ax1.axhline(centralized["test_auc"], color="grey", ls=":", lw=1,
                    label=f"centralized, no DP ({centralized['test_auc']:.3f})")  # fmt: skip
    null = [s["mia_null_auc_std"]["mean"] for s in summary if s["mia_null_auc_std"]["n"]]
    if null:
        ax2.axhspan(0.5 - 2 * max(null), 0.5 + 2 * max(null), color="grey", alpha=0.12, lw=0)
    ax2.axhline(0.5, color="grey", ls=":", lw=1, label="chance (0.5; band: ±2 null std)")
    ax1.set_ylabel("test AUC of the released model (mean ± std over seeds)")
    ax1.set_title("Utility: purchase prediction, 9 partners")
    ax2.set_ylabel("attack AUC (mean ± std over seeds)")
    ax2.set_title("Loss-threshold membership inference")
    for ax in (ax1, ax2):
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    fig.text(
        0.5, 0.01, "client-level ε is per partner; its record-level ε is larger (see the JSON)",
        ha="center", fontsize=8, color="grey",
    )  # fmt: skip
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


# --- main -------------------------------------------------------------------------------


def _epsilons(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from exc
    if not values or any(not (0 < v <= 1000) for v in values):
        raise argparse.ArgumentTypeError("epsilons must be in (0, 1000]")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("results/experiments"))
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="training seeds 0..n-1")
    parser.add_argument("--epsilons", type=_epsilons, default=list(DEFAULT_EPSILONS))
    parser.add_argument("--rounds", type=int, default=None, help=f"default {DEFAULT_ROUNDS}")
    parser.add_argument(
        "--client-rounds", type=int, default=DEFAULT_CLIENT_ROUNDS,
        help="client-level DP: rounds (at most --rounds)",
    )  # fmt: skip
    parser.add_argument(
        "--client-local-epochs", type=int, default=DEFAULT_CLIENT_LOCAL_EPOCHS,
        help="client-level DP: local epochs per round",
    )  # fmt: skip
    parser.add_argument("--num-cpus", type=int, default=None, help="simulation CPUs")
    parser.add_argument(
        "--quick", action="store_true",
        help=f"1 seed, the largest epsilon only, {QUICK_ROUNDS} rounds (a smoke run)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    given = list(sys.argv[1:] if argv is None else argv)
    seeds = 1 if args.quick else args.seeds
    epsilons = [max(args.epsilons)] if args.quick else args.epsilons
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    if min(seeds, rounds, args.client_rounds, args.client_local_epochs) < 1:
        parser.error("--seeds, --rounds, --client-rounds and --client-local-epochs must be >= 1")
    out: Path = args.out
    console = Console(width=None if sys.stdout.isatty() else 160)
    t0 = time.monotonic()

    # Imported here: the pure functions above stay importable without Flower or torch.
    from experiments.he_equivalence import code_version
    from experiments.horizontal import default_jobs, prepare_partners
    from fedcollab.demo import baselines

    sources = prepare_partners(out / "partners")
    base, _ = default_jobs(sources[0].schema)
    data = baselines.load_all(sources, base)  # the split does not depend on training.seed
    n_test = sum(len(d.test) for d in data)
    n_train = sum(len(d.train) for d in data)
    member_sample = np.sort(
        np.random.default_rng(MIA_SAMPLE_SEED).choice(
            n_train, size=min(n_test, n_train), replace=False
        )
    )
    settings = settings_for(epsilons)
    runs: list[dict[str, Any]] = []
    total = seeds * len(settings)
    for seed in range(seeds):  # seeds outermost: every setting has runs early on
        for setting in settings:
            spec = job_for(
                base,
                setting,
                seed=seed,
                rounds=rounds,
                n_partners=len(sources),
                dealer=min(s.partner for s in sources),
                client_rounds=args.client_rounds,
                client_local_epochs=args.client_local_epochs,
            )
            run_dir = out / "privacy-utility" / setting.key / f"seed-{seed}"
            run = _run_with_retry(
                spec, setting, seed, sources, data, member_sample, run_dir, args.num_cpus, console
            )
            runs.append(run)
            eps = "" if run["epsilon"] is None else f", ε={run['epsilon']:.3f}"
            console.print(
                f"[{len(runs)}/{total}] {setting.key} seed {seed}: test AUC "
                f"{run['test_auc']:.4f}{eps}, MIA AUC {run['mia']['auc']:.3f}, "
                f"{run['wall_time_s']:.0f} s",
                markup=False,
            )
    # The demo job as is (seed 0, early stopping patience 5): baselines treats patience 0
    # as 1, not as "off".
    central = baselines.train_centralized(data, base, max_epochs=100)
    centralized = {
        **vars(central),
        "seed": base.training.seed,
        "max_epochs": 100,
        "early_stopping_patience": base.evaluation.early_stopping_patience,
        "note": "fedcollab.demo.baselines.train_centralized: pooled training rows, same model, "
        "no DP; early stopping on pooled validation AUC",
    }
    summary = summarise(runs)
    n_params = _n_parameters(runs)
    notes = findings(summary, centralized, n_partners=len(sources), n_parameters=n_params)
    dp_runs = [r for r in runs if r["target_epsilon"] is not None]
    checks = {
        "every DP run: achieved epsilon <= target": all(
            r["epsilon"] is not None and r["epsilon"] <= r["target_epsilon"] for r in dp_runs
        ),
    }
    result = {
        "experiment": "privacy_utility",
        "command": ["python", "-m", "experiments.privacy_utility", *given],
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "flwr": version("flwr"),
            "opacus": version("opacus"),
            "tenseal": version("tenseal"),
            "loadavg_1min_at_end": os.getloadavg()[0],
        },
        "code": code_version(),
        "dataset": "Online Shoppers Purchasing Intention (UCI), split by Region",
        "partners": [s.partner for s in sources],
        "settings": {
            "model": base.model.kind,
            "n_parameters": n_params,
            "rounds": rounds,
            "client_rounds": min(args.client_rounds, rounds),
            "client_local_epochs": args.client_local_epochs,
            "seeds": list(range(seeds)),
            "epsilons": epsilons,
            "target_delta": base.privacy.target_delta,
            "local_epochs": base.training.local_epochs,
            "optimizer": base.training.optimizer,
            "learning_rate": base.training.learning_rate,
            "batch_size_without_dp_sgd": base.training.batch_size,
            "dp_sgd_sample_rate": SAMPLE_RATE,
            "max_grad_norm": base.privacy.max_grad_norm,
            "clip_norm": base.privacy.clip_norm,
            "client_sample_rate": base.privacy.client_sample_rate,
            "min_partners": len(sources),
            "early_stopping": "off (released model: without DP the best validation AUC over the "
            "rounds; with DP the last round)",
            "split_seed": base.evaluation.split_seed,
            "aggregation": {"none": "plaintext", "sample": "plaintext", "client": "ckks+masked"},
            "budget_cap": BUDGET_CAP,
            "budget_cap_note": "large on purpose: the experiment is not about budget caps",
            "mia": {
                "attack": "loss threshold (Yeom et al. 2018, arXiv:1709.01604), score -loss",
                "members": f"{len(member_sample)} training rows (fixed sample, seed "
                f"{MIA_SAMPLE_SEED}) of {n_train}",
                "nonmembers": f"all {n_test} test rows",
            },
        },
        "runs": runs,
        "summary": summary,
        "centralized": centralized,
        "findings": notes,
        "checks": checks,
        "wall_time_s": round(time.monotonic() - t0, 1),
    }
    console.print(render(summary, centralized))
    for note in notes:
        console.print(f"  [yellow]FINDING[/] {note}")
    for name, ok in checks.items():
        console.print(f"  {'[green]PASS' if ok else '[red]FAIL'}[/] {name}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "privacy_utility.json"
    path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    png = plot(summary, centralized, out / "privacy_utility.png")
    console.print(f"wrote {path} and {png} ({result['wall_time_s']:.0f} s in all)")
    return 0 if all(checks.values()) else 1


def _n_parameters(runs: Sequence[Mapping[str, Any]]) -> int | None:
    if not runs:
        return None
    import torch

    state = torch.load(Path(runs[0]["output_dir"]) / "model.pt", weights_only=True)
    return int(sum(v.numel() for v in state.values()))


if __name__ == "__main__":
    raise SystemExit(main())
