"""Purchase-prediction jobs write attributions; the MLP's come from a federated,
audited permutation step, in plaintext and under CKKS.

The jobs run through the real coordinator (``coordinator.job.run_job``) and the
real partner ClientApp over an in-memory Grid (federation/inmemory.py).
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from fedcollab.common.jobspec import JobSpec
from fedcollab.compliance.trail import Trail
from fedcollab.coordinator.job import run_job
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.federation.inmemory import in_memory_federation, task_identity
from tests.support.partners import SCHEMA, make_partner

warnings.filterwarnings("ignore", message=".*does not fit in a single ciphertext.*")
torch.set_num_threads(1)


def _run(tmp_path: Path, *, kind: str, encrypted: bool) -> tuple[Path, Path]:
    sources = [make_partner(tmp_path / "data", f"p{i}", seed=i) for i in range(2)]
    spec = JobSpec.model_validate(
        {"name": "attr", "task": "purchase_prediction", "purpose": "purchase-prediction",
         "schema": SCHEMA, "participants": ["p0", "p1"], "min_partners": 2, "rounds": 2,
         "model": {"kind": kind, "hidden_sizes": [8]},
         "training": {"learning_rate": 0.05, "local_epochs": 2},
         "privacy": {"encryption": "ckks" if encrypted else "none"}},
        strict=False,
    )  # fmt: skip
    grid, audit, policy = in_memory_federation(spec, sources, tmp_path)
    out = tmp_path / "out"
    with task_identity():
        run_job(grid, spec, JobOutputs(out), mode="simulation", audit_config=audit, policy=policy)  # type: ignore[arg-type]
    return out, audit.db


def _events(db: Path, actor: str) -> list[dict[str, Any]]:
    with Trail.open(db, db.parent / "audit.key", actor=actor) as trail:
        return [json.loads(raw) for raw in trail.log.entries()]


@pytest.mark.parametrize("encrypted", [False, True], ids=["plaintext", "ckks"])
def test_mlp_job_writes_permutation_importance(tmp_path: Path, encrypted: bool) -> None:
    out, db = _run(tmp_path, kind="mlp", encrypted=encrypted)
    doc = json.loads((out / "attributions.json").read_text())
    assert set(doc) == {"job", "model", "method", "metric", "baseline", "note", "features",
                        "columns"}  # fmt: skip
    assert (doc["job"], doc["model"], doc["method"]) == ("attr", "mlp", "permutation")
    assert doc["metric"] == "test AUC drop" and "own" in doc["note"]
    ranked = [c["column"] for c in doc["columns"]]
    assert ranked[0] == "signal" and sorted(ranked) == ["channel", "member", "noise", "signal"]
    assert doc["columns"][0]["importance"] > 0.2
    assert all(abs(c["importance"]) < 0.05 for c in doc["columns"][1:])
    metrics = json.loads((out / "metrics.json").read_text())
    assert doc["baseline"] == pytest.approx(metrics["final"]["test"]["auc"], abs=1e-6)
    rows = list(csv.DictReader((out / "attributions.csv").open()))
    assert rows[0]["feature"] == "signal" and rows[0]["method"] == "permutation"
    # Audited like every other aggregate: per-partner contribution digests at the
    # coordinator, the same digests sent by each partner.
    steps = {e["body"]["step"]: e["body"] for e in _events(db, "coordinator")
             if e["type"] == "round.aggregated"}  # fmt: skip
    agg = steps["permutation-importance"]
    assert agg["partners"] == ["p0", "p1"]
    # Encrypted jobs aggregate "ckks+masked" by default (issue 14).
    assert agg["protection"] == ("ckks+masked-sum" if encrypted else "plaintext-sum")
    if encrypted:
        assert steps["permutation-importance.decrypt"]["protection"] == "ckks-decrypted"
        unmasked = [e["body"] for e in _events(db, "coordinator")
                    if e["type"] == "secagg.unmasked"]  # fmt: skip
        assert "permutation-importance" in [u["step"] for u in unmasked]
    for name in ("p0", "p1"):
        pdb = db.parents[1] / "partners" / name / "audit.db"
        sent = [e["body"] for e in _events(pdb, name) if e["type"] == "data.sent"
                and e["body"]["action"] == "evaluate.permutation"]  # fmt: skip
        assert [s["reply"] for s in sent] == [agg["contributions"][name]]


def test_logreg_job_writes_coefficients(tmp_path: Path) -> None:
    out, _ = _run(tmp_path, kind="logreg", encrypted=False)
    doc = json.loads((out / "attributions.json").read_text())
    assert (doc["method"], doc["metric"], doc["baseline"]) == (
        "coefficients", "population effect (SD of log-odds contribution)", None)  # fmt: skip
    top = doc["features"][0]
    assert top["feature"] == "signal" and top["direction"] == "+" and top["odds_ratio"] > 1
    names = {f["feature"] for f in doc["features"]}
    assert {"channel=app", "channel=store", "channel=web", "member", "noise"} <= names
    channel = next(c for c in doc["columns"] if c["column"] == "channel")
    assert channel["aggregation"] == "SD of the column's log-odds contribution over its levels"
    # The pooled level shares come from the federated moments: about a third each.
    shares = [f["share"] for f in doc["features"] if f["column"] == "channel"]
    assert sum(shares) == pytest.approx(1.0, abs=1e-5) and all(0.25 < s < 0.42 for s in shares)
    header = (out / "attributions.csv").read_text().splitlines()[0]
    assert header == "feature,importance,direction,method,coefficient,odds_ratio"
