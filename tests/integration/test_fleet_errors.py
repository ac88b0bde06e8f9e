"""A real federation whose SuperLink state database is locked for a while mid-job.

In a ``make demo`` run under load the SuperLink's SQLite store stayed locked past
Flower's 5 s busy timeout: the Fleet API answered HTTP 500 ("database is locked")
and every SuperNode exited. Here another SQLite connection holds an exclusive lock
on the SuperLink's database for :data:`LOCK_S` seconds once round 1 is in; the job
must complete with every node still running (coordinator/superlink_launch.py waits
30 s for a lock; client/fleet_poll.py retries 500s beyond that, tested against a
real HTTP server in tests/client/test_fleet_poll.py). On the old code (Flower's 5 s,
no node retry) this test failed: the coordinator's ServerApp got HTTP 500 on
``/v1/runtime/pull-messages`` and the job ended "failed".
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fedcollab.common.jobspec import load_job_spec
from fedcollab.coordinator.submit import follow, submit_job
from fedcollab.federation.local_federation import LocalFederation
from tests.integration.support import free_port, make_partners
from tests.integration.test_federation import node_port_base, write_job

pytestmark = pytest.mark.integration

#: Longer than Flower's own busy timeout (5 s), shorter than the launcher's (30 s).
LOCK_S = 12.0


def test_a_locked_superlink_database_does_not_end_the_job(tmp_path: Path, tool_path: None) -> None:
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
        db = fed.ws.state_dir / "superlink.db"
        held = threading.Event()
        released = threading.Event()
        holder: list[Any] = []

        def lock() -> None:
            conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
            conn.execute("BEGIN EXCLUSIVE")  # every writer of the SuperLink now waits
            holder.append(conn)
            held.set()
            time.sleep(LOCK_S)  # the lock's duration is the point of the test
            conn.execute("COMMIT")
            conn.close()
            released.set()

        def on_event(ev: dict[str, Any]) -> None:
            if ev.get("event") == "round" and ev.get("round") == 1 and not held.is_set():
                threading.Thread(target=lock, daemon=True).start()
                assert held.wait(30.0)

        end = follow(out, on_event=on_event, timeout_s=900)
        assert held.is_set(), "the job ended before round 1"
        assert released.wait(LOCK_S + 30.0)
        assert end["status"] == "completed", end
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["rounds_run"] == 3 and metrics["dropouts"] == []
        for name, proc in fed.nodes.items():
            assert proc.poll() is None, f"node {name} exited ({proc.returncode})"
