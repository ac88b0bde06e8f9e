"""One party's audit trail: its own log, its own key, signed events.

Every party keeps its own log (the coordinator and each partner node). A
:class:`Trail` opens that party's :class:`compliance.log.AuditLog` (origin: the
actor's name), signs each event with the party's Ed25519 key
(:func:`compliance.events.make_event`) and appends it durably: when
:meth:`Trail.record` returns, the event is committed.

The coordinator's ServerApp and a partner's ClientApp run in separate,
short-lived processes, so a trail is opened per use; ``AuditLog.open``
serialises writers across processes.

Key files are written by :func:`create_party_key`: ``audit.key`` (private,
0600) and ``audit.pub`` (a C2SP signed-note verifier key, safe to share).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from fedcollab.common.atomic import write_atomic
from fedcollab.common.errors import ComplianceError
from fedcollab.common.keys import Signer, format_verifier_key, parse_verifier_key
from fedcollab.compliance.checkpoint import SignedCheckpoint
from fedcollab.compliance.events import make_event
from fedcollab.compliance.log import AuditLog

__all__ = [
    "Trail",
    "create_party_key",
    "digest_bytes",
    "digest_parts",
    "digest_vector",
    "load_verifier_key",
    "log_origin",
]


def log_origin(actor: str) -> str:
    """A party's log is named after the party: its checkpoints and its events are
    signed by the same key, under the same name, so one verifier key checks both."""
    return actor


def digest_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_vector(vec: np.ndarray | None) -> str:
    """Digest of a wire vector (float64, little-endian), as both ends compute it."""
    if vec is None:
        return digest_bytes(b"")
    return digest_bytes(np.ascontiguousarray(vec, dtype="<f8").tobytes())


def digest_parts(parts: Mapping[str, bytes]) -> str:
    """Digest of a message's named blobs (vertical jobs), as both ends compute it."""
    lines = "".join(f"{name}\t{digest_bytes(parts[name])}\n" for name in sorted(parts))
    return digest_bytes(lines.encode())


def create_party_key(directory: Path, actor: str) -> tuple[Path, Path]:
    """Write ``audit.key`` and ``audit.pub`` for ``actor``; refuses to overwrite."""
    private, public = directory / "audit.key", directory / "audit.pub"
    if private.exists():
        raise ComplianceError(
            f"{private} already exists", hint="a party keeps its audit key for the life of its log"
        )
    directory.mkdir(parents=True, exist_ok=True)
    signer = Signer.generate(private)
    write_atomic(public, format_verifier_key(actor, signer.public_key) + "\n")
    return private, public


def load_verifier_key(path: Path) -> tuple[str, bytes]:
    try:
        return parse_verifier_key(path.read_text().strip())
    except OSError as exc:
        raise ComplianceError(
            f"cannot read audit public key {path}: {exc}",
            hint="the party creates it with `fedcollab node keygen` (audit.pub)",
        ) from exc


class Trail:
    """A party's audit log opened for appending signed events."""

    def __init__(self, log: AuditLog, signer: Signer, actor: str) -> None:
        self.log = log
        self.signer = signer
        self.actor = actor
        self._lock = threading.Lock()

    @classmethod
    def open(cls, db: Path, key: Path, *, actor: str) -> Trail:
        signer = Signer.load(key)
        db.parent.mkdir(parents=True, exist_ok=True)
        log = AuditLog.open(db, origin=log_origin(actor), signer=signer)
        return cls(log, signer, actor)

    def record(self, type: str, body: Mapping[str, Any]) -> int:
        """Sign and durably append one event; returns its index.

        The event is stamped no earlier than the log's newest event (a clock
        stepped back by NTP must not make the log refuse an append), and stamping
        and appending happen under one lock, so concurrent callers keep the
        order of their times.
        """
        with self._lock:
            now = datetime.now(UTC)
            newest = self.log.last_time
            if newest:
                last = datetime.strptime(newest[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
                frac = newest[20:-1]
                if frac:
                    last += timedelta(microseconds=int(frac[:6].ljust(6, "0")))
                now = max(now, last)
            return self.log.append(make_event(self.signer, self.actor, type, body, time=now))

    def checkpoint(self) -> SignedCheckpoint:
        return self.log.checkpoint()

    def close(self) -> None:
        self.log.close()

    def __enter__(self) -> Trail:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
