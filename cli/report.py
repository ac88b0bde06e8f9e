"""``fedcollab audit report``: the compliance report of an audit bundle (HTML + PDF).

Command::

    fedcollab audit report BUNDLE --out DIR [--registry FILE] [--job DIR ...] [--ledger B ...]
                                  --trust NAME=KEYFILE.pub ... [--trust-peers peers.json]
                                  [--require-cosigners NAME ...]

The bundle is verified first under the pinned keys; if it does not verify,
nothing is written and :class:`common.errors.AuditVerificationError` is raised
(exit code 31 through ``cli.app.main``).  The partners' bundles (``--ledger``)
are cross-checked against it; a report with cross-log findings, or with any
error-level finding (an output folder that does not hold what its run released,
a provision without the consent its purpose requires, ...), is written and then
exits 31, as ``audit verify`` does on a failed check.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fedcollab.cli.audit import (
    ExpectHeadOption,
    RequireOption,
    TrustOption,
    TrustPeersOption,
    heads_from_options,
    policy_from_options,
)
from fedcollab.common.errors import AuditVerificationError
from fedcollab.compliance.report import write_report

__all__ = ["app"]

app = typer.Typer(help="Compliance report of an audit bundle.")
_out = Console()


def _origin(bundle: Path) -> str:
    """The origin a bundle's manifest claims (only to pick default cosigners; verified later)."""
    try:
        return str(json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))["origin"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AuditVerificationError(f"{bundle}: manifest.json cannot be read") from exc


@app.command("report")
def report(
    bundle: Annotated[Path, typer.Argument(help="The audit bundle folder (from audit export).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for report.html and report.pdf.")],
    registry: Annotated[
        Path | None,
        typer.Option("--registry", help="Record of processing activities (JSON)."),
    ] = None,
    job: Annotated[
        list[Path] | None,
        typer.Option("--job", help="A job's output folder to cross-check (repeatable)."),
    ] = None,
    trust: TrustOption = None,
    trust_peers: TrustPeersOption = None,
    require_cosigners: RequireOption = None,
    ledger: Annotated[
        list[Path] | None,
        typer.Option(
            "--ledger",
            help="A partner's audit bundle whose privacy-budget ledger joins the report "
            "(repeatable; verified like BUNDLE).",
        ),
    ] = None,
    expect_head: ExpectHeadOption = None,
) -> None:
    """Verify BUNDLE, then write a readable HTML and PDF compliance report.

    By default every registered partner (--trust-peers) must have cosigned the
    log; without a peers file, every pinned party other than the log itself.
    Exits 31 after writing a report with error findings or logs that disagree.
    """
    policy = policy_from_options(trust, trust_peers, require_cosigners)
    if require_cosigners is None:
        policy = policy.report_default(_origin(bundle))
    html, pdf = write_report(
        bundle,
        registry=registry,
        jobs=job or [],
        policy=policy,
        out_dir=out,
        ledger_bundles=ledger or [],
        expected_heads=heads_from_options(expect_head),
        fail_on_errors=True,
    )
    _out.print(f"report written: {html} and {pdf}", highlight=False)
