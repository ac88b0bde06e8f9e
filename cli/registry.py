"""``fedcollab registry``: the Record of Processing Activities (compliance officers).

Commands::

    fedcollab registry init FILE --controller NAME
    fedcollab registry add-purpose FILE --from purpose.json
    fedcollab registry show FILE

The registry is described in :mod:`compliance.registry` (GDPR Art. 30; PIPL
Art. 54-56); ``data/registry.example.json`` is a worked example.  A malformed
file or a duplicate purpose raises :class:`common.errors.ComplianceError`
(exit 30).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedcollab.common.errors import ComplianceError
from fedcollab.compliance.registry import (
    Purpose,
    Registry,
    load_purpose,
    load_registry,
    save_registry,
)

__all__ = ["app"]

app = typer.Typer(
    help="Maintain the registry of processing purposes (GDPR Art. 30, PIPL Art. 54-56).",
    no_args_is_help=True,
)
_out = Console()


@app.command()
def init(
    file: Annotated[Path, typer.Argument(help="Where to write the new registry.")],
    controller: Annotated[str, typer.Option(help="The controller / handler's legal name.")],
) -> None:
    """Write an empty registry (no example purposes) for CONTROLLER."""
    if file.exists():
        raise ComplianceError(
            f"{file} already exists",
            hint="choose another path; a registry is never overwritten by 'init'",
        )
    try:
        registry = Registry(version=1, controller=controller, purposes=())
    except ValueError as exc:
        raise ComplianceError(
            f"invalid controller name {controller!r}", hint="give a non-empty one-line name"
        ) from exc
    save_registry(registry, file)
    _out.print(f"created empty registry {file} for {controller}", highlight=False)


@app.command("add-purpose")
def add_purpose(
    file: Annotated[Path, typer.Argument(help="The registry file.")],
    from_: Annotated[Path, typer.Option("--from", help="A JSON file holding one purpose object.")],
) -> None:
    """Validate a purpose and append it; refuses an id that is already registered."""
    registry = load_registry(file)
    purpose = load_purpose(from_)
    save_registry(registry.with_purpose(purpose), file)
    _out.print(f"registered purpose {purpose.id!r} in {file}", highlight=False)
    if purpose.controller != registry.controller:
        # Joint controllers (GDPR Art. 26, PIPL Art. 20) are legitimate; a copied
        # purpose of another company is not: say it, do not guess which this is.
        typer.echo(
            f"note: purpose {purpose.id!r} names controller {purpose.controller!r}, the "
            f"registry's is {registry.controller!r}: if you are not joint controllers, "
            "fix the purpose's 'controller' (the record of processing lists both)",
            err=True,
        )


def _consents(purpose: Purpose) -> str:
    flags = purpose.consent
    parts = []
    if flags.separate_consent_for_provision:
        parts.append("separate (PIPL 23)")
    if flags.sensitive_data:
        parts.append("sensitive (PIPL 28-29)")
    if flags.gdpr_explicit_consent:
        parts.append("explicit (GDPR 9)")
    return ", ".join(parts) or "-"


@app.command()
def show(file: Annotated[Path, typer.Argument(help="The registry file.")]) -> None:
    """Print the registered purposes as a table."""
    registry = load_registry(file)
    table = Table(title=f"Processing purposes of {registry.controller}")
    table.add_column("purpose")
    table.add_column("legal basis (PIPL / GDPR)")
    table.add_column("consents required")
    table.add_column("retention", justify="right")
    table.add_column("cross-border")
    table.add_column("PIPIA / DPIA")
    table.add_column("valid")
    for p in registry.purposes:
        table.add_row(
            f"{p.id}\n{p.name}",
            f"{p.legal_basis.pipl} / {p.legal_basis.gdpr}",
            _consents(p),
            f"{p.retention_days} d",
            "no" if p.cross_border_mechanism is None else f"yes: {p.cross_border_mechanism}",
            p.impact_assessment_ref or "-",
            f"{p.valid_from.isoformat()} .. {p.valid_until.isoformat()}",
        )
    _out.print(table)
    if not registry.purposes:
        _out.print("no purposes registered yet: use 'fedcollab registry add-purpose'")
