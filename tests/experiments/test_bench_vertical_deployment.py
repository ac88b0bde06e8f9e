"""The vertical deployment benchmark's helpers: progress events -> times (no federation)."""

from __future__ import annotations

from typing import Any

import pytest

from experiments.bench_vertical_deployment import (
    iteration_times,
    median_iteration,
    psi_seconds,
    summarise,
)

EVENTS: list[dict[str, Any]] = [
    {"event": "job_start", "time": 100.0, "job": "j"},
    {"event": "vertical", "phase": "psi", "time": 100.5},
    {"event": "vertical", "phase": "aligned", "time": 120.0, "intersection": 50},
    {"event": "round", "round": 1, "time": 130.0, "train_loss": 0.6},
    {"event": "round", "round": 2, "time": 134.0, "train_loss": 0.5},
    {"event": "round", "round": 3, "time": 140.0, "train_loss": 0.45},
    {"event": "round", "round": 4, "time": 145.0, "train_loss": 0.44},
    {"event": "job_end", "status": "completed", "time": 160.0},
]


def test_iteration_times_start_at_the_aligned_event() -> None:
    assert iteration_times(EVENTS) == {1: 10.0, 2: 4.0, 3: 6.0, 4: 5.0}


def test_iteration_times_out_of_order_and_without_aligned() -> None:
    events = [e for e in EVENTS if e.get("phase") != "aligned"][::-1]
    assert iteration_times(events) == {2: 4.0, 3: 6.0, 4: 5.0}


def test_median_iteration_skips_the_first_unless_alone() -> None:
    assert median_iteration({1: 10.0, 2: 4.0, 3: 6.0, 4: 5.0}) == 5.0
    assert median_iteration({1: 10.0}) == 10.0
    with pytest.raises(ValueError):
        median_iteration({})


def test_psi_seconds_is_job_start_to_aligned() -> None:
    assert psi_seconds(EVENTS) == 20.0
    with pytest.raises(ValueError, match="aligned"):
        psi_seconds([e for e in EVENTS if e.get("phase") != "aligned"])


def test_summarise_reads_metrics_and_events() -> None:
    metrics = {
        "final": {"test_auc": 0.75, "test_rows": 10},
        "alignment": {"intersection": 50, "train_rows": 40, "test_rows": 10},
        "history": [{"iteration": 1, "train_loss": 0.6}, {"iteration": 4, "train_loss": 0.44}],
        "wall_time_s": 60.0,
    }
    s = summarise(EVENTS, metrics)
    assert s["test_auc"] == 0.75
    assert s["alignment"] == {"intersection": 50, "train_rows": 40, "test_rows": 10}
    assert s["final_train_loss"] == 0.44
    assert s["psi_s"] == 20.0
    assert s["iteration_times_s"] == {"1": 10.0, "2": 4.0, "3": 6.0, "4": 5.0}
    assert s["median_iteration_s"] == 5.0
    assert s["evaluation_s"] == 15.0
    assert s["job_wall_time_s"] == 60.0
