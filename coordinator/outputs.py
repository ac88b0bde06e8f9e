"""A job's output folder: progress stream, metrics, model, model card.

Layout (the same for a real federation and for ``fedcollab run``)::

    <out>/progress.jsonl   one JSON event per line, appended as the job runs
    <out>/metrics.json     metrics per round and final metrics
    <out>/model.pt         final global model (purchase prediction)
    <out>/preprocessor.json  federated standardisation and vocabularies
    <out>/centroids.json   final centroids (segmentation)
    <out>/attributions.json  global attributions of the released model (prediction):
                           LR coefficients or federated permutation importance
    <out>/attributions.csv   the same, one row per model input (or column)
    <out>/segments.json    segment profiles in business units, with label, description,
                           lift and distinguishing columns (segmentation)
    <out>/segments.csv     the same, one row per segment
    <out>/model_card.json  datasets by content hash, partners, rounds, parameters, metrics
    <out>/audit.json       the cosigned checkpoint of the coordinator's log after the job
    <out>/result.json      final status: completed / failed, with the reason
    <out>/trace.npz        with ``trace``: the global model or centroids after every
                           round (experiments compare encrypted and plaintext runs)

Every file is written atomically (:mod:`common.atomic`), so a reader never sees
half a file. ``result.json``, ``metrics.json`` and ``progress.jsonl`` are typed by
:mod:`common.job_files`, whose readers every other party uses.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from fedcollab.common.atomic import write_atomic
from fedcollab.common.job_files import (
    JobMetrics,
    JobResult,
    append_event,
    read_progress,
    write_metrics,
    write_result,
)

__all__ = ["JobOutputs", "read_progress"]

log = logging.getLogger(__name__)


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"


class JobOutputs:
    """Writes a job's outputs into one folder."""

    def __init__(self, directory: Path, *, trace: bool = False) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._progress = self.dir / "progress.jsonl"
        self.trace = trace
        self._trace: dict[str, np.ndarray] = {}

    def trace_step(self, name: str, values: np.ndarray) -> None:
        """Keep ``values`` for ``trace.npz`` (only when tracing is on)."""
        if self.trace:
            self._trace[name] = np.array(values, dtype=np.float64, copy=True)
            buf = io.BytesIO()
            np.savez(buf, allow_pickle=False, **self._trace)
            self.write_bytes("trace.npz", buf.getvalue())

    def event(self, kind: str, **fields: Any) -> None:
        """Append one progress event (flushed and fsynced: followers see it at once)."""
        append_event(self.dir, kind, **fields)
        if log.isEnabledFor(logging.INFO):  # `fedcollab -v`: the job's progress as it goes
            brief = {k: v for k, v in fields.items() if not isinstance(v, dict | list)}
            log.info("%s %s: %s", self.dir.name, kind, brief)

    def write_result(self, result: JobResult) -> Path:
        return write_result(self.dir, result)

    def write_metrics(self, metrics: JobMetrics | dict[str, Any]) -> Path:
        return write_metrics(self.dir, metrics)

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write_bytes(name, _dump(obj).encode())

    def write_attributions(self, doc: dict[str, Any]) -> None:
        """``attributions.json`` and ``attributions.csv`` (:mod:`protocols.attribution`)."""
        from fedcollab.protocols.attribution import attribution_csv

        self.write_json("attributions.json", doc)
        self.write_bytes("attributions.csv", attribution_csv(doc).encode())

    def write_segments(self, profiles: list[dict[str, Any]]) -> None:
        """``segments.json`` and ``segments.csv`` (:mod:`protocols.segment_labels`)."""
        from fedcollab.protocols.segment_labels import segments_csv

        self.write_json("segments.json", profiles)
        self.write_bytes("segments.csv", segments_csv(profiles).encode())

    def write_bytes(self, name: str, data: bytes) -> Path:
        return write_atomic(self.dir / name, data)
