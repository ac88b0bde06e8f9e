"""The job output folder's status files, typed: one writer and one reader each.

Every party that looks at a job's folder (the coordinator that writes it, the
simulation, ``fedcollab job status``, the web console, crash recovery, the
experiments) goes through this module::

    <out>/result.json      :class:`JobResult`   final status, written once at the end
    <out>/metrics.json     :class:`JobMetrics`  per-round history and final metrics
    <out>/progress.jsonl   :class:`ProgressEvent` one JSON object per line, appended

It lives in ``common`` (not ``coordinator``) so that ``cli`` and ``compliance``
read job folders without importing the coordinator. The on-disk format is the
one written before these models existed: :func:`write_result` and
:func:`write_metrics` dump only the fields that were set, so a file written now
is byte-identical to one written then. One shape disagreement had to be decided:
the web console's fallback writer (a bug while submitting) omitted
``finished``; every writer now sets it, and the reader still accepts files
without it (``finished = None``).

Malformed files raise :class:`~common.errors.WorkspaceError` with a hint; a
missing ``result.json`` / ``metrics.json`` reads as ``None`` (the job has not
ended / released nothing yet).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from fedcollab.common.atomic import write_atomic
from fedcollab.common.errors import WorkspaceError

__all__ = [
    "METRICS_FILE",
    "PROGRESS_FILE",
    "RESULT_FILE",
    "JobMetrics",
    "JobResult",
    "ProgressEvent",
    "append_event",
    "load_metrics",
    "read_metrics",
    "read_progress",
    "read_result",
    "utc_now",
    "write_metrics",
    "write_result",
]

RESULT_FILE = "result.json"
METRICS_FILE = "metrics.json"
PROGRESS_FILE = "progress.jsonl"


def utc_now() -> str:
    """The ``finished`` timestamp format: ISO 8601 UTC, whole seconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class JobResult(BaseModel):
    """``result.json``: how the job ended. Failed results carry the error class and reason."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal["completed", "failed"]
    finished: str | None = None
    error: str | None = None
    reason: str | None = None
    dropouts: list[dict[str, Any]] | None = None

    @classmethod
    def completed(cls) -> JobResult:
        return cls(status="completed", finished=utc_now())

    @classmethod
    def failed(
        cls, error: str, reason: str, *, dropouts: list[dict[str, Any]] | None = None
    ) -> JobResult:
        fields: dict[str, Any] = {"status": "failed", "error": error, "reason": reason}
        if dropouts is not None:
            fields["dropouts"] = dropouts
        return cls(**fields, finished=utc_now())


class JobMetrics(BaseModel):
    """``metrics.json``: what the job released. Fields depend on the task.

    Common: ``job``, ``task``, ``dropouts``, ``refused``, ``wall_time_s``.
    Purchase prediction: ``rounds_run``, ``best_round``, ``history``, ``final``,
    ``epsilon`` and, with DP-FedAvg, ``noise_to_signal``
    (:func:`protocols.client_dp.noise_to_signal`). Segmentation: ``iterations``,
    ``objective``, ``history``, ``segments``, ``epsilon``. Vertical: ``rounds_run``,
    ``history``, ``final``, ``alignment``, ``explanations``. Unknown keys are kept
    (``extra="allow"``) so an older reader never drops a newer writer's metric.
    """

    model_config = ConfigDict(extra="allow")

    job: str
    task: str
    dropouts: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    wall_time_s: float | None = None
    rounds_run: int | None = None
    best_round: int | None = None
    iterations: int | None = None
    history: list[dict[str, Any]] = []
    final: dict[str, Any] | None = None
    objective: float | None = None
    epsilon: float | None = None
    noise_to_signal: float | None = None
    segments: list[dict[str, Any]] | None = None
    alignment: dict[str, Any] | None = None
    explanations: list[dict[str, Any]] | None = None

    def document(self) -> dict[str, Any]:
        """The file's JSON object as written (only the fields the job set)."""
        return self.model_dump(mode="json", exclude_unset=True)


class ProgressEvent(BaseModel):
    """One line of ``progress.jsonl``: ``event`` kind, unix ``time``, the event's fields."""

    model_config = ConfigDict(extra="allow", frozen=True)

    event: str
    time: float


def _dump(model: BaseModel) -> str:
    doc = model.model_dump(mode="json", exclude_unset=True)
    return json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_result(directory: Path, result: JobResult) -> Path:
    return write_atomic(directory / RESULT_FILE, _dump(result))


def write_metrics(directory: Path, metrics: JobMetrics | dict[str, Any]) -> Path:
    model = metrics if isinstance(metrics, JobMetrics) else JobMetrics.model_validate(metrics)
    return write_atomic(directory / METRICS_FILE, _dump(model))


def append_event(directory: Path, kind: str, **fields: Any) -> None:
    """Append one progress event (flushed and fsynced: followers see it at once)."""
    event = ProgressEvent.model_validate({"event": kind, "time": time.time(), **fields})
    line = json.dumps(event.model_dump(mode="json"), sort_keys=True, allow_nan=False)
    with (directory / PROGRESS_FILE).open("a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _corrupt(path: Path, exc: Exception) -> WorkspaceError:
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return WorkspaceError(
        f"{path} is not a fedcollab job file: {detail}",
        hint="the job folder was edited or belongs to another tool: rerun the job into a "
        "fresh --out folder",
    )


_M = TypeVar("_M", bound=BaseModel)


def _read_model(path: Path, model: type[_M]) -> _M | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise _corrupt(path, exc) from exc


def read_result(directory: Path) -> JobResult | None:
    """The job's ``result.json``; ``None`` while the job has not ended."""
    return _read_model(directory / RESULT_FILE, JobResult)


def read_metrics(directory: Path) -> JobMetrics | None:
    """The job's ``metrics.json``; ``None`` if the job released none."""
    return _read_model(directory / METRICS_FILE, JobMetrics)


def load_metrics(directory: Path) -> JobMetrics:
    """:func:`read_metrics` for a job that must have ended: a missing file is an error."""
    metrics = read_metrics(directory)
    if metrics is None:
        raise WorkspaceError(
            f"{directory / METRICS_FILE} is missing: the job released no metrics",
            hint="check result.json and progress.jsonl in that folder: the job may have failed",
        )
    return metrics


def read_progress(directory: Path, *, start: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Events appended since byte offset ``start``; returns (events, new offset).

    A line still being written (no final newline) is left for the next call. Each
    event is checked against :class:`ProgressEvent` and returned as its dict.
    """
    path = directory / PROGRESS_FILE
    if not path.exists():
        return [], start
    with path.open("rb") as fh:
        fh.seek(start)
        data = fh.read()
    end = data.rfind(b"\n") + 1
    events: list[dict[str, Any]] = []
    for line in data[:end].splitlines():
        if not line.strip():
            continue
        try:
            events.append(ProgressEvent.model_validate_json(line).model_dump(mode="json"))
        except ValidationError as exc:
            raise _corrupt(path, exc) from exc
    return events, start + end
