"""The coordinator's policy gate: purposes, grants and consents before any data moves.

Checked twice on the coordinator's side (and once more by every partner node,
see :mod:`client.client_app`):

1. at submission (:func:`check_submission`, by ``fedcollab job submit``): the
   job's purpose is registered and valid, and every listed participant has a
   valid grant, signed with its registered audit key, covering the purpose
   with the consent records the purpose requires. A refusal is logged in the
   coordinator's audit log (``job.refused``) before the error is raised; an
   accepted job is logged as ``job.submitted`` with the decision.
2. at each partner's handshake (:func:`PolicyBundle.check_partner`, in the
   ServerApp): the same checks against the dataset name and content hash
   the partner reports, so a partner whose grant does not cover the data it
   actually holds is refused for the job.

Workspace files: ``<ws>/registry.json`` (the compliance officer's record of
processing activities) and ``<ws>/partners/<name>/grant.json`` (a partner's
signed grant, added with ``fedcollab federation grant``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedcollab.common.atomic import write_atomic
from fedcollab.common.errors import PolicyRefusal
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.keys import parse_verifier_key
from fedcollab.compliance.grants import (
    SignedGrant,
    load_signed_grant,
    parse_signed_grant,
    verify_grant,
)
from fedcollab.compliance.policy import ParticipantFacts, PolicyDecision, check_job_policy
from fedcollab.compliance.registry import Registry, load_registry
from fedcollab.compliance.trail import Trail
from fedcollab.coordinator.superlink import partner_audit_keys, registered_nodes
from fedcollab.coordinator.workspace import Workspace

__all__ = ["PolicyBundle", "add_grant", "check_submission", "policy_bundle"]


def registry_path(ws: Workspace) -> Path:
    return ws.root / "registry.json"


def grant_path(ws: Workspace, partner: str) -> Path:
    return ws.root / "partners" / partner / "grant.json"


@dataclass(frozen=True)
class PolicyBundle:
    """Registry, grants and partner keys: everything a policy decision needs."""

    registry: Registry
    grants: Mapping[str, SignedGrant]
    partner_keys: Mapping[str, bytes]

    def decide(self, spec: JobSpec, facts: Mapping[str, ParticipantFacts]) -> PolicyDecision:
        return check_job_policy(
            purpose_id=spec.purpose,
            participants=facts,
            registry=self.registry,
            grants=self.grants,
            partner_keys=self.partner_keys,
            now=datetime.now(UTC),
        )

    def check_partner(
        self, spec: JobSpec, partner: str, *, dataset: str, dataset_hash: str | None
    ) -> PolicyDecision:
        facts = ParticipantFacts(partner=partner, dataset=dataset, dataset_hash=dataset_hash)
        return self.decide(spec, {partner: facts})

    def to_json(self) -> str:
        """Wire form for the ServerApp's run config."""
        return json.dumps(
            {
                "registry": self.registry.model_dump(mode="json"),
                "grants": {p: g.model_dump(mode="json") for p, g in self.grants.items()},
            }
        )

    @classmethod
    def from_json(cls, text: str, partner_keys: Mapping[str, bytes]) -> PolicyBundle:
        raw = json.loads(text)
        return cls(
            registry=Registry.model_validate(raw["registry"], strict=False),
            grants={p: parse_signed_grant(json.dumps(g)) for p, g in raw["grants"].items()},
            partner_keys=dict(partner_keys),
        )


def _keys(ws: Workspace) -> dict[str, bytes]:
    return {p: parse_verifier_key(v)[1] for p, v in partner_audit_keys(ws).items()}


def policy_bundle(ws: Workspace) -> PolicyBundle:
    """Load the workspace's registry, grants and partner keys (fails closed)."""
    path = registry_path(ws)
    if not path.exists():
        raise PolicyRefusal(
            f"no registry of processing activities at {path}: no job can name a purpose",
            hint=f"the compliance officer creates it: `fedcollab registry init {path}`",
        )
    grants = {}
    for partner in sorted(partner_audit_keys(ws)):
        gp = grant_path(ws, partner)
        if gp.exists():
            grants[partner] = load_signed_grant(gp)
    return PolicyBundle(registry=load_registry(path), grants=grants, partner_keys=_keys(ws))


def add_grant(ws: Workspace, grant_file: Path) -> SignedGrant:
    """Store a partner's signed grant after checking it against the partner's audit key."""
    signed = load_signed_grant(grant_file)
    partner = signed.grant.partner
    keys = _keys(ws)
    if partner not in keys:
        raise PolicyRefusal(
            f"partner {partner!r} has no registered audit key",
            hint="register it first: `fedcollab federation register NAME node.pub --audit-key`",
        )
    verify_grant(signed, keys[partner])
    dest = grant_path(ws, partner)
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(dest, grant_file.read_bytes())
    return signed


def check_submission(ws: Workspace, spec: JobSpec) -> tuple[PolicyBundle, PolicyDecision]:
    """Decide a submission and log the decision (or the refusal) in the coordinator's log."""
    body: dict[str, Any] = {
        "job": spec.name,
        "digest": spec.digest(),
        "purpose": spec.purpose,
        "task": spec.task,
    }
    try:
        bundle = policy_bundle(ws)
        # Named participants must all be covered; an open job ("every partner that
        # connects") admits only partners whose grant covers it, checked again at
        # each handshake.
        participants = list(spec.participants) or [
            p for p in sorted(registered_nodes(ws)) if p in bundle.grants
        ]
        if len(participants) < spec.min_partners:
            raise PolicyRefusal(
                f"only {len(participants)} registered partners hold a grant that could cover "
                f"job {spec.name!r}, fewer than min_partners={spec.min_partners}",
                hint="partners sign grants with `fedcollab grant sign`; the operator adds them "
                "with `fedcollab federation grant`",
            )
        facts = {
            # The dataset actually held is known only at the handshake, where it is
            # checked against the grant (name and any pinned hash); here, the grant's own.
            p: ParticipantFacts(
                partner=p,
                dataset=bundle.grants[p].grant.dataset if p in bundle.grants else "",
                dataset_hash=bundle.grants[p].grant.dataset_hash if p in bundle.grants else None,
            )
            for p in participants
        }
        decision = bundle.decide(spec, facts)
    except PolicyRefusal as exc:
        with Trail.open(ws.audit_db, ws.audit_key, actor="coordinator") as trail:
            trail.record(
                "job.refused", {**body, "error": type(exc).__name__, "reason": exc.message}
            )
        raise
    with Trail.open(ws.audit_db, ws.audit_key, actor="coordinator") as trail:
        trail.record(
            "job.submitted",
            {**body, "participants": participants, **decision.to_json_value()},
        )
    return bundle, decision
