"""client/run_contract.py: the contract's SQLite connection, kept per thread.

The contract's rules (one spec per run, a request plan, each step answered once) are
attacked in ``tests/adversarial/test_redteam_contract.py`` and
``tests/adversarial/test_dp_releases.py``; here, that keeping the connection open
changes none of its state: a replaced or removed file is a new contract, another
process sees every claim at once, and a thread keeps a bounded number open.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fedcollab.client import run_contract
from fedcollab.client.run_contract import RunContract
from fedcollab.common.errors import ProtocolError


def test_a_claim_is_refused_again_through_another_contract_object(tmp_path: Path) -> None:
    path = tmp_path / "contract.db"
    RunContract(path).claim("run-a", "train.fedavg", "round-1")
    with pytest.raises(ProtocolError, match="already answered"):
        RunContract(path).claim("run-a", "train.fedavg", "round-1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_another_process_sees_a_claim_at_once(tmp_path: Path) -> None:
    path = tmp_path / "contract.db"
    RunContract(path).claim("run-a", "train.fedavg", "round-1")  # connection kept open
    code = (
        "import sys\n"
        "from fedcollab.client.run_contract import RunContract\n"
        "from fedcollab.common.errors import ProtocolError\n"
        "try:\n"
        f"    RunContract({str(path)!r}).claim('run-a', 'train.fedavg', 'round-1')\n"
        "except ProtocolError:\n"
        "    sys.exit(3)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 3


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_removed_or_replaced_file_is_a_new_contract(tmp_path: Path, how: str) -> None:
    path = tmp_path / "contract.db"
    RunContract(path).claim("run-a", "train.fedavg", "round-1")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    if how == "replaced":
        sqlite3.connect(path).close()  # an empty database in its place
        os.chmod(path, 0o644)
    RunContract(path).claim("run-a", "train.fedavg", "round-1")  # not refused: new file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # narrowed again when reopened
    with pytest.raises(ProtocolError, match="already answered"):
        RunContract(path).claim("run-a", "train.fedavg", "round-1")


def test_a_thread_keeps_a_bounded_number_of_contracts_open(tmp_path: Path) -> None:
    def open_many() -> None:
        for i in range(run_contract._KEEP_OPEN + 3):
            RunContract(tmp_path / f"c{i}.db").claim("run-a", "train.fedavg", "round-1")
        assert len(run_contract._OPEN.dbs) == run_contract._KEEP_OPEN

    worker = threading.Thread(target=open_many)
    worker.start()
    worker.join(60)
    assert not worker.is_alive()
    # Each thread has its own connections (sqlite3 connections are per thread).
    RunContract(tmp_path / "c0.db").expired()
    assert len(run_contract._OPEN.dbs) <= run_contract._KEEP_OPEN


def test_a_failed_transaction_is_rolled_back_and_the_connection_stays_usable(
    tmp_path: Path,
) -> None:
    contract = RunContract(tmp_path / "contract.db")
    with pytest.raises(RuntimeError), contract._db() as db:
        db.execute("INSERT INTO answered (run, action, step, at) VALUES ('run-a', 'x', 's', 0)")
        raise RuntimeError("the computation failed")
    contract.claim("run-a", "x", "s")  # the insert above was rolled back


def test_a_wal_deleted_under_a_running_executor_loses_no_claim(tmp_path: Path) -> None:
    """Red team: with the kept connection, claims went on into the deleted WAL, and a
    SIGKILL of the executor then lost them (a repeat answered after its restart)."""
    path = tmp_path / "contract.db"
    executor = (
        "import sys\n"
        "from fedcollab.client.run_contract import RunContract\n"
        f"c = RunContract({str(path)!r})\n"
        "c.claim('run-a', 'train.fedavg', 'round-1')\n"
        "print('claimed', flush=True)\n"
        "sys.stdin.readline()\n"  # the WAL is removed meanwhile
        "c.claim('run-a', 'train.fedavg', 'round-2')\n"
        "print('claimed', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", executor], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "claimed"
        Path(f"{path}-wal").unlink()
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "claimed"
    finally:
        proc.kill()
        proc.wait(60)
    for step in ("round-1", "round-2"):
        with pytest.raises(ProtocolError, match="already answered"):
            RunContract(path).claim("run-a", "train.fedavg", step)


def test_the_database_is_narrowed_to_0600_at_every_transaction(tmp_path: Path) -> None:
    path = tmp_path / "contract.db"
    contract = RunContract(path)
    contract.claim("run-a", "train.fedavg", "round-1")
    os.chmod(path, 0o644)
    contract.claim("run-a", "train.fedavg", "round-2")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_one_connection_serves_a_thread_s_transactions(tmp_path: Path) -> None:
    path = tmp_path / "contract.db"
    RunContract(path).claim("run-a", "train.fedavg", "round-1")
    first = run_contract._OPEN.dbs[str(path)][0]
    RunContract(path).claim("run-a", "train.fedavg", "round-2")
    RunContract(path).expired()
    assert run_contract._OPEN.dbs[str(path)][0] is first
