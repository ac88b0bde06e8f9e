"""Round numbers agree: the best model is named by the rounds it had, like every round line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from fedcollab.common.errors import FedcollabError
from fedcollab.common.jobspec import JobSpec
from fedcollab.coordinator.job import run_job
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.federation.inmemory import in_memory_federation, task_identity
from tests.support.partners import SCHEMA, make_partner

torch.set_num_threads(1)


def test_best_round_is_the_validated_round_with_the_best_auc(tmp_path: Path) -> None:
    sources = [make_partner(tmp_path / "data", f"p{i}", seed=i, n=200) for i in range(2)]
    spec = JobSpec.model_validate(
        {"name": "r", "task": "purchase_prediction", "purpose": "purchase-prediction",
         "schema": SCHEMA, "participants": ["p0", "p1"], "min_partners": 2, "rounds": 6,
         "training": {"learning_rate": 0.5, "local_epochs": 1},
         "evaluation": {"early_stopping_patience": 2}},
        strict=False,
    )  # fmt: skip
    grid, audit, policy = in_memory_federation(spec, sources, tmp_path)
    out = tmp_path / "out"
    with task_identity():
        metrics = run_job(grid, spec, JobOutputs(out), mode="simulation",  # type: ignore[arg-type]
                          audit_config=audit, policy=policy)  # fmt: skip
    lines = (out / "progress.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    rounds = [e for e in events if e["event"] == "round"]
    assert [e["round"] for e in rounds] == list(range(1, len(rounds) + 1))
    assert [e["validated_round"] for e in rounds] == list(range(len(rounds)))
    top = max(e["val_auc"] for e in rounds)
    best_validated = next(e for e in rounds if e["val_auc"] == top)["validated_round"]
    # The released model: the best one validated during the rounds, or the last one
    # (validated after the loop) if it is at least as good.
    assert metrics["best_round"] in (best_validated, len(rounds))
    stops = [e for e in events if e["event"] == "early_stop"]
    for stop in stops:
        assert stop["best_round"] == best_validated


def test_the_job_logs_its_progress_and_audit_entries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`fedcollab -v` follows a job: each progress event at INFO, each audit entry at
    DEBUG (loggers named after their modules, under ``fedcollab.``), a failure at WARNING."""
    sources = [make_partner(tmp_path / "data", f"p{i}", seed=i, n=120) for i in range(2)]
    spec = JobSpec.model_validate(
        {"name": "logged", "task": "purchase_prediction", "purpose": "purchase-prediction",
         "schema": SCHEMA, "participants": ["p0", "p1"], "min_partners": 2, "rounds": 1},
        strict=False,
    )  # fmt: skip
    grid, audit, policy = in_memory_federation(spec, sources, tmp_path)
    with caplog.at_level(logging.DEBUG, logger="fedcollab"), task_identity():
        run_job(grid, spec, JobOutputs(tmp_path / "out"), mode="simulation",  # type: ignore[arg-type]
                audit_config=audit, policy=policy)  # fmt: skip
    progress = [r.getMessage() for r in caplog.records if r.name == "fedcollab.coordinator.outputs"]
    kinds = [json.loads(line)["event"] for line in (tmp_path / "out" / "progress.jsonl").open()]
    assert [m.split(":")[0] for m in progress] == [f"out {k}" for k in kinds]
    assert kinds[0] == "job_start" and kinds[-1] == "job_end"
    audited = [r.getMessage() for r in caplog.records if r.name == "fedcollab.coordinator.audit"]
    assert any("job.started (job logged" in m for m in audited)
    assert any("job.completed (job logged" in m for m in audited)
    # A job that cannot start (too few partners online in a simulation) says why at WARNING.
    caplog.clear()
    lonely = spec.model_copy(
        update={"min_partners": 3, "participants": ["p0", "p1", "p2"], "startup_timeout_s": 0.5}
    )
    grid, audit, policy = in_memory_federation(lonely, sources, tmp_path / "2")
    level = caplog.at_level(logging.INFO, logger="fedcollab")
    with level, task_identity(), pytest.raises(FedcollabError):
        run_job(grid, lonely, JobOutputs(tmp_path / "out2"), mode="simulation",  # type: ignore[arg-type]
                audit_config=audit, policy=policy)  # fmt: skip
    failed = [r for r in caplog.records if r.name == "fedcollab.coordinator.job"]
    assert [r.levelno for r in failed] == [logging.WARNING]
    assert "job logged failed:" in failed[0].getMessage()
