"""``fedcollab job``: the operator submits jobs to the coordinator and follows them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fedcollab.cli.progress import JobProgress
from fedcollab.common.errors import error_class
from fedcollab.common.job_files import read_metrics, read_result
from fedcollab.common.jobspec import load_job_spec
from fedcollab.coordinator.submit import follow, run_status, submit_job
from fedcollab.coordinator.workspace import Workspace

__all__ = ["app"]

app = typer.Typer(help="Operator: submit a job, follow its progress.")


@app.command("submit")
def submit(
    job: Annotated[Path, typer.Argument(help="Job spec (TOML).", metavar="JOB")],
    workspace: Annotated[
        Path, typer.Option("--workspace", "-w", help="Federation workspace.")
    ] = Path("workspace"),
    out: Annotated[Path | None, typer.Option(help="Output folder.")] = None,
    wait: Annotated[bool, typer.Option("--follow/--no-follow", help="Follow progress.")] = True,
) -> None:
    """Submit JOB to the running coordinator and show its progress round by round.

    Example: fedcollab job submit jobs/purchase.toml -w workspace --out results/purchase
    """
    ws = Workspace.open(workspace)
    spec = load_job_spec(job)
    out_dir = out or ws.root / "jobs" / spec.name
    run_id = submit_job(ws, spec, out_dir)
    typer.echo(f"job {spec.name!r} started as run {run_id}; outputs in {out_dir}")
    if not wait:
        return

    def alive() -> bool:
        return not run_status(ws, run_id).startswith("finished")

    with JobProgress(title=spec.name) as progress:
        end = follow(out_dir, on_event=progress, is_alive=alive)
    if end.get("status") != "completed":
        failure = error_class(str(end.get("error")))(
            f"job {spec.name!r} failed: {end.get('error')}", hint=str(end.get("reason", ""))
        )
        failure.shown = end.get("event") == "job_end"  # the progress display printed it
        raise failure


@app.command("status")
def status(out: Annotated[Path, typer.Argument(help="A job's output folder.")]) -> None:
    """Show a job's result and final metrics from its output folder."""
    result = read_result(out)
    if result is None:
        typer.echo("running (no result yet)")
        return
    console = Console()
    console.print_json(result.model_dump_json(exclude_unset=True))
    m = read_metrics(out)
    if m is not None:
        console.print_json(
            json.dumps({"final": m.final, "objective": m.objective, "dropouts": m.dropouts})
        )
