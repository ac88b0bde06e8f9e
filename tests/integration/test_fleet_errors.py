"""A real federation whose SuperLink stalls for a while mid-job.

The SuperLink keeps its state in memory (coordinator/superlink_launch.py), so the
SQLite lock this test used to hold ("database is locked", HTTP 500, every SuperNode
exiting on the old code) no longer exists. What remains on a loaded machine is a
SuperLink that does not answer for a while: here its process is stopped (SIGSTOP)
for :data:`STALL_S` seconds once round 1 is in, so the nodes' Fleet calls and the
ServerApp's Runtime calls hang or time out through the Fleet gateway. The job must
complete with every node still running (the nodes retry transport errors and 5xx
answers, client/fleet_poll.py; its 500 retry is tested against a real HTTP server in
tests/client/test_fleet_poll.py).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fedcollab.common.jobspec import load_job_spec
from fedcollab.coordinator.recovery import leftover_runtime
from fedcollab.coordinator.submit import follow, submit_job
from fedcollab.federation.local_federation import LocalFederation
from tests.support.integration import free_port, make_partners, node_port_base, write_job

pytestmark = pytest.mark.integration

#: How long the SuperLink process stays stopped (longer than a node's idle poll, 3 s).
STALL_S = 12.0


def _superlink_pid(flwr_home: Path) -> int:
    """The loopback SuperLink (its launcher's process) of this workspace."""
    for pid in leftover_runtime(flwr_home):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"fedcollab.coordinator.superlink_launch" in argv:
            return pid
    raise AssertionError("no SuperLink process found")


def test_a_stalled_superlink_does_not_end_the_job(tmp_path: Path, tool_path: None) -> None:
    partners = make_partners(tmp_path, 2)
    with LocalFederation(
        tmp_path / "federation", partners, port=free_port(), node_port_base=node_port_base()
    ) as fed:
        fed.wait_online()
        job = write_job(
            tmp_path / "job.toml", partners[0].schema, min_partners=2, rounds=3,
            round_timeout_s=180.0,
        )  # fmt: skip
        out = tmp_path / "out"
        submit_job(fed.ws, load_job_spec(job), out)
        pid = _superlink_pid(fed.ws.flwr_home)
        stalled = threading.Event()
        resumed = threading.Event()

        def stall() -> None:
            os.kill(pid, signal.SIGSTOP)  # every Fleet and Runtime call now waits
            stalled.set()
            try:
                time.sleep(STALL_S)  # the stall's duration is the point of the test
            finally:
                os.kill(pid, signal.SIGCONT)
                resumed.set()

        def on_event(ev: dict[str, Any]) -> None:
            if ev.get("event") == "round" and ev.get("round") == 1 and not stalled.is_set():
                threading.Thread(target=stall, daemon=True).start()
                assert stalled.wait(30.0)

        try:
            end = follow(out, on_event=on_event, timeout_s=900)
        finally:
            if stalled.is_set():
                assert resumed.wait(STALL_S + 30.0)
        assert stalled.is_set(), "the job ended before round 1"
        assert end["status"] == "completed", end
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["rounds_run"] == 3 and metrics["dropouts"] == []
        for name, proc in fed.nodes.items():
            assert proc.poll() is None, f"node {name} exited ({proc.returncode})"
