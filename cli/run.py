"""``fedcollab run``: a job in Flower's simulation engine on local partner files."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated

import typer

from fedcollab.cli.progress import JobProgress
from fedcollab.common.jobspec import load_job_spec
from fedcollab.coordinator.outputs import read_progress
from fedcollab.coordinator.simulation import discover_partner_files, run_simulation_job

__all__ = ["app"]

app = typer.Typer()


@app.command("run")
def run(
    job: Annotated[Path, typer.Argument(help="Job spec (TOML).", metavar="JOB")],
    partners: Annotated[
        Path,
        typer.Option(help="Folder of <name>.csv + <name>.schema.json (from `data split`)."),
    ],
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results/run"),
    verbose: Annotated[bool, typer.Option(help="Show Flower's log.")] = False,
    budget_cap: Annotated[
        float | None,
        typer.Option(help="Set every simulated partner's privacy-budget cap (epsilon)."),
    ] = None,
) -> None:
    """Run JOB in Flower's simulation engine: one virtual node per partner file.

    Writes the same outputs as a real federation (metrics.json, model, model
    card) into --out.

    Example: fedcollab run jobs/purchase.toml --partners partners --out results/sim
    """
    spec = load_job_spec(job)
    sources = discover_partner_files(partners)
    done = threading.Event()

    def show() -> None:
        offset = 0
        with JobProgress(title=spec.name) as progress:
            while True:
                events, offset = read_progress(out, start=offset)
                for ev in events:
                    progress(ev)
                if done.is_set() and not events:
                    return
                done.wait(0.3)

    viewer = threading.Thread(target=show, daemon=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "progress.jsonl").unlink(missing_ok=True)
    viewer.start()
    try:
        run_simulation_job(spec, sources, out, verbose=verbose, budget_cap=budget_cap)
    finally:
        done.set()
        viewer.join(timeout=5)
    typer.echo(f"outputs in {out}")
