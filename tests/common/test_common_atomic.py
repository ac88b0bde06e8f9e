"""common.atomic: the one atomic, durable writer (issue 17)."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fedcollab.common import atomic
from fedcollab.common.atomic import private_database, write_atomic, write_json_atomic


def _others_bits(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode) & (stat.S_IRWXG | stat.S_IRWXO)


def test_replaces_content_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    write_json_atomic(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_refuses_nan(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "x.json", {"v": float("nan")})
    assert list(tmp_path.iterdir()) == []


def test_secret_is_never_readable_by_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even with umask 0 the secret's bytes never sit in a file group/others may read.

    The check runs at the moment the data is complete but not yet renamed (the
    fsync of the temporary file), on every file in the folder; chmod is never used.
    """
    seen: list[tuple[str, int]] = []
    real_fsync = os.fsync

    def watching_fsync(fd: int) -> None:
        for entry in tmp_path.iterdir():
            seen.append((entry.name, _others_bits(entry)))
        real_fsync(fd)

    def no_chmod(*_: object, **__: object) -> None:
        raise AssertionError("the writer must create the file 0600, not chmod it later")

    monkeypatch.setattr(atomic.os, "fsync", watching_fsync)
    monkeypatch.setattr(atomic.os, "chmod", no_chmod)
    monkeypatch.setattr(atomic.os, "fchmod", no_chmod)
    old = os.umask(0)
    try:
        target = tmp_path / "node.key"
        write_atomic(target, b"secret-1", private=True)
        write_atomic(target, b"secret-2", private=True)  # replacing keeps 0600 too
    finally:
        os.umask(old)
    assert any(name.endswith(".tmp") for name, _ in seen)  # the watch saw the temp file
    assert all(bits == 0 for _, bits in seen), seen
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_bytes() == b"secret-2"


def test_public_file_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        target = write_atomic(tmp_path / "ca.crt", "cert")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_exclusive_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "log.pem"
    write_atomic(target, b"first", private=True, exclusive=True)
    with pytest.raises(FileExistsError):
        write_atomic(target, b"second", private=True, exclusive=True)
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.pem"]


def test_failed_write_keeps_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure before the rename (here: the disk refuses the fsync) keeps the old file."""
    target = tmp_path / "cosign.json"
    target.write_text('{"size": 1}')

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        write_json_atomic(target, {"size": 2})
    assert target.read_text() == '{"size": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cosign.json"]


def test_killed_writer_leaves_old_content(tmp_path: Path) -> None:
    """SIGKILL of a real writer process mid-write: the target still holds the old bytes."""
    target = tmp_path / "state.bin"
    target.write_bytes(b"old content")
    child = textwrap.dedent(
        f"""
        import os, sys
        from fedcollab.common import atomic
        def stall(fd):
            sys.stdout.write("written\\n"); sys.stdout.flush()
            sys.stdin.readline()  # the parent kills us here
        atomic.os.fsync = stall
        atomic.write_atomic({str(target)!r}, b"new content " * 100000)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        assert proc.stdout.readline() == "written\n"  # waits on the event, no sleep
        proc.kill()
        proc.wait(timeout=30)
    finally:
        proc.stdin.close()
        proc.stdout.close()
    assert target.read_bytes() == b"old content"
    leftovers = [p for p in tmp_path.iterdir() if p.name != "state.bin"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".state.bin.")
    assert leftovers[0].stat().st_size == len(b"new content ") * 100000


def test_a_party_s_databases_are_its_own(tmp_path: Path) -> None:
    """New-user review (2026-12-06): a partner's audit.db, budget.db and contract.db were
    0644 under the usual umask, readable by every account on the host."""
    from fedcollab.client.run_contract import RunContract
    from fedcollab.compliance.trail import Trail, create_party_key
    from fedcollab.privacy.budget_ledger import BudgetLedger

    old = os.umask(0o022)
    try:
        key, _ = create_party_key(tmp_path / "keys", "acme")
        with Trail.open(tmp_path / "keys" / "audit.db", key, actor="acme") as trail:
            trail.record("request.received", {"step": "a"})
        ledger = BudgetLedger.open(tmp_path / "keys" / "budget.db")
        ledger.close()
        contract = RunContract(tmp_path / "keys" / "contract.db")
        assert contract.expired() is not None
        # A database made before the rule is narrowed, with its WAL files, when opened.
        legacy = tmp_path / "legacy.db"
        sqlite3.connect(legacy).execute("CREATE TABLE t (x)").connection.close()
        legacy.chmod(0o644)
        assert stat.S_IMODE(private_database(legacy).stat().st_mode) == 0o600
    finally:
        os.umask(old)
    for name in ("audit.db", "budget.db", "contract.db"):
        for path in (tmp_path / "keys").glob(name + "*"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
