"""The append-only, verifiable audit log (RFC 9162 tree, C2SP checkpoints).

Long module: the append-only log and its checkpoints (RFC 9162 / C2SP signed notes)
share one file format.

>>> log = AuditLog.open("audit.db", origin="fedcollab.example/audit", signer=Signer.load("log.pem"))
>>> idx = log.append(make_event(partner, "partner-1", "consent.granted", {"purpose": "p1"}))
>>> note = log.checkpoint().encode()          # signed, stored, ready to publish

Appends go through one writer thread that commits whatever is queued in a single
transaction (*group commit*): concurrent callers each block until the
transaction holding their entry has committed, then get its index.  An index is
therefore only ever returned for an entry that is durable.

Notes
-----
* ``max_batch`` (default 8192 entries) bounds one transaction so a burst
  cannot hold the write lock, or memory, unboundedly; a few thousand entries
  already amortise the fsync to well under a microsecond each.
* ``open`` takes an exclusive process-level lock (:class:`~compliance.store.LogLock`,
  ``<db>.lock``) held until :meth:`AuditLog.close`: the tree's frontier lives
  in memory, so a second process appending to the same file would commit
  subtree hashes computed from a stale frontier.  By default it waits up to
  30 s for another holder, then refuses.
* On open the latest checkpoint is re-verified against the stored tree
  (signature by the log key, root at its size), so a log swapped or edited on
  disk is refused before anything is appended to it.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcollab.common.atomic import private_database
from fedcollab.common.errors import AuditVerificationError, ComplianceError, EventOrderError
from fedcollab.common.keys import Signer, check_key_name
from fedcollab.compliance import merkle
from fedcollab.compliance.bundle_entries import time_key
from fedcollab.compliance.checkpoint import (
    Checkpoint,
    SignedCheckpoint,
    parse_signed_checkpoint,
    sign_checkpoint,
    verify_checkpoint,
)
from fedcollab.compliance.events import canonical_json
from fedcollab.compliance.store import LogLock, LogStore

__all__ = ["AuditLog"]

_COSIGNER_PREFIX = "cosigner:"


@dataclass
class _Request:
    datas: list[bytes]
    times: list[str]
    done: threading.Event = field(default_factory=threading.Event)
    first: int = -1
    error: BaseException | None = None


def _time_of(event: Mapping[str, Any]) -> str:
    t = event.get("time")
    return t if isinstance(t, str) and len(t) >= 20 else ""


def _time_of_bytes(data: bytes) -> str:
    try:
        value = json.loads(data)
    except ValueError:
        return ""
    return _time_of(value) if isinstance(value, dict) else ""


class AuditLog:
    """An audit log stored in one SQLite file, signed by one log key."""

    def __init__(
        self,
        store: LogStore,
        *,
        origin: str,
        signer: Signer,
        max_batch: int = 8192,
        lock: LogLock | None = None,
    ) -> None:
        self._store = store
        self._lock = lock
        self.origin = origin
        self._signer = signer
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._closed = False
        self._last_time_raw = self._stored_last_time()
        self._last_time = time_key(self._last_time_raw) if self._last_time_raw else ""
        self._cp_lock = threading.Lock()
        self._writer = threading.Thread(target=self._run_writer, name="audit-writer", daemon=True)
        self._writer.start()

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        origin: str,
        signer: Signer,
        max_batch: int = 8192,
        lock_timeout_s: float | None = 30.0,
    ) -> AuditLog:
        """Open (or create) the log at ``path``; its origin and key are fixed at creation.

        Only one process (and one ``AuditLog``) may have a log open at a time:
        ``open`` waits up to ``lock_timeout_s`` seconds (``None``: for ever)
        for another holder to close it, then raises ComplianceError.
        """
        check_key_name(origin)
        lock = LogLock.acquire(path, timeout_s=lock_timeout_s)
        try:
            private_database(path)  # a party's log is its own until it exports it
            store = LogStore(path)
        except BaseException:
            lock.release()
            raise
        try:
            stored_origin = store.get_meta("origin")
            stored_key = store.get_meta("log_public_key")
            if stored_origin is None:
                if store.size:
                    raise AuditVerificationError(f"audit log {path}: entries without an origin")
                store.set_meta("origin", origin.encode())
                store.set_meta("log_public_key", signer.public_key)
            elif stored_origin.decode() != origin:
                raise ComplianceError(
                    f"audit log {path} has origin {stored_origin.decode()!r}, not {origin!r}"
                )
            elif stored_key != signer.public_key:
                raise ComplianceError(
                    f"audit log {path} is signed by another key",
                    hint="open it with the log's own signing key",
                )
            log = cls(store, origin=origin, signer=signer, max_batch=max_batch, lock=lock)
        except BaseException:
            store.close()
            lock.release()
            raise
        try:
            log._check_latest_checkpoint()
        except BaseException:
            log.close()
            raise
        return log

    @staticmethod
    def stored_origin(path: Path | str) -> str:
        """The origin recorded in an existing log file."""
        if not Path(path).is_file():
            raise ComplianceError(f"audit log {path} does not exist")
        store = LogStore(path)
        try:
            origin = store.get_meta("origin")
        finally:
            store.close()
        if origin is None:
            raise ComplianceError(f"audit log {path} has no origin (never opened as a log)")
        return origin.decode()

    # --- appends ----------------------------------------------------------------------

    def _stored_last_time(self) -> str:
        size = self._store.size
        if not size:
            return ""
        data = next(iter(self._store.entries(size - 1, size)))
        return _time_of_bytes(data)

    @property
    def last_time(self) -> str:
        """The time of the newest event (RFC 3339, as stored), or "" for none."""
        return self._last_time_raw

    def _in_order(self, batch: list[_Request]) -> list[_Request]:
        """Requests whose event times do not run backwards; the others fail."""
        ok: list[_Request] = []
        last = self._last_time
        for r in batch:
            keys = [time_key(t) if t else "" for t in r.times]
            current = last
            bad = None
            for t, k in zip(r.times, keys, strict=True):
                if k and k < current:
                    bad = t
                    break
                current = k or current
            if bad is not None:
                r.error = EventOrderError(
                    f"audit log {self._store.path}: event time {bad} is earlier than the "
                    "newest event's: event times must not run backwards",
                    hint="stamp events when they are appended (Trail.record does); "
                    "check the clock of this host",
                )
                r.done.set()
                continue
            last = current
            ok.append(r)
        return ok

    def _run_writer(self) -> None:
        while True:
            req = self._queue.get()
            if req is None:
                return
            batch = [req]
            count = len(req.datas)
            stop = False
            while count < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                count += len(nxt.datas)
            batch = self._in_order(batch)
            try:
                first = self._store.append_batch([d for r in batch for d in r.datas])
            except BaseException as exc:
                for r in batch:
                    r.error = exc
                    r.done.set()
            else:
                for r in batch:
                    for t in r.times:
                        if t:
                            self._last_time, self._last_time_raw = time_key(t), t
                    r.first = first
                    first += len(r.datas)
                    r.done.set()
            if stop:
                return

    def _submit(self, datas: list[bytes], times: list[str]) -> int:
        if self._closed:
            raise ComplianceError("audit log is closed")
        if not datas:
            return self.size
        req = _Request(datas, times)
        self._queue.put(req)
        req.done.wait()
        if req.error is not None:
            raise req.error
        return req.first

    def append(self, event: Mapping[str, Any]) -> int:
        """Append one event; returns its index once it is durable.

        Raises :class:`~common.errors.EventOrderError` if the event's ``time`` is
        earlier than the newest event's: times never run backwards within a log.
        """
        return self._submit([canonical_json(dict(event))], [_time_of(event)])

    def append_many(self, events: Iterable[Mapping[str, Any]]) -> list[int]:
        """Append events in one transaction (all or none); returns their indices."""
        items = [dict(e) for e in events]
        if not items:
            return []
        first = self._submit([canonical_json(e) for e in items], [_time_of(e) for e in items])
        return list(range(first, first + len(items)))

    # --- tree -------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._store.size

    @property
    def public_key(self) -> bytes:
        return self._signer.public_key

    def root(self) -> bytes:
        return self._store.root()

    def root_at(self, size: int) -> bytes:
        return self._store.root_at(size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        if not 0 <= index < size <= self.size:
            raise ComplianceError(f"no inclusion proof for index {index} in size {size}")
        return merkle.inclusion_proof(index, size, self._store.subtree)

    def consistency_proof(self, m: int, n: int) -> list[bytes]:
        if not 0 < m <= n <= self.size:
            raise ComplianceError(f"no consistency proof from size {m} to {n}")
        return merkle.consistency_proof(m, n, self._store.subtree)

    def entries(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """Canonical bytes of entries ``[start, stop)``."""
        stop = self.size if stop is None else stop
        if not 0 <= start <= stop <= self.size:
            raise ComplianceError(f"entries [{start}, {stop}) outside log of size {self.size}")
        return self._store.entries(start, stop)

    def entry_chunks(self, start: int = 0, stop: int | None = None) -> Iterator[list[bytes]]:
        """Entries ``[start, stop)`` as lists of canonical bytes, a few thousand at a time."""
        stop = self.size if stop is None else stop
        if not 0 <= start <= stop <= self.size:
            raise ComplianceError(f"entries [{start}, {stop}) outside log of size {self.size}")
        return (datas for _, datas in self._store.entry_chunks(start, stop))

    # --- checkpoints ------------------------------------------------------------------

    def checkpoint(self) -> SignedCheckpoint:
        """Sign and store a checkpoint of the current tree (reused if the size is unchanged)."""
        with self._cp_lock:
            size, root = self._store.snapshot()
            latest = self._store.latest_checkpoint()
            if latest is not None and latest[0] == size:
                return parse_signed_checkpoint(latest[1])
            signed = sign_checkpoint(Checkpoint(self.origin, size, root), self._signer, self.origin)
            self._store.put_checkpoint(size, signed.encode())
            return signed

    def checkpoints(self) -> list[SignedCheckpoint]:
        return [
            parse_signed_checkpoint(note, where=f"stored checkpoint (size {size})")
            for size, note in self._store.checkpoints()
        ]

    def cosigner_keys(self) -> dict[str, bytes]:
        return {k[len(_COSIGNER_PREFIX) :]: v for k, v in self._store.meta_items(_COSIGNER_PREFIX)}

    def add_cosignature(
        self, cosigned: SignedCheckpoint | str, *, name: str, public_key: bytes
    ) -> None:
        """Store ``name``'s cosignature of one of our checkpoints, after checking it."""
        if isinstance(cosigned, str):
            cosigned = parse_signed_checkpoint(cosigned, where=f"cosigned checkpoint from {name!r}")
        check_key_name(name)
        if name == self.origin:
            raise ComplianceError("the log cannot cosign its own checkpoints")
        known = self.cosigner_keys()
        if known.get(name, public_key) != public_key:
            raise ComplianceError(f"cosigner {name!r} is registered with another key")
        with self._cp_lock:
            cp = cosigned.checkpoint
            stored = dict(self._store.checkpoints()).get(cp.size)
            if stored is None:
                raise ComplianceError(f"no checkpoint of size {cp.size} in this log")
            current = parse_signed_checkpoint(stored)
            if current.checkpoint != cp:
                raise AuditVerificationError(
                    f"cosigned checkpoint (size {cp.size}) differs from the log's checkpoint"
                )
            theirs = [s for s in cosigned.signatures if s.name == name]
            if not theirs:
                raise AuditVerificationError(f"checkpoint has no signature by {name!r}")
            merged = SignedCheckpoint(
                cp, (*tuple(s for s in current.signatures if s.name != name), theirs[0])
            )
            verify_checkpoint(
                merged,
                log_key=(self.origin, self.public_key),
                cosigner_keys={**known, name: public_key},
                where=f"checkpoint (size {cp.size})",
            )
            self._store.set_meta(_COSIGNER_PREFIX + name, public_key)
            self._store.put_checkpoint(cp.size, merged.encode(), replace=True)

    # --- verification -----------------------------------------------------------------

    def _check_latest_checkpoint(self) -> None:
        latest = self._store.latest_checkpoint()
        if latest is None:
            return
        self._check_checkpoint(latest[0], latest[1])

    def _check_checkpoint(self, size: int, note: str) -> SignedCheckpoint:
        where = f"audit log {self._store.path}: checkpoint (size {size})"
        signed = parse_signed_checkpoint(note, where=where)
        verify_checkpoint(
            signed,
            log_key=(self.origin, self.public_key),
            cosigner_keys=self.cosigner_keys(),
            where=where,
        )
        if signed.checkpoint.size != size or signed.checkpoint.origin != self.origin:
            raise AuditVerificationError(f"{where}: stored under the wrong size or origin")
        if size > self.size:
            raise AuditVerificationError(f"{where}: log has only {self.size} entries")
        if self._store.root_at(size) != signed.checkpoint.root:
            raise AuditVerificationError(f"{where}: root does not match the stored tree")
        return signed

    def verify(self) -> None:
        """Full check: every leaf rehashed, root recomputed, every checkpoint verified."""
        size, root = self._store.snapshot()
        frontier: list[tuple[int, bytes]] = []
        cps = self._store.checkpoints()
        roots_at: dict[int, bytes] = {0: merkle.EMPTY_ROOT}
        wanted = {s for s, _ in cps if s <= size}
        for idx, (leaf, data) in enumerate(self._store.leaves(0, size)):
            if merkle.leaf_hash(data) != leaf:
                raise AuditVerificationError(
                    f"audit log {self._store.path}: entry {idx} does not match its leaf hash"
                )
            h, level = leaf, 0
            while frontier and frontier[-1][0] == level:
                h = merkle.node_hash(frontier.pop()[1], h)
                level += 1
            frontier.append((level, h))
            if idx + 1 in wanted:
                roots_at[idx + 1] = LogStore._fold(frontier)
        if LogStore._fold(frontier) != root:
            raise AuditVerificationError(
                f"audit log {self._store.path}: recomputed root does not match the stored tree"
            )
        previous: SignedCheckpoint | None = None
        for cp_size, note in cps:
            signed = self._check_checkpoint(cp_size, note)
            if roots_at.get(cp_size) != signed.checkpoint.root:
                raise AuditVerificationError(
                    f"audit log {self._store.path}: checkpoint (size {cp_size}) root does not "
                    "match the entries"
                )
            if previous is not None and previous.checkpoint.size > 0:
                m = previous.checkpoint.size
                merkle.verify_consistency(
                    m,
                    cp_size,
                    previous.checkpoint.root,
                    signed.checkpoint.root,
                    self.consistency_proof(m, cp_size),
                )
            previous = signed

    # --- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._writer.join()
            while True:  # requests that raced with close(): fail them rather than hang
                try:
                    late = self._queue.get_nowait()
                except queue.Empty:
                    break
                if late is not None:
                    late.error = ComplianceError("audit log was closed before the append")
                    late.done.set()
            self._store.close()
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
