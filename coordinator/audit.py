"""The coordinator's side of the audit trail for one job.

Every event carries the job name and digest so that entries in the
coordinator's log and in each partner's log refer to each other: a
``round.aggregated`` event lists, per partner, the digest of the vector that
partner sent, and the partner's own ``data.sent`` event holds the same digest.

Opened per event (see :mod:`compliance.trail`): the ServerApp never holds the
log open while waiting for partners, so operators can submit other jobs.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcollab.common.jobspec import JobSpec
from fedcollab.compliance.checkpoint import SignedCheckpoint
from fedcollab.compliance.cosigning import build_request
from fedcollab.compliance.trail import Trail

__all__ = ["AuditConfig", "JobAudit"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditConfig:
    """Where the coordinator's log and key are, and the partners' audit keys."""

    db: Path
    key: Path
    actor: str = "coordinator"
    partner_keys: Mapping[str, bytes] | None = None


class JobAudit:
    """Records one job's events in the coordinator's log (no-op without a config)."""

    def __init__(self, config: AuditConfig | None, spec: JobSpec) -> None:
        self.config = config
        self.spec = spec
        #: This run's id: the same spec may run many times; events and partners'
        #: records of what they sent are matched per run.
        self.run_id = uuid.uuid4().hex
        #: Log indices of this job's ``round.aggregated`` events (for cosigning).
        self.aggregate_indices: list[int] = []

    def _trail(self) -> Trail:
        assert self.config is not None
        return Trail.open(self.config.db, self.config.key, actor=self.config.actor)

    def event(self, type: str, **body: Any) -> int | None:
        if self.config is None:
            return None
        with self._trail() as trail:
            head = {"job": self.spec.name, "digest": self.spec.digest(), "run": self.run_id}
            index = trail.record(type, {**head, **body})
        if type == "round.aggregated":
            self.aggregate_indices.append(index)
        log.debug("audit entry %d: %s (job %s, run %s)", index, type, self.spec.name, self.run_id)
        return index

    def aggregated(
        self,
        step: str,
        contributions: Mapping[str, str],
        aggregate: str | None,
        *,
        protection: str = "plaintext-sum",
    ) -> None:
        """Log one step: each contributor's digest and the aggregate's digest.

        ``protection``: "plaintext-sum", "ckks-sum" (digests of ciphertexts) or
        "ckks-decrypted" (the decrypting partner's plaintext reply).
        """
        self.event(
            "round.aggregated",
            step=step,
            partners=sorted(contributions),
            contributions=dict(sorted(contributions.items())),
            aggregate=aggregate,
            protection=protection,
        )

    def cosign_requests(
        self, partners: Mapping[str, int | None]
    ) -> tuple[SignedCheckpoint, dict[str, Any]]:
        """Sign a checkpoint now and build each partner's cosign request for it.

        ``partners`` maps each partner to the size of the last checkpoint it says
        it cosigned (from its handshake): the consistency proof starts there, so a
        partner whose last cosignature never reached this log can still cosign.
        """
        assert self.config is not None
        with self._trail() as trail:
            signed = trail.checkpoint()
            requests = {
                p: build_request(
                    trail.log,
                    signed,
                    aggregate_indices=self.aggregate_indices,
                    previous_size=size,
                )
                for p, size in partners.items()
            }
        return signed, requests

    def add_cosignature(self, note: str, *, partner: str) -> None:
        if self.config is None:
            return
        keys = self.config.partner_keys or {}
        from fedcollab.common.errors import PolicyRefusal

        if partner not in keys:
            raise PolicyRefusal(
                f"no audit key registered for partner {partner!r}",
                hint="register the partner's audit.pub with `fedcollab federation register`",
            )
        with self._trail() as trail:
            trail.log.add_cosignature(note, name=partner, public_key=keys[partner])
