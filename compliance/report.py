"""``fedcollab audit report``: the compliance report of an audit bundle, as HTML and PDF.

The report is made only from a bundle that verifies (fail closed: a bundle that
does not verify raises :class:`~common.errors.AuditVerificationError` and
nothing is written).  Sections: cover and verdict; the record of processing
activities (GDPR Art. 30(1), PIPL Arts. 54-56); per-job provenance; the PIPL
Art. 23 provision register; the privacy-budget ledger; refusals; the
log-integrity attestation (RFC 9162 tree, C2SP signed-note checkpoints); an
appendix of event types.

>>> html, pdf = write_report(Path("bundle"), registry=Path("data/registry.example.json"),
...                          jobs=[Path("results/job-1")], policy=policy,
...                          out_dir=Path("report"))

Notes
-----
* The events come from :class:`~compliance.bundle.VerifiedBundle`, the very
  bytes that were verified: the report never re-reads the bundle's files.
* Both files are rendered in memory and then written atomically, so a failure
  leaves no half-written report behind.
* A job folder's attributions and segment profiles, when present, become the
  job's "Model insights" (:mod:`compliance.report_insights`), each marked with
  whether the log's ``model.released`` hashed that very file.
* Job folders are cross-checked against the log: the model card's digest and
  dataset hashes, and the SHA-256 of every output ``model.released`` names.
  Output names come from the log and are looked up only when they are plain
  file names, so a crafted name cannot make the report hash files elsewhere.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from fedcollab.common.atomic import write_atomic
from fedcollab.common.errors import AuditVerificationError, ComplianceError
from fedcollab.compliance.bundle import VerifiedBundle, verify_bundle
from fedcollab.compliance.crossref import CrossCheck, cross_check
from fedcollab.compliance.expected_head import (
    ExpectedHead,
    check_expected_heads,
    check_heads_apply,
)
from fedcollab.compliance.registry import Registry, load_registry
from fedcollab.compliance.report_insights import read_insights
from fedcollab.compliance.report_jobs import gather_jobs
from fedcollab.compliance.report_model import (
    KNOWN_EVENT_TYPES,
    Attestation,
    Finding,
    JobProvenance,
    Output,
    PartnerAttestation,
    PurposeRecord,
    ReportModel,
    text,
)
from fedcollab.compliance.report_render import pdf_bytes, render_html, render_pdf
from fedcollab.compliance.trust import TrustPolicy

__all__ = ["ReportModel", "build_report", "render_html", "render_pdf", "write_report"]


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_OK = "verified"


def _read_verified(bundle: Path, policy: TrustPolicy) -> VerifiedBundle:
    """Verify ``bundle`` under ``policy``; the result holds the verified events."""
    return verify_bundle(bundle, policy)


def _attestation(
    verified: VerifiedBundle,
    *,
    started: str,
    elapsed: float,
    cross: CrossCheck | None,
    partner_names: Sequence[str],
) -> Attestation:
    latest = verified.checkpoints[-1]
    newest = verified.newest_cosigned()
    own = {c.partner: c for c in cross.cosigned} if cross is not None else {}
    names = sorted({*newest, *own, *partner_names, *verified.policy.required_cosigners})
    partners: list[PartnerAttestation] = []
    for name in names:
        if name == verified.origin:
            continue
        on_note = newest.get(name)
        theirs = own.get(name)
        partners.append(
            PartnerAttestation(
                name=name,
                size=str(on_note[0].size) if on_note else "",
                root_hex=on_note[0].root.hex() if on_note else "",
                key_check=(
                    "verified against the pinned key"
                    if on_note and on_note[1] == "verified"
                    else "UNVERIFIED KEY: not pinned, not counted"
                    if on_note
                    else "no cosignature in the bundle"
                ),
                own_record=(
                    f"size {theirs.size}, root {theirs.root_hex}"
                    if theirs is not None
                    else "its bundle was checked: no cosigning recorded"
                    if name in partner_names
                    else "its bundle was not given"
                ),
                required=name in verified.policy.required_cosigners,
            )
        )
    return Attestation(
        bundle=str(verified.path),
        origin=verified.origin,
        size=verified.size,
        root_hex=verified.root_hex,
        checkpoints=tuple(
            (
                c.size,
                (
                    verified.origin,
                    *(n if st == _OK else f"{n} (unverified key)" for n, st in c.cosignatures),
                ),
            )
            for c in verified.checkpoints
        ),
        signers=(verified.origin, *latest.cosigned_by()),
        cosigners=latest.cosigned_by(),
        keys=verified.keys,
        actors=verified.actors,
        manifest_sha256=verified.manifest_sha256,
        verified_at=started,
        verify_seconds=round(elapsed, 3),
        partners=tuple(partners),
        cross_findings=tuple(str(f) for f in cross.findings) if cross is not None else (),
        cross_checked=cross is not None,
        cross_cut_short=cross.cut_short if cross is not None else (),
        unverified_cosigners=tuple(
            sorted({n for c in verified.checkpoints for n, st in c.cosignatures if st != _OK})
        ),
    )


def _purposes(registry: Registry) -> tuple[PurposeRecord, ...]:
    return tuple(
        PurposeRecord(
            id=p.id,
            name=p.name,
            description=p.description,
            controller=p.controller,
            legal_basis_pipl=p.legal_basis.pipl,
            legal_basis_gdpr=p.legal_basis.gdpr,
            legal_basis_note=p.legal_basis.note,
            separate_consent_for_provision=p.consent.separate_consent_for_provision,
            sensitive_data=p.consent.sensitive_data,
            gdpr_explicit_consent=p.consent.gdpr_explicit_consent,
            data_categories=p.data_categories,
            retention_days=f"{p.retention_days} days",
            recipients=p.recipients,
            cross_border=f"yes ({p.cross_border_mechanism})" if p.cross_border else "no",
            impact_assessment_ref=p.impact_assessment_ref,
            valid_from=p.valid_from.isoformat(),
            valid_until=p.valid_until.isoformat(),
        )
        for p in registry.purposes
    )


# --- job output folders ------------------------------------------------------------------


class _CardJob(BaseModel):
    # A model card has many fields the report does not use: only these are read,
    # strictly typed; the rest is ignored rather than refused.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    name: str
    digest: str


class _CardPartner(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    name: str
    dataset_hash: str


class _ModelCard(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    job: _CardJob
    partners: list[_CardPartner] = []


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _check_output(folder: Path, o: Output, d: str, found: list[Finding]) -> Output:
    name = o.filename
    if name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        found.append(Finding("warning", d, f"output name {name!r} is not a plain file name"))
        return replace(o, check="not checked: not a plain file name")
    path = folder / name
    if not path.is_file():
        found.append(Finding("warning", d, f"{folder}: released output {name} is missing"))
        return replace(o, check=f"missing from {folder}")
    actual = _sha256_file(path)
    if actual != o.sha256:
        msg = f"{folder}/{name}: hash {actual} differs from the released {o.sha256}"
        found.append(Finding("error", d, msg))
        return replace(o, check=f"MISMATCH: {folder} holds {actual}")
    return replace(o, check=f"matches {folder}")


def _check_job_dir(folder: Path, jobs: list[JobProvenance], found: list[Finding]) -> None:
    """Cross-check one job folder against the log; replaces the job's outputs in ``jobs``."""
    card_path = folder / "model_card.json"
    try:
        card = _ModelCard.model_validate_json(card_path.read_bytes())
    except OSError as exc:
        raise ComplianceError(
            f"{card_path} cannot be read: {exc.strerror}",
            hint="pass the output folder of a job (the one holding model_card.json)",
        ) from exc
    except ValidationError as exc:
        raise ComplianceError(f"{card_path} is not a model card: {exc.errors()[0]['msg']}") from exc
    at = next((i for i, j in enumerate(jobs) if j.digest == card.job.digest), None)
    if at is None:
        msg = f"{folder}: model card of job {card.job.name!r} has digest {card.job.digest}, "
        found.append(Finding("error", "", msg + "which appears nowhere in the log"))
        return
    job, d = jobs[at], jobs[at].digest
    logged = {p.name: p.dataset_hash for p in job.participants if p.dataset_hash}
    for p in card.partners:
        if p.name not in logged:
            msg = f"{folder}: model card lists {p.name!r}, whom the log does not record joining"
            found.append(Finding("error", d, msg))
        elif logged[p.name] != p.dataset_hash:
            msg = f"{folder}: model card gives {p.name!r} dataset {p.dataset_hash}, "
            found.append(Finding("error", d, msg + f"the log records {logged[p.name]}"))
    if not job.released:
        msg = f"{folder}: the log records no model.released for this job; outputs are unattested"
        found.append(Finding("error", d, msg))
    outputs = tuple(_check_output(folder, o, d, found) for o in job.outputs)
    insights, problems = read_insights(folder, released={o.filename: o.sha256 for o in job.outputs})
    found.extend(Finding("warning", d, p) for p in problems)
    jobs[at] = replace(job, outputs=outputs, insights=insights)


# --- assembly ----------------------------------------------------------------------------


def build_report(
    bundle: Path,
    *,
    registry: Path | None,
    jobs: Sequence[Path],
    policy: TrustPolicy,
    ledger_bundles: Sequence[Path] = (),
    expected_heads: Sequence[ExpectedHead] = (),
) -> ReportModel:
    """Verify ``bundle`` under ``policy`` (raising AuditVerificationError on any failure)
    and gather the report.

    ``ledger_bundles``: partners' audit bundles, each verified under the same
    pins; their ``privacy.spent`` events (their privacy-budget ledgers) join the
    report's privacy-budget section, and they are cross-checked against
    ``bundle`` (:func:`compliance.crossref.cross_check`): every finding is listed
    in the attestation section. ``expected_heads``: heads seen before
    (:mod:`compliance.expected_head`); a bundle cut back below one is refused.
    """
    started, t0 = _utc_now(), time.monotonic()
    verified = _read_verified(Path(bundle), policy)
    check_expected_heads(verified, expected_heads)
    elapsed = time.monotonic() - t0
    events = [e if isinstance(e, dict) else {} for e in verified.events()]
    partner_bundles: dict[str, VerifiedBundle] = {}
    for extra in ledger_bundles:
        pv = _read_verified(Path(extra), policy.without_requirements())
        check_expected_heads(pv, expected_heads)
        if pv.origin in partner_bundles or pv.origin == verified.origin:
            raise ComplianceError(f"{extra}: a second bundle of the log {pv.origin!r}")
        partner_bundles[pv.origin] = pv
    check_heads_apply(expected_heads, [verified.origin, *partner_bundles])
    cross = cross_check(verified, partner_bundles) if partner_bundles else None
    attestation = _attestation(
        verified, started=started, elapsed=elapsed, cross=cross, partner_names=list(partner_bundles)
    )
    purposes: tuple[PurposeRecord, ...] | None = None
    controller = ""
    if registry is not None:
        loaded = load_registry(registry)
        purposes, controller = _purposes(loaded), loaded.controller
    by_id = None if purposes is None else {p.id: p for p in purposes}
    gathered = gather_jobs(events, purposes=by_id, pinned=set(policy.keys))
    provenance, findings = list(gathered.jobs), list(gathered.findings)
    privacy = list(gathered.privacy)
    for pv in partner_bundles.values():
        spent = [e for e in pv.events() if text(e.get("type")) == "privacy.spent"]
        partner = gather_jobs(spent, purposes=by_id, pinned=set(policy.keys))
        privacy.extend(partner.privacy)
        findings.extend(partner.findings)
    for folder in jobs:
        _check_job_dir(Path(folder), provenance, findings)
    order = {"error": 0, "warning": 1, "info": 2}
    counts = Counter(text(e.get("type")) for e in events)
    return ReportModel(
        controller=controller or "not stated (no record of processing activities supplied)",
        generated_at=_utc_now(),
        registry_path=str(registry) if registry is not None else None,
        job_dirs=tuple(str(j) for j in jobs),
        attestation=attestation,
        purposes=purposes,
        jobs=tuple(provenance),
        provisions=gathered.provisions,
        privacy=tuple(privacy),
        refusals=gathered.refusals,
        findings=tuple(sorted(findings, key=lambda f: order[f.severity])),
        event_counts=tuple((t, n, t in KNOWN_EVENT_TYPES) for t, n in sorted(counts.items())),
    )


def write_report(
    bundle: Path,
    *,
    registry: Path | None,
    jobs: Sequence[Path],
    policy: TrustPolicy,
    out_dir: Path,
    ledger_bundles: Sequence[Path] = (),
    expected_heads: Sequence[ExpectedHead] = (),
) -> tuple[Path, Path]:
    """Verify, gather and write ``report.html`` and ``report.pdf``; returns their paths.

    A report whose logs disagree (cross-log findings) is written, so the officer
    sees every finding, and then AuditVerificationError is raised (exit 31).
    """
    model = build_report(
        bundle,
        registry=registry,
        jobs=jobs,
        policy=policy,
        ledger_bundles=ledger_bundles,
        expected_heads=expected_heads,
    )
    html = render_html(model).encode("utf-8")
    pdf = pdf_bytes(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, pdf_path = out_dir / "report.html", out_dir / "report.pdf"
    write_atomic(html_path, html)
    write_atomic(pdf_path, pdf)
    if model.attestation.cross_findings:
        lines = "\n".join(f"  - {f}" for f in model.attestation.cross_findings)
        raise AuditVerificationError(
            f"the logs disagree ({len(model.attestation.cross_findings)} finding(s)); the report "
            f"{html_path} lists them:\n{lines}",
            hint="each finding names the party whose log is wrong; see docs/compliance.md",
        )
    return html_path, pdf_path
