"""``fedcollab coordinator``: the operator runs the coordinator (a Flower SuperLink)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from fedcollab.coordinator.superlink import coordinator_command, flwr_env
from fedcollab.coordinator.workspace import Workspace

__all__ = ["app"]

app = typer.Typer(help="Operator: run the coordinator.")


@app.command("start")
def start(
    workspace: Annotated[
        Path, typer.Option("--workspace", "-w", help="Federation workspace.")
    ] = Path("workspace"),
) -> None:
    """Run the coordinator in the foreground: TLS on, SuperNode authentication on.

    Partners reach only the Fleet API on the federation address; Flower's
    Control API (job submission, run and node listing) listens on loopback.

    Stop it with Ctrl-C. The registered nodes persist in the workspace's
    coordinator/state folder (a journal replayed at start); runs do not: a job
    cut by a restart is recorded as failed.
    """
    ws = Workspace.open(workspace)
    cmd = coordinator_command(ws)
    typer.echo(
        f"coordinator {ws.federation.name!r} on {ws.federation.address} "
        "(TLS, node auth, Fleet API only)"
    )
    os.execvpe(cmd[0], cmd, flwr_env(ws))  # noqa: S606 - replaces this process: signals reach Flower directly
