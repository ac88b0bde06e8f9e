"""Vertical results beside their baselines, for the demo and the experiments.

The baselines pool the parties' columns *in one place* (what fedcollab exists to
avoid), so they run here, in the demo and the experiments, never in a federation:

* **centralized**: logistic regression on the true intersection of the
  parties' ids (a plain join), the same per-id train/test split and the same
  per-party preprocessing as the vertical job;
* **label holder alone**: the platform's own columns only, on the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from fedcollab.client.partner_data import PartnerSource
from fedcollab.common.dataset import load_dataset
from fedcollab.common.job_files import load_metrics
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.schema import load_schema
from fedcollab.protocols.vertical_data import aligned_split, party_matrix

__all__ = ["baselines", "render_vertical", "true_alignment", "vertical_summary"]


def true_alignment(sources: Sequence[PartnerSource]) -> dict[str, np.ndarray]:
    """Each party's row indices of the ids all parties hold, in one common order (a
    plaintext join: the ground truth PSI must reproduce)."""
    datasets = {s.partner: load_dataset(s.data, load_schema(s.schema)) for s in sources}
    common = set.intersection(*(set(map(str, d.ids)) for d in datasets.values()))
    order = sorted(common)
    out = {}
    for name, d in datasets.items():
        index = {str(i): k for k, i in enumerate(d.ids)}
        out[name] = np.array([index[i] for i in order], dtype=np.int64)
    return out


def baselines(sources: Sequence[PartnerSource], spec: JobSpec) -> dict[str, Any]:
    """Centralized and label-holder-alone logistic regression on the intersection."""
    aligned = true_alignment(sources)
    label = spec.vertical.label_holder
    ev = spec.evaluation
    mats, y_train, y_test = {}, np.zeros(0), np.zeros(0)
    for s in sources:
        ds = load_dataset(s.data, load_schema(s.schema))
        mats[s.partner] = party_matrix(
            ds, aligned[s.partner], test_fraction=ev.test_fraction, split_seed=ev.split_seed
        )
        if s.partner == label:
            assert ds.labels is not None
            train_pos, test_pos = aligned_split(
                ds, aligned[label], test_fraction=ev.test_fraction, split_seed=ev.split_seed
            )
            y_train = ds.labels[aligned[label][train_pos]]
            y_test = ds.labels[aligned[label][test_pos]]
    n = len(y_train)
    # sklearn minimises C * sum(loss) + |w|^2 / 2; the job mean(loss) + l2/2 |w|^2.
    c = 1.0 / (spec.vertical.l2 * n) if spec.vertical.l2 > 0 else 1e6

    def fit(names: Sequence[str]) -> float:
        x_tr = np.hstack([mats[p].train for p in names])
        x_te = np.hstack([mats[p].test for p in names])
        model = LogisticRegression(C=c, max_iter=2000).fit(x_tr, y_train)
        return float(roc_auc_score(y_test, model.predict_proba(x_te)[:, 1]))

    return {
        "intersection": len(aligned[label]),
        "train_rows": n,
        "test_rows": len(y_test),
        "centralized_test_auc": fit(sorted(mats)),
        "label_holder_alone_test_auc": fit([label]),
    }


def vertical_summary(
    out: Path, sources: Sequence[PartnerSource], jobs: Sequence[JobSpec]
) -> dict[str, Any]:
    """Each vertical job's result (from its metrics.json) beside the baselines."""
    result: dict[str, Any] = {"jobs": {}}
    for spec in jobs:
        metrics = load_metrics(out / spec.name).document()
        inference = bool(spec.vertical.predict_with)
        result["jobs"][spec.name] = {
            "model": spec.vertical.model,
            "encryption": spec.privacy.encryption,
            "iterations": 0 if inference else spec.vertical.iterations,
            "test_auc": metrics["final"].get("test_auc"),
            "scored": metrics["final"].get("scored"),
            "alignment": metrics.get("alignment"),
            "wall_time_s": metrics.get("wall_time_s"),
            "explanations": metrics.get("explanations"),
        }
    training = [j for j in jobs if not j.vertical.predict_with]
    if training:
        result["baselines"] = baselines(sources, training[0])
    return result


def render_vertical(summary: dict[str, Any], console: Console) -> None:
    table = Table(title="vertical: platform + payment + billing (credit default)")
    table.add_column("model")
    table.add_column("test AUC", justify="right")
    table.add_column("rows (intersection)", justify="right")
    base = summary.get("baselines", {})
    for name, job in summary["jobs"].items():
        auc = job["test_auc"]
        rows = (job.get("alignment") or {}).get("intersection", "")
        if job.get("scored") is not None:
            table.add_row(f"{name} (joint inference)", f"{job['scored']} users scored", str(rows))
            continue
        table.add_row(
            f"{name} ({job['model']}, {job['encryption']})",
            f"{auc:.4f}" if auc is not None else "-",
            str(rows),
        )
    if base:
        table.add_row("centralized (columns pooled)", f"{base['centralized_test_auc']:.4f}",
                      str(base["intersection"]))  # fmt: skip
        table.add_row("platform alone", f"{base['label_holder_alone_test_auc']:.4f}",
                      str(base["intersection"]))  # fmt: skip
    console.print(table)
