"""The purpose-limitation decision: may this job process these partners' datasets?

Pure: takes the registry, the partners' signed grants and keys and a time, and
either returns a :class:`PolicyDecision` (what was checked, for the audit log)
or raises :class:`common.errors.PolicyRefusal` (exit 32) saying which partner
lacks what and what to do.  Callers log both outcomes; nothing here does I/O.

A job is allowed only when (PIPL Art. 6 and GDPR Art. 5(1)(b) purpose limitation):

1. its purpose is registered and valid today (GDPR Art. 30; PIPL Art. 13);
2. every participant has a grant, signed by the key registered for that
   partner, naming the participant's dataset (and, if pinned, its hash), valid
   now and allowing the purpose;
3. the grant holds a valid consent record of every kind the purpose requires:
   ``separate-provision`` (PIPL Art. 23/39), ``sensitive-data`` (PIPL Art. 29),
   ``explicit`` (GDPR Art. 9(2)(a)); and, for a purpose whose legal basis under
   either law is consent and that needs none of those, a ``general`` one
   (PIPL Art. 13(1)(1), 14; GDPR Art. 6(1)(a), 7(1)).

The coordinator calls :func:`check_job_policy` before submission; each partner
node calls :func:`check_partner_grant` against its own grant before touching
data, so a job outside a partner's grant is refused even if the coordinator
accepted it.

Notes
-----
* A consent record covering zero data subjects is refused: it cannot support
  processing anybody's data, and accepting it would turn the check into a form.
* Participant refusals are collected and reported together so that an operator
  can fix every partner in one pass; purpose refusals stop at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fedcollab.common.errors import ComplianceError, PolicyRefusal
from fedcollab.compliance.grants import ConsentKind, SignedGrant, rfc3339, verify_grant
from fedcollab.compliance.registry import Purpose, Registry, utc_date

__all__ = [
    "ConsentUse",
    "GrantUse",
    "ParticipantFacts",
    "PolicyDecision",
    "check_job_policy",
    "check_partner_grant",
    "required_consents",
]


@dataclass(frozen=True)
class ParticipantFacts:
    """What the coordinator knows of one participant's data (from its roster)."""

    partner: str
    dataset: str
    dataset_hash: str | None = None


@dataclass(frozen=True)
class GrantUse:
    """One grant a decision relied on."""

    partner: str
    dataset: str
    grant_digest: str
    signer_name: str
    valid_until: datetime


@dataclass(frozen=True)
class ConsentUse:
    """One consent record a decision relied on (a reference, never personal data)."""

    partner: str
    purpose: str
    kind: ConsentKind
    evidence_ref: str
    subjects_covered: int
    valid_until: datetime


@dataclass(frozen=True)
class PolicyDecision:
    """An allowed job: what was checked, ready to be logged as an audit event body."""

    purpose_id: str
    purpose_name: str
    legal_basis_pipl: str
    legal_basis_gdpr: str
    impact_assessment_ref: str
    checked_at: datetime
    grants: tuple[GrantUse, ...]
    consents: tuple[ConsentUse, ...]

    def to_json_value(self) -> dict[str, Any]:
        """A JSON-ready dict (RFC 3339 UTC times), e.g. for ``make_event(..., body=...)``."""
        return {
            "purpose": self.purpose_id,
            "purpose_name": self.purpose_name,
            "legal_basis": {"pipl": self.legal_basis_pipl, "gdpr": self.legal_basis_gdpr},
            "impact_assessment_ref": self.impact_assessment_ref,
            "checked_at": rfc3339(self.checked_at),
            "grants": [
                {
                    "partner": g.partner,
                    "dataset": g.dataset,
                    "grant_digest": g.grant_digest,
                    "signer_name": g.signer_name,
                    "valid_until": rfc3339(g.valid_until),
                }
                for g in self.grants
            ],
            "consents": [
                {
                    "partner": c.partner,
                    "purpose": c.purpose,
                    "kind": c.kind,
                    "evidence_ref": c.evidence_ref,
                    "subjects_covered": c.subjects_covered,
                    "valid_until": rfc3339(c.valid_until),
                }
                for c in self.consents
            ],
        }


def required_consents(purpose: Purpose) -> tuple[ConsentKind, ...]:
    """The consent kinds a grant must hold for ``purpose`` (see the module docstring)."""
    kinds: list[ConsentKind] = []
    if purpose.consent.separate_consent_for_provision:
        kinds.append("separate-provision")
    if purpose.consent.sensitive_data:
        kinds.append("sensitive-data")
    if purpose.consent.gdpr_explicit_consent:
        kinds.append("explicit")
    consent_based = purpose.legal_basis.pipl == "consent" or purpose.legal_basis.gdpr == "consent"
    if not kinds and consent_based:
        kinds.append("general")
    return tuple(kinds)


_REISSUE = "ask partner {p!r} to sign a new grant ('fedcollab grant sign')"


def _check_grant(
    *,
    purpose_id: str,
    partner: str,
    dataset: str,
    dataset_hash: str | None,
    signed: SignedGrant,
    public_key: bytes,
    now: datetime,
    required: tuple[ConsentKind, ...],
) -> tuple[GrantUse, tuple[ConsentUse, ...]]:
    """Every per-partner check, in the order an operator would fix them."""
    grant = signed.grant
    who = f"partner {partner!r}"
    reissue = _REISSUE.format(p=partner)
    if grant.partner != partner:
        raise PolicyRefusal(
            f"{who}: the grant on file was issued by partner {grant.partner!r}",
            hint=f"file partner {partner!r}'s own grant for it",
        )
    try:
        verify_grant(signed, public_key)
    except PolicyRefusal as exc:
        raise PolicyRefusal(f"{who}: {exc.message}", hint=exc.hint) from exc
    if now < grant.valid_from:
        raise PolicyRefusal(
            f"{who}: grant is not valid before {rfc3339(grant.valid_from)}",
            hint=f"wait until then, or {reissue} with an earlier valid_from",
        )
    if now >= grant.valid_until:
        raise PolicyRefusal(
            f"{who}: grant expired at {rfc3339(grant.valid_until)}",
            hint=f"{reissue} with a later --valid-until",
        )
    if grant.dataset != dataset:
        raise PolicyRefusal(
            f"{who}: grant covers dataset {grant.dataset!r}, not {dataset!r}",
            hint=f"use the granted dataset, or {reissue} for dataset {dataset!r}",
        )
    if grant.dataset_hash is not None and dataset_hash != grant.dataset_hash:
        shown = "an unknown content hash" if dataset_hash is None else f"hash {dataset_hash}"
        raise PolicyRefusal(
            f"{who}: grant pins dataset {dataset!r} to {grant.dataset_hash}, "
            f"but the dataset has {shown}",
            hint=f"restore the granted version of the data, or {reissue} pinning the new hash",
        )
    if purpose_id not in grant.purposes:
        raise PolicyRefusal(
            f"{who}: grant does not allow purpose {purpose_id!r} "
            f"(it allows: {', '.join(grant.purposes)})",
            hint=f"choose a granted purpose, or {reissue} that includes {purpose_id!r}",
        )
    used: list[ConsentUse] = []
    for kind in required:
        record = grant.consent(purpose_id, kind)
        if record is None:
            raise PolicyRefusal(
                f"{who}: purpose {purpose_id!r} requires a {kind!r} consent record, "
                "and the grant has none",
                hint=f"collect that consent, then {reissue} with --consent "
                f"'{purpose_id}:{kind}:<evidence ref>:<subjects>:<valid until>'",
            )
        if not record.is_valid_at(now):
            raise PolicyRefusal(
                f"{who}: the {kind!r} consent record {record.evidence_ref!r} for purpose "
                f"{purpose_id!r} expired at {rfc3339(record.valid_until)}",
                hint=f"renew the consent, then {reissue} with the renewed record",
            )
        if record.subjects_covered == 0:
            raise PolicyRefusal(
                f"{who}: the {kind!r} consent record {record.evidence_ref!r} for purpose "
                f"{purpose_id!r} covers no data subjects",
                hint=f"process only data of consenting subjects, then {reissue}",
            )
        used.append(
            ConsentUse(
                partner=partner,
                purpose=purpose_id,
                kind=kind,
                evidence_ref=record.evidence_ref,
                subjects_covered=record.subjects_covered,
                valid_until=record.valid_until,
            )
        )
    grant_use = GrantUse(
        partner=partner,
        dataset=grant.dataset,
        grant_digest=grant.digest(),
        signer_name=signed.signer_name,
        valid_until=grant.valid_until,
    )
    return grant_use, tuple(used)


def check_job_policy(
    *,
    purpose_id: str,
    participants: Mapping[str, ParticipantFacts],
    registry: Registry,
    grants: Mapping[str, SignedGrant],
    partner_keys: Mapping[str, bytes],
    now: datetime,
) -> PolicyDecision:
    """Decide a job submission; raise :class:`PolicyRefusal` naming what is missing.

    ``participants``, ``grants`` and ``partner_keys`` are keyed by partner name;
    ``partner_keys`` holds each partner's registered raw Ed25519 public key.
    """
    utc_date(now)  # refuses a naive time before anything is decided
    purpose = registry.purpose(purpose_id)
    purpose.check_valid_at(now)
    if not participants:
        raise PolicyRefusal(
            f"the job for purpose {purpose_id!r} names no participants",
            hint="resolve the participants before the policy check; an empty job is refused",
        )
    required = required_consents(purpose)
    refusals: list[PolicyRefusal] = []
    grant_uses: list[GrantUse] = []
    consent_uses: list[ConsentUse] = []
    for name in sorted(participants):
        facts = participants[name]
        if facts.partner != name:
            raise ComplianceError(
                f"participants[{name!r}] describes partner {facts.partner!r}",
                hint="key the participants mapping by ParticipantFacts.partner",
            )
        signed = grants.get(name)
        key = partner_keys.get(name)
        if signed is None:
            refusals.append(
                PolicyRefusal(
                    f"partner {name!r} has no grant on file for dataset {facts.dataset!r}",
                    hint=f"{_REISSUE.format(p=name)} for purpose {purpose_id!r} and "
                    "file it with the coordinator",
                )
            )
            continue
        if key is None:
            refusals.append(
                PolicyRefusal(
                    f"partner {name!r} has no registered public key to verify its grant",
                    hint=f"register partner {name!r}'s grant-signing public key",
                )
            )
            continue
        try:
            grant_use, consents = _check_grant(
                purpose_id=purpose_id,
                partner=name,
                dataset=facts.dataset,
                dataset_hash=facts.dataset_hash,
                signed=signed,
                public_key=key,
                now=now,
                required=required,
            )
        except PolicyRefusal as exc:
            refusals.append(exc)
            continue
        grant_uses.append(grant_use)
        consent_uses.extend(consents)
    if len(refusals) == 1:
        raise refusals[0]
    if refusals:
        raise PolicyRefusal(
            f"job for purpose {purpose_id!r} refused for {len(refusals)} participants:\n"
            + "\n".join(f"  - {r.message}" for r in refusals),
            hint="; ".join(dict.fromkeys(r.hint for r in refusals if r.hint)),
        )
    return PolicyDecision(
        purpose_id=purpose.id,
        purpose_name=purpose.name,
        legal_basis_pipl=purpose.legal_basis.pipl,
        legal_basis_gdpr=purpose.legal_basis.gdpr,
        impact_assessment_ref=purpose.impact_assessment_ref,
        checked_at=now,
        grants=tuple(grant_uses),
        consents=tuple(consent_uses),
    )


def check_partner_grant(
    *,
    purpose_id: str,
    partner: str,
    dataset: str,
    dataset_hash: str | None,
    grant: SignedGrant,
    own_public_key: bytes,
    now: datetime,
    purpose: Purpose | None = None,
) -> None:
    """A partner node's own check of a job against its grant; raises, returns nothing.

    Without the registry entry (``purpose=None``) the node still refuses when any
    consent record its grant lists for the purpose has expired; with it, the node
    also checks the purpose's validity and the consent kinds it requires.
    """
    utc_date(now)
    if purpose is not None:
        if purpose.id != purpose_id:
            raise ComplianceError(
                f"registry entry {purpose.id!r} passed for purpose {purpose_id!r}",
                hint="pass the registry entry of the job's purpose",
            )
        purpose.check_valid_at(now)
        required = required_consents(purpose)
    else:
        required = tuple(c.kind for c in grant.grant.consents if c.purpose == purpose_id)
    _check_grant(
        purpose_id=purpose_id,
        partner=partner,
        dataset=dataset,
        dataset_hash=dataset_hash,
        signed=grant,
        public_key=own_public_key,
        now=now,
        required=required,
    )
