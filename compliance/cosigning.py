"""Partners cosign the coordinator's checkpoint at the end of each job.

After a job the coordinator signs a checkpoint of its log and asks every
remaining partner to cosign it. A partner cosigns only after checking, with
nothing but its own records and the coordinator's pinned public key, that:

1. the checkpoint is signed by the coordinator's log key;
2. the coordinator's log extends the last checkpoint this partner cosigned
   (RFC 9162 consistency proof, section 2.1.4.2), so history was not rewritten;
3. every ``round.aggregated`` event of this job in the coordinator's log is
   included under the checkpoint's root (RFC 9162 inclusion proofs) and, for
   every vector this partner sent in the job (its own ``data.sent`` events),
   records exactly that vector's digest under this partner's name.

With the partners' cosignatures stored beside the checkpoint, the operator
cannot later rewrite the log without breaking signatures it does not hold.

Wire form of the request (JSON, base64 hashes)::

    {"checkpoint": <signed note>, "previous_size": m | null,
     "consistency": [b64, ...], "aggregates": [{"index": i, "entry": <JSON text>,
     "proof": [b64, ...]}, ...]}
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fedcollab.common.errors import AuditVerificationError
from fedcollab.common.keys import Signer
from fedcollab.compliance import merkle
from fedcollab.compliance.checkpoint import (
    SignedCheckpoint,
    cosign,
    parse_signed_checkpoint,
    verify_checkpoint,
)
from fedcollab.compliance.log import AuditLog

__all__ = ["CosignRecord", "build_request", "cosign_request"]


def _b64(items: Iterable[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in items]


def _unb64(items: Iterable[str], *, what: str) -> list[bytes]:
    try:
        return [base64.b64decode(s, validate=True) for s in items]
    except (ValueError, TypeError) as exc:
        raise AuditVerificationError(f"{what}: malformed base64 hash") from exc


@dataclass(frozen=True)
class CosignRecord:
    """What a partner remembers about the last checkpoint it cosigned."""

    size: int
    root: bytes


def build_request(
    log: AuditLog,
    signed: SignedCheckpoint,
    *,
    aggregate_indices: Iterable[int],
    previous_size: int | None,
) -> dict[str, Any]:
    """The coordinator's cosign request for ``signed`` (a checkpoint of ``log``)."""
    n = signed.checkpoint.size
    aggregates = []
    for i in aggregate_indices:
        entry = next(iter(log.entries(i, i + 1)))
        aggregates.append(
            {"index": i, "entry": entry.decode(), "proof": _b64(log.inclusion_proof(i, n))}
        )
    consistency: list[str] = []
    if previous_size is not None and 0 < previous_size < n:
        consistency = _b64(log.consistency_proof(previous_size, n))
    return {
        "checkpoint": signed.encode(),
        "previous_size": previous_size,
        "consistency": consistency,
        "aggregates": aggregates,
    }


def cosign_request(
    request: Mapping[str, Any],
    *,
    coordinator_key: tuple[str, bytes],
    previous: CosignRecord | None,
    partner: str,
    job_digest: str,
    sent_digests: Mapping[str, str],
    signer: Signer,
    run: str | None = None,
) -> SignedCheckpoint:
    """Check a cosign request (see the module docstring) and cosign; raises on any doubt.

    ``sent_digests`` maps each step of this job to the digest of the vector
    this partner sent, taken from the partner's own log.
    """
    try:
        signed = parse_signed_checkpoint(str(request["checkpoint"]), where="cosign request")
        aggregates = list(request["aggregates"])
        consistency = _unb64(request.get("consistency", []), what="consistency proof")
        previous_size = request.get("previous_size")
    except (KeyError, TypeError) as exc:
        raise AuditVerificationError(f"malformed cosign request: {exc}") from exc
    verify_checkpoint(signed, log_key=coordinator_key, where="coordinator checkpoint")
    cp = signed.checkpoint
    if previous is not None:
        if previous_size != previous.size:
            raise AuditVerificationError(
                f"coordinator proves consistency from size {previous_size}, but this partner "
                f"last cosigned size {previous.size}"
            )
        if cp.size < previous.size:
            raise AuditVerificationError(
                f"checkpoint size {cp.size} is smaller than the cosigned size {previous.size}"
            )
        if cp.size == previous.size:
            if cp.root != previous.root:
                raise AuditVerificationError("same size, different root: the log was rewritten")
        else:
            merkle.verify_consistency(previous.size, cp.size, previous.root, cp.root, consistency)
    recorded: dict[str, str] = {}
    for item in aggregates:
        index = int(item["index"])
        entry = str(item["entry"]).encode()
        proof = _unb64(item["proof"], what=f"inclusion proof of entry {index}")
        merkle.verify_inclusion(index, cp.size, merkle.leaf_hash(entry), proof, cp.root)
        event = json.loads(entry)
        body = event.get("body", {})
        if event.get("type") != "round.aggregated" or body.get("digest") != job_digest:
            raise AuditVerificationError(f"entry {index} is not an aggregate of this job")
        if run is not None and body.get("run") != run:
            raise AuditVerificationError(f"entry {index} is an aggregate of another run")
        if partner in body.get("contributions", {}):
            recorded[str(body.get("step"))] = str(body["contributions"][partner])
    for step, digest in sent_digests.items():
        if recorded.get(step) != digest:
            raise AuditVerificationError(
                f"the coordinator's log does not record this partner's contribution to "
                f"{step!r} as sent (sent {digest}, recorded {recorded.get(step)})"
            )
    return cosign(signed, signer, partner)
