"""common.job_files: the typed result.json / metrics.json / progress.jsonl (issue 17)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from fedcollab.common.errors import WorkspaceError
from fedcollab.common.job_files import (
    JobMetrics,
    JobResult,
    append_event,
    load_metrics,
    read_metrics,
    read_progress,
    read_result,
    write_metrics,
    write_result,
)


def _old_dump(obj: object) -> str:
    """How coordinator.outputs wrote JSON before the models existed."""
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"


def test_result_file_is_byte_identical_to_the_old_writer(tmp_path: Path) -> None:
    result = JobResult.failed("FederationError", "lost", dropouts=[{"partner": "a", "round": 2}])
    write_result(tmp_path, result)
    old = {
        "status": "failed",
        "error": "FederationError",
        "reason": "lost",
        "dropouts": [{"partner": "a", "round": 2}],
        "finished": result.finished,
    }
    assert (tmp_path / "result.json").read_text() == _old_dump(old)
    assert read_result(tmp_path) == result


def test_metrics_keep_only_what_the_job_set(tmp_path: Path) -> None:
    doc = {
        "job": "p",
        "task": "purchase_prediction",
        "rounds_run": 3,
        "best_round": 2,
        "history": [{"round": 1, "val_auc": 0.6}],
        "final": {"test": {"auc": 0.7}},
        "epsilon": None,
        "dropouts": [],
        "refused": [],
        "wall_time_s": 1.5,
        "a_newer_metric": {"x": 1},  # kept: an older reader never drops a newer metric
    }
    write_metrics(tmp_path, doc)
    assert (tmp_path / "metrics.json").read_text() == _old_dump(doc)
    metrics = load_metrics(tmp_path)
    assert metrics.rounds_run == 3 and metrics.final == {"test": {"auc": 0.7}}
    assert metrics.document() == doc


def test_console_fallback_result_without_finished_still_reads(tmp_path: Path) -> None:
    (tmp_path / "result.json").write_text(
        '{"status": "failed", "error": "KeyError", "reason": "x"}'
    )
    result = read_result(tmp_path)
    assert result is not None and result.status == "failed" and result.finished is None


@pytest.mark.parametrize(
    "text",
    [
        '{"status": "done"}',  # unknown status
        '{"status": "completed", "surprise": 1}',  # unknown field
        "not json",
    ],
)
def test_malformed_result_is_a_typed_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "result.json").write_text(text)
    with pytest.raises(WorkspaceError) as err:
        read_result(tmp_path)
    assert "fresh --out folder" in err.value.hint


def test_missing_files(tmp_path: Path) -> None:
    assert read_result(tmp_path) is None and read_metrics(tmp_path) is None
    with pytest.raises(WorkspaceError):
        load_metrics(tmp_path)
    with pytest.raises(ValidationError):  # a writer bug, not user input: fails loudly
        write_metrics(tmp_path, {"task": "no job name"})


def test_progress_offsets_and_partial_line(tmp_path: Path) -> None:
    append_event(tmp_path, "job_start", job="p")
    append_event(tmp_path, "round", round=1, total=3)
    events, offset = read_progress(tmp_path)
    assert [(e["event"], e.get("round")) for e in events] == [("job_start", None), ("round", 1)]
    with (tmp_path / "progress.jsonl").open("a") as fh:
        fh.write('{"event": "round", "time": 1.0, "round": 2')  # still being written
    more, offset2 = read_progress(tmp_path, start=offset)
    assert more == [] and offset2 == offset
    with (tmp_path / "progress.jsonl").open("a") as fh:
        fh.write("}\n")
    more, _ = read_progress(tmp_path, start=offset)
    assert more == [{"event": "round", "time": 1.0, "round": 2}]


def test_progress_line_without_event_kind_is_refused(tmp_path: Path) -> None:
    (tmp_path / "progress.jsonl").write_text('{"time": 1.0}\n')
    with pytest.raises(WorkspaceError):
        read_progress(tmp_path)


def test_metrics_model_is_the_writer_input(tmp_path: Path) -> None:
    write_metrics(tmp_path, JobMetrics(job="s", task="segmentation", iterations=4))
    assert json.loads((tmp_path / "metrics.json").read_text()) == {
        "job": "s",
        "task": "segmentation",
        "iterations": 4,
    }
