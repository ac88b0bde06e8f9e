"""Submit a job to a running coordinator and follow it.

``flwr run`` needs a Flower App folder; fedcollab's ServerApp and ClientApp
are installed packages, so submission writes a minimal app folder (only a
``pyproject.toml`` naming the components) and passes the job as run config
through a TOML file, which avoids any shell quoting of the job's JSON.

Every accepted submission is appended to the workspace's job index,
``<ws>/jobs/index.jsonl`` (one JSON object per line: job, out_dir, run_id,
submitted, task, purpose, participants), which the web console lists.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

from fedcollab import common
from fedcollab.common.errors import FederationError
from fedcollab.common.job_fab import (
    CLIENTAPP_REF,
    JOB_FAB_MODULE,
    JOB_FAB_MODULE_TEXT,
    SERVERAPP_REF,
)
from fedcollab.common.job_files import read_progress
from fedcollab.common.jobspec import JobSpec
from fedcollab.coordinator.flwr_cli import run_info, start_run
from fedcollab.coordinator.policy_gate import check_submission
from fedcollab.coordinator.superlink import partner_audit_keys
from fedcollab.coordinator.workspace import Workspace

__all__ = ["append_job_index", "follow", "submit_job"]

_APP_PYPROJECT: dict[str, Any] = {
    "build-system": {"requires": ["setuptools>=68"], "build-backend": "setuptools.build_meta"},
    "project": {"name": "fedcollab-job", "version": common.__version__, "dependencies": []},
    "tool": {
        "flwr": {
            "app": {
                "publisher": "fedcollab",
                "components": {
                    "serverapp": SERVERAPP_REF,
                    "clientapp": CLIENTAPP_REF,
                },
                "config": {
                    "job": "",
                    "output-dir": "",
                    "mode": "deployment",
                    "audit-db": "",
                    "audit-key": "",
                    "partner-keys": "{}",
                    "policy": "",
                    "record-messages": "false",
                },
            }
        }
    },
}


def submit_job(
    ws: Workspace, spec: JobSpec, out_dir: Path, *, record_messages: bool = False
) -> int:
    """Start ``spec`` on the workspace's coordinator; returns Flower's run id.

    ``record_messages``: the coordinator writes every message it relays under
    ``out_dir/messages`` (for tests that check what the coordinator sees)."""
    # The coordinator's ServerApp parses the spec again and refuses an invalid one before
    # it has anything to write to out_dir: refused here instead, with the reason.
    spec.check_wire()
    spec.check_value_bounds()  # every partner would refuse the job's first DP release
    policy, _decision = check_submission(ws, spec)  # refuses (and logs) before anything runs
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("progress.jsonl", "result.json"):
        (out_dir / stale).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="fedcollab-app-") as tmp:
        app_dir = Path(tmp) / "app"
        app_dir.mkdir()
        (app_dir / "pyproject.toml").write_text(tomli_w.dumps(_APP_PYPROJECT))
        (app_dir / JOB_FAB_MODULE).write_text(JOB_FAB_MODULE_TEXT)
        overrides = Path(tmp) / "run-config.toml"
        overrides.write_text(
            tomli_w.dumps(
                {
                    "job": spec.to_json(),
                    "output-dir": str(out_dir),
                    "mode": "deployment",
                    "audit-db": str(ws.audit_db.resolve()),
                    "audit-key": str(ws.audit_key.resolve()),
                    "partner-keys": json.dumps(partner_audit_keys(ws)),
                    "policy": policy.to_json(),
                    **({"record-messages": "true"} if record_messages else {}),
                }
            )
        )
        run_id = start_run(ws, app_dir, overrides, job=spec.name)
    append_job_index(ws, spec, out_dir, run_id=run_id)
    return run_id


def append_job_index(ws: Workspace, spec: JobSpec, out_dir: Path, *, run_id: int) -> Path:
    """Append one line to ``<ws>/jobs/index.jsonl`` (one ``write`` in append mode, fsynced).

    A single ``write`` of one line to an ``O_APPEND`` file lands whole at the end
    even with concurrent submitters; readers skip a torn last line.
    """
    index = ws.root / "jobs" / "index.jsonl"
    index.parent.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    line = json.dumps(
        {
            "job": spec.name,
            "out_dir": str(out_dir.resolve()),
            "run_id": run_id,
            "submitted": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "submitted_ts": now.timestamp(),
            "task": spec.task,
            "purpose": spec.purpose,
            "participants": list(spec.participants),
        },
        sort_keys=True,
    )
    fd = os.open(index, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return index


def run_status(ws: Workspace, run_id: int) -> str:
    """Flower's status string for a run, e.g. ``running`` or ``finished:completed``."""
    try:
        info = run_info(ws, run_id)
    except FederationError:
        return "unknown"
    return info.status if info is not None else "unknown"


def follow(
    out_dir: Path,
    *,
    on_event: Callable[[dict[str, Any]], None],
    is_alive: Callable[[], bool] | None = None,
    timeout_s: float = 3600.0,
    poll_s: float = 0.5,
) -> dict[str, Any]:
    """Feed progress events to ``on_event`` until the job ends; returns the last event.

    ``is_alive`` is polled every few seconds: when it reports the run gone
    without a ``job_end`` event, following stops with a FederationError.
    """
    offset = 0
    deadline = time.monotonic() + timeout_s
    last_check = time.monotonic()
    while time.monotonic() < deadline:
        events, offset = read_progress(out_dir, start=offset)
        for ev in events:
            on_event(ev)
            if ev.get("event") == "job_end":
                return ev
        if is_alive is not None and time.monotonic() - last_check > 5.0:
            last_check = time.monotonic()
            if not is_alive():
                events, offset = read_progress(out_dir, start=offset)
                for ev in events:
                    on_event(ev)
                    if ev.get("event") == "job_end":
                        return ev
                raise FederationError(
                    "the job ended without reporting a result",
                    hint="see `flwr log` for the run, and the coordinator log",
                )
        time.sleep(poll_s)
    raise FederationError(f"the job did not finish within {timeout_s:g} s", hint="check progress")
