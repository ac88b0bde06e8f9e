"""``fedcollab audit report``: the compliance report of an audit bundle (HTML + PDF).

Command::

    fedcollab audit report BUNDLE --out DIR [--registry FILE] [--job DIR ...] [--ledger B ...]
                                  [--trust NAME=KEYFILE.pub ...]

The bundle is verified first; if it does not verify, nothing is written and
:class:`common.errors.AuditVerificationError` is raised (exit code 31 through
``cli.app.main``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fedcollab.common.errors import ComplianceError
from fedcollab.compliance.keys import parse_verifier_key, public_key_from_pem
from fedcollab.compliance.report import write_report

__all__ = ["app"]

app = typer.Typer(help="Compliance report of an audit bundle.")
_out = Console()


def _trusted_keys(items: list[str]) -> dict[str, bytes]:
    """``NAME=PATH`` pairs; PATH is a verifier-key line or a PEM Ed25519 public key."""
    pinned: dict[str, bytes] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name:
            raise ComplianceError(f"--trust {item!r}: expected NAME=PATH")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ComplianceError(f"--trust {item!r}: cannot read {path}: {exc.strerror}") from exc
        if text.lstrip().startswith("-----BEGIN"):
            pinned[name] = public_key_from_pem(text)
            continue
        key_name, pub = parse_verifier_key(text)
        if key_name != name:
            raise ComplianceError(f"--trust {item!r}: {path} holds the key of {key_name!r}")
        pinned[name] = pub
    return pinned


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
    trust: Annotated[
        list[str] | None,
        typer.Option("--trust", help="Pin a key: NAME=PATH to a *.pub file (repeatable)."),
    ] = None,
    ledger: Annotated[
        list[Path] | None,
        typer.Option(
            "--ledger",
            help="A partner's audit bundle whose privacy-budget ledger joins the report "
            "(repeatable; verified like BUNDLE).",
        ),
    ] = None,
) -> None:
    """Verify BUNDLE, then write a readable HTML and PDF compliance report."""
    html, pdf = write_report(
        bundle,
        registry=registry,
        jobs=job or [],
        trusted_keys=_trusted_keys(trust or []) or None,
        out_dir=out,
        ledger_bundles=ledger or [],
    )
    _out.print(f"report written: {html} and {pdf}", highlight=False)
