"""The audit browser: logs, their verification status, entries and one-click exports.

The console never writes to another party's log.  To verify one it copies the
SQLite file (SQLite's online backup, from a ``mode=ro`` connection, so a
running coordinator is not disturbed), cuts the copy back to the latest signed
checkpoint, exports the copy with :func:`compliance.bundle.export_bundle` and
verifies that bundle with :func:`compliance.bundle.verify_bundle` -- the code
``fedcollab audit export`` / ``audit verify`` run -- with the log's own key
pinned from the workspace.  The downloadable bundle is that verified bundle.

Notes
-----
* Cutting the copy back means nothing is ever signed on a party's behalf: the
  bundle covers exactly what the party itself has checkpointed (the
  coordinator signs a checkpoint after every job); newer entries are counted
  and shown as not yet checkpointed.  The console's own log is checkpointed
  before each export, so its bundle is complete.
* Verification results are cached per file state (modification times and
  sizes of the database and its WAL); any write re-verifies.
* Partners' registered bundles are copied into the report's folder first
  (:func:`compliance.bundle_files.copy_bundle`: regular files only, a symbolic link
  refused, never followed) and the copies are what the report verifies and the
  zip carries: a link in a partner's folder (``keys/`` pointing at the
  operator's private keys) can neither pass verification nor be copied into
  the zip, and a file changed after verification is not the one zipped.
"""

from __future__ import annotations

import io
import json
import sqlite3
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fedcollab.common.errors import AuditVerificationError, FedcollabError
from fedcollab.common.keys import Signer, parse_verifier_key
from fedcollab.compliance.bundle import VerifiedBundle, export_bundle, verify_bundle
from fedcollab.compliance.bundle_files import copy_bundle
from fedcollab.compliance.checkpoint import parse_signed_checkpoint
from fedcollab.compliance.log import AuditLog
from fedcollab.compliance.trust import TrustPolicy

__all__ = ["AuditSource", "LogStatus", "bundle_zip", "list_entries", "log_status"]

PAGE_SIZE = 50


@dataclass(frozen=True)
class AuditSource:
    """One party's log as the console sees it."""

    name: str  # "coordinator", "console"
    db: Path
    key: Path  # the party's signing key: needed to open the log file
    pub: Path  # the verifier key pinned for verification
    actor_keys: Callable[[], Mapping[str, bytes]] = field(default=dict)
    before_export: Callable[[], None] | None = None  # e.g. checkpoint the console's own log


@dataclass(frozen=True)
class LogStatus:
    name: str
    exists: bool
    size: int
    checkpoint_size: int | None
    root_hex: str | None
    cosigners: tuple[str, ...]
    verification: str  # "verified ..." or "FAILED: ..." or "no log yet"
    report: VerifiedBundle | None
    #: Size of the newest checkpoint that carries cosignatures (``cosigners`` are its).
    cosigned_size: int | None = None
    #: Names of cosignatures under a key that is not pinned: shown, never counted.
    unverified: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "exists": self.exists,
            "size": self.size,
            "checkpoint_size": self.checkpoint_size,
            "root": self.root_hex,
            "cosigners": list(self.cosigners),
            "cosigned_size": self.cosigned_size,
            "unverified_cosigners": list(self.unverified),
            "verification": self.verification,
            "verified": self.verification.startswith("verified"),
        }


def _ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{quote(str(db.resolve()))}?mode=ro", uri=True, timeout=10.0)


def _state(db: Path) -> tuple[tuple[int, int], ...]:
    out = []
    for p in (db, db.with_name(db.name + "-wal")):
        try:
            st = p.stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((0, 0))
    return tuple(out)


@contextmanager
def _exported(source: AuditSource) -> Iterator[tuple[Path, int]]:
    """A bundle of ``source`` up to its latest signed checkpoint; yields (folder, log size)."""
    if source.before_export is not None:
        source.before_export()
    with tempfile.TemporaryDirectory(prefix="fedcollab-console-") as tmp:
        copy = Path(tmp) / "audit.db"
        src, dst = _ro(source.db), sqlite3.connect(copy)
        try:
            src.backup(dst)
            size = int(dst.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
            row = dst.execute("SELECT MAX(size) FROM checkpoints").fetchone()
            if row[0] is None:
                raise AuditVerificationError(f"{size} entries but no signed checkpoint")
            signed_size = int(row[0])
            dst.execute("DELETE FROM entries WHERE idx >= ?", (signed_size,))
            dst.execute("DELETE FROM nodes WHERE ((idx + 1) << level) > ?", (signed_size,))
            dst.commit()
        finally:
            src.close()
            dst.close()
        origin = AuditLog.stored_origin(copy)
        log = AuditLog.open(copy, origin=origin, signer=Signer.load(source.key), lock_timeout_s=0)
        try:
            export_bundle(log, Path(tmp) / "bundle", public_keys=source.actor_keys())
        finally:
            log.close()
        yield Path(tmp) / "bundle", size


def _verify(source: AuditSource, bundle: Path) -> VerifiedBundle:
    """The verification ``audit verify`` runs: the log's pinned key plus the registered
    partners' keys (what ``--trust-peers`` pins), so only their cosignatures count."""
    name, pinned = parse_verifier_key(source.pub.read_text(encoding="utf-8").strip())
    policy = TrustPolicy.from_keys({**source.actor_keys(), name: pinned})
    report = verify_bundle(bundle, policy, workers=1)
    if report.origin != name:
        raise AuditVerificationError(
            f"the log's origin is {report.origin!r} but the pinned key is {name!r}'s"
        )
    return report


class AuditBrowser:
    """Verification status of the configured logs, cached per file state."""

    def __init__(self, sources: list[AuditSource]) -> None:
        self.sources = {s.name: s for s in sources}
        self._cache: dict[str, tuple[object, LogStatus]] = {}
        self._lock = threading.Lock()

    def status(self, name: str) -> LogStatus:
        source = self.sources[name]
        with self._lock:
            state = _state(source.db)
            cached = self._cache.get(name)
            if cached is not None and cached[0] == state:
                return cached[1]
            result = log_status(source)
            self._cache[name] = (_state(source.db), result)
            return result

    def all(self) -> list[LogStatus]:
        return [self.status(n) for n in self.sources]


def log_status(source: AuditSource) -> LogStatus:
    if not source.db.is_file():
        return LogStatus(source.name, False, 0, None, None, (), "no log yet", None)
    size, cp_size, root = 0, None, None
    cosigners: tuple[str, ...] = ()
    try:
        if source.before_export is not None:
            source.before_export()
        db = _ro(source.db)
        try:
            size = int(db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
            rows = db.execute("SELECT size, note FROM checkpoints ORDER BY size DESC").fetchall()
        finally:
            db.close()
        cosigned_size: int | None = None
        if rows:
            signed = parse_signed_checkpoint(rows[0][1])
            cp_size, root = int(rows[0][0]), signed.checkpoint.root.hex()
        with _exported(source) as (bundle, size):
            report = _verify(source, bundle)
        # The newest checkpoint partners cosigned (the log may have grown, and been
        # checkpointed again, after the last cosigning); only pinned keys count.
        for vcp in reversed(report.checkpoints):
            if vcp.cosigned_by():
                cosigners, cosigned_size = vcp.cosigned_by(), vcp.size
                break
        unverified = tuple(
            sorted(
                {n for vcp in report.checkpoints for n, st in vcp.cosignatures if st != "verified"}
            )
        )
        pending = size - report.size
        text = f"verified: {report.size} entries up to the latest checkpoint"
        if pending > 0:
            text += f" ({pending} newer entries not yet checkpointed)"
        return LogStatus(
            source.name, True, size, cp_size, root, cosigners, text, report, cosigned_size,
            unverified,
        )  # fmt: skip
    except (FedcollabError, sqlite3.Error, OSError) as exc:
        reason = exc.message if isinstance(exc, FedcollabError) else str(exc)
        return LogStatus(
            source.name, True, size, cp_size, root, cosigners, f"FAILED: {reason}", None
        )


def bundle_zip(source: AuditSource) -> tuple[bytes, VerifiedBundle]:
    """A zip of the verified bundle (unzip, then ``fedcollab audit verify``); raises if it fails."""
    with _exported(source) as (bundle, _size):
        report = _verify(source, bundle)
        return _zip(bundle, prefix=f"{source.name}-audit-bundle"), report


def _zip(folder: Path, *, prefix: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"{prefix}/{path.relative_to(folder).as_posix()}")
    return buf.getvalue()


def report_zip(
    source: AuditSource,
    *,
    registry: Path | None,
    jobs: list[Path],
    policy: TrustPolicy,
    partner_bundles: Mapping[str, Path] | None = None,
) -> tuple[bytes, VerifiedBundle]:
    """The compliance report (HTML + PDF) of ``source``'s verified bundle, zipped.

    ``partner_bundles`` (partner -> exported bundle folder) are copied (regular
    files only, links refused), verified under the same policy and cross-checked
    against the coordinator's bundle, exactly as ``audit report --ledger BUNDLE``
    does; the verified copies travel in the zip beside the coordinator's bundle so
    the officer can re-run ``audit crossref`` offline. A report with error findings or
    cross-log findings is refused (AuditVerificationError listing them), as ``audit
    report`` exits 31 on it: the console never serves it as a clean download.
    """
    from fedcollab.compliance.report import write_report  # heavy (PDF): only when asked

    given = dict(sorted((partner_bundles or {}).items()))
    with _exported(source) as (bundle, _size):
        report = _verify(source, bundle)
        out = bundle.parent / "report"
        copies = [copy_bundle(path, out / "partner-bundles" / p) for p, path in given.items()]
        write_report(
            bundle,
            registry=registry,
            jobs=jobs,
            policy=policy,
            out_dir=out,
            ledger_bundles=copies,
            fail_on_errors=True,  # as `audit report`: refused, with every finding
            shown_as="the report `fedcollab audit report` writes for this log",
        )
        copy_bundle(bundle, out / "bundle")
        return _zip(out, prefix=f"{source.name}-compliance-report"), report


def list_entries(
    source: AuditSource, *, event_type: str = "", job: str = "", page: int = 1
) -> dict[str, Any]:
    """One page of entries, newest first, filtered by event type and job name."""
    if not source.db.is_file():
        return {"entries": [], "page": 1, "pages": 1, "total": 0}
    page = max(page, 1)
    where = (
        "(:t = '' OR json_extract(CAST(data AS TEXT), '$.type') = :t) AND "
        "(:j = '' OR json_extract(CAST(data AS TEXT), '$.body.job') = :j)"
    )
    args = {"t": event_type, "j": job, "n": PAGE_SIZE, "o": (page - 1) * PAGE_SIZE}
    db = _ro(source.db)
    try:
        # `where` is a constant; every value is a bound parameter.
        count_sql = f"SELECT COUNT(*) FROM entries WHERE {where}"  # noqa: S608
        page_sql = (
            f"SELECT idx, data FROM entries WHERE {where} ORDER BY idx DESC LIMIT :n OFFSET :o"  # noqa: S608
        )
        total = int(db.execute(count_sql, args).fetchone()[0])
        rows = db.execute(
            page_sql,
            args,
        ).fetchall()
        types = [r[0] for r in db.execute(
            "SELECT DISTINCT json_extract(CAST(data AS TEXT), '$.type') FROM entries ORDER BY 1"
        ) if r[0]]  # fmt: skip
    finally:
        db.close()
    entries = []
    for idx, data in rows:
        try:
            ev = json.loads(data)
        except ValueError:
            ev = {}
        body = ev.get("body") if isinstance(ev.get("body"), dict) else {}
        entries.append(
            {
                "index": idx,
                "time": ev.get("time"),
                "actor": ev.get("actor"),
                "type": ev.get("type"),
                "job": body.get("job"),
                "body": json.dumps(body, sort_keys=True)[:600],
            }
        )
    pages = max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    return {"entries": entries, "page": page, "pages": pages, "total": total, "types": types}
