"""Per-job provenance, Art. 23 provisions, privacy ledger and refusals, from audit events.

:func:`gather_jobs` folds the verified events of an audit bundle into frozen
records for the compliance report, and cross-checks them against the record
of processing activities (purpose registered, legal basis, separate consent,
validity dates) and against each other (a contribution the coordinator
aggregated should be one the partner recorded sending, when the partner's
events are in the bundle).  Every mismatch becomes a :class:`Finding`; nothing
is dropped silently.  Job output folders are checked in :mod:`compliance.report`.

>>> gathered = gather_jobs(events, purposes=None)
>>> [j.status for j in gathered.jobs]
['completed', 'refused']

Notes
-----
* PIPL Art. 23: a handler providing personal information to another handler
  must tell the data subjects the recipient, purpose and kinds of data and
  obtain their *separate consent*.  Partners here provide aggregates derived
  from their datasets to the coordinator, so each (job, partner) pair with at
  least one ``data.sent`` or aggregated contribution is one provision.
* Event bodies are signed but not schema-checked by the log; every field is
  read leniently (:func:`text`) and a missing one shows as an empty cell.
* ``privacy.spent`` rows come from ``pinned`` actors only: a charge by an actor whose
  key came with the bundle is only the log owner's word (its name may mimic a partner's).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedcollab.compliance.report_model import (
    Consent,
    Dropout,
    Finding,
    JobProvenance,
    Output,
    Participant,
    PrivacySpend,
    Provision,
    PurposeRecord,
    Refusal,
    Round,
    Severity,
    text,
)

__all__ = ["Gathered", "gather_jobs"]


@dataclass(frozen=True)
class Gathered:
    jobs: tuple[JobProvenance, ...]
    provisions: tuple[Provision, ...]
    privacy: tuple[PrivacySpend, ...]
    refusals: tuple[Refusal, ...]
    findings: tuple[Finding, ...]


def _map(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _texts(body: Mapping[str, Any], *keys: str) -> tuple[str, ...]:
    return tuple(text(body.get(k)) for k in keys)


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


@dataclass
class _Job:
    """Mutable accumulator for one job while the events are folded."""

    digest: str
    name: str = ""
    submitted: Mapping[str, Any] = field(default_factory=dict)
    submitted_at: str = ""
    coordinator: str = ""
    mode: str = ""
    started: Mapping[str, Any] = field(default_factory=dict)
    end: tuple[str, str] | None = None  # (status, detail)
    joined: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (hash, rows)
    refused: dict[str, str] = field(default_factory=dict)
    dropouts: list[Dropout] = field(default_factory=list)
    rounds: list[Round] = field(default_factory=list)
    contributions: list[tuple[str, str, str]] = field(default_factory=list)  # partner, hash, step
    sent: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)  # time, hash, priv
    released: Mapping[str, Any] | None = None
    cosignatures: list[str] = field(default_factory=list)

    def info(self, key: str) -> str:
        """A job.submitted field, else the same field of job.started."""
        return text(self.submitted.get(key)) or text(self.started.get(key))


def _fold(jobs: dict[str, _Job], ev: Mapping[str, Any], out: _Out) -> None:
    etype, actor = text(ev.get("type")), text(ev.get("actor"))
    when = text(ev.get("time")).replace("T", " ", 1)  # RFC 3339 allows the space; it wraps
    body = _map(ev.get("body"))
    if etype == "privacy.spent" and out.pinned is not None and actor not in out.pinned:
        out.finding(
            "warning",
            "",
            f"privacy.spent by {actor!r} at {when} left out of the privacy-budget ledger: "
            f"its key is not pinned (it came with the bundle): pin {actor!r}'s key to count it",
        )
        return
    if etype == "privacy.spent":
        cum, cap = _number(body.get("cumulative_epsilon")), _number(body.get("cap"))
        over = cum is not None and cap is not None and cum > cap
        job_name, dataset, mechanism, eps, delta, accountant, cumulative, cap_text = _texts(
            body, "job", "dataset", "mechanism", "epsilon", "delta", "accountant",
            "cumulative_epsilon", "cap",
        )  # fmt: skip
        spend = PrivacySpend(
            when, actor, job_name, dataset, mechanism, eps, delta, accountant, cumulative,
            cap_text, over,
        )  # fmt: skip
        out.privacy.append(spend)
        if over:
            out.finding(
                "error",
                "",
                f"dataset {spend.dataset}: cumulative epsilon {cum} "
                f"exceeds its cap {cap} (recorded by {actor} at {when})",
            )
        return
    digest, name = text(body.get("digest")), text(body.get("job"))
    if etype == "checkpoint.cosigned" or not (digest or name):
        return
    job = jobs.setdefault(digest or f"(no digest) {name}", _Job(digest or f"(no digest) {name}"))
    job.name = job.name or name
    if etype == "job.submitted":
        job.submitted, job.submitted_at, job.coordinator = body, when, actor
    elif etype == "job.refused":
        job.end = ("refused", f"{text(body.get('error'))}: {text(body.get('reason'))}")
        job.submitted_at, job.coordinator = job.submitted_at or when, job.coordinator or actor
        job.submitted = job.submitted or body
        out.refusal(when, actor, etype, job, text(body.get("purpose")), body)
    elif etype == "job.started":
        job.started, job.mode = body, text(body.get("mode"))
        job.coordinator = job.coordinator or actor
    elif etype == "job.participants":
        for p in _list(body.get("partners")):
            p = _map(p)
            job.joined[text(p.get("name"))] = (text(p.get("dataset_hash")), text(p.get("n_rows")))
        for r in _list(body.get("refused")):
            r = _map(r)
            job.refused[text(r.get("partner"))] = text(r.get("reason"))
            out.refusal(when, actor, "participation refused", job, text(r.get("partner")), r)
    elif etype == "round.aggregated":
        contributions = _map(body.get("contributions"))
        step = text(body.get("step"))
        job.coordinator = job.coordinator or actor
        partners = tuple(text(p) for p in _list(body.get("partners")))
        job.rounds.append(Round(step, when, partners, *_texts(body, "protection", "aggregate")))
        job.contributions.extend((p, text(h), step) for p, h in contributions.items())
    elif etype == "partner.dropped":
        partner, step, reason = _texts(body, "partner", "step", "reason")
        job.dropouts.append(Dropout(partner, step, reason, when))
    elif etype == "model.released":
        job.released = body
    elif etype == "job.completed":
        job.end = ("completed", f"wall time {text(body.get('wall_time_s'))} s")
    elif etype == "job.failed":
        job.end = ("failed", f"{text(body.get('error'))}: {text(body.get('reason'))}")
    elif etype == "data.sent":
        privacy = ", ".join(f"{k}={text(v)}" for k, v in sorted(_map(body.get("privacy")).items()))
        job.sent.setdefault(actor, []).append((when, text(body.get("reply")), privacy))
    elif etype == "checkpoint.cosignatures":
        cp, refused = _map(body.get("checkpoint")), _map(body.get("cosign_refused"))
        line = f"checkpoint of size {text(cp.get('size'))} cosigned by "
        line += ", ".join(text(n) for n in _list(body.get("cosigned_by"))) or "nobody"
        line += "".join(f"; {text(n)} refused: {text(r)}" for n, r in refused.items())
        job.cosignatures.append(line)
    elif etype == "request.refused":
        out.refusal(when, actor, etype, job, text(body.get("action")), body)


@dataclass
class _Out:
    pinned: frozenset[str] | None = None  # actors whose privacy.spent make ledger rows
    privacy: list[PrivacySpend] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def finding(self, severity: Severity, job: str, message: str) -> None:
        self.findings.append(Finding(severity, job, message))

    def refusal(
        self, when: str, actor: str, kind: str, job: _Job, subject: str, body: Mapping[str, Any]
    ) -> None:
        self.refusals.append(
            Refusal(
                when,
                actor,
                kind,
                job.name,
                job.digest,
                subject,
                text(body.get("error")),
                text(body.get("reason")),
            )
        )


def _cross_check(
    job: _Job, purpose: PurposeRecord | None, registered: bool, actors: set[str], out: _Out
) -> None:
    d, sub = job.digest, job.submitted
    if job.started and not sub:
        out.finding("warning", d, "no job.submitted event: legal basis and consents unrecorded")
    sent = {(p, h) for p, items in job.sent.items() for _, h, _ in items}
    for partner, h, step in job.contributions:
        # Only a bundle holding the partner's own events can corroborate; in the
        # coordinator's log alone, the partners' cosignatures do that job.
        if partner in actors and (partner, h) not in sent:
            out.finding(
                "warning",
                d,
                f"step {step}: the coordinator aggregated {h} from "
                f"{partner}, which {partner} did not record sending",
            )
    if not registered or not sub or (job.end is not None and job.end[0] == "refused"):
        return  # a refused job processed nothing: the refusal is what the register shows
    pid = job.info("purpose")
    if purpose is None:
        out.finding("error", d, f"purpose {pid!r} is not in the record of processing activities")
        return
    basis = _map(sub.get("legal_basis"))
    for law, theirs in (("pipl", purpose.legal_basis_pipl), ("gdpr", purpose.legal_basis_gdpr)):
        if text(basis.get(law)) != theirs:
            out.finding(
                "warning",
                d,
                f"{law.upper()} legal basis {text(basis.get(law))!r} "
                f"differs from the registered {theirs!r}",
            )
    day = job.submitted_at[:10]
    if day and purpose.valid_from and day < purpose.valid_from[:10]:
        out.finding(
            "error", d, f"submitted {day}, before purpose {pid!r} is valid ({purpose.valid_from})"
        )
    if day and purpose.valid_until and day > purpose.valid_until[:10]:
        out.finding(
            "error", d, f"submitted {day}, after purpose {pid!r} expired ({purpose.valid_until})"
        )


def _consents(sub: Mapping[str, Any]) -> list[Consent]:
    fields = ("partner", "purpose", "kind", "evidence_ref", "subjects_covered")
    return [Consent(*(text(_map(c).get(f)) for f in fields)) for c in _list(sub.get("consents"))]


def _freeze(job: _Job, purpose: PurposeRecord | None) -> JobProvenance:
    sub, rel = job.submitted, _map(job.released)
    declared = [text(p) for p in _list(sub.get("participants"))]
    dropped = {d.partner: d for d in job.dropouts}
    participants = []
    for name in dict.fromkeys([*declared, *job.joined, *job.refused]):
        dataset, rows = job.joined.get(name, ("", ""))
        if name in job.refused:
            outcome = f"refused: {job.refused[name]}"
        elif name in dropped:
            outcome = f"dropped at step {dropped[name].step}: {dropped[name].reason}"
        elif name in job.joined:
            outcome = "took part" if job.end is None else f"took part ({job.end[0]})"
        else:
            outcome = "declared, did not join"
        participants.append(Participant(name, dataset, rows, outcome))
    if job.end is not None:
        status, detail = job.end
    elif job.started:
        status, detail = "incomplete", "no job.completed or job.failed in the log"
    elif sub:
        status, detail = "submitted", "never started"
    else:
        status, detail = "not recorded", "this log holds only partner-side events of the job"
    basis = _map(sub.get("legal_basis"))
    return JobProvenance(
        digest=job.digest,
        name=job.name,
        purpose=job.info("purpose"),
        purpose_name=purpose.name if purpose else "",
        legal_basis_pipl=text(basis.get("pipl")),
        legal_basis_gdpr=text(basis.get("gdpr")),
        task=job.info("task"),
        mode=job.mode,
        submitted_at=job.submitted_at,
        submitted_by=job.coordinator,
        status=status,
        status_detail=detail,
        participants=tuple(participants),
        consents=tuple(_consents(sub)),
        grants=tuple(
            (text(_map(g).get("partner")), text(_map(g).get("grant_digest")))
            for g in _list(sub.get("grants"))
        ),
        dropouts=tuple(job.dropouts),
        rounds=tuple(job.rounds),
        protections=tuple(dict.fromkeys(r.protection for r in job.rounds)),
        released=job.released is not None,
        outputs=tuple(Output(f, text(h), "") for f, h in _map(rel.get("outputs")).items()),
        recipients=tuple(text(r) for r in _list(rel.get("recipients"))),
        metrics=tuple((k, text(v)) for k, v in sorted(_map(rel.get("metrics")).items())),
        cosignatures=tuple(job.cosignatures),
    )


def _provisions(
    job: _Job, frozen: JobProvenance, purpose: PurposeRecord | None, out: _Out
) -> list[Provision]:
    result = []
    contributed: dict[str, list[str]] = {}
    for partner, _, step in job.contributions:
        contributed.setdefault(partner, []).append(step)
    round_times = {r.step: r.time for r in job.rounds}
    for partner in dict.fromkeys([*job.sent, *contributed]):
        sent = job.sent.get(partner, [])
        times = sorted(
            [t for t, _, _ in sent] + [round_times.get(s, "") for s in contributed.get(partner, [])]
        )
        times = [t for t in times if t]
        consent = next(
            (c for c in frozen.consents if c.partner == partner and c.purpose == frozen.purpose),
            next((c for c in frozen.consents if c.partner == partner), None),
        )
        privacy = sorted({p for _, _, p in sent if p})
        protection = ", ".join([*frozen.protections, *privacy])
        if consent is None and purpose is not None and purpose.separate_consent_for_provision:
            out.finding(
                "error",
                job.digest,
                f"{partner} provided aggregates, but no separate "
                "consent (PIPL Art. 23) is recorded for it",
            )
        result.append(
            Provision(
                job=frozen.name,
                digest=job.digest,
                provider=partner,
                dataset_hash=job.joined.get(partner, ("", ""))[0],
                recipient=job.coordinator,
                onward_recipients=frozen.recipients,
                purpose=frozen.purpose,
                consent_kind=consent.kind if consent else "",
                evidence_ref=consent.evidence_ref if consent else "",
                subjects_covered=consent.subjects_covered if consent else "",
                first_time=times[0] if times else "",
                last_time=times[-1] if times else "",
                releases=len(sent),
                contributions=len(contributed.get(partner, [])),
                protection=protection,
            )
        )
    return result


def gather_jobs(
    events: Sequence[Mapping[str, Any]],
    *,
    purposes: Mapping[str, PurposeRecord] | None,
    pinned: Collection[str] | None = None,
) -> Gathered:
    """Fold events (in log order) into the report's per-job records, with cross-checks.

    ``purposes`` is the record of processing activities by purpose id (``None``
    when none was supplied: the registry checks are then skipped).  ``pinned``: the
    names the officer pinned (``VerifiedBundle.policy.keys``); a ``privacy.spent`` by
    any other actor is a warning, not a ledger row (``None``: every actor counts).
    """
    jobs: dict[str, _Job] = {}
    out = _Out(pinned=None if pinned is None else frozenset(pinned))
    for ev in events:
        _fold(jobs, ev, out)
    actors = {text(ev.get("actor")) for ev in events}
    frozen, provisions = [], []
    for job in jobs.values():
        purpose = (purposes or {}).get(job.info("purpose"))
        _cross_check(job, purpose, purposes is not None, actors, out)
        f = _freeze(job, purpose)
        frozen.append(f)
        provisions.extend(_provisions(job, f, purpose, out))
    return Gathered(
        jobs=tuple(frozen),
        provisions=tuple(provisions),
        privacy=tuple(out.privacy),
        refusals=tuple(out.refusals),
        findings=tuple(out.findings),
    )
