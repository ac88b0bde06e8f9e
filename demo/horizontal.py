"""The demo's horizontal scenario: Online Shoppers split by Region into 9 brand partners.

Shared by ``fedcollab demo`` (:mod:`fedcollab.demo.run`), the experiments and the
tests: the partner files (:func:`prepare_partners`), the demo's purchase-prediction
and segmentation jobs (:func:`default_jobs`), the declared value ranges of the
numeric columns for DP jobs, and the comparison with the centralized and
partner-alone baselines trained on the same rows (:func:`compare`, :func:`render`).
The data ships with the package (``fedcollab/data``).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fedcollab.client.partner_data import PartnerSource
from fedcollab.common.job_files import load_metrics
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.schema import load_schema
from fedcollab.common.split import split_horizontal
from fedcollab.demo import baselines
from fedcollab.federation.simulation import discover_partner_files

__all__ = [
    "DATA_DIR",
    "ONLINE_SHOPPERS_BOUNDS",
    "compare",
    "default_jobs",
    "prepare_partners",
    "render",
]

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def prepare_partners(out: Path) -> list[PartnerSource]:
    """Online Shoppers split by Region into ``out`` (reused when already there)."""
    if not list(out.glob("*.schema.json")):
        split_horizontal(
            DATA_DIR / "online_shoppers_intention.csv",
            load_schema(DATA_DIR / "online_shoppers.schema.json"),
            out,
            mode="column",
            by_column="Region",
            id_from_row_number=True,
        )
    return discover_partner_files(out)


#: Declared value ranges of the Online Shoppers numeric columns for DP jobs
#: (``privacy.value_bounds``: values are clipped to them before the noisy moments).
#: Chosen as plausible ranges of one web session (pages, seconds, Google Analytics
#: rates in [0, 0.2] as the dataset defines them, page values in currency units), not
#: read off the data: about 1% of sessions exceed the duration and page-value bounds.
ONLINE_SHOPPERS_BOUNDS: dict[str, list[float]] = {
    "Administrative": [0.0, 20.0],
    "Administrative_Duration": [0.0, 1200.0],
    "Informational": [0.0, 10.0],
    "Informational_Duration": [0.0, 1200.0],
    "ProductRelated": [0.0, 300.0],
    "ProductRelated_Duration": [0.0, 6000.0],
    "BounceRates": [0.0, 0.2],
    "ExitRates": [0.0, 0.2],
    "PageValues": [0.0, 100.0],
    "SpecialDay": [0.0, 1.0],
}


def default_jobs(schema_path: Path) -> tuple[JobSpec, JobSpec]:
    """The demo's purchase-prediction and segmentation jobs."""
    schema = json.loads(schema_path.read_text())
    prediction = JobSpec.model_validate(
        {
            "name": "purchase-prediction",
            "task": "purchase_prediction",
            "purpose": "purchase-prediction",
            "schema": schema,
            "min_partners": 5,
            "rounds": 40,
            "round_timeout_s": 180.0,
            "model": {"kind": "logreg"},
            "training": {"local_epochs": 1, "learning_rate": 0.01, "batch_size": 64},
            "evaluation": {"early_stopping_patience": 5},
        },
        strict=False,
    )
    segmentation = JobSpec.model_validate(
        {
            "name": "user-segmentation",
            "task": "segmentation",
            "purpose": "user-segmentation",
            "schema": schema,
            "min_partners": 5,
            "round_timeout_s": 180.0,
            "segmentation": {"k": 5, "k_local": 10, "lloyd_iterations": 30},
        },
        strict=False,
    )
    return prediction, segmentation


def compare(
    sources: list[PartnerSource],
    prediction: JobSpec,
    segmentation: JobSpec,
    pred_out: Path,
    seg_out: Path,
) -> dict[str, Any]:
    """Baselines next to finished federated jobs' outputs."""
    data = baselines.load_all(sources, prediction)
    fed_metrics = load_metrics(pred_out).document()
    max_epochs = max(fed_metrics["rounds_run"] * prediction.training.local_epochs, 20)
    central = baselines.train_centralized(data, prediction, max_epochs=max_epochs)
    alone = {d.partner: baselines.train_alone(d, prediction, max_epochs=max_epochs) for d in data}
    fed_per_partner = baselines.federated_model_per_partner(pred_out, data, prediction)
    alone_aucs = [a.test_auc for a in alone.values() if a.test_auc is not None]
    seg_metrics = load_metrics(seg_out).document()
    centroids = json.loads((seg_out / "centroids.json").read_text())["centroids"]
    seg_data = baselines.load_all(sources, segmentation)
    import numpy as np

    km = baselines.centralized_kmeans_objective(
        seg_data,
        segmentation,
        np.asarray(centroids),
        json.loads((seg_out / "preprocessor.json").read_text()),
    )
    fed_auc = fed_metrics["final"]["test"]["auc"]
    return {
        "dataset": "Online Shoppers Purchasing Intention (UCI), split by Region",
        "partners": [d.partner for d in data],
        "purchase_prediction": {
            "model": prediction.model.kind,
            "federated": {
                "test_auc": fed_auc,
                "rounds_run": fed_metrics["rounds_run"],
                "best_round": fed_metrics["best_round"],
                "test": fed_metrics["final"]["test"],
            },
            "centralized": vars(central),
            "alone": {k: vars(v) for k, v in alone.items()},
            "alone_mean_test_auc": statistics.fmean(alone_aucs) if alone_aucs else None,
            "federated_model_on_each_partner": fed_per_partner,
            "checks": {
                "federated_ge_centralized_minus_0.01": (
                    central.test_auc is not None and fed_auc >= central.test_auc - 0.01
                ),
                "federated_gt_alone_mean": bool(alone_aucs)
                and fed_auc > statistics.fmean(alone_aucs),
            },
        },
        "segmentation": {
            "k": segmentation.segmentation.k,
            "iterations": seg_metrics["iterations"],
            "objective_pooled": km,
            "checks": {"within_2_percent": km["ratio"] <= 1.02},
            "segments": seg_metrics["segments"],
        },
    }


def render(result: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    pp = result["purchase_prediction"]
    table = Table(title=f"Purchase prediction ({pp['model']}), test AUC")
    table.add_column("partner")
    table.add_column("federated model", justify="right")
    table.add_column("trained alone", justify="right")
    table.add_column("test rows", justify="right")

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.4f}"

    for name, alone in pp["alone"].items():
        table.add_row(
            name, f(pp["federated_model_on_each_partner"][name]), f(alone["test_auc"]),
            str(alone["n_test"]),
        )  # fmt: skip
    table.add_section()
    table.add_row("all partners (pooled test rows)", f(pp["federated"]["test_auc"]), "", "")
    table.add_row("centralized (pooled training)", f(pp["centralized"]["test_auc"]), "", "")
    table.add_row("mean of partners alone", "", f(pp["alone_mean_test_auc"]), "")
    console.print(table)
    seg = result["segmentation"]
    km = seg["objective_pooled"]
    t2 = Table(title=f"Segmentation (k={seg['k']}), k-means objective on pooled rows")
    t2.add_column("federated", justify="right")
    t2.add_column("centralized", justify="right")
    t2.add_column("ratio", justify="right")
    t2.add_row(f"{km['federated']:.1f}", f"{km['centralized']:.1f}", f"{km['ratio']:.4f}")
    console.print(t2)
    checks = {**pp["checks"], **seg["checks"]}
    for name, ok in checks.items():
        console.print(f"  {'[green]PASS' if ok else '[red]FAIL'}[/] {name}")
