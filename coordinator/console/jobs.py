"""Jobs the console shows: discovery, status, progress and insights, read-only.

Jobs come from the workspace's job index (``<ws>/jobs/index.jsonl``, appended by
:func:`coordinator.submit.submit_job`) and from extra folders given to the
console (every subfolder holding ``progress.jsonl``, e.g. ``results/demo``).
A job's id in URLs is a slug of its folder name, made unique per folder with a
short hash of the folder's path when two folders share a name.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fedcollab.common.errors import WorkspaceError
from fedcollab.common.job_files import read_metrics, read_progress, read_result
from fedcollab.common.release_text import released_text

__all__ = ["JobCatalog", "JobRef", "job_detail", "job_participants", "job_summary"]

_T = TypeVar("_T")
_SLUG_RE = re.compile(r"[^a-z0-9._-]+")
JOB_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,127}$"
#: Files a job page may offer for download (never the model or messages).
DOWNLOADS = ("attributions.csv", "segments.csv")
_STATUSES = ("waiting", "running", "completed", "failed")
_METRIC = {
    "purchase_prediction": ("val_auc", "validation AUC"),
    "segmentation": ("objective", "k-means inertia"),
    "vertical": ("train_loss", "train loss"),
}


@dataclass(frozen=True)
class JobRef:
    id: str
    dir: Path
    index: dict[str, Any]  # the job index entry, {} for discovered folders


def _slug(name: str) -> str:
    slug = _SLUG_RE.sub("-", name.lower()).strip("-._") or "job"
    return slug[:100]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_model(reader: Callable[[Path], _T | None], directory: Path) -> _T | None:
    """A job file through :mod:`common.job_files`; a malformed one shows as absent."""
    try:
        return reader(directory)
    except (OSError, WorkspaceError):
        return None


class JobCatalog:
    """The job index plus job folders; re-read on every call (files change under us)."""

    def __init__(self, workspace: Path, jobs_dirs: Iterable[Path] = ()) -> None:
        self.index_path = workspace / "jobs" / "index.jsonl"
        self.jobs_dirs = tuple(jobs_dirs)

    def _index(self) -> list[dict[str, Any]]:
        try:
            lines = self.index_path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        entries = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a torn last line while a writer appends
            if isinstance(entry, dict) and isinstance(entry.get("out_dir"), str):
                entries.append(entry)
        return entries

    def refs(self) -> list[JobRef]:
        found: dict[Path, dict[str, Any]] = {}
        for entry in self._index():
            found[Path(entry["out_dir"]).resolve()] = entry  # the latest submission wins
        for base in self.jobs_dirs:
            if not base.is_dir():
                continue
            for sub in sorted(base.iterdir()):
                if (sub / "progress.jsonl").is_file():
                    found.setdefault(sub.resolve(), {})
                elif (sub / "submission.json").is_file():  # submitted from the console
                    submitted = _read_json(sub / "submission.json")
                    found.setdefault(
                        sub.resolve(), submitted if isinstance(submitted, dict) else {}
                    )
        by_slug: dict[str, list[Path]] = {}
        for path in sorted(found):
            by_slug.setdefault(_slug(path.name), []).append(path)
        refs = []
        for slug, paths in by_slug.items():
            for path in paths:
                unique = slug
                if len(paths) > 1:
                    unique += "-" + hashlib.sha256(str(path).encode()).hexdigest()[:8]
                refs.append(JobRef(unique, path, found[path]))
        return sorted(refs, key=lambda r: (-_started(r), r.id))

    def get(self, job_id: str) -> JobRef | None:
        return next((r for r in self.refs() if r.id == job_id), None)


def _started(ref: JobRef) -> float:
    try:
        return (ref.dir / "progress.jsonl").stat().st_mtime
    except OSError:
        return float(ref.index.get("submitted_ts", 0.0))


def job_participants(ref: JobRef, events: list[dict[str, Any]] | None = None) -> set[str]:
    """Every partner named for or taking part in a job (who may see it)."""
    names: set[str] = {str(p) for p in ref.index.get("participants", [])}
    card = _read_json(ref.dir / "model_card.json")
    if isinstance(card, dict):
        names |= {str(p.get("name")) for p in card.get("partners", []) if isinstance(p, dict)}
    for ev in events if events is not None else read_progress(ref.dir)[0]:
        if ev.get("event") == "partners":
            names |= {str(p) for p in ev.get("partners", [])}
        elif ev.get("event") == "waiting":
            names |= {str(p) for p in ev.get("participants", [])}
    return names


def _status(ref: JobRef, events: list[dict[str, Any]]) -> tuple[str, dict[str, Any] | None]:
    end = next((e for e in reversed(events) if e.get("event") == "job_end"), None)
    if end is not None:
        status = "completed" if end.get("status") == "completed" else "failed"
        return status, end
    result = _read_model(read_result, ref.dir)
    if result is not None:
        return result.status, result.model_dump(mode="json", exclude_unset=True)
    if any(e.get("event") == "job_start" for e in events):
        return "running", None
    return "waiting", None


def job_summary(ref: JobRef, events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    events = read_progress(ref.dir)[0] if events is None else events
    status, _end = _status(ref, events)
    start = next((e for e in events if e.get("event") == "job_start"), {})
    rounds = [e for e in events if e.get("event") == "round"]
    total = rounds[-1].get("total") if rounds else None
    return {
        "id": ref.id,
        "name": start.get("job") or ref.index.get("job") or ref.dir.name,
        "task": start.get("task") or ref.index.get("task"),
        "purpose": ref.index.get("purpose"),
        "status": status,
        "round": rounds[-1].get("round") if rounds else 0,
        "total": total,
        "submitted": ref.index.get("submitted"),
        "run_id": ref.index.get("run_id"),
    }


def _participants(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for ev in events:
        kind = ev.get("event")
        if kind == "waiting":
            for p in ev.get("participants", []):
                rows.setdefault(str(p), {"partner": str(p), "state": "waiting", "detail": ""})
        elif kind == "partners":
            for p in ev.get("partners", []):
                rows[str(p)] = {"partner": str(p), "state": "joined", "detail": ""}
            for p in ev.get("missing", []):
                rows[str(p)] = {"partner": str(p), "state": "missing", "detail": ""}
            for r in ev.get("refused", []):
                name = str(r.get("partner") or r.get("node") or "?")
                rows[name] = {"partner": name, "state": "refused", "detail": r.get("reason", "")}
        elif kind == "dropout":
            name = str(ev.get("partner"))
            rows[name] = {
                "partner": name,
                "state": "dropped",
                "detail": f"at {ev.get('step')}: {ev.get('reason', '')}",
            }
    return sorted(rows.values(), key=lambda r: r["partner"])


def _round_row(ev: dict[str, Any]) -> dict[str, Any]:
    keys = ("round", "total", "partners", "val_auc", "val_log_loss", "objective", "train_loss")
    return {**{k: ev.get(k) for k in keys}, "epsilon": ev.get("epsilon")}


def _insights(directory: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    attributions = _read_json(directory / "attributions.json")
    if isinstance(attributions, dict) and isinstance(attributions.get("features"), list):
        out["attributions"] = attributions
    segments = _read_json(directory / "segments.json")
    if isinstance(segments, dict):
        segments = segments.get("segments")
    if isinstance(segments, list):
        out["segments"] = [s for s in segments if isinstance(s, dict)]
    explanations = _read_json(directory / "explanations.json")
    if isinstance(explanations, list):
        out["explanations"] = [e for e in explanations if isinstance(e, dict)]
    out["downloads"] = [n for n in DOWNLOADS if (directory / n).is_file()]
    return out


_METRIC_NAMES = {
    "auc": "AUC", "accuracy": "accuracy", "log_loss": "log-loss", "n": "rows",
    "test_auc": "test AUC", "scored": "users scored", "queried": "users queried",
}  # fmt: skip


def _metric_name(key: str) -> str:
    return _METRIC_NAMES.get(key, key.replace("_", " "))


def final_table(final: object) -> dict[str, Any] | None:
    """Final metrics as a table: one column per split when they are nested
    (``{"validation": {"auc": ..}, "test": {..}}``), else metric and value."""
    if not isinstance(final, dict) or not final:
        return None
    nested = {k: v for k, v in final.items() if isinstance(v, dict)}
    flat = {k: v for k, v in final.items() if not isinstance(v, dict | list)}
    if nested:
        splits = list(nested)
        keys: list[str] = []
        for inner in nested.values():
            keys += [k for k in inner if k not in keys and not isinstance(inner[k], dict | list)]
        rows = [[_metric_name(k), *(nested[s].get(k) for s in splits)] for k in keys]
        rows += [[_metric_name(k), v, *([None] * (len(splits) - 1))] for k, v in flat.items()]
        return {"columns": ["Metric", *splits], "rows": rows}
    return {"columns": ["Metric", "Value"], "rows": [[_metric_name(k), v] for k, v in flat.items()]}


def job_detail(ref: JobRef) -> dict[str, Any]:
    """Everything the job page shows, as JSON-safe values (the API's body)."""
    events = read_progress(ref.dir)[0]
    summary = job_summary(ref, events)
    status, end = _status(ref, events)
    rounds = [_round_row(e) for e in events if e.get("event") == "round"]
    task = str(summary.get("task") or "")
    key, label = _METRIC.get(task, ("val_auc", "metric"))
    series = [(r["round"], r[key]) for r in rounds if isinstance(r.get(key), int | float)]
    epsilon = next((r["epsilon"] for r in reversed(rounds) if r.get("epsilon") is not None), None)
    privacy = next((e for e in events if e.get("event") == "privacy"), None)
    metrics = _read_model(read_metrics, ref.dir)
    final = (end or {}).get("final") or (metrics.final if metrics is not None else None)
    start = next((e for e in events if e.get("event") == "job_start"), {})
    released = next((e for e in reversed(events) if e.get("event") == "released"), None)
    scoring = bool(start.get("scoring")) or (
        task == "vertical" and not rounds and isinstance(final, dict) and "scored" in final
    )
    if rounds:
        round_text = f"{summary['round']} / {summary['total'] if summary['total'] else '-'}"
    else:
        round_text = "not started" if status in ("waiting", "running") else "none"
    return {
        **summary,
        "status": status,
        "scoring": scoring,
        # A scoring job trains nothing: no rounds, no per-round chart.
        "shows_rounds": not scoring,
        "round_text": round_text,
        "final_table": final_table(final),
        # The model the job released and what makes its figures weak (as the terminal
        # prints them, common.release_text).
        "released": None if released is None else _released(released),
        "metric": {"key": key, "label": label, "points": series},
        "rounds": rounds,
        "participants": _participants(events),
        "epsilon": epsilon,
        "privacy": {k: v for k, v in privacy.items() if k not in ("event", "time")}
        if privacy
        else None,
        "final": final,
        "error": (end or {}).get("error") if status == "failed" else None,
        "reason": str((end or {}).get("reason") or "").splitlines()[0:1]
        if status == "failed"
        else [],
        **_insights(ref.dir),
    }


def _released(ev: dict[str, Any]) -> dict[str, Any]:
    headline, warnings = released_text(ev)
    return {"headline": headline[:1].upper() + headline[1:], "warnings": warnings}


def known_status(value: str) -> bool:
    return value in _STATUSES
