"""Per-run provenance, Art. 23 provisions, privacy ledger and refusals, from audit events.

:func:`gather_jobs` folds the verified events of an audit bundle into frozen
records for the compliance report, one per run of a job (:mod:`compliance.report_runs`:
the same spec may run many times), and cross-checks them against the record
of processing activities (purpose registered, legal basis, separate consent,
validity dates) and against each other (a contribution the coordinator
aggregated should be one the partner recorded sending, when the partner's
events are in the bundle).  Every mismatch becomes a :class:`Finding`; nothing
is dropped silently.  Job output folders are checked in :mod:`compliance.report_folders`.
The partners' own logs (``--ledger``) add their ``privacy.spent`` and ``request.refused``.

>>> gathered = gather_jobs(events, purposes=None, partner_logs={"acme": acme_events})
>>> [(j.status, j.run) for j in gathered.jobs]
[('failed', '163e...'), ('completed', 'e6d5...'), ('completed', '6174...')]

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
* A partner's ``request.refused`` (e.g. a DP job refused at the handshake) is in its
  own log only: the coordinator's log shows the run failing, not why each partner said no.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fedcollab.compliance.report_model import (
    Dropout,
    Finding,
    JobProvenance,
    PrivacySpend,
    Provision,
    PurposeRecord,
    Refusal,
    Round,
    Severity,
    as_list,
    as_map,
    text,
)
from fedcollab.compliance.report_runs import JobRun, RunIndex

__all__ = ["Gathered", "gather_jobs"]


@dataclass(frozen=True)
class Gathered:
    jobs: tuple[JobProvenance, ...]
    provisions: tuple[Provision, ...]
    privacy: tuple[PrivacySpend, ...]
    refusals: tuple[Refusal, ...]
    findings: tuple[Finding, ...]


def _texts(body: Mapping[str, Any], *keys: str) -> tuple[str, ...]:
    return tuple(text(body.get(k)) for k in keys)


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


@dataclass
class _Out:
    pinned: frozenset[str] | None = None  # actors whose privacy.spent make ledger rows
    privacy: list[PrivacySpend] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    seen: set[Refusal] = field(default_factory=set)
    findings: list[Finding] = field(default_factory=list)

    def finding(self, severity: Severity, job: str, message: str) -> None:
        self.findings.append(Finding(severity, job, message))

    def refusal(
        self,
        when: str,
        actor: str,
        kind: str,
        job: JobRun,
        subject: str,
        body: Mapping[str, Any],
        *,
        log: str = "",
    ) -> None:
        step = text(body.get("step"))
        reason = text(body.get("reason")) or (f"at step {step}" if step else "")
        row = Refusal(
            when, actor, kind, job.name, job.digest, subject, text(body.get("error")), reason,
            job.run, log,
        )  # fmt: skip
        # One event in two logs (a shared log, and the partner's own) is one refusal.
        if (seen := replace(row, log="")) not in self.seen:
            self.seen.add(seen)
            self.refusals.append(row)


def _privacy(ev: Mapping[str, Any], out: _Out) -> None:
    """A ``privacy.spent`` event: a ledger row, from a pinned actor only."""
    actor, when = text(ev.get("actor")), text(ev.get("time")).replace("T", " ", 1)
    body = as_map(ev.get("body"))
    if out.pinned is not None and actor not in out.pinned:
        out.finding(
            "warning",
            "",
            f"privacy.spent by {actor!r} at {when} left out of the privacy-budget ledger: "
            f"its key is not pinned (it came with the bundle): pin {actor!r}'s key to count it",
        )
        return
    cum, cap = _number(body.get("cumulative_epsilon")), _number(body.get("cap"))
    over = cum is not None and cap is not None and cum > cap
    job_name, dataset, mechanism, eps, delta, accountant, cumulative, cap_text = _texts(
        body, "job", "dataset", "mechanism", "epsilon", "delta", "accountant",
        "cumulative_epsilon", "cap",
    )  # fmt: skip
    spend = PrivacySpend(
        when, actor, job_name, dataset, mechanism, eps, delta, accountant, cumulative,
        cap_text, over, text(body.get("run")),
    )  # fmt: skip
    out.privacy.append(spend)
    if over:
        out.finding(
            "error",
            "",
            f"dataset {spend.dataset}: cumulative epsilon {cum} "
            f"exceeds its cap {cap} (recorded by {actor} at {when})",
        )


def _fold(runs: RunIndex, ev: Mapping[str, Any], out: _Out) -> None:
    etype, actor = text(ev.get("type")), text(ev.get("actor"))
    when = text(ev.get("time")).replace("T", " ", 1)  # RFC 3339 allows the space; it wraps
    body = as_map(ev.get("body"))
    if etype == "privacy.spent":
        _privacy(ev, out)
        return
    job = None if etype == "checkpoint.cosigned" else runs.route(etype, body)
    if job is None:
        return
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
        for p in as_list(body.get("partners")):
            p = as_map(p)
            job.joined[text(p.get("name"))] = (text(p.get("dataset_hash")), text(p.get("n_rows")))
        for r in as_list(body.get("refused")):
            r = as_map(r)
            job.refused[text(r.get("partner"))] = text(r.get("reason"))
            out.refusal(when, actor, "participation refused", job, text(r.get("partner")), r)
    elif etype == "round.aggregated":
        contributions = as_map(body.get("contributions"))
        step = text(body.get("step"))
        job.coordinator = job.coordinator or actor
        partners = tuple(text(p) for p in as_list(body.get("partners")))
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
        priv = sorted(as_map(body.get("privacy")).items())
        privacy = ", ".join(f"{k}={text(v)}" for k, v in priv)
        job.sent.setdefault(actor, []).append((when, text(body.get("reply")), privacy))
    elif etype == "checkpoint.cosignatures":
        cp, refused = as_map(body.get("checkpoint")), as_map(body.get("cosign_refused"))
        job.checkpoints.append((text(cp.get("size")), text(cp.get("root"))))
        line = f"checkpoint of size {text(cp.get('size'))} cosigned by "
        line += ", ".join(text(n) for n in as_list(body.get("cosigned_by"))) or "nobody"
        line += "".join(f"; {text(n)} refused: {text(r)}" for n, r in refused.items())
        job.cosignatures.append(line)
    elif etype == "request.refused":
        out.refusal(when, actor, etype, job, text(body.get("action")), body)


def _fold_partner(runs: RunIndex, origin: str, ev: Mapping[str, Any], out: _Out) -> None:
    """An event of partner ``origin``'s own log: its ledger rows and its refusals."""
    etype = text(ev.get("type"))
    if etype == "privacy.spent":
        _privacy(ev, out)
    if etype != "request.refused":
        return
    actor, when = text(ev.get("actor")), text(ev.get("time")).replace("T", " ", 1)
    body = as_map(ev.get("body"))
    job = runs.find(body)
    if job is None:  # a run the coordinator's log lacks (audit crossref reports that)
        job = JobRun(text(body.get("digest")), text(body.get("run")), text(body.get("job")))
    elif actor not in job.joined:
        step = text(body.get("step"))
        what = (text(body.get("error")) or "refused") + (f" at {step}" if step else "")
        job.partner_refused.setdefault(actor, f"{what} (recorded in {origin}'s own log)")
    out.refusal(when, actor, etype, job, text(body.get("action")), body, log=origin)


def _cross_check(
    job: JobRun, purpose: PurposeRecord | None, registered: bool, actors: set[str], out: _Out
) -> None:
    d, sub = job.key, job.submitted
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
    basis = as_map(sub.get("legal_basis"))
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


def _provisions(
    job: JobRun, frozen: JobProvenance, purpose: PurposeRecord | None, out: _Out
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
                job.key,
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
                run=job.run,
            )
        )
    return result


def gather_jobs(
    events: Sequence[Mapping[str, Any]],
    *,
    purposes: Mapping[str, PurposeRecord] | None,
    pinned: Collection[str] | None = None,
    partner_logs: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> Gathered:
    """Fold events (in log order) into the report's per-run records, with cross-checks.

    ``purposes`` is the record of processing activities by purpose id (``None``
    when none was supplied: the registry checks are then skipped).  ``pinned``: the
    names the officer pinned (``VerifiedBundle.policy.keys``); a ``privacy.spent`` by
    any other actor is a warning, not a ledger row (``None``: every actor counts).
    ``partner_logs``: the verified events of partners' own logs by log origin; their
    ``privacy.spent`` join the ledger and their ``request.refused`` the refusals.
    """
    runs = RunIndex()
    out = _Out(pinned=None if pinned is None else frozenset(pinned))
    for ev in events:
        _fold(runs, ev, out)
    for origin, theirs in (partner_logs or {}).items():
        for ev in theirs:
            _fold_partner(runs, origin, ev, out)
    actors = {text(ev.get("actor")) for ev in events}
    frozen, provisions = [], []
    for job in runs.runs:
        purpose = (purposes or {}).get(job.info("purpose"))
        _cross_check(job, purpose, purposes is not None, actors, out)
        f = job.freeze(purpose)
        frozen.append(f)
        provisions.extend(_provisions(job, f, purpose, out))
    return Gathered(
        jobs=tuple(frozen),
        provisions=tuple(provisions),
        privacy=tuple(out.privacy),
        refusals=tuple(out.refusals),
        findings=tuple(out.findings),
    )
