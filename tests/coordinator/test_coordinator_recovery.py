"""Jobs cut short by a coordinator restart are closed on disk, once, and the log verifies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fedcollab.common.errors import FederationError
from fedcollab.common.keys import Signer
from fedcollab.compliance.bundle import export_bundle, verify_bundle
from fedcollab.compliance.log import AuditLog
from fedcollab.compliance.trail import Trail, load_verifier_key
from fedcollab.compliance.trust import TrustPolicy
from fedcollab.coordinator.outputs import JobOutputs, read_progress
from fedcollab.coordinator.recovery import (
    INTERRUPTED_ERROR,
    hold_coordinator_lock,
    leftover_runtime,
    recover_interrupted_jobs,
    stop_leftover_runtime,
)
from fedcollab.coordinator.workspace import Workspace


def _index(ws: Workspace, *out_dirs: Path) -> None:
    index = ws.root / "jobs" / "index.jsonl"
    index.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"job": "j", "out_dir": str(d), "run_id": i}) for i, d in enumerate(out_dirs)
    ]
    index.write_text("\n".join(lines) + "\n" + '{"job": "torn')  # a torn last line is skipped


def _types(ws: Workspace) -> list[tuple[str, str]]:
    with AuditLog.open(ws.audit_db, origin="coordinator", signer=Signer.load(ws.audit_key)) as log:
        events = [json.loads(e) for e in log.entries()]
    return [(e["type"], e["body"].get("run")) for e in events]


def test_unfinished_runs_and_outputs_are_closed_once(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws", name="fed")
    with Trail.open(ws.audit_db, ws.audit_key, actor="coordinator") as trail:
        for run in ("done", "cut"):
            trail.record("job.started", {"job": "j", "digest": "d", "run": run})
        trail.record("round.aggregated", {"job": "j", "digest": "d", "run": "cut", "step": "r1"})
        trail.record("job.completed", {"job": "j", "digest": "d", "run": "done"})
    finished, running = JobOutputs(tmp_path / "finished"), JobOutputs(tmp_path / "running")
    finished.write_json("result.json", {"status": "completed"})
    running.event("job_start", job="j")
    running.event("round", round=1)
    _index(ws, finished.dir, running.dir, tmp_path / "deleted-by-user")

    got = recover_interrupted_jobs(ws)

    assert got.audit_runs == ("cut",)
    assert got.out_dirs == (running.dir,)
    assert _types(ws)[-1] == ("job.failed", "cut")
    result = json.loads((running.dir / "result.json").read_text())
    assert result["status"] == "failed" and result["error"] == INTERRUPTED_ERROR
    events, _ = read_progress(running.dir)
    assert events[-1]["event"] == "job_end" and events[-1]["status"] == "failed"
    assert json.loads((finished.dir / "result.json").read_text()) == {"status": "completed"}
    # A second start finds nothing left to close.
    again = recover_interrupted_jobs(ws)
    assert again.audit_runs == () and again.out_dirs == ()
    assert [t for t, _ in _types(ws)].count("job.failed") == 1
    # The log with the recorded failure still verifies under the pinned key.
    with AuditLog.open(ws.audit_db, origin="coordinator", signer=Signer.load(ws.audit_key)) as log:
        export_bundle(log, tmp_path / "bundle", public_keys={})
    policy = TrustPolicy.from_keys({"coordinator": load_verifier_key(ws.audit_pub)[1]})
    assert verify_bundle(tmp_path / "bundle", policy).size == 5


def test_a_fresh_workspace_has_nothing_to_close(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws", name="fed")
    got = recover_interrupted_jobs(ws)
    assert got.audit_runs == () and got.out_dirs == ()


def _runtime_like(tmp_path: Path, name: str, flwr_home: Path) -> subprocess.Popen[bytes]:
    """A real process started as Flower's console scripts are (``python SCRIPT``), with
    ``FLWR_HOME`` set, in its own session (as the SuperLink starts its SuperExec), that
    ignores SIGTERM and SIGINT: what outlived a killed coordinator."""
    script = tmp_path / "bin" / name
    script.parent.mkdir(exist_ok=True)
    script.write_text(
        "import signal, sys\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "print('up', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env={**os.environ, "FLWR_HOME": str(flwr_home.resolve())},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"  # handlers set
    return proc


def test_leftover_flower_runtime_of_this_workspace_is_stopped(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws", name="fed", host="127.0.0.1", port=9092)
    other_home = tmp_path / "other" / "flwr-home"
    other_home.mkdir(parents=True)
    left = _runtime_like(tmp_path, "flwr-serverapp", ws.flwr_home)
    other_ws = _runtime_like(tmp_path, "flower-superexec", other_home)  # another workspace's
    try:
        assert leftover_runtime(ws.flwr_home) == (left.pid,)
        assert stop_leftover_runtime(ws.flwr_home, timeout_s=60) == (left.pid,)
        assert left.wait(timeout=60) == -signal.SIGKILL
        assert other_ws.poll() is None  # another workspace's process is left alone
        assert leftover_runtime(ws.flwr_home) == ()
        assert stop_leftover_runtime(ws.flwr_home) == ()
    finally:
        for proc in (left, other_ws):
            proc.kill()
            proc.wait(timeout=30)


def test_a_second_coordinator_of_the_workspace_is_refused(tmp_path: Path) -> None:
    """The lock comes before stopping leftovers: a second start must not stop a live
    coordinator's runtime; once the first ends, the lock is free again."""
    ws = Workspace.create(tmp_path / "ws", name="fed", host="127.0.0.1", port=9092)
    first = hold_coordinator_lock(ws)
    try:
        with pytest.raises(FederationError, match="another coordinator"):
            hold_coordinator_lock(ws)
    finally:
        os.close(first)
    os.close(hold_coordinator_lock(ws))


def test_leftover_superlink_started_through_its_launcher_is_found(tmp_path: Path) -> None:
    # The SuperLink runs as ``python -m fedcollab.coordinator.superlink_launch``: a
    # stand-in module of that name (imported from the process's working directory,
    # first on ``python -m``'s path) that waits on stdin, as the real one serves.
    pkg = tmp_path / "standin" / "fedcollab" / "coordinator"
    pkg.mkdir(parents=True)
    (pkg.parent / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "superlink_launch.py").write_text(
        "import sys\nprint('up', flush=True)\nsys.stdin.read()\n"
    )
    ws = Workspace.create(tmp_path / "ws", name="fed", host="127.0.0.1", port=9092)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedcollab.coordinator.superlink_launch"],
        cwd=tmp_path / "standin",
        env={**os.environ, "FLWR_HOME": str(ws.flwr_home.resolve())},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
        assert leftover_runtime(ws.flwr_home) == (proc.pid,)
        assert stop_leftover_runtime(ws.flwr_home, timeout_s=60) == (proc.pid,)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait(timeout=30)
