"""Ask the partners to cosign the coordinator's checkpoint at the end of a job.

See :mod:`compliance.cosigning` for what each partner checks before it signs.
A partner that refuses does not fail the job (the job is over); the refusal
is recorded in the job's metrics and in the coordinator's log.
"""

from __future__ import annotations

from typing import Any

from flwr.serverapp import Grid

from fedcollab.common.errors import FedcollabError
from fedcollab.common.messages.replies import CosignReply
from fedcollab.common.serde import Payload, encode
from fedcollab.coordinator.audit import JobAudit
from fedcollab.coordinator.broadcast import broadcast
from fedcollab.coordinator.roster import Roster

__all__ = ["FAILED_COSIGN_TIMEOUT_S", "request_cosignatures"]

_COSIGN_TIMEOUT_S = 120.0
#: A failed job's cosigning is best effort: its partners were just answering, and the
#: failure's report should not wait two minutes for one that is gone.
FAILED_COSIGN_TIMEOUT_S = 30.0


def request_cosignatures(
    grid: Grid, roster: Roster, audit: JobAudit, *, timeout_s: float = _COSIGN_TIMEOUT_S
) -> dict[str, Any]:
    nodes = {node: p.name for node, p in roster.active.items()}
    signed, requests = audit.cosign_requests(
        {p.name: p.cosigned_size for p in roster.active.values()}
    )
    cosigned: list[str] = []
    refused: dict[str, str] = {}

    def on_reply(node: int, payload: Payload) -> None:
        partner = nodes[node]
        try:
            # A reply without a cosignature is a ProtocolError: refused like a bad one.
            audit.add_cosignature(payload.as_(CosignReply).cosigned, partner=partner)
            cosigned.append(partner)
        except FedcollabError as exc:
            refused[partner] = f"invalid cosignature: {exc}"

    outcome = broadcast(
        grid,
        node_ids=list(nodes),
        message_type="query.cosign",
        content_for=lambda node: encode({**roster.job_meta(), "cosign": requests[nodes[node]]}),
        on_reply=on_reply,
        group_id="cosign",
        timeout_s=timeout_s,
    )
    for node, reason in {**outcome.dropped, **outcome.refused}.items():
        refused[nodes[node]] = reason
    cp = signed.checkpoint
    summary = {
        "checkpoint": {"origin": cp.origin, "size": cp.size, "root": cp.root.hex()},
        "cosigned_by": sorted(cosigned),
        "cosign_refused": refused,
    }
    audit.event("checkpoint.cosignatures", **summary)
    roster.outputs.event("cosigned", **summary)
    return summary
