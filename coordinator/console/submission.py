"""Submitting a job from the console: the CLI's spec loader and policy gate, in a thread.

The operator pastes a TOML job spec.  It is written to the job's new output
folder ``<ws>/jobs/<name>-<UTC timestamp>-<form key>/job.toml``; a relative ``schema``
path is resolved against the workspace folder (there is no job file folder
to be relative to).  :func:`coordinator.submit.submit_job` then runs in a
background thread -- the same call ``fedcollab job submit`` makes, so the
policy gate decides and logs the submission in the coordinator's log.  A
refusal that comes back within a few seconds (the policy gate runs before
anything is sent) is shown on the form; a later failure is written to the
job's ``result.json`` and shown on its page.

Each rendering of the form carries a random form id.  The folder name ends with
a digest of it, so the same form sent twice (a double click, a reload that
re-posts) finds the first submission's folder and starts nothing new.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedcollab.common.atomic import write_atomic, write_json_atomic
from fedcollab.common.errors import FedcollabError, JobSpecError
from fedcollab.common.job_files import JobResult, write_result
from fedcollab.common.jobspec import JobSpec, load_job_spec
from fedcollab.coordinator.submit import submit_job
from fedcollab.coordinator.workspace import Workspace

__all__ = ["SUBMISSION_FILE", "Submission", "new_form_id", "start_submission"]

SUBMISSION_FILE = "submission.json"
_MAX_SPEC_BYTES = 256 * 1024
_REFUSAL_WAIT_S = 5.0
_SUBMIT_LOCK = threading.Lock()


def _write_json(path: Path, obj: Any) -> None:
    write_json_atomic(path, obj)


def _load(ws: Workspace, text: str) -> JobSpec:
    if len(text.encode()) > _MAX_SPEC_BYTES:
        raise JobSpecError("the job spec is larger than 256 KiB", hint="trim it")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise JobSpecError(f"the job spec is not valid TOML: {exc}", hint="fix the syntax") from exc
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise JobSpecError("the job spec has no name", hint='add name = "my-job"')
    # The loader resolves `schema` relative to the spec file: keep the file at the
    # workspace root so paths are relative to the workspace.
    probe = ws.root / f".console-spec-{os.getpid()}-{threading.get_ident()}.toml"
    probe.write_text(text, encoding="utf-8")
    try:
        return load_job_spec(probe)
    finally:
        probe.unlink(missing_ok=True)


def new_form_id() -> str:
    return secrets.token_urlsafe(16)


@dataclass(frozen=True)
class Submission:
    spec: JobSpec
    out: Path
    early: FedcollabError | None  # a refusal that came back while the request waited
    duplicate: bool  # this form was already submitted: ``out`` is that submission's


def start_submission(ws: Workspace, text: str, *, user: str, form_id: str = "") -> Submission:
    """Validate ``text`` and submit it in a thread, once per ``form_id``.

    Raises JobSpecError for a spec that does not load (nothing is created then).
    """
    spec = _load(ws, text)
    key = hashlib.sha256((form_id or new_form_id()).encode()).hexdigest()[:16]
    jobs = ws.root / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    with _SUBMIT_LOCK:
        earlier = sorted(jobs.glob(f"{spec.name}-*-{key}"))
        if earlier:
            return Submission(spec, earlier[0], None, duplicate=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out = jobs / f"{spec.name}-{stamp}-{key}"
        out.mkdir(exist_ok=False)
    write_atomic(out / "job.toml", text)
    _write_json(
        out / SUBMISSION_FILE,
        {
            "job": spec.name,
            "task": spec.task,
            "purpose": spec.purpose,
            "participants": list(spec.participants),
            "submitted": stamp,
            "by": user,
        },
    )
    errors: list[FedcollabError] = []
    done = threading.Event()

    def run() -> None:
        try:
            submit_job(ws, spec, out)
        except FedcollabError as exc:
            errors.append(exc)
            write_result(out, JobResult.failed(type(exc).__name__, exc.diagnostics()))
        except Exception as exc:  # a bug must still end the job's page as failed
            write_result(out, JobResult.failed(type(exc).__name__, str(exc)))
        finally:
            done.set()

    threading.Thread(target=run, name=f"submit-{spec.name}", daemon=True).start()
    deadline = time.monotonic() + _REFUSAL_WAIT_S
    while not done.wait(0.1) and time.monotonic() < deadline:
        pass
    return Submission(spec, out, errors[0] if errors else None, duplicate=False)
