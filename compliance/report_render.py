"""Render a :class:`~compliance.report_model.ReportModel` as self-contained HTML and as PDF.

Long module: HTML and PDF rendering of one report model, kept side by side so both show
the same sections.

HTML comes from ``templates/report.html.j2`` (Jinja2, autoescape on, inline CSS,
no external fonts or scripts, A4 print styles).  The PDF carries the same
sections, drawn with fpdf2 (pure Python).

>>> Path("report.html").write_text(render_html(model), encoding="utf-8")
>>> render_pdf(model, Path("report.pdf"))

Notes
-----
* Autoescaping is not optional here: event fields are written by partners and
  the coordinator, so a reason string may carry markup; the template never
  marks a value ``safe``.
* The PDF uses DejaVu Sans shipped inside matplotlib (a project dependency) so
  non-Latin-1 text (names, epsilon) survives; without it, the PDF falls back to
  a core font and replaces what Latin-1 cannot encode with ``?``.  Glyphs
  DejaVu lacks (e.g. CJK) are left blank in the PDF; the HTML is complete.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from fpdf.fonts import FontFace
from jinja2 import Environment, PackageLoader, StrictUndefined

from fedcollab.compliance.report_insights import pdf_insights
from fedcollab.compliance.report_model import Finding, JobProvenance, ReportModel

__all__ = ["pdf_bytes", "render_html", "render_pdf"]

_env = Environment(
    loader=PackageLoader("fedcollab.compliance", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_html(model: ReportModel) -> str:
    """The report as one self-contained HTML page."""
    return _env.get_template("report.html.j2").render(m=model, a=model.attestation)


# --- PDF ---------------------------------------------------------------------------------

_HEAD = FontFace(emphasis="BOLD", fill_color=(238, 241, 245))
_NO_PRIVACY = "No differential-privacy mechanism has been recorded in this log."


def _dejavu() -> Path | None:
    spec = importlib.util.find_spec("matplotlib")
    for location in (spec.submodule_search_locations or []) if spec else []:
        font = Path(location) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if font.is_file() and font.with_name("DejaVuSans-Bold.ttf").is_file():
            return font
    return None


class _Doc(FPDF):
    def __init__(self, model: ReportModel) -> None:
        super().__init__(orientation="landscape", format="A4")
        self.model = model
        self.set_margins(12, 12, 12)
        self.set_auto_page_break(auto=True, margin=14)
        font = _dejavu()
        self.unicode = font is not None
        if font is not None:
            self.add_font("body", "", str(font))
            self.add_font("body", "B", str(font.with_name("DejaVuSans-Bold.ttf")))
            self.family = "body"
        else:
            self.family = "helvetica"
        self.set_title("Compliance report")
        self.set_creator("fedcollab audit report")
        self.alias_nb_pages()

    def t(self, value: str) -> str:
        if self.unicode:
            return value
        return value.encode("latin-1", "replace").decode("latin-1")

    def footer(self) -> None:
        self.set_y(-10)
        self.set_font(self.family, "", 7)
        self.set_text_color(91, 100, 112)
        text = f"fedcollab compliance report - {self.model.attestation.origin} - "
        text += f"root {self.model.attestation.root_hex[:16]}... - page {self.page_no()}/{{nb}}"
        self.cell(0, 5, self.t(text), align="C")
        self.set_text_color(0, 0, 0)

    def heading(self, text: str, level: int = 1) -> None:
        size = {0: 20, 1: 14, 2: 11.5, 3: 9.5}[level]
        # A section starts a page; a sub-heading near the bottom moves to the next one.
        if level == 1 or self.get_y() > self.h - 45:
            self.add_page()
        self.ln(2 if level > 1 else 0)
        self.set_font(self.family, "B", size)
        self.multi_cell(0, size * 0.55, self.t(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        if level == 1:
            self.line(self.l_margin, self.get_y(), self.w - self.r_margin, self.get_y())
        self.ln(1.5)
        self.set_font(self.family, "", 8.5)

    def para(self, text: str, *, bold: bool = False, size: float = 8.5) -> None:
        self.set_font(self.family, "B" if bold else "", size)
        self.multi_cell(0, size * 0.5, self.t(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_font(self.family, "", 8.5)
        self.ln(1)

    def grid(
        self,
        headers: Sequence[str] | None,
        rows: Sequence[Sequence[str]],
        widths: Sequence[float] | None = None,
    ) -> None:
        self.set_font(self.family, "", 7.5)
        with self.table(
            col_widths=tuple(widths) if widths else None,
            text_align="LEFT",
            headings_style=_HEAD,
            first_row_as_headings=headers is not None,
            v_align="TOP",
            line_height=3.6,
            padding=1,
        ) as table:
            for row in [headers] if headers else []:
                table.row([self.t(c) for c in row])
            for r in rows:
                table.row([self.t(c or "-") for c in r])
        self.ln(2)
        self.set_font(self.family, "", 8.5)

    def kv(self, pairs: Sequence[tuple[str, str]]) -> None:
        self.grid(None, pairs, (1, 4))

    def findings(self, items: Sequence[Finding]) -> None:
        self.grid(
            ["Severity", "Job", "Finding"],
            [(f.severity, f.job, f.message) for f in items],
            (1, 3, 8),
        )


def _pdf_job(doc: _Doc, j: JobProvenance, model: ReportModel) -> None:
    doc.heading(j.title, 2)
    purpose = j.purpose + (f" - {j.purpose_name}" if j.purpose_name else "")
    doc.kv(
        [
            ("Job digest", j.digest),
            ("Run", j.run or "no run id in the log"),
            ("Purpose", purpose),
            (
                "Legal basis",
                f"PIPL: {j.legal_basis_pipl or '-'}; GDPR: {j.legal_basis_gdpr or '-'}",
            ),
            ("Task / mode", f"{j.task or '-'} / {j.mode or '-'}"),
            ("Submitted", f"{j.submitted_at or '-'} by {j.submitted_by or '-'}"),
            ("Status", f"{j.status} ({j.status_detail})"),
            ("Protections", f"{', '.join(j.protections) or '-'}; {len(j.rounds)} round(s)"),
            ("Recipients of outputs", ", ".join(j.recipients)),
            ("Partners' cosignatures", "\n".join(j.cosignatures)),
            *([("Job output folder", "\n".join(j.folders))] if j.folders else []),
        ]
    )
    doc.heading("Participants", 3)
    doc.grid(
        ["Partner", "Dataset (content hash)", "Rows", "Outcome"],
        [(p.name, p.dataset_hash, p.n_rows, p.outcome) for p in j.participants],
        (2, 5, 1, 3),
    )
    if j.consents:
        doc.heading("Consents at submission", 3)
        doc.grid(
            ["Partner", "Purpose", "Kind", "Evidence reference", "Subjects covered"],
            [
                (c.partner, c.purpose, c.kind, c.evidence_ref, c.subjects_covered)
                for c in j.consents
            ],
            (2, 2, 2, 4, 2),
        )
    if j.grants:
        doc.grid(["Partner", "Grant digest"], j.grants, (1, 4))
    if j.dropouts:
        doc.heading("Dropouts", 3)
        doc.grid(
            ["Partner", "Step", "Reason", "Time"],
            [(d.partner, d.step, d.reason, d.time) for d in j.dropouts],
            (2, 1, 5, 2),
        )
    doc.heading("Rounds aggregated", 3)
    doc.grid(
        ["Step", "Time", "Partners", "Protection", "Aggregate"],
        [(r.step, r.time, ", ".join(r.partners), r.protection, r.aggregate) for r in j.rounds],
        (1, 2.5, 3, 1.5, 5),
    )
    doc.heading("Outputs released", 3)
    doc.grid(
        ["File", "Hash", "Job-folder check"],
        [(o.filename, o.sha256, o.check or "not checked (no --job folder)") for o in j.outputs],
        (2, 5, 3),
    )
    if j.metrics:
        doc.para("Metrics: " + "; ".join(f"{k} = {v}" for k, v in j.metrics))
    if j.insights is not None:
        pdf_insights(doc, j.insights)
    if found := model.findings_for(j.key):
        doc.findings(found)


def pdf_bytes(model: ReportModel) -> bytes:
    """The report as PDF bytes (same sections as the HTML)."""
    a = model.attestation
    doc = _Doc(model)
    doc.add_page()
    doc.heading("Compliance report", 0)
    doc.para("Record of processing, provenance of federated jobs and attestation of the audit log.")
    doc.kv(
        [
            ("Controller", model.controller),
            ("Generated (UTC)", model.generated_at),
            ("Audit bundle", a.bundle),
            ("Log origin", a.origin),
            ("Record of processing", model.registry_path or "not supplied"),
            ("Job output folders", "\n".join(model.job_dirs) or "none supplied"),
        ]
    )
    doc.set_fill_color(230, 244, 234)
    doc.set_font(doc.family, "B", 9)
    doc.multi_cell(
        0,
        5,
        doc.t(a.verdict),
        border=1,
        fill=True,
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    doc.set_fill_color(255, 255, 255)
    doc.ln(2)
    if model.findings:
        doc.heading(f"Cross-check findings ({len(model.findings)})", 2)
        doc.findings(model.findings)
    else:
        doc.para(
            "No cross-check finding: the log, the record of processing activities and the "
            "job folders agree."
        )

    doc.heading("1. Record of processing activities")
    doc.para(
        "GDPR Art. 30(1); PIPL Arts. 54-56. Technical measures per job are in section 2, "
        "the log's integrity in section 6."
    )
    if model.purposes is None:
        doc.para("No record of processing activities was supplied (use --registry FILE).")
    else:
        yn = {True: "yes", False: "no"}
        doc.grid(
            [
                "Purpose",
                "Controller",
                "Legal basis",
                "Consent",
                "Data categories",
                "Recipients",
                "Cross-border",
                "Retention",
                "Impact assessment",
                "Valid",
            ],
            [
                (
                    f"{p.name}\n{p.id}\n{p.description}",
                    p.controller,
                    f"PIPL: {p.legal_basis_pipl}\nGDPR: {p.legal_basis_gdpr}\n{p.legal_basis_note}",
                    f"Separate consent for provision: {yn[p.separate_consent_for_provision]}\n"
                    f"Sensitive data: {yn[p.sensitive_data]}\n"
                    f"GDPR explicit consent: {yn[p.gdpr_explicit_consent]}",
                    ", ".join(p.data_categories),
                    ", ".join(p.recipients),
                    p.cross_border,
                    p.retention_days,
                    p.impact_assessment_ref,
                    f"{p.valid_from} - {p.valid_until}",
                )
                for p in model.purposes
            ],
            (4, 2, 3, 3, 2.5, 2, 1.5, 1.2, 2, 2),
        )

    doc.heading("2. Per-job provenance")
    for j in model.jobs:
        _pdf_job(doc, j, model)
    if not model.jobs:
        doc.para("The log records no job.")

    doc.heading("3. Art. 23 provision register")
    doc.para(
        "PIPL Art. 23: personal information provided to another handler, with the recipient, "
        "the purpose and the separate consent it rests on. Partners provide aggregates "
        "derived from their datasets (never rows) to the coordinator."
    )
    doc.grid(
        [
            "Provider",
            "Dataset (content hash)",
            "Recipient",
            "Job / purpose",
            "Separate consent",
            "When (first - last)",
            "Releases",
            "Protection",
        ],
        [
            (
                v.provider,
                v.dataset_hash,
                v.recipient
                + (
                    f"\noutputs to: {', '.join(v.onward_recipients)}" if v.onward_recipients else ""
                ),
                f"{v.job}\n{v.digest}"
                + (f"\nrun {v.run}" if v.run else "")
                + f"\npurpose: {v.purpose}",
                f"{v.consent_kind}\nevidence: {v.evidence_ref}\nsubjects: {v.subjects_covered}"
                if v.evidence_ref
                else "NONE RECORDED",
                f"{v.first_time}\n{v.last_time}",
                f"{v.releases} sent / {v.contributions} aggregated",
                v.protection,
            )
            for v in model.provisions
        ],
        (1.5, 3, 2, 3, 3, 2, 1.3, 2),
    )

    doc.heading("4. Privacy-budget ledger")
    if model.privacy:
        doc.grid(
            [
                "Time",
                "Recorded by",
                "Job",
                "Dataset",
                "Mechanism",
                "epsilon",
                "delta",
                "Accountant",
                "Cumulative epsilon",
                "Cap",
            ],
            [
                (
                    s.time,
                    s.actor,
                    s.job + (f"\nrun {s.run}" if s.run else ""),
                    s.dataset,
                    s.mechanism,
                    s.epsilon,
                    s.delta,
                    s.accountant,
                    s.cumulative_epsilon + (" (OVER CAP)" if s.over_cap else ""),
                    s.cap,
                )
                for s in model.privacy
            ],
        )
    else:
        doc.para(_NO_PRIVACY)

    doc.heading("5. Refusals")
    if model.refusals:
        doc.grid(
            ["Time", "Refused by", "Event", "Job / run", "Subject", "Error", "Reason"],
            [
                (
                    r.time,
                    r.actor + (f"\n(in {r.log}'s own log)" if r.log else ""),
                    r.type,
                    f"{r.job}\n{r.digest}" + (f"\nrun {r.run}" if r.run else ""),
                    r.subject,
                    r.error,
                    r.reason,
                )
                for r in model.refusals
            ],
            (2, 1.5, 1.5, 3, 1.5, 1.5, 4),
        )
    else:
        both = " or in the partners' bundles" if a.cross_checked else ""
        doc.para(f"No refusal is recorded in this log{both}.")

    doc.heading("6. Log-integrity attestation")
    doc.kv(
        [
            ("Bundle", a.bundle),
            ("Manifest SHA-256", a.manifest_sha256),
            ("Log origin", a.origin),
            ("Tree size (entries)", str(a.size)),
            ("Root hash (SHA-256)", a.root_hex),
            ("Latest checkpoint signed by", ", ".join(a.signers)),
            ("Cosigners", ", ".join(a.cosigners)),
            ("Verified at (UTC)", f"{a.verified_at} ({a.verify_seconds} s)"),
        ]
    )
    doc.heading("What the verification covers", 3)
    for c in a.covers:
        doc.para(f"- {c}")
    doc.heading("What it does not cover", 3)
    for c in a.limits:
        doc.para(f"- {c}")
    doc.para(
        "Datasets appear in the log only as content hashes and contributions only as SHA-256 "
        "digests of the vectors sent: the log holds no personal data."
    )
    doc.heading("Partners' cosignatures", 3)
    if a.partners:
        doc.grid(
            ["Partner", "Newest cosigned", "Root", "Key check", "Own record", "Required"],
            [
                (
                    p.name,
                    p.size or "none",
                    p.root_hex[:16],
                    p.key_check,
                    p.own_record,
                    "yes" if p.required else "no",
                )
                for p in a.partners
            ],
            (2, 1.5, 2, 3, 3, 1),
        )
    else:
        doc.para("No partner cosigned this log.")
    doc.para("Unverified cosigners (not counted): " + (", ".join(a.unverified_cosigners) or "none"))
    doc.heading("Cross-log findings", 3)
    if not a.cross_checked:
        doc.para("No partner bundle was given: the logs were not cross-checked.")
    elif a.cross_findings:
        for f in a.cross_findings:
            doc.para(f"- {f}")
    else:
        doc.para("None: the partners' logs agree with this log.")
    if a.cross_cut_short:
        doc.para(
            "Cut short (a partner's replies in flight when a run failed or the partner was "
            "dropped, not recorded by the coordinator; not findings):"
        )
        for c in a.cross_cut_short:
            doc.para(f"- {c}")
    doc.heading("Checkpoints", 3)
    doc.grid(["Size", "Signatures"], [(str(s), ", ".join(n)) for s, n in a.checkpoints], (1, 6))
    doc.heading("Keys", 3)
    doc.grid(
        ["Name", "Key id", "Source"],
        [(n, k, "pinned (--trust)" if p else "from the bundle") for n, k, p in a.keys],
    )
    doc.heading("Events by actor", 3)
    doc.grid(["Actor", "Events"], [(n, str(c)) for n, c in a.actors], (3, 1))

    doc.heading("Appendix: event types")
    doc.grid(
        ["Event type", "Count", "In this report"],
        [
            (t, str(n), "interpreted" if k else "unknown type: counted only")
            for t, n, k in model.event_counts
        ],
        (3, 1, 3),
    )
    return bytes(doc.output())


def render_pdf(model: ReportModel, path: Path) -> None:
    """Write the report as a PDF file at ``path``."""
    Path(path).write_bytes(pdf_bytes(model))
