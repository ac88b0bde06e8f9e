"""SQLite storage of the audit log's entries, tree nodes and checkpoints.

Tables::

    entries(idx, leaf, data)       one row per entry; leaf = RFC 9162 leaf hash
    nodes(level, idx, hash)        every *complete* subtree of 2**level leaves at
                                   an aligned index (level >= 1)
    checkpoints(size, note)        signed notes, one per tree size
    meta(key, value)               origin, log public key, cosigner keys

Appending ``k`` entries writes ``k`` leaves and the ``< k + log2(n)`` subtree
hashes they complete, in one transaction; the in-memory *frontier* (the hashes
of the perfect subtrees covering ``[0, n)``, one per set bit of ``n``) gives the
root without reading anything.  Any proof or historical root is assembled from
``O(log n)`` stored subtree hashes (:func:`compliance.merkle.range_hash`).

Notes
-----
* ``journal_mode=WAL`` with ``synchronous=FULL``: a transaction is durable
  once COMMIT returns (the WAL is fsynced at each commit), and a process
  killed at any point leaves the last committed state, whose entries and nodes
  were written together -- the tree can never disagree with the entries.
* Entries, nodes and checkpoints are never updated or deleted by this module
  except a checkpoint note gaining cosignature lines.
* One connection guarded by a lock: SQLite serialises writers anyway, and
  this keeps the in-memory frontier and the database in step.
* Across processes the frontier would go stale, so a writer holds
  :class:`LogLock`, an exclusive ``flock`` on ``<db>.lock``, for as long as the
  log is open.  The kernel drops it when the holder exits, even on SIGKILL, so
  a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from fedcollab.common.errors import AuditVerificationError, ComplianceError
from fedcollab.compliance import merkle

__all__ = ["LogLock", "LogStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    idx INTEGER PRIMARY KEY, leaf BLOB NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, note TEXT NOT NULL);
"""


class LogLock:
    """An exclusive, process-level lock on one log file (``flock`` on ``<db>.lock``).

    ``timeout_s`` bounds the wait for another holder (``None``: wait for ever,
    ``0``: one try).  Two opens in one process also exclude each other.

    >>> lock = LogLock.acquire("audit.db", timeout_s=30.0)
    >>> lock.release()
    """

    _POLL_S = (0.005, 0.1)  # first and longest sleep between tries

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, db_path: Path | str, *, timeout_s: float | None) -> LogLock:
        db = Path(db_path)
        path = db.with_name(db.name + ".lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ComplianceError(
                f"cannot create the lock file {path}: {exc.strerror}",
                hint="check that the folder of the audit log is writable",
            ) from exc
        try:
            cls._wait(fd, timeout_s)
        except BlockingIOError:
            os.close(fd)
            raise ComplianceError(
                f"audit log {db} is in use by another process",
                hint=f"{cls._holder(path)} holds {path}; close the log there, or wait for it "
                "and retry (lock_timeout_s sets how long to wait)",
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)  # for the error message of whoever waits next
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(path, fd)

    @classmethod
    def _wait(cls, fd: int, timeout_s: float | None) -> None:
        if timeout_s is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return
        deadline = time.monotonic() + timeout_s
        pause, longest = cls._POLL_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                time.sleep(min(pause, left))
                pause = min(pause * 2, longest)

    @staticmethod
    def _holder(path: Path) -> str:
        with contextlib.suppress(OSError, ValueError):
            return f"process {int(path.read_text().strip())}"
        return "another process"

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the flock


class LogStore:
    """Durable, append-only storage of one Merkle log."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ComplianceError(f"cannot open audit log {self.path}: {exc}") from exc
        self.lock = threading.RLock()
        self._size = 0
        self._frontier: list[tuple[int, bytes]] = []  # (level, hash), levels decreasing
        self._load_frontier()

    # --- state ------------------------------------------------------------------------

    def _load_frontier(self) -> None:
        row = self._db.execute("SELECT COUNT(*), COALESCE(MAX(idx) + 1, 0) FROM entries").fetchone()
        count, size = int(row[0]), int(row[1])
        if count != size:
            raise AuditVerificationError(
                f"audit log {self.path}: entries are not contiguous ({count} rows, last index "
                f"{size - 1})"
            )
        frontier: list[tuple[int, bytes]] = []
        start = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                frontier.append((level, self._perfect(level, start >> level)))
                start += 1 << level
        self._size, self._frontier = size, frontier

    @property
    def size(self) -> int:
        return self._size

    def root(self) -> bytes:
        with self.lock:
            return self._fold(self._frontier)

    @staticmethod
    def _fold(frontier: Sequence[tuple[int, bytes]]) -> bytes:
        if not frontier:
            return merkle.EMPTY_ROOT
        root = frontier[-1][1]
        for _, h in reversed(frontier[:-1]):
            root = merkle.node_hash(h, root)
        return root

    def snapshot(self) -> tuple[int, bytes]:
        """``(size, root)`` read atomically."""
        with self.lock:
            return self._size, self._fold(self._frontier)

    # --- writes -----------------------------------------------------------------------

    def append_batch(self, datas: Sequence[bytes]) -> int:
        """Append entries in one durable transaction; returns the first new index."""
        with self.lock:
            first = self._size
            frontier = list(self._frontier)
            entry_rows: list[tuple[int, bytes, bytes]] = []
            node_rows: list[tuple[int, int, bytes]] = []
            for offset, data in enumerate(datas):
                idx = first + offset
                h = merkle.leaf_hash(data)
                entry_rows.append((idx, h, data))
                level = 0
                while frontier and frontier[-1][0] == level:
                    h = merkle.node_hash(frontier.pop()[1], h)
                    level += 1
                    node_rows.append((level, idx >> level, h))
                frontier.append((level, h))
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany("INSERT INTO entries VALUES (?, ?, ?)", entry_rows)
                    self._db.executemany("INSERT INTO nodes VALUES (?, ?, ?)", node_rows)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise ComplianceError(f"audit log {self.path}: append failed: {exc}") from exc
            self._size, self._frontier = first + len(datas), frontier
            return first

    def put_checkpoint(self, size: int, note: str, *, replace: bool = False) -> None:
        with self.lock:
            verb = "INSERT OR REPLACE" if replace else "INSERT"
            try:
                self._db.execute(f"{verb} INTO checkpoints VALUES (?, ?)", (size, note))
            except sqlite3.Error as exc:
                raise ComplianceError(
                    f"audit log {self.path}: cannot store checkpoint: {exc}"
                ) from exc

    def get_meta(self, key: str) -> bytes | None:
        with self.lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_meta(self, key: str, value: bytes) -> None:
        with self.lock:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def meta_items(self, prefix: str) -> list[tuple[str, bytes]]:
        with self.lock:
            rows = self._db.execute(
                "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ? ORDER BY key",
                (len(prefix), prefix),
            ).fetchall()
        return [(str(k), bytes(v)) for k, v in rows]

    # --- reads ------------------------------------------------------------------------

    def _perfect(self, level: int, index: int) -> bytes:
        if level == 0:
            row = self._db.execute("SELECT leaf FROM entries WHERE idx = ?", (index,)).fetchone()
        else:
            row = self._db.execute(
                "SELECT hash FROM nodes WHERE level = ? AND idx = ?", (level, index)
            ).fetchone()
        if row is None:
            raise AuditVerificationError(
                f"audit log {self.path}: subtree hash (level {level}, index {index}) is missing"
            )
        return bytes(row[0])

    def subtree(self, start: int, end: int) -> bytes:
        """``MTH(D[start:end])`` from stored subtree hashes."""
        with self.lock:
            if end > self._size:
                raise ComplianceError(f"range [{start}, {end}) exceeds log size {self._size}")
            return merkle.range_hash(start, end, self._perfect)

    def root_at(self, size: int) -> bytes:
        if not 0 <= size <= self._size:
            raise ComplianceError(f"no tree of size {size} (log size {self._size})")
        return merkle.EMPTY_ROOT if size == 0 else self.subtree(0, size)

    def entries(self, start: int, stop: int, *, chunk: int = 10_000) -> Iterator[bytes]:
        """Canonical bytes of entries ``[start, stop)``, read in chunks."""
        for _, datas in self.entry_chunks(start, stop, chunk=chunk):
            yield from datas

    def entry_chunks(
        self, start: int, stop: int, *, chunk: int = 10_000
    ) -> Iterator[tuple[int, list[bytes]]]:
        """``(first index, canonical bytes of up to chunk entries)`` over ``[start, stop)``."""
        pos = start
        while pos < stop:
            end = min(stop, pos + chunk)
            with self.lock:
                rows = self._db.execute(
                    "SELECT data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx", (pos, end)
                ).fetchall()
            if len(rows) != end - pos:
                raise AuditVerificationError(
                    f"audit log {self.path}: entries {pos}..{end - 1} are missing"
                )
            yield pos, [bytes(data) for (data,) in rows]
            pos = end

    def leaves(
        self, start: int, stop: int, *, chunk: int = 50_000
    ) -> Iterator[tuple[bytes, bytes]]:
        """``(stored leaf hash, data)`` pairs, for full verification."""
        pos = start
        while pos < stop:
            end = min(stop, pos + chunk)
            with self.lock:
                rows = self._db.execute(
                    "SELECT leaf, data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                    (pos, end),
                ).fetchall()
            for leaf, data in rows:
                yield bytes(leaf), bytes(data)
            pos = end

    def checkpoints(self) -> list[tuple[int, str]]:
        with self.lock:
            rows = self._db.execute("SELECT size, note FROM checkpoints ORDER BY size").fetchall()
        return [(int(s), str(n)) for s, n in rows]

    def latest_checkpoint(self) -> tuple[int, str] | None:
        with self.lock:
            row = self._db.execute(
                "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1"
            ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def close(self) -> None:
        with self.lock:
            self._db.close()
