"""``fedcollab audit crossref``: do the coordinator's and partners' logs agree?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fedcollab.cli.audit import parse_trust, require_pinned
from fedcollab.common.errors import AuditVerificationError
from fedcollab.compliance.bundle import verify_bundle
from fedcollab.compliance.crossref import cross_check

__all__ = ["app"]

app = typer.Typer()


@app.command("crossref")
def crossref(
    coordinator: Annotated[Path, typer.Argument(help="The coordinator's exported bundle.")],
    partner: Annotated[
        list[str], typer.Option(help="NAME=BUNDLE: a partner's exported bundle (repeatable).")
    ],
    trust: Annotated[
        list[str] | None,
        typer.Option(help="Pin a key: NAME=PATH to a *.pub file (repeatable), one per log."),
    ] = None,
    unsafe_trust_bundle_keys: Annotated[
        bool,
        typer.Option("--unsafe-trust-bundle-keys", help="Accept keys shipped in the bundles."),
    ] = False,
) -> None:
    """Verify each bundle, then check that every vector a partner logged as sent is
    the one the coordinator recorded for it, and the other way round."""
    partners: dict[str, Path] = {}
    for item in partner:
        name, sep, path = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected NAME=BUNDLE, got {item!r}", param_hint="--partner")
        partners[name] = Path(path)
    console = Console()
    pinned = parse_trust(trust)
    origins = {coordinator: "coordinator", **{path: name for name, path in partners.items()}}
    for bundle, expected in origins.items():
        report = verify_bundle(bundle, trusted_keys=pinned)
        if report.origin != expected:
            raise AuditVerificationError(
                f"{bundle} is the log of {report.origin!r}, not of {expected!r}",
                hint="pair each partner name with its own bundle",
            )
        require_pinned(report.origin, pinned, unsafe=unsafe_trust_bundle_keys)
        console.print(f"verified {bundle}: {report.size} entries, origin {report.origin}")
    result = cross_check(coordinator, partners)
    for name, count in sorted(result.matched.items()):
        console.print(f"  {name}: {count} contributions match the coordinator's log")
    console.print(f"[green]logs agree[/] across {result.jobs} jobs")
