"""Which run of a job each audit event belongs to, for the compliance report.

One job spec (one digest) may run many times: refused by every partner first, then
completed twice, say.  Each run is its own report entry (:class:`JobRun`), with its
own status, rounds, refusals and released outputs; events are never merged across
runs.  :class:`RunIndex` routes an event by the ``run`` id its body carries
(``coordinator.audit.JobAudit`` puts it in every event of a run):

>>> runs = RunIndex()
>>> first = runs.route("job.submitted", {"job": "p", "digest": "sha256:ab"})
>>> runs.route("job.started", {"job": "p", "digest": "sha256:ab", "run": "r1"}) is first
True

Notes
-----
* ``job.submitted`` is logged by the policy gate before the run exists, so it has no
  run id: the next ``job.started`` of the same digest takes the oldest submission not
  started yet.  A ``job.refused`` (refused at submission) is an entry of its own.
* Logs written before runs had ids carry no ``run``: their events are grouped per
  digest as before (each submission still starts a new entry).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedcollab.compliance.report_model import (
    Consent,
    Dropout,
    JobProvenance,
    Output,
    Participant,
    PurposeRecord,
    Round,
    as_list,
    as_map,
    run_key,
    text,
)

__all__ = ["JobRun", "RunIndex"]


@dataclass
class JobRun:
    """Mutable accumulator for one run of a job while the events are folded."""

    digest: str
    run: str = ""
    name: str = ""
    submitted: Mapping[str, Any] = field(default_factory=dict)
    submitted_at: str = ""
    coordinator: str = ""
    mode: str = ""
    started: Mapping[str, Any] = field(default_factory=dict)
    end: tuple[str, str] | None = None  # (status, detail)
    joined: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (hash, rows)
    refused: dict[str, str] = field(default_factory=dict)
    #: Refusals partners recorded in their own logs (--ledger bundles): name -> what.
    partner_refused: dict[str, str] = field(default_factory=dict)
    dropouts: list[Dropout] = field(default_factory=list)
    rounds: list[Round] = field(default_factory=list)
    contributions: list[tuple[str, str, str]] = field(default_factory=list)  # partner, hash, step
    sent: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)  # time, hash, priv
    released: Mapping[str, Any] | None = None
    cosignatures: list[str] = field(default_factory=list)
    checkpoints: list[tuple[str, str]] = field(default_factory=list)  # (size, root) cosigned

    @property
    def key(self) -> str:
        return run_key(self.digest, self.run)

    def info(self, key: str) -> str:
        """A job.submitted field, else the same field of job.started."""
        return text(self.submitted.get(key)) or text(self.started.get(key))

    def _participants(self) -> list[Participant]:
        declared = [text(p) for p in as_list(self.submitted.get("participants"))]
        dropped = {d.partner: d for d in self.dropouts}
        participants = []
        for name in dict.fromkeys([*declared, *self.joined, *self.refused, *self.partner_refused]):
            dataset, rows = self.joined.get(name, ("", ""))
            if name in self.refused or name in self.partner_refused:
                outcome = f"refused: {self.refused.get(name) or self.partner_refused[name]}"
            elif name in dropped:
                outcome = f"dropped at step {dropped[name].step}: {dropped[name].reason}"
            elif name in self.joined:
                outcome = "took part" if self.end is None else f"took part ({self.end[0]})"
            else:
                outcome = "declared, did not join"
            participants.append(Participant(name, dataset, rows, outcome))
        return participants

    def freeze(self, purpose: PurposeRecord | None) -> JobProvenance:
        """This run's frozen record for the report."""
        sub, rel = self.submitted, as_map(self.released)
        if self.end is not None:
            status, detail = self.end
        elif self.started:
            status, detail = "incomplete", "no job.completed or job.failed in the log"
        elif sub:
            status, detail = "submitted", "never started"
        else:
            status, detail = "not recorded", "this log holds only partner-side events of the job"
        basis = as_map(sub.get("legal_basis"))
        fields = ("partner", "purpose", "kind", "evidence_ref", "subjects_covered")
        return JobProvenance(
            digest=self.digest,
            name=self.name,
            purpose=self.info("purpose"),
            purpose_name=purpose.name if purpose else "",
            legal_basis_pipl=text(basis.get("pipl")),
            legal_basis_gdpr=text(basis.get("gdpr")),
            task=self.info("task"),
            mode=self.mode,
            submitted_at=self.submitted_at,
            submitted_by=self.coordinator,
            status=status,
            status_detail=detail,
            participants=tuple(self._participants()),
            consents=tuple(
                Consent(*(text(as_map(c).get(f)) for f in fields))
                for c in as_list(sub.get("consents"))
            ),
            grants=tuple(
                (text(as_map(g).get("partner")), text(as_map(g).get("grant_digest")))
                for g in as_list(sub.get("grants"))
            ),
            dropouts=tuple(self.dropouts),
            rounds=tuple(self.rounds),
            protections=tuple(dict.fromkeys(r.protection for r in self.rounds)),
            released=self.released is not None,
            outputs=tuple(Output(f, text(h), "") for f, h in as_map(rel.get("outputs")).items()),
            recipients=tuple(text(r) for r in as_list(rel.get("recipients"))),
            metrics=tuple((k, text(v)) for k, v in sorted(as_map(rel.get("metrics")).items())),
            cosignatures=tuple(self.cosignatures),
            run=self.run,
            checkpoints=tuple(self.checkpoints),
        )


class RunIndex:
    """The runs of a log in the order they first appear, and the event -> run routing."""

    def __init__(self) -> None:
        self.runs: list[JobRun] = []
        self._by_run: dict[tuple[str, str], JobRun] = {}
        self._waiting: dict[str, list[JobRun]] = {}  # submissions without a run, oldest first
        self._runless: dict[str, JobRun] = {}  # per digest: the entry of run-less events

    def route(self, etype: str, body: Mapping[str, Any]) -> JobRun | None:
        """The run ``body`` belongs to (created if new); ``None`` if it names no job."""
        digest = self._digest(body)
        if digest is None:
            return None
        run = text(body.get("run"))
        if etype in ("job.submitted", "job.refused"):  # each submission is an entry
            job = self._new(digest, run)
            if etype == "job.submitted" and not run:
                self._waiting.setdefault(digest, []).append(job)
        elif run:
            found = self._by_run.get((digest, run))
            if found is None and etype == "job.started":
                found = self._claim(digest, run)
            job = found or self._new(digest, run)
        else:
            job = self._runless.get(digest) or self._new(digest, "")
        job.name = job.name or text(body.get("job"))
        return job

    def find(self, body: Mapping[str, Any]) -> JobRun | None:
        """The existing run an event of another log (a partner's) refers to, if any."""
        digest = self._digest(body)
        if digest is None:
            return None
        run = text(body.get("run"))
        return self._by_run.get((digest, run)) if run else self._runless.get(digest)

    @staticmethod
    def _digest(body: Mapping[str, Any]) -> str | None:
        digest, name = text(body.get("digest")), text(body.get("job"))
        if not (digest or name):
            return None
        return digest or f"(no digest) {name}"

    def _new(self, digest: str, run: str) -> JobRun:
        job = JobRun(digest, run)
        self.runs.append(job)
        if run:
            self._by_run[(digest, run)] = job
        else:
            self._runless[digest] = job
        return job

    def _claim(self, digest: str, run: str) -> JobRun | None:
        """The oldest submission of ``digest`` no run has started yet, now ``run``'s."""
        waiting = self._waiting.get(digest, [])
        while waiting:
            job = waiting.pop(0)
            if job.started or job.end is not None or job.run:
                continue  # an old log's run-less events already made it a run
            job.run = run
            self._by_run[(digest, run)] = job
            if self._runless.get(digest) is job:
                del self._runless[digest]
            return job
        return None
