"""coordinator/superlink_launch.py: the SuperLink's SQLite state waits 120 s for a lock."""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import types
from pathlib import Path

import pytest
from flwr.supercore import sql_mixin

from fedcollab.coordinator.superlink import superlink_command
from fedcollab.coordinator.superlink_launch import BUSY_TIMEOUT_MS, install


def test_flower_s_connections_get_the_longer_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flower's own pragma hook, on a real SQLite file: 5 s before, 120 s after."""
    db = tmp_path / "state.db"
    conn = sqlite3.connect(db)
    sql_mixin._set_sqlite_pragmas(conn, None)
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000  # Flower 1.41
    monkeypatch.setattr(sql_mixin, "SQLITE_PRAGMAS", sql_mixin.SQLITE_PRAGMAS)
    assert install(sql_mixin)
    conn2 = sqlite3.connect(db)
    sql_mixin._set_sqlite_pragmas(conn2, None)
    assert conn2.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS == 120_000
    assert conn2.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # the rest unchanged


def test_a_write_waits_out_a_lock_held_longer_than_flower_s_5_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another connection holds an exclusive lock for 6 s: with Flower's pragmas the write
    fails with "database is locked"; with the launcher's it goes through once released."""
    db = tmp_path / "state.db"
    setup = sqlite3.connect(db)
    setup.execute("CREATE TABLE t (x INTEGER)")
    setup.commit()
    setup.close()

    def locked_write() -> None:
        conn = sqlite3.connect(db, timeout=0, isolation_level=None)
        sql_mixin._set_sqlite_pragmas(conn, None)
        holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN EXCLUSIVE")
        released = threading.Timer(6.0, holder.execute, args=("COMMIT",))
        released.start()
        try:
            conn.execute("INSERT INTO t VALUES (1)")
        finally:
            released.join()
            holder.close()
            conn.close()

    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        locked_write()  # Flower's 5 s
    monkeypatch.setattr(sql_mixin, "SQLITE_PRAGMAS", sql_mixin.SQLITE_PRAGMAS)
    assert install(sql_mixin)
    locked_write()
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM t").fetchone()[0] == 1


def test_a_changed_flower_module_is_left_alone() -> None:
    assert not install(types.ModuleType("changed"))


def test_the_coordinator_starts_the_superlink_through_the_launcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedcollab.coordinator.workspace import Workspace

    # Flower's tools beside this interpreter (as `make test` puts them on PATH).
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")

    ws = Workspace.create(tmp_path / "ws", name="launch")
    cmd = superlink_command(ws, internal_port=1)
    assert cmd[1:3] == ["-m", "fedcollab.coordinator.superlink_launch"]
    assert "--database" in cmd  # the state stays on disk (registrations survive restarts)
