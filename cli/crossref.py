"""``fedcollab audit crossref``: do the coordinator's and partners' logs agree?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from compliance.bundle import verify_bundle
from compliance.crossref import cross_check

__all__ = ["app"]

app = typer.Typer()


@app.command("crossref")
def crossref(
    coordinator: Annotated[Path, typer.Argument(help="The coordinator's exported bundle.")],
    partner: Annotated[
        list[str], typer.Option(help="NAME=BUNDLE: a partner's exported bundle (repeatable).")
    ],
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
    for bundle in (coordinator, *partners.values()):
        report = verify_bundle(bundle)
        console.print(f"verified {bundle}: {report.size} entries, origin {report.origin}")
    result = cross_check(coordinator, partners)
    for name, count in sorted(result.matched.items()):
        console.print(f"  {name}: {count} contributions match the coordinator's log")
    console.print(f"[green]logs agree[/] across {result.jobs} jobs")
