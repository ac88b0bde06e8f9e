"""The compliance report's content: frozen records, no I/O.

:func:`compliance.report.build_report` fills a :class:`ReportModel` from a
verified audit bundle (``compliance.report_jobs`` folds the events), and
``compliance.report_render`` renders it as HTML and PDF.  Every field is a
display string already (empty when the log left it out), so renderers never
interpret log content: they escape it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "COVERAGE",
    "KNOWN_EVENT_TYPES",
    "LIMITS",
    "Attestation",
    "Consent",
    "Dropout",
    "Finding",
    "JobInsights",
    "JobProvenance",
    "Output",
    "Participant",
    "PartnerAttestation",
    "PrivacySpend",
    "Provision",
    "PurposeRecord",
    "Refusal",
    "ReportModel",
    "Round",
    "Severity",
    "as_list",
    "as_map",
    "run_key",
    "text",
]

KNOWN_EVENT_TYPES = frozenset(
    {
        "job.submitted",
        "job.refused",
        "job.started",
        "job.participants",
        "round.aggregated",
        "partner.dropped",
        "model.released",
        "job.completed",
        "job.failed",
        "request.received",
        "data.sent",
        "request.refused",
        "checkpoint.cosigned",
        "checkpoint.cosignatures",
        "privacy.spent",
    }
)

COVERAGE = (
    "Every file of the bundle matches its SHA-256 in manifest.json, and no file is missing "
    "or added.",
    "Every entry is in RFC 8785 canonical form, at its index, and well formed; event times "
    "never run backwards.  An event by another party than the log carries a valid Ed25519 "
    "signature by the actor it names (pinned key, or the bundle's key for actors not "
    "pinned); the log's own events, signed with the log key, are authenticated by the "
    "log's signed checkpoints over the recomputed Merkle root (the same key signs both).",
    "The RFC 9162 Merkle root recomputed from the entries equals the root of every "
    "checkpoint, and the latest checkpoint covers every entry (nothing appended unsigned, "
    "nothing cut inside a checkpoint).",
    "Every checkpoint is signed by the pinned log key; a cosignature counts only under its "
    "cosigner's pinned key (others are listed as unverified key), and every cosignature "
    "the log recorded receiving is still on its checkpoint.",
    "Consecutive checkpoints are linked by RFC 9162 consistency proofs: the log was only "
    "ever appended to.",
)
LIMITS = (
    "The manifest itself is not signed: authenticity rests on the pinned log key.  Keys "
    "shipped in the bundle never make a signature count.",
    "Signatures prove who recorded each event, not that what they recorded is true.",
    "A bundle cut back to one of its own earlier checkpoints verifies on its own (no key "
    "needed): its length is bound only by a head seen before (--expect-head) or by the "
    "partners' bundles (--ledger), whose records of the checkpoints they cosigned are "
    "compared.",
    "The record of processing activities and the job output folders are not covered by the "
    "log's signatures; the report cross-checks job outputs against the hashes the log attests.",
)


@dataclass(frozen=True)
class PartnerAttestation:
    """Per partner: the newest checkpoint of this log it cosigned, and how that was checked."""

    name: str
    size: str  # newest checkpoint carrying its cosignature line ("" if none)
    root_hex: str
    key_check: str  # verified against the pinned key / unverified key / none
    own_record: str  # what the partner's own log records cosigning, when its bundle was given
    required: bool


@dataclass(frozen=True)
class Attestation:
    """What :func:`verify_bundle` attested, plus when and over which manifest."""

    bundle: str
    origin: str
    size: int
    root_hex: str
    checkpoints: tuple[tuple[int, tuple[str, ...]], ...]
    signers: tuple[str, ...]  # of the latest checkpoint, the log origin first
    cosigners: tuple[str, ...]
    keys: tuple[tuple[str, str, bool], ...]  # (name, key id hex, pinned)
    actors: tuple[tuple[str, int], ...]
    manifest_sha256: str
    verified_at: str
    verify_seconds: float
    partners: tuple[PartnerAttestation, ...] = ()
    cross_findings: tuple[str, ...] = ()
    cross_checked: bool = False
    #: Partners' replies in flight when a run failed or the partner was dropped, which
    #: the coordinator never recorded (not findings; compliance.crossref.CrossCheck.cut_short).
    cross_cut_short: tuple[str, ...] = ()
    unverified_cosigners: tuple[str, ...] = ()
    covers: tuple[str, ...] = COVERAGE
    limits: tuple[str, ...] = LIMITS

    @property
    def verdict(self) -> str:
        text = f"Log verified: {self.size} entries, root {self.root_hex}, signed by {self.origin}"
        if self.cosigners:
            return f"{text}, latest checkpoint cosigned by {', '.join(self.cosigners)}"
        cosigned = [
            (size, [n for n in names if n != self.origin]) for size, names in self.checkpoints
        ]
        cosigned = [(size, names) for size, names in cosigned if names]
        if not cosigned:
            return f"{text}; no checkpoint is cosigned"
        size, names = cosigned[-1]
        return (
            f"{text}; the latest checkpoint is not cosigned yet, the checkpoint at size "
            f"{size} is cosigned by {', '.join(names)}"
        )


@dataclass(frozen=True)
class PurposeRecord:
    """One purpose of the record of processing activities, as display strings."""

    id: str
    name: str
    description: str
    controller: str
    legal_basis_pipl: str
    legal_basis_gdpr: str
    legal_basis_note: str
    separate_consent_for_provision: bool
    sensitive_data: bool
    gdpr_explicit_consent: bool
    data_categories: tuple[str, ...]
    retention_days: str
    recipients: tuple[str, ...]
    cross_border: str
    impact_assessment_ref: str
    valid_from: str
    valid_until: str


Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    severity: Severity
    job: str  # the run's key (:func:`run_key`), a job digest, or "" for no single job
    message: str


def run_key(digest: str, run: str) -> str:
    """How findings name one run of a job: its digest, then its run id when the log has one.

    The same job spec (one digest) may run many times; each run is its own report entry.
    """
    return f"{digest} run {run}" if run else digest


@dataclass(frozen=True)
class Participant:
    name: str
    dataset_hash: str
    n_rows: str
    outcome: str


@dataclass(frozen=True)
class Consent:
    partner: str
    purpose: str
    kind: str
    evidence_ref: str
    subjects_covered: str


@dataclass(frozen=True)
class Dropout:
    partner: str
    step: str
    reason: str
    time: str


@dataclass(frozen=True)
class Round:
    step: str
    time: str
    partners: tuple[str, ...]
    protection: str
    aggregate: str


@dataclass(frozen=True)
class Output:
    filename: str
    sha256: str
    check: str  # result of the job-folder cross-check, "" when no folder was given


@dataclass(frozen=True)
class JobInsights:
    """A job folder's model insights (:mod:`compliance.report_insights`), as display strings."""

    method: str  # "" when the folder has no attributions.json
    metric: str
    baseline: str
    note: str
    attributions: tuple[tuple[str, str, str], ...]  # (feature, importance, direction)
    segments: tuple[tuple[str, str, str, str, str, str], ...]
    sources: tuple[tuple[str, str], ...]  # (file, attestation)


@dataclass(frozen=True)
class JobProvenance:
    digest: str
    name: str
    purpose: str
    purpose_name: str
    legal_basis_pipl: str
    legal_basis_gdpr: str
    task: str
    mode: str
    submitted_at: str
    submitted_by: str
    status: str
    status_detail: str
    participants: tuple[Participant, ...]
    consents: tuple[Consent, ...]
    grants: tuple[tuple[str, str], ...]
    dropouts: tuple[Dropout, ...]
    rounds: tuple[Round, ...]
    protections: tuple[str, ...]
    released: bool  # a model.released event exists
    outputs: tuple[Output, ...]
    recipients: tuple[str, ...]
    metrics: tuple[tuple[str, str], ...]
    cosignatures: tuple[str, ...]
    insights: JobInsights | None = None  # from the job folder (--job), when it has any
    #: The run id the log's events carry ("" in a log written before runs had ids, and
    #: for a submission refused before any run started).
    run: str = ""
    #: (size, root) of each checkpoint this run's cosigning recorded (matches audit.json).
    checkpoints: tuple[tuple[str, str], ...] = ()
    #: The --job folders matched to this run, each with how it was matched.
    folders: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """This run's name in findings (:func:`run_key`)."""
        return run_key(self.digest, self.run)

    @property
    def title(self) -> str:
        return f"Job {self.name or '-'}" + (f", run {self.run}" if self.run else "")


@dataclass(frozen=True)
class Provision:
    """One PIPL Art. 23 provision: a partner's aggregates provided to the coordinator."""

    job: str
    digest: str
    provider: str
    dataset_hash: str
    recipient: str
    onward_recipients: tuple[str, ...]
    purpose: str
    consent_kind: str
    evidence_ref: str
    subjects_covered: str
    first_time: str
    last_time: str
    releases: int  # data.sent events by the partner
    contributions: int  # rounds in which the coordinator aggregated it
    protection: str
    run: str = ""


@dataclass(frozen=True)
class PrivacySpend:
    time: str
    actor: str
    job: str
    dataset: str
    mechanism: str
    epsilon: str
    delta: str
    accountant: str
    cumulative_epsilon: str
    cap: str
    over_cap: bool
    run: str = ""


@dataclass(frozen=True)
class Refusal:
    time: str
    actor: str
    type: str
    job: str
    digest: str
    subject: str  # purpose, action or partner refused
    error: str
    reason: str
    run: str = ""
    log: str = ""  # the partner whose own log (--ledger bundle) recorded it; "" for this log


@dataclass(frozen=True)
class ReportModel:
    controller: str
    generated_at: str
    registry_path: str | None
    job_dirs: tuple[str, ...]
    attestation: Attestation
    purposes: tuple[PurposeRecord, ...] | None  # None: no registry supplied
    jobs: tuple[JobProvenance, ...]
    provisions: tuple[Provision, ...]
    privacy: tuple[PrivacySpend, ...]
    refusals: tuple[Refusal, ...]
    findings: tuple[Finding, ...]
    event_counts: tuple[tuple[str, int, bool], ...]  # (type, count, known)

    @property
    def unknown_events(self) -> tuple[tuple[str, int], ...]:
        return tuple((t, n) for t, n, known in self.event_counts if not known)

    def findings_for(self, key: str) -> tuple[Finding, ...]:
        """The findings about one run (``JobProvenance.key``)."""
        return tuple(f for f in self.findings if f.job == key)

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")


def text(value: object) -> str:
    """A display string for any JSON value from the log (``""`` for null/missing)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if hasattr(value, "isoformat"):  # dates from the registry
        return str(value.isoformat())
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def as_map(value: object) -> dict[str, Any]:
    """A JSON object from the log, or ``{}`` when the field holds anything else."""
    return value if isinstance(value, dict) else {}


def as_list(value: object) -> list[Any]:
    """A JSON array from the log, or ``[]`` when the field holds anything else."""
    return value if isinstance(value, list) else []
