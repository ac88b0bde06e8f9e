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
* The same job spec may run many times: the report has one entry per run (its
  ``run`` id), and each job folder is matched to the run it holds and checked
  against that run's ``model.released`` only (:mod:`compliance.report_folders`).
* The partners' bundles (``--ledger``) add their privacy-budget ledgers and their
  own ``request.refused`` events (a partner refusing a run at the handshake is
  recorded only in its own log).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

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
from fedcollab.compliance.report_folders import check_job_dir
from fedcollab.compliance.report_jobs import gather_jobs
from fedcollab.compliance.report_model import (
    KNOWN_EVENT_TYPES,
    Attestation,
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
    gathered = gather_jobs(
        events,
        purposes=by_id,
        pinned=set(policy.keys),
        partner_logs={
            name: [e if isinstance(e, dict) else {} for e in pv.events()]
            for name, pv in partner_bundles.items()
        },
    )
    provenance, findings = list(gathered.jobs), list(gathered.findings)
    for folder in jobs:
        check_job_dir(Path(folder), provenance, findings)
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
        privacy=gathered.privacy,
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
    fail_on_errors: bool = False,
    shown_as: str = "",
) -> tuple[Path, Path]:
    """Verify, gather and write ``report.html`` and ``report.pdf``; returns their paths.

    A report whose logs disagree (cross-log findings) is written, so the officer
    sees every finding, and then AuditVerificationError is raised (exit 31).  With
    ``fail_on_errors`` (``audit report``), so is a report with error-level findings
    (an output that is not the one its run released, a provision without consent...).
    The error names the report by its path, or as ``shown_as`` (the console, whose
    report folder is gone by then).
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
    where = shown_as or str(html_path)
    write_atomic(html_path, html)
    write_atomic(pdf_path, pdf)
    if model.attestation.cross_findings:
        lines = "\n".join(f"  - {f}" for f in model.attestation.cross_findings)
        raise AuditVerificationError(
            f"the logs disagree ({len(model.attestation.cross_findings)} finding(s)); the report "
            f"{where} lists them:\n{lines}",
            hint="each finding names the party whose log is wrong; see docs/compliance.md",
        )
    if fail_on_errors and model.errors:
        lines = "\n".join(f"  - {f.job + ': ' if f.job else ''}{f.message}" for f in model.errors)
        raise AuditVerificationError(
            f"the report has {len(model.errors)} error finding(s); {where} lists them "
            f"with every warning:\n{lines}",
            hint="each finding names the run (job digest and run id) it concerns; "
            "see docs/compliance.md",
        )
    return html_path, pdf_path
