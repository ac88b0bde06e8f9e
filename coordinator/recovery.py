"""Close the jobs a coordinator restart cut short, before the coordinator serves again.

A job runs inside the ServerApp process the SuperLink starts, and keeps its
state in that process's memory: the roster, the key ceremony of an encrypted
job, the model between rounds, the partners' pending replies. When the
coordinator stops mid-job (crash, kill, reboot) that process ends with it, so
the job cannot resume where it was: the partners' nodes answer each planned
step of a run once (a fresh answer to a step already released would be a
second release, :mod:`fedcollab.client.budget`), so a new ServerApp could not
re-ask the steps already done. Flower's SuperLink keeps the run in its
database (``--database``) and marks it failed once the dead ServerApp's task
token expires; this module makes fedcollab's own records say the same, at once
and durably:

- the coordinator's audit log: every run with ``job.started`` and no
  ``job.completed`` / ``job.failed`` gets one ``job.failed`` event (signed,
  appended like any other, so the log still verifies);
- the job's output folder (from ``<ws>/jobs/index.jsonl``): a job without
  ``result.json`` gets a failed ``result.json`` and a ``job_end`` progress
  event, so ``fedcollab job submit`` following it, and the console, report
  the failure instead of waiting.

It runs in :func:`fedcollab.coordinator.fleet_gateway.main` before the
SuperLink starts, when no job of this workspace can be running. The partners
need no step: what they released before the restart was charged to their
ledgers once, keyed by (run, step), and stays charged; a resubmitted job is a
new run with its own charges.

Notes
-----
A job that ended between ``job.completed`` and ``result.json`` (while the
coordinator collected cosignatures) is recorded as failed in its output
folder only: its audit record is already complete and is left alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcollab.common.job_files import JobResult
from fedcollab.compliance.trail import Trail
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.coordinator.workspace import Workspace

__all__ = ["INTERRUPTED_ERROR", "INTERRUPTED_REASON", "Recovered", "recover_interrupted_jobs"]

#: The error a job cut short by a restart ends with (a FederationError: resubmit).
INTERRUPTED_ERROR = "FederationError"
INTERRUPTED_REASON = (
    "the coordinator stopped during the job and its state ended with it; "
    "resubmit the job (what partners released before is charged once and stays charged)"
)
_TERMINAL = {"job.completed", "job.failed"}


@dataclass(frozen=True)
class Recovered:
    """What a coordinator start closed: audit run ids and output folders."""

    audit_runs: tuple[str, ...]
    out_dirs: tuple[Path, ...]


def recover_interrupted_jobs(ws: Workspace) -> Recovered:
    """Record every job the last coordinator run left unfinished as failed."""
    runs: tuple[str, ...] = ()
    if ws.audit_db.exists():
        runs = _close_audit_runs(ws)
    return Recovered(audit_runs=runs, out_dirs=_close_outputs(ws))


def _close_audit_runs(ws: Workspace) -> tuple[str, ...]:
    with Trail.open(ws.audit_db, ws.audit_key, actor="coordinator") as trail:
        started: dict[str, dict[str, Any]] = {}
        for raw in trail.log.entries():
            event = json.loads(raw)
            run = event.get("body", {}).get("run")
            if not isinstance(run, str):
                continue
            if event.get("type") == "job.started":
                started[run] = event["body"]
            elif event.get("type") in _TERMINAL:
                started.pop(run, None)
        for run, body in started.items():
            trail.record(
                "job.failed",
                {
                    "job": body.get("job"),
                    "digest": body.get("digest"),
                    "run": run,
                    "error": INTERRUPTED_ERROR,
                    "reason": INTERRUPTED_REASON,
                },
            )
    return tuple(started)


def _close_outputs(ws: Workspace) -> tuple[Path, ...]:
    index = ws.root / "jobs" / "index.jsonl"
    if not index.exists():
        return ()
    closed: list[Path] = []
    seen: set[Path] = set()
    for line in index.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
            out_dir = Path(entry["out_dir"])
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line (append_job_index): nothing to close
        if out_dir in seen or not out_dir.is_dir() or (out_dir / "result.json").exists():
            continue
        seen.add(out_dir)
        outputs = JobOutputs(out_dir)
        outputs.write_result(JobResult.failed(INTERRUPTED_ERROR, INTERRUPTED_REASON))
        outputs.event(
            "job_end", status="failed", error=INTERRUPTED_ERROR, reason=INTERRUPTED_REASON
        )
        closed.append(out_dir)
    return tuple(closed)
