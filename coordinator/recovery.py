"""Close the jobs a coordinator restart cut short, before the coordinator serves again.

A job runs inside the ServerApp process the SuperLink starts, and keeps its
state in that process's memory: the roster, the key ceremony of an encrypted
job, the model between rounds, the partners' pending replies. When the
coordinator stops mid-job (crash, kill, reboot) that process ends with it, so
the job cannot resume where it was: the partners' nodes answer each planned
step of a run once (a fresh answer to a step already released would be a
second release, :mod:`fedcollab.client.budget`), so a new ServerApp could not
re-ask the steps already done. Flower's SuperLink keeps its runs in memory
(:mod:`fedcollab.coordinator.superlink_launch`: only the node registrations are
journaled), so the restarted SuperLink no longer knows the run at all, and answers
a node's late call about it as a finished run; this module makes fedcollab's own
records say the job failed, at once and durably:

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

Before any of that, :func:`stop_leftover_runtime` ends what the previous run of the
coordinator left running. Flower's SuperLink starts its SuperExec detached (its own
session, ``flwr.supercore.utils.get_popen_detach_kwargs``) and the SuperExec starts
each job's ``flwr-serverapp``; both only poll their parent every 0.2 s and then raise
SIGINT in themselves (``flwr.supercore.app_utils.start_parent_process_monitor``), a
KeyboardInterrupt the job's code can swallow or a blocked main thread never sees. A
SIGKILL to the coordinator's process group does not reach them, and on a loaded
machine a ServerApp of a killed coordinator kept running (one for 73 minutes),
still writing to the coordinator's audit log. They all carry the workspace's
``FLWR_HOME`` in their environment (:func:`fedcollab.coordinator.superlink.flwr_env`):
the new coordinator, once it holds the workspace's lock (:func:`hold_coordinator_lock`:
no other coordinator of the workspace is alive), SIGKILLs every Flower runtime process
of its own workspace and
waits for each to exit (a pidfd turns readable at exit, pidfd_open(2)) before it
records anything; one that does not exit stops the start (fail closed).

Notes
-----
A job that ended between ``job.completed`` and ``result.json`` (while the
coordinator collected cosignatures) is recorded as failed in its output
folder only: its audit record is already complete and is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcollab.common.errors import FederationError
from fedcollab.common.job_files import JobResult
from fedcollab.compliance.trail import Trail
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.coordinator.workspace import Workspace

__all__ = [
    "INTERRUPTED_ERROR",
    "INTERRUPTED_REASON",
    "RUNTIME_COMMANDS",
    "Recovered",
    "hold_coordinator_lock",
    "leftover_runtime",
    "recover_interrupted_jobs",
    "stop_leftover_runtime",
]

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


def hold_coordinator_lock(ws: Workspace) -> int:
    """Take this workspace's coordinator lock for the life of the calling process.

    An exclusive ``flock(2)`` on ``coordinator/coordinator.lock``; the kernel drops it
    when the process ends, SIGKILL included. Returns the open descriptor (keep it).
    Raises :class:`FederationError` when another coordinator of this workspace holds
    it: :func:`stop_leftover_runtime` would otherwise stop that live coordinator's jobs.
    """
    path = ws.root / "coordinator" / "coordinator.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FederationError(
            f"another coordinator of workspace {ws.root} is running",
            hint="stop it first (one coordinator per workspace)",
        ) from None
    return fd


#: Flower's long-running processes of a coordinator (console scripts: ``python SCRIPT``).
RUNTIME_COMMANDS = frozenset({"flwr-serverapp", "flower-superexec", "flower-superlink"})
#: The same, started as ``python -m MODULE`` (the SuperLink's launcher).
RUNTIME_MODULES = frozenset({"fedcollab.coordinator.superlink_launch"})


def leftover_runtime(flwr_home: Path) -> tuple[int, ...]:
    """Pids of Flower runtime processes (:data:`RUNTIME_COMMANDS`) whose environment
    names ``flwr_home`` as ``FLWR_HOME``: this workspace's, from any run of it."""
    marker = b"FLWR_HOME=" + str(flwr_home.resolve()).encode()
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            argv = [os.fsdecode(a) for a in (entry / "cmdline").read_bytes().split(b"\0")[:3]]
            if not any(Path(a).name in RUNTIME_COMMANDS for a in argv[:2] if a) and not (
                argv[1:2] == ["-m"] and argv[2:3] and argv[2] in RUNTIME_MODULES
            ):
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or another user's
            continue
        if marker in env:
            found.append(int(entry.name))
    return tuple(sorted(found))


def stop_leftover_runtime(flwr_home: Path, *, timeout_s: float = 60.0) -> tuple[int, ...]:
    """SIGKILL :func:`leftover_runtime` and wait until each has exited; return their pids.

    Raises :class:`FederationError` when one is still alive after ``timeout_s``.
    """
    pids = leftover_runtime(flwr_home)
    deadline = time.monotonic() + timeout_s
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0.0))
        finally:
            os.close(fd)
        if not ready:
            raise FederationError(
                f"a Flower process of the previous coordinator run (pid {pid}) is still "
                f"running {timeout_s:g} s after SIGKILL",
                hint=f"stop process {pid} yourself, then start the coordinator again",
            )
    return pids


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
                    # Cross-checks read this: a partner's send at a step this log never
                    # recorded is the crash, not a tampered log (compliance.crossref).
                    "interrupted": True,
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
