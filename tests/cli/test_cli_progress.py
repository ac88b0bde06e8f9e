"""The progress display renders every kind of job's events (here: a vertical job)."""

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


def test_round_numbers_agree() -> None:
    """The round whose line shows the best AUC and the early stop's 'best' name one model."""
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=200)
    aucs = [0.70, 0.75, 0.74, 0.73]
    events: list[dict[str, Any]] = [
        {"event": "round", "round": r, "total": 30, "task": "purchase_prediction",
         "validated_round": r - 1, "val_auc": auc}
        for r, auc in enumerate(aucs, start=1)
    ]  # fmt: skip
    events.append({"event": "early_stop", "round": 4, "best_round": 1})
    with JobProgress(console, title="p") as progress:
        for ev in events:
            progress(ev)
    text = buf.getvalue()
    assert "round 1/30: val AUC 0.7000 (the initial model)" in text
    assert "round 2/30: val AUC 0.7500 (model after round 1)" in text
    assert "early stop after round 4 (best: model after round 1)" in text


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
