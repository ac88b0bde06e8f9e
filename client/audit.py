"""A partner's own audit trail: what arrived, what left its premises, what it refused.

Every request is logged on arrival (``request.received``, with the request's
digest), and every reply before it is sent: ``data.sent`` with the digest of
the exact vector that leaves (the coordinator's ``round.aggregated`` event
holds the same digest), or ``request.refused``. Cosigning the coordinator's
checkpoint at the end of a job (:mod:`compliance.cosigning`) is logged too.

Configuration comes from the node config (real SuperNode) or the simulation's
partner list: ``audit-db``, ``audit-key`` and ``coordinator-key`` (the
coordinator's pinned audit public key). A node without them keeps no trail
and refuses to cosign.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedcollab.common.atomic import write_json_atomic
from fedcollab.common.errors import ComplianceError
from fedcollab.compliance.checkpoint import SignedCheckpoint
from fedcollab.compliance.cosigning import CosignRecord, cosign_request
from fedcollab.compliance.trail import Trail, digest_bytes, digest_vector, load_verifier_key

__all__ = ["PartnerAudit", "request_digest"]


def request_digest(meta: Mapping[str, Any], vector: np.ndarray | None) -> str:
    text = json.dumps(dict(meta), sort_keys=True, separators=(",", ":"))
    return digest_bytes(text.encode() + b"\n" + digest_vector(vector).encode())


_local = threading.local()


def _sessions() -> dict[Path, Trail]:
    """This thread's open trails, by log path (:meth:`PartnerAudit.session`)."""
    held: dict[Path, Trail] | None = getattr(_local, "trails", None)
    if held is None:
        held = _local.trails = {}
    return held


@dataclass(frozen=True)
class PartnerAudit:
    partner: str
    db: Path
    key: Path
    coordinator_key: Path | None

    @classmethod
    def from_config(cls, partner: str, config: Mapping[str, object]) -> PartnerAudit | None:
        if "audit-db" not in config or "audit-key" not in config:
            return None
        coordinator = config.get("coordinator-key")
        return cls(
            partner=partner,
            db=Path(str(config["audit-db"])),
            key=Path(str(config["audit-key"])),
            coordinator_key=Path(str(coordinator)) if coordinator else None,
        )

    @contextmanager
    def session(self) -> Iterator[None]:
        """Keep the trail open for everything logged inside (one request, or one batch of
        them): opening it (key, lock, SQLite, the latest checkpoint's check) costs several
        times what one durable append does. Every append is still durable when
        :meth:`record` returns; the log's lock is held until the session ends."""
        sessions = _sessions()
        if self.db in sessions:
            yield
            return
        trail = Trail.open(self.db, self.key, actor=self.partner)
        sessions[self.db] = trail
        try:
            yield
        finally:
            del sessions[self.db]
            trail.close()

    @contextmanager
    def _trail(self) -> Iterator[Trail]:
        """The trail of this thread's open :meth:`session` of this log (whichever
        ``PartnerAudit`` opened it: a second open in this process would wait on the log's
        lock), else one opened for this call."""
        held = _sessions().get(self.db)
        if held is not None:
            yield held
            return
        with Trail.open(self.db, self.key, actor=self.partner) as trail:
            yield trail

    def record(self, type: str, body: Mapping[str, Any]) -> None:
        with self._trail() as trail:
            trail.record(type, body)

    # -- cosigning ----------------------------------------------------------
    @property
    def _state_path(self) -> Path:
        return self.db.with_name(self.db.name + ".cosigned.json")

    def _previous(self) -> CosignRecord | None:
        if not self._state_path.exists():
            return None
        raw = json.loads(self._state_path.read_text())
        return CosignRecord(size=int(raw["size"]), root=bytes.fromhex(raw["root"]))

    def cosigned_size(self) -> int | None:
        previous = self._previous()
        return previous.size if previous is not None else None

    def _sent_digests(self, job_digest: str, run: str) -> dict[str, str]:
        """Digest of every vector this partner sent in the job, by step (from its own log)."""
        sent: dict[str, str] = {}
        with self._trail() as trail:
            for raw in trail.log.entries():
                event = json.loads(raw)
                body = event.get("body", {})
                if (
                    event.get("type") == "data.sent"
                    and body.get("digest") == job_digest
                    and body.get("run", "") == run
                    and body.get("n_values", 0) > 0
                ):
                    sent[str(body["step"])] = str(body["reply"])
        return sent

    def cosign(self, request: Mapping[str, Any], *, job_digest: str, run: str) -> SignedCheckpoint:
        if self.coordinator_key is None:
            raise ComplianceError(
                "no pinned coordinator audit key: this node cannot cosign",
                hint="start the node with the coordinator's audit.pub (--coordinator-key)",
            )
        coordinator = load_verifier_key(self.coordinator_key)
        with self._trail() as trail:
            signer = trail.signer
        cosigned = cosign_request(
            request,
            coordinator_key=coordinator,
            previous=self._previous(),
            partner=self.partner,
            job_digest=job_digest,
            run=run,
            sent_digests=self._sent_digests(job_digest, run),
            signer=signer,
        )
        cp = cosigned.checkpoint
        self.record(
            "checkpoint.cosigned",
            {
                "digest": job_digest,
                "run": run,
                "origin": cp.origin,
                "size": cp.size,
                "root": cp.root.hex(),
            },
        )
        # Anti-rollback state: durable before the cosignature leaves this node.
        write_json_atomic(self._state_path, {"size": cp.size, "root": cp.root.hex()})
        return cosigned
