"""The progress display renders every kind of job's events (a vertical job; a purchase
prediction's model release and warnings, which tests/coordinator/test_coordinator_rounds.py
also renders from a real job's events)."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from fedcollab.cli.progress import JobProgress


def test_vertical_job_progress_lines() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=200)
    events: list[dict[str, Any]] = [
        {"event": "job_start", "job": "risk", "task": "vertical", "mode": "deployment"},
        {"event": "vertical", "phase": "psi", "parties": ["a", "b"], "label_holder": "a"},
        {"event": "vertical", "phase": "aligned", "intersection": 90, "train_rows": 72,
         "test_rows": 18},
        {"event": "round", "round": 1, "total": 2, "task": "vertical", "train_loss": 0.6931},
        # Under label DP the coordinator sees no loss: the line says the iteration only.
        {"event": "round", "round": 2, "total": 2, "task": "vertical", "train_loss": None},
        {"event": "job_end", "status": "completed", "final": {"test_auc": 0.7123}},
        {"event": "job_end", "status": "completed", "final": {"scored": 90}},
    ]  # fmt: skip
    with JobProgress(console, title="risk") as progress:
        for ev in events:
            progress(ev)
    text = buf.getvalue()
    assert "private set intersection: a, b (label holder a)" in text
    assert "aligned 90 common users (72 training, 18 test)" in text
    assert "iteration 1/2: train loss 0.6931" in text
    assert "  iteration 2/2\n" in text and "2/2:" not in text
    assert "test AUC 0.7123" in text
    assert "90 users scored at the label holder" in text


def _render(events: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    with JobProgress(Console(file=buf, force_terminal=False, width=300), title="p") as progress:
        for ev in events:
            progress(ev)
    return buf.getvalue()


def test_round_numbers_agree() -> None:
    """The round lines, the released line and the completion line name models alike; the
    early stop says when and why, and the model named is the one the final selection
    released (here the last, validated after the loop), not the best one so far."""
    aucs = [0.70, 0.75, 0.74, 0.73]
    events: list[dict[str, Any]] = [
        {"event": "round", "round": r, "total": 30, "task": "purchase_prediction",
         "validated_round": r - 1, "val_auc": auc}
        for r, auc in enumerate(aucs, start=1)
    ]  # fmt: skip
    events += [
        {"event": "early_stop", "round": 4, "patience": 2, "min_delta": 0.0001},
        {"event": "released", "round": 4, "rounds_run": 4, "selection": "validation",
         "validation_auc": 0.7612, "test_auc": 0.7301, "test_n": 812, "dp_estimate": False,
         "warnings": []},
        {"event": "job_end", "status": "completed",
         "final": {"test": {"auc": 0.7301, "n": 812, "dp_estimate": False}}},
    ]  # fmt: skip
    text = _render(events)
    assert "round 1/30: val AUC 0.7000 (the initial model)" in text
    assert "round 2/30: val AUC 0.7500 (model after round 1)" in text
    assert (
        "early stop after round 4: the validation AUC has not improved by more than 0.0001 "
        "for 2 rounds (evaluation.early_stopping_patience)\n"
    ) in text
    assert "released: model after round 4 (best validation AUC 0.7612)\n" in text
    assert "completed: test AUC 0.7301 on 812 rows, model after round 4\n" in text
    assert "best:" not in text and "warning" not in text


def test_an_older_coordinators_early_stop_names_no_model() -> None:
    """Its ``best_round`` was the best so far, not necessarily the released model."""
    text = _render([{"event": "early_stop", "round": 6, "best_round": 0}])
    assert [line for line in text.splitlines() if line] == ["  early stop after round 6"]


def test_warnings_about_validation_release_and_dp() -> None:
    """The one-time validation warning (DP wording, early stopping off), a DP job's
    released line and completion line, a split with no rows of a class."""
    events: list[dict[str, Any]] = [
        {"event": "validation_undefined", "round": 1, "n": 4, "early_stopping": False,
         "validation_fraction": 0.05, "dp_estimate": True},
        {"event": "released", "round": 0, "rounds_run": 0, "selection": "last_round",
         "validation_auc": None, "test_auc": 0.61, "test_n": 90, "dp_estimate": True,
         "warnings": [{"kind": "initial_model"},
                      {"kind": "few_minority_rows", "split": "validation", "label": 0,
                       "rows": 0, "n": 4, "threshold": 10},
                      {"kind": "few_minority_rows", "split": "test", "label": 1,
                       "rows": 1, "n": 90, "threshold": 10}]},
        {"event": "job_end", "status": "completed",
         "final": {"test": {"auc": 0.61, "n": 90, "dp_estimate": True}}},
    ]  # fmt: skip
    lines = _render(events).splitlines()
    assert lines[0] == (
        "  warning the validation split has no rows of both classes after the DP noise "
        "(4 rows): no validation AUC, so model selection is off; add rows or raise "
        "evaluation.validation_fraction (now 0.05; partners' nodes must be started with the "
        "same --split-validation)"
    )
    last = 'the last model: evaluation.dp_model_selection = "last_round"'
    assert lines[1] == f"  released: the initial model ({last})"
    assert lines[2].startswith("  warning the released model is the initial, untrained one")
    assert lines[3].startswith(
        "  warning the validation split has no negative rows (of about 4 rows): its AUC, "
        "which chose the model, is not a meaningful figure"
    )
    assert lines[4].startswith(
        "  warning the test split has only about 1 positive row (of about 90 rows): its AUC is"
    )
    assert lines[5] == (
        "  completed: test AUC 0.6100 on about 90 rows, the initial model "
        "(DP estimate from noised counts; n is noised too)"
    )


def test_dp_fedavg_noise_warning() -> None:
    """A DP-FedAvg job whose noise outweighs any signal says so; one that does not, quietly."""
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=300)
    events: list[dict[str, Any]] = [
        {"event": "dp_signal", "noise_to_signal": 3.84, "contributors": 9, "rounds": 3,
         "n_parameters": 73},
        {"event": "dp_signal", "noise_to_signal": 0.6, "contributors": 9, "rounds": 3,
         "n_parameters": 73},
    ]  # fmt: skip
    with JobProgress(console, title="p") as progress:
        for ev in events:
            progress(ev)
    lines = buf.getvalue().splitlines()
    warned = [line for line in lines if "warning" in line]
    assert len(warned) == 1 and "3.8x the largest signal" in warned[0]
    assert "9 partners, 3 rounds, 73 parameters" in warned[0]
    assert any("0.60x the largest signal" in line and "warning" not in line for line in lines)
