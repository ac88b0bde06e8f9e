"""Round numbers agree: the best model is named by the rounds it had, like every round line.

What the job tells its user (the progress events, rendered by ``cli.progress`` as
``fedcollab run`` shows them) agrees with what it released (``metrics.json``,
``model_card.json``): which model, how it was chosen, whether its figures are DP
estimates, and when they are too thin to mean anything.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from rich.console import Console

from fedcollab.cli.progress import JobProgress
from fedcollab.client.partner_data import PartnerSource
from fedcollab.common.dataset import split_indices
from fedcollab.common.errors import FedcollabError
from fedcollab.common.jobspec import JobSpec
from fedcollab.coordinator.job import run_job
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.coordinator.prediction_release import MIN_MINORITY_ROWS
from fedcollab.federation.inmemory import in_memory_federation, task_identity
from tests.support.partners import SCHEMA, make_partner

torch.set_num_threads(1)

#: A row's label from the split its id falls in, its signal column and a generator.
Labeller = Callable[[str, float, np.random.Generator], int]


def _spec(name: str, **extra: Any) -> JobSpec:
    return JobSpec.model_validate(
        {"name": name, "task": "purchase_prediction", "purpose": "purchase-prediction",
         "schema": SCHEMA, "participants": ["p0", "p1"], "min_partners": 2,
         "training": {"learning_rate": 0.5, "local_epochs": 1}, **extra},
        strict=False,
    )  # fmt: skip


def _partner(root: Path, name: str, spec: JobSpec, label: Labeller, n: int = 200) -> PartnerSource:
    """:func:`make_partner`'s columns, each row labelled by ``label`` for its split (the
    split the partner itself will put its id in: ``common.dataset.split_indices``)."""
    source = make_partner(root, name, seed=int(name[1:]), n=n)
    rng = np.random.default_rng(100 + int(name[1:]))
    lines = source.data.read_text().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    ev = spec.evaluation
    _, val, test = split_indices(
        [r[0] for r in rows], validation_fraction=ev.validation_fraction,
        test_fraction=ev.test_fraction, seed=ev.split_seed,
    )  # fmt: skip
    split = {**{int(i): "validation" for i in val}, **{int(i): "test" for i in test}}
    for i, r in enumerate(rows):
        r[-1] = str(label(split.get(i, "train"), float(r[2]), rng))
    source.data.write_text("\n".join([lines[0], *(",".join(r) for r in rows)]) + "\n")
    return source


def _counts(sources: list[PartnerSource], spec: JobSpec, split: str) -> tuple[int, int]:
    """(positives, negatives) of one split over all partners, from the CSVs."""
    ev, pos, neg = spec.evaluation, 0, 0
    for s in sources:
        rows = [line.split(",") for line in s.data.read_text().splitlines()[1:]]
        parts = split_indices(
            [r[0] for r in rows], validation_fraction=ev.validation_fraction,
            test_fraction=ev.test_fraction, seed=ev.split_seed,
        )  # fmt: skip
        idx = parts[("train", "validation", "test").index(split)]
        labels = [int(rows[i][-1]) for i in idx]
        pos, neg = pos + sum(labels), neg + len(labels) - sum(labels)
    return pos, neg


def _run(
    tmp_path: Path, spec: JobSpec, sources: list[PartnerSource], *, budget_cap: float | None = None
) -> tuple[dict[str, Any], Path, list[dict[str, Any]], str]:
    """Run ``spec``; its metrics, output folder, progress events and the progress display's
    text (what ``fedcollab run`` prints in a log)."""
    grid, audit, policy = in_memory_federation(spec, sources, tmp_path)
    if budget_cap is not None:
        from fedcollab.privacy.budget_ledger import BudgetLedger

        for s in sources:
            db = tmp_path / "audit" / "partners" / s.partner / "budget.db"
            with BudgetLedger.open(db) as ledger:
                ledger.set_cap("shop", epsilon_cap=budget_cap, delta=1e-5)
    out = tmp_path / "out"
    with task_identity():
        metrics = run_job(grid, spec, JobOutputs(out), mode="simulation",  # type: ignore[arg-type]
                          audit_config=audit, policy=policy)  # fmt: skip
    events = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    buf = io.StringIO()
    with JobProgress(Console(file=buf, force_terminal=False, width=400), title=spec.name) as show:
        for ev in events:
            show(ev)
    return metrics, out, events, buf.getvalue()


def _of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == kind]


def _released_everywhere(out: Path, events: list[dict[str, Any]]) -> int:
    """The released model's round, the same in the progress, metrics.json and the card."""
    (released,) = _of(events, "released")
    metrics = json.loads((out / "metrics.json").read_text())
    card = json.loads((out / "model_card.json").read_text())
    assert released["round"] == metrics["best_round"] == card["metrics"]["best_round"]
    assert card["metrics"]["final"] == metrics["final"]
    return int(released["round"])


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
    # The early stop says when and why; the model it names nowhere: the released one is
    # chosen after it, from the last model's evaluation too.
    for stop in _of(events, "early_stop"):
        assert stop["round"] == len(rounds)
        assert (stop["patience"], stop["min_delta"]) == (
            2,
            spec.evaluation.early_stopping_min_delta,
        )
        assert "best_round" not in stop
    (released,) = _of(events, "released")
    assert released["round"] == metrics["best_round"] and released["selection"] == "validation"
    card = json.loads((out / "model_card.json").read_text())
    assert card["metrics"]["best_round"] == metrics["best_round"]


def test_an_undefined_validation_auc_neither_stops_nor_selects(tmp_path: Path) -> None:
    """Validation rows of one class have no AUC. It used to count as 0.0: a round without
    improvement, so the job stopped after patience + 1 rounds for nothing, and the early
    stop named "the initial model" while the last one was released."""
    spec = _spec("one-class-validation", rounds=5, evaluation={"early_stopping_patience": 2})

    def label(split: str, signal: float, rng: np.random.Generator) -> int:
        return 0 if split == "validation" else int(signal > 0)

    sources = [_partner(tmp_path / "data", f"p{i}", spec, label) for i in range(2)]
    metrics, out, events, text = _run(tmp_path, spec, sources)
    rounds = _of(events, "round")
    assert metrics["rounds_run"] == len(rounds) == 5 and not _of(events, "early_stop")
    assert all(e["val_auc"] is None for e in rounds)
    (warned,) = _of(events, "validation_undefined")  # once, not every round
    assert warned["round"] == 1 and warned["early_stopping"] is True
    assert warned["n"] == sum(_counts(sources, spec, "validation"))
    assert _released_everywhere(out, events) == 5  # the last model
    assert _of(events, "released")[0]["selection"] == "no_validation_auc"
    warning = [line for line in text.splitlines() if "validation split has no rows" in line]
    assert len(warning) == 1
    assert "early stopping and model selection are off" in warning[0]
    assert warning[0].endswith(
        "add rows or raise evaluation.validation_fraction (now 0.1; partners' nodes must be "
        "started with the same --split-validation)"
    )
    assert "released: model after round 5 (the last model: no validation AUC to select by)" in text
    test = metrics["final"]["test"]
    assert (
        f"completed: test AUC {test['auc']:.4f} on {test['n']} rows, model after round 5\n" in text
    )
    assert "DP estimate" not in text and test["dp_estimate"] is False
    assert "(best:" not in text and "the initial model" not in text


def test_an_untrained_model_and_a_rare_class_are_warned(tmp_path: Path) -> None:
    """The training rows teach the reverse of what the validation rows (and the initial
    model, by its seed) follow, so no round beats the initial model and it is released;
    the test split has a handful of positives. Both warnings say the figures mean little."""
    spec = _spec("untrained", rounds=6, evaluation={"early_stopping_patience": 2})

    def label(split: str, signal: float, rng: np.random.Generator) -> int:
        if split == "validation":
            return int(signal > 0)
        return int(signal > 1.6) if split == "test" else int(signal < 0)

    sources = [_partner(tmp_path / "data", f"p{i}", spec, label) for i in range(2)]
    positives, negatives = _counts(sources, spec, "test")
    assert 0 < positives < MIN_MINORITY_ROWS < negatives
    assert min(_counts(sources, spec, "validation")) >= MIN_MINORITY_ROWS
    metrics, out, events, text = _run(tmp_path, spec, sources)
    assert _released_everywhere(out, events) == 0
    (stop,) = _of(events, "early_stop")
    assert stop["round"] == 3 == metrics["rounds_run"]
    assert (
        "early stop after round 3: the validation AUC has not improved by more than 0.0001 "
        "for 2 rounds (evaluation.early_stopping_patience)"
    ) in text
    (released,) = _of(events, "released")
    assert released["warnings"] == [
        {"kind": "initial_model"},
        {"kind": "few_minority_rows", "split": "test", "label": 1, "rows": positives,
         "n": positives + negatives, "threshold": MIN_MINORITY_ROWS},
    ]  # fmt: skip
    val_auc = metrics["final"]["validation"]["auc"]
    assert f"released: the initial model (best validation AUC {val_auc:.4f})" in text
    assert "warning the released model is the initial, untrained one (after 0 rounds)" in text
    assert (
        f"warning the test split has only {positives} positive rows (of "
        f"{positives + negatives} rows): its AUC is not a meaningful figure with fewer than "
        f"{MIN_MINORITY_ROWS} rows of each class; add rows or raise evaluation.test_fraction"
    ) in text
    assert f"on {positives + negatives} rows, the initial model\n" in text


def test_a_dp_jobs_figures_are_marked_as_estimates(tmp_path: Path) -> None:
    """A sample-level DP job evaluates on noised histograms: its test AUC and n are
    estimates, and the completion line, metrics.json and model_card.json say so (the
    console's final table and the experiments read the same keys as before)."""
    from fedcollab.coordinator.console.jobs import final_table

    spec = _spec(
        "dp", rounds=1,
        privacy={"dp": "sample", "target_epsilon": 3.0,
                 "value_bounds": {"noise": [-5.0, 5.0], "signal": [-5.0, 5.0]}},
    )  # fmt: skip
    sources = [make_partner(tmp_path / "data", f"p{i}", seed=i, n=300) for i in range(2)]
    metrics, out, events, text = _run(tmp_path, spec, sources, budget_cap=10.0)
    assert _released_everywhere(out, events) == 1
    card = json.loads((out / "model_card.json").read_text())
    for final in (metrics["final"], card["metrics"]["final"]):
        for split in ("validation", "test"):
            assert final[split]["dp_estimate"] is True
            assert {"n", "auc", "accuracy", "log_loss"} <= set(final[split])
    assert _of(events, "released")[0]["dp_estimate"] is True
    test = metrics["final"]["test"]
    assert (
        f"completed: test AUC {test['auc']:.4f} on about {test['n']} rows, model after round 1 "
        "(DP estimate from noised counts; n is noised too)"
    ) in text
    last = 'the last model: evaluation.dp_model_selection = "last_round"'
    assert f"released: model after round 1 ({last})" in text
    table = final_table(metrics["final"])
    assert table is not None and ["dp estimate", True, True] in table["rows"]


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
