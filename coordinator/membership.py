"""Which partners take part in a job, and who dropped out when.

At the start of a job the coordinator waits for partners to come online,
greets each with a handshake (the job spec; the partner answers with its
name, dataset hash and schema fingerprint) and keeps those that belong to
the job. In a real federation a node's name is the one the operator gave it
at registration (bound to its authentication key); a node claiming another
partner's name is refused.

A partner that errors, refuses or misses the deadline is dropped for the rest
of the job (:meth:`Membership.drop`) and recorded, and the job stops with
:class:`NotEnoughPartnersError` once fewer than ``min_partners`` remain.
Requests and aggregation build on this in :mod:`coordinator.roster`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flwr.serverapp import Grid

from fedcollab.common.errors import NotEnoughPartnersError, PolicyRefusal
from fedcollab.common.jobspec import MAX_TIMEOUT_S, JobSpec
from fedcollab.common.messages.replies import HandshakeReply
from fedcollab.common.serde import Payload, encode
from fedcollab.coordinator.audit import JobAudit
from fedcollab.coordinator.broadcast import broadcast
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.coordinator.policy_gate import PolicyBundle

__all__ = ["Membership", "Partner", "refusal_hint"]

_HANDSHAKE_TIMEOUT_S = 60.0
_POLL_S = 1.0
_GRACE_S = 3.0


@dataclass(frozen=True)
class Partner:
    node_id: int
    name: str
    dataset_hash: str
    #: None in encrypted jobs: the row count stays with the partner.
    n_rows: int | None
    #: Category values this partner holds in the schema's open vocabularies.
    vocab: Mapping[str, list[str]] = field(default_factory=dict)
    #: Size of the coordinator checkpoint this partner last cosigned (None: never).
    cosigned_size: int | None = None
    #: Encrypted jobs: the partner's signed per-run transport key.
    he_offer: Mapping[str, Any] | None = None
    #: Vertical jobs, feature parties: the signed per-run key for pairwise masks.
    mask_offer: Mapping[str, Any] | None = None


@dataclass
class Membership:
    """The job's partners: discovery and handshake, dropouts, quorum."""

    spec: JobSpec
    outputs: JobOutputs
    audit: JobAudit
    #: Registry and grants; when set, each partner's grant is checked at its handshake.
    policy: PolicyBundle | None = None
    #: In a real federation every node must carry the name it was registered under.
    require_registered_names: bool = False
    #: Simulation: every node is online from the start, so none is worth waiting for.
    all_nodes_online: bool = False
    active: dict[int, Partner] = field(default_factory=dict)
    dropped: list[dict[str, object]] = field(default_factory=list)
    refused: list[dict[str, object]] = field(default_factory=list)
    all_partners: list[Partner] = field(default_factory=list)
    #: Segmentation jobs: the evidence of each revealed step's sum (the key holder's
    #: receipt, the unmasking's signed inputs), forwarded with the next step's request
    #: so that every partner derives that step's centroids itself (client.centroid_chain).
    step_sums: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return sorted(p.name for p in self.active.values())

    def step_timeout_s(self, n_nodes: int) -> float:
        """How long a step that asks ``n_nodes`` partners waits for their replies.

        In a deployment each partner computes on its own machine: ``round_timeout_s``.
        In a simulation the virtual partners queue for Ray's actors (one per core,
        :func:`federation.simulation.run_simulation_job`): the step's messages expire
        (Flower's TTL) only after ``round_timeout_s`` for each batch of them. With a
        fixed ``round_timeout_s`` a 500-partner job on 2 cores lost 171 partners at its
        first step ("Message TTL has expired", error code 3) at a load average of 40.
        """
        return min(self.spec.round_timeout_s * self._batches(n_nodes), MAX_TIMEOUT_S)

    def _batches(self, n_nodes: int) -> int:
        """Simulation: how many nodes each of Ray's actors (one per core) serves in turn."""
        if not self.all_nodes_online:
            return 1
        return max(1, math.ceil(n_nodes / max(os.cpu_count() or 1, 1)))

    def job_meta(self) -> dict[str, object]:
        return {"job": self.spec.to_json(), "run": self.audit.run_id}

    # -- discovery ----------------------------------------------------------
    def discover(self, grid: Grid) -> None:
        spec = self.spec
        wanted = set(spec.participants)
        seen: set[int] = set()
        deadline = time.monotonic() + spec.startup_timeout_s
        last_new = time.monotonic()
        self.outputs.event("waiting", min_partners=spec.min_partners, participants=sorted(wanted))
        while True:
            nodes = {n.node_id: getattr(n, "name", "") for n in grid.get_nodes()}
            new = [nid for nid in nodes if nid not in seen]
            seen.update(new)
            # A node registered under another partner's name is not asked: the job spec
            # (purpose, columns, participants) is not sent to partners outside the job.
            new = [nid for nid in new if not (wanted and nodes[nid] and nodes[nid] not in wanted)]
            if new:
                last_new = time.monotonic()
                self._greet(grid, new, nodes, until=deadline)
            have = {p.name for p in self.active.values()}
            if wanted and wanted <= have:
                break
            if (
                not wanted
                and len(self.active) >= spec.min_partners
                and time.monotonic() - last_new >= _GRACE_S
            ):
                break
            if time.monotonic() >= deadline:
                break
            if self._cannot_reach_minimum(
                wanted or self._registered(), quiet_s=time.monotonic() - last_new
            ):
                break  # every partner that could join has answered: fail now, not at the deadline
            time.sleep(_POLL_S)
        missing = sorted(wanted - {p.name for p in self.active.values()})
        if len(self.active) < spec.min_partners:
            refusals = "; ".join(
                f"{r.get('partner') or 'node ' + str(r.get('node'))}: {r.get('reason')}"
                for r in self.refused[:5]
            )
            raise NotEnoughPartnersError(
                f"only {len(self.active)} of the required {spec.min_partners} partners joined "
                f"(missing: {', '.join(missing) or '-'}; refused: {len(self.refused)}"
                + (f": {refusals}" if refusals else "")
                + ")",
                hint=refusal_hint(self.refused),
            )
        self.all_partners = sorted(self.active.values(), key=lambda p: p.name)
        self.outputs.event(
            "partners",
            partners=[p.name for p in self.all_partners],
            missing=missing,
            refused=self.refused,
        )
        self.audit.event(
            "job.participants",
            partners=[
                {"name": p.name, "dataset_hash": p.dataset_hash, "n_rows": p.n_rows}
                for p in self.all_partners
            ],
            missing=missing,
            refused=self.refused,
        )

    def _registered(self) -> set[str]:
        """A deployment's registered partners (their keys travel in the policy): without a
        participant list these are every partner that could still join."""
        if self.policy is None or not self.require_registered_names:
            return set()
        return set(self.policy.partner_keys)

    def _cannot_reach_minimum(self, wanted: set[str], *, quiet_s: float) -> bool:
        """True once too few partners are left that could still join (all others answered):
        ``wanted`` is the job's participants, else the registered partners."""
        if len(self.active) >= self.spec.min_partners:
            return False
        if wanted:
            answered = {p.name for p in self.active.values()}
            answered |= {str(r["partner"]) for r in self.refused if r.get("partner")}
            unnamed = sum(1 for r in self.refused if not r.get("partner"))
            could_join = max(0, len(wanted - answered) - unnamed)
            return len(self.active) + could_join < self.spec.min_partners
        # Without a participant list another node may connect later, except in a
        # simulation, where every node is there from the start (and was greeted).
        return self.all_nodes_online and quiet_s >= _GRACE_S

    def _greet(
        self, grid: Grid, node_ids: list[int], registered: dict[int, str], *, until: float
    ) -> None:
        replies: dict[int, HandshakeReply] = {}

        def on_reply(node: int, payload: Payload) -> None:
            # A reply that does not fit (e.g. an offer that is not a JSON object) raises
            # ProtocolError here: broadcast reports that node, refused below.
            replies[node] = payload.as_(HandshakeReply)

        outcome = broadcast(
            grid,
            node_ids=node_ids,
            message_type="query.handshake",
            content_for=lambda _n: encode(self.job_meta()),
            on_reply=on_reply,
            group_id="handshake",
            # In a simulation the nodes are there but may still be starting (Ray actors
            # on a loaded machine) and queue for the actors: the whole start-up time, and
            # at least a minute per batch of them (500 nodes on 2 cores: 159 handshakes
            # expired after the 600 s start-up time at a load average of 35). In
            # a deployment a node online now has until the job's start-up deadline
            # (at least a minute): with 20 nodes on 2 busy cores a handshake took 38 s
            # to serve after waiting its turn, and a fixed minute expired the message
            # (Flower: "Message TTL has expired") before most replies were pushed.
            timeout_s=min(
                max(
                    _HANDSHAKE_TIMEOUT_S * self._batches(len(node_ids)), self.spec.startup_timeout_s
                ),
                MAX_TIMEOUT_S,
            )
            if self.all_nodes_online
            else max(_HANDSHAKE_TIMEOUT_S, until - time.monotonic()),
        )
        for node, reason in {**outcome.refused, **outcome.dropped}.items():
            self.refused.append(
                {"node": str(node), "partner": registered.get(node, ""), "reason": reason}
            )
        for node, reply in replies.items():
            name = reply.partner
            reg = registered.get(node, "")
            if (reg or self.require_registered_names) and reg != name:
                self.refused.append(
                    {"node": str(node), "partner": reg, "reason": f"claims to be {name!r}"}
                )
                continue
            if self.spec.participants and name not in self.spec.participants:
                continue
            if self.policy is not None:
                try:
                    self.policy.check_partner(
                        self.spec,
                        name,
                        dataset=reply.dataset,
                        dataset_hash=reply.dataset_hash,
                    )
                except PolicyRefusal as exc:
                    record: dict[str, object] = {
                        "node": str(node),
                        "partner": name,
                        "reason": exc.message,
                    }
                    self.refused.append(record)
                    self.audit.event("partner.refused", partner=name, reason=exc.message)
                    continue
            if any(p.name == name for p in self.active.values()):
                self.refused.append(
                    {"node": str(node), "partner": name, "reason": "duplicate name"}
                )
                continue
            self.active[node] = Partner(
                node_id=node,
                name=name,
                dataset_hash=reply.dataset_hash,
                n_rows=reply.n_rows,
                vocab=reply.vocab,
                cosigned_size=reply.cosigned_size or None,
                he_offer=reply.he_offer,
                mask_offer=reply.mask_offer,
            )

    def drop(self, node: int, *, step: str, reason: str) -> None:
        partner = self.active.pop(node, None)
        if partner is None:
            return
        record: dict[str, object] = {"partner": partner.name, "step": step, "reason": reason}
        self.dropped.append(record)
        self.outputs.event("dropout", **record)
        self.audit.event("partner.dropped", **record)

    def check_quorum(self, step: str) -> None:
        if len(self.active) < self.spec.min_partners:
            raise NotEnoughPartnersError(
                f"{len(self.active)} partners left after {step}, below min_partners="
                f"{self.spec.min_partners} (dropped: {[d['partner'] for d in self.dropped]})",
                hint="restart the dropped partners' nodes and resubmit, or lower min_partners",
            )


def refusal_hint(refused: list[dict[str, object]]) -> str:
    """What to do when too few partners joined, given why the others refused."""
    reasons = " ".join(str(r.get("reason", "")) for r in refused)
    if "BudgetExceededError" in reasons or "PrivacyError" in reasons:
        return (
            "partners refused on privacy-budget grounds: each sets (or raises) the cap of its "
            "dataset with `fedcollab budget set` (in a simulation: `fedcollab run --budget-cap`), "
            "or the job asks for less (fewer rounds, a smaller epsilon)"
        )
    if "PolicyRefusal" in reasons or "grant" in reasons:
        return (
            "partners refused the job's purpose: each signs a grant for it "
            "(`fedcollab grant sign`), or the job names a purpose they granted"
        )
    if refused and all("no reply" in str(r.get("reason", "")) for r in refused):
        return (
            "partners did not answer the handshake in time: check that their nodes run "
            "(`fedcollab node start`) and are not overloaded, then resubmit"
        )
    if refused:
        return (
            "partners refused the job (reasons above; details in their node logs); "
            "fix what they name, or lower min_partners"
        )
    return "start the partners' nodes (`fedcollab node start`) or lower min_partners"
