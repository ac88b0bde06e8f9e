"""``fedcollab job``: the operator submits jobs to the coordinator and follows them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fedcollab.cli.progress import JobProgress
from fedcollab.common.errors import WorkspaceError, error_class
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
    out: Annotated[
        Path | None,
        typer.Option(help="Output folder.", show_default="a new folder under WORKSPACE/jobs/"),
    ] = None,
    wait: Annotated[bool, typer.Option("--follow/--no-follow", help="Follow progress.")] = True,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace the outputs of an earlier job in --out."),
    ] = False,
) -> None:
    """Submit JOB to the running coordinator and show its progress round by round.

    Example: fedcollab job submit jobs/purchase.toml -w workspace --out results/purchase
    """
    ws = Workspace.open(workspace)
    spec = load_job_spec(job)
    out_dir = _output_folder(ws, spec.name, out, overwrite=overwrite)
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


#: What an earlier job leaves in its output folder (coordinator/outputs.py).
_EARLIER = ("result.json", "progress.jsonl")


def _holds_a_job(folder: Path) -> bool:
    return any((folder / name).exists() for name in _EARLIER)


def _output_folder(ws: Workspace, name: str, out: Path | None, *, overwrite: bool) -> Path:
    """``out``, refused if it holds an earlier job's outputs (their released model and
    results would be replaced, and a report on that job would no longer match them);
    without ``out``, the first of WORKSPACE/jobs/NAME, NAME-2, ... that holds none."""
    if out is not None:
        if _holds_a_job(out) and not overwrite:
            raise WorkspaceError(
                f"{out} holds the outputs of an earlier job ({', '.join(_EARLIER)}): its "
                "released model and results would be replaced",
                hint="choose another --out, or pass --overwrite to replace them",
            )
        return out
    base = ws.root / "jobs" / name
    candidate, n = base, 1
    while _holds_a_job(candidate):
        n += 1
        candidate = base.with_name(f"{name}-{n}")
    return candidate


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
