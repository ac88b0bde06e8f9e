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
        {"event": "job_end", "status": "completed", "final": {"test_auc": 0.7123}},
        {"event": "job_end", "status": "completed", "final": {"scored": 90}},
    ]  # fmt: skip
    with JobProgress(console, title="risk") as progress:
        for ev in events:
            progress(ev)
    text = buf.getvalue()
    assert "private set intersection: a, b (label holder a)" in text
    assert "aligned 90 common users (72 training, 18 test)" in text
    assert "round 1/2: train loss 0.6931" in text
    assert "test AUC 0.7123" in text
    assert "90 users scored at the label holder" in text
