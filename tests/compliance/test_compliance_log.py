"""The SQLite-backed audit log: appends, proofs, checkpoints, reopen, tampering."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fedcollab.common.errors import AuditVerificationError, ComplianceError
from fedcollab.common.keys import Signer
from fedcollab.compliance import merkle
from fedcollab.compliance.checkpoint import cosign
from fedcollab.compliance.events import make_event
from fedcollab.compliance.log import AuditLog

ORIGIN = "fedcollab.test/audit"


@pytest.fixture
def signer() -> Signer:
    return Signer.generate()


def _events(actor: Signer, n: int, start: int = 0) -> list[dict[str, object]]:
    return [make_event(actor, "partner-1", "test.event", {"i": i}) for i in range(start, start + n)]


def test_append_proofs_and_reopen(tmp_path: Path, signer: Signer) -> None:
    actor = Signer.generate()
    db = tmp_path / "audit.db"
    with AuditLog.open(db, origin=ORIGIN, signer=signer) as log:
        assert log.size == 0 and log.root() == merkle.EMPTY_ROOT
        assert log.append(_events(actor, 1)[0]) == 0
        assert log.append_many(_events(actor, 99, 1)) == list(range(1, 100))
        assert log.append_many([]) == []
        cp1 = log.checkpoint()
        assert log.checkpoint() == cp1  # unchanged size: same checkpoint
        log.append_many(_events(actor, 37, 100))
        cp2 = log.checkpoint()
        datas = list(log.entries())
        leaves = [merkle.leaf_hash(d) for d in datas]
        assert log.root() == merkle.mth(leaves) == cp2.checkpoint.root
        for size in (1, 2, 63, 64, 65, 100, 137):
            assert log.root_at(size) == merkle.mth(leaves[:size])
        for idx in (0, 1, 50, 99, 136):
            proof = log.inclusion_proof(idx, 137)
            assert proof == merkle.inclusion_proof(idx, 137, merkle.list_subtree(leaves))
            merkle.verify_inclusion(idx, 137, leaves[idx], proof, log.root())
        for m in (1, 64, 99, 100, 137):
            merkle.verify_consistency(
                m, 137, log.root_at(m), log.root(), log.consistency_proof(m, 137)
            )
        merkle.verify_consistency(
            100, 137, cp1.checkpoint.root, cp2.checkpoint.root, log.consistency_proof(100, 137)
        )
        log.verify()
        with pytest.raises(ComplianceError):
            log.inclusion_proof(137, 137)
        with pytest.raises(ComplianceError):
            log.consistency_proof(0, 10)
        with pytest.raises(ComplianceError):
            log.append({"x": float("inf")})
    with AuditLog.open(db, origin=ORIGIN, signer=signer) as log:
        assert log.size == 137 and log.root() == cp2.checkpoint.root
        assert [c.checkpoint.size for c in log.checkpoints()] == [100, 137]
        assert log.append({"any": "json"}) == 137
        log.verify()
    with pytest.raises(ComplianceError, match="origin"):
        AuditLog.open(db, origin="other", signer=signer)
    with pytest.raises(ComplianceError, match="another key"):
        AuditLog.open(db, origin=ORIGIN, signer=Signer.generate())
    assert AuditLog.stored_origin(db) == ORIGIN


def test_concurrent_appends_are_group_committed(tmp_path: Path, signer: Signer) -> None:
    results: list[list[int]] = [[] for _ in range(8)]
    with AuditLog.open(tmp_path / "a.db", origin=ORIGIN, signer=signer, max_batch=64) as log:

        def work(k: int) -> None:
            for i in range(100):
                results[k].append(log.append({"worker": k, "i": i}))

        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(i for r in results for i in r) == list(range(800))
        assert all(r == sorted(r) for r in results)  # each caller's order is kept
        log.checkpoint()
        log.verify()
    with pytest.raises(ComplianceError, match="closed"):
        log.append({"late": True})


def test_cosignatures_are_checked_and_stored(tmp_path: Path, signer: Signer) -> None:
    partner = Signer.generate()
    with AuditLog.open(tmp_path / "a.db", origin=ORIGIN, signer=signer) as log:
        log.append({"a": 1})
        cp = log.checkpoint()
        with pytest.raises(AuditVerificationError, match="cosignature by 'partner-1'"):
            log.add_cosignature(
                cosign(cp, Signer.generate(), "partner-1"),
                name="partner-1",
                public_key=partner.public_key,
            )
        log.add_cosignature(
            cosign(cp, partner, "partner-1").encode(),
            name="partner-1",
            public_key=partner.public_key,
        )
        assert log.checkpoints()[-1].signer_names() == [ORIGIN, "partner-1"]
        assert log.cosigner_keys() == {"partner-1": partner.public_key}
        log.verify()


def _tamper(db: Path, sql: str, *args: object) -> None:
    con = sqlite3.connect(db)
    con.execute(sql, args)
    con.commit()
    con.close()


def test_tampered_database_is_refused(tmp_path: Path, signer: Signer) -> None:
    db = tmp_path / "a.db"
    with AuditLog.open(db, origin=ORIGIN, signer=signer) as log:
        log.append_many([{"i": i} for i in range(10)])
        log.checkpoint()
    _tamper(db, "UPDATE entries SET data = ? WHERE idx = 3", b'{"i":333}')
    with (
        AuditLog.open(db, origin=ORIGIN, signer=signer) as log,
        pytest.raises(AuditVerificationError, match="entry 3 does not match its leaf hash"),
    ):
        log.verify()
    _tamper(db, "UPDATE entries SET leaf = ? WHERE idx = 3", merkle.leaf_hash(b'{"i":333}'))
    with (
        AuditLog.open(db, origin=ORIGIN, signer=signer) as log,
        pytest.raises(AuditVerificationError, match="recomputed root"),
    ):
        log.verify()
    _tamper(db, "UPDATE nodes SET hash = ? WHERE level = 3 AND idx = 0", bytes(32))
    with pytest.raises(AuditVerificationError, match="root does not match the stored tree"):
        AuditLog.open(db, origin=ORIGIN, signer=signer)
    _tamper(db, "DELETE FROM entries WHERE idx = 4")
    with pytest.raises(AuditVerificationError, match="not contiguous"):
        AuditLog.open(db, origin=ORIGIN, signer=signer)


REPO = Path(__file__).resolve().parents[2]

HOLDER = f"""
import sys
from fedcollab.common.keys import Signer
from fedcollab.compliance.log import AuditLog

db, key = sys.argv[1], sys.argv[2]
with AuditLog.open(db, origin={ORIGIN!r}, signer=Signer.load(key)) as log:
    log.append_many([{{"holder": i}} for i in range(10)])
    print("ready", flush=True)
    sys.stdin.readline()  # hold the log open until told to go
    log.append({{"holder": "last"}})
"""


def test_a_second_process_cannot_open_the_log_while_it_is_open(tmp_path: Path) -> None:
    db, key = tmp_path / "audit.db", tmp_path / "log.pem"
    signer = Signer.generate(key)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db), str(key)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == b"ready"
        with pytest.raises(ComplianceError, match="in use by another process") as info:
            AuditLog.open(db, origin=ORIGIN, signer=signer, lock_timeout_s=0.2)
        assert f"process {holder.pid}" in info.value.hint
        holder.stdin.write(b"go\n")
        holder.stdin.flush()
        # Waits (default timeout) for the holder's last append and close.
        with AuditLog.open(db, origin=ORIGIN, signer=signer) as log:
            assert log.size == 11
            assert log.append({"after": True}) == 11
            log.checkpoint()
            log.verify()
        assert holder.wait(timeout=60) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_one_open_log_per_file_within_a_process(tmp_path: Path, signer: Signer) -> None:
    db = tmp_path / "a.db"
    with AuditLog.open(db, origin=ORIGIN, signer=signer) as log:
        log.append({"a": 1})
        with pytest.raises(ComplianceError, match="in use by another process"):
            AuditLog.open(db, origin=ORIGIN, signer=signer, lock_timeout_s=0)
    with pytest.raises(ComplianceError, match="origin"):  # the lock is released on refusal
        AuditLog.open(db, origin="other", signer=signer, lock_timeout_s=0)
    with AuditLog.open(db, origin=ORIGIN, signer=signer, lock_timeout_s=0) as log:
        assert log.size == 1
