"""The SuperLink launcher: Flower's SQLite store waits out a busy writer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fedcollab.coordinator.superlink_main import BUSY_TIMEOUT_MS, patched_pragmas

_PROBE = """
import sys
from sqlalchemy import text
if sys.argv[2] == "patched":
    from fedcollab.coordinator.superlink_main import install
    assert install()
from flwr.supercore.object_store.sql_object_store import SqlObjectStore
store = SqlObjectStore(sys.argv[1])
store.initialize()
with store._engine.connect() as conn:
    print(conn.execute(text("PRAGMA busy_timeout")).scalar())
"""


def _busy_timeout(db: Path, mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(db), mode],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return int(out.stdout.strip().splitlines()[-1])


def test_flower_store_connections_get_the_longer_busy_timeout(tmp_path: Path) -> None:
    # Flower's own store (a real SQLite file, Flower's engine and pragmas), in a fresh
    # interpreter as the SuperLink process runs it.
    assert _busy_timeout(tmp_path / "flower.db", "flower") == 5000
    assert _busy_timeout(tmp_path / "ours.db", "patched") == BUSY_TIMEOUT_MS


def test_patched_pragmas_replace_only_the_busy_timeout() -> None:
    flower = (("busy_timeout", "5000"), ("journal_mode", "WAL"), ("synchronous", "NORMAL"))
    assert patched_pragmas(flower, 60_000) == (
        ("busy_timeout", "60000"),
        ("journal_mode", "WAL"),
        ("synchronous", "NORMAL"),
    )
    assert patched_pragmas((("journal_mode", "WAL"),), 1)[0] == ("busy_timeout", "1")
