"""``fedcollab demo``: a whole federation on this machine, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fedcollab.cli.progress import JobProgress

__all__ = ["app"]

app = typer.Typer()


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/demo"),
    port: Annotated[int, typer.Option(help="Coordinator port (next free one if taken).")] = 9092,
    encryption: Annotated[
        bool,
        typer.Option(help="Aggregate under CKKS homomorphic encryption (docs/privacy.md)."),
    ] = True,
) -> None:
    """Start a coordinator and 9 brand-partner nodes over TLS on loopback, run
    purchase prediction and segmentation on Online Shoppers split by Region,
    and print federated vs centralized vs each partner alone.

    Both jobs aggregate under homomorphic encryption unless --no-encryption."""
    from fedcollab.demo.run import run_demo  # heavy (torch, scikit-learn): only when run

    console = Console()
    run_demo(
        out,
        port=port,
        console=console,
        encrypted=encryption,
        progress_display=lambda title: JobProgress(console, title=title),
    )
