"""``fedcollab federation``: the operator creates a federation and registers nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedcollab.coordinator.policy_gate import add_grant
from fedcollab.coordinator.superlink import register_node, registered_nodes, write_peer_keys
from fedcollab.coordinator.workspace import Workspace

__all__ = ["app"]

app = typer.Typer(help="Operator: create a federation workspace, register partner nodes.")
WorkspaceOpt = Annotated[Path, typer.Option("--workspace", "-w", help="Federation workspace.")]


@app.command("init")
def init(
    workspace: Annotated[Path, typer.Argument(help="Folder to create.")],
    name: Annotated[str, typer.Option(help="Federation name.")] = "fedcollab",
    host: Annotated[str, typer.Option(help="Coordinator address partners connect to.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Coordinator port.")] = 9092,
    partner: Annotated[
        list[str] | None,
        typer.Option(help="Also create a node key for this partner (local demos). Repeatable."),
    ] = None,
) -> None:
    """Create a workspace: a CA, the coordinator's TLS certificate, connection settings.

    Example: fedcollab federation init ws --name brands --partner acme --partner zenith
    """
    ws = Workspace.create(workspace, name=name, host=host, port=port, partners=tuple(partner or ()))
    typer.echo(f"federation {name!r} created in {ws.root}")
    typer.echo(
        f"send {ws.ca_cert} and {ws.audit_pub} to every partner: their nodes verify the "
        "coordinator's TLS certificate and the checkpoints they cosign"
    )


@app.command("register")
def register(
    partner: Annotated[str, typer.Argument(help="Partner name.")],
    public_key: Annotated[Path, typer.Argument(help="The partner's node.pub.")],
    audit_key: Annotated[
        Path | None, typer.Option(help="The partner's audit.pub (grants, cosignatures).")
    ] = None,
    workspace: WorkspaceOpt = Path("workspace"),
) -> None:
    """Register a partner's node key with the running coordinator.

    Only registered nodes may connect; the name is bound to the key, so a node
    cannot later claim to be another partner.
    """
    node_id = register_node(Workspace.open(workspace), partner, public_key, audit_key=audit_key)
    typer.echo(f"registered {partner!r} as node {node_id}")


@app.command("grant")
def grant(
    grant_file: Annotated[Path, typer.Argument(help="A partner's signed grant (JSON).")],
    workspace: WorkspaceOpt = Path("workspace"),
) -> None:
    """Add a partner's signed dataset grant (checked against its registered audit key).

    Jobs are refused unless every participant's grant covers the job's purpose.
    """
    signed = add_grant(Workspace.open(workspace), grant_file)
    g = signed.grant
    typer.echo(
        f"grant of {g.partner!r} for dataset {g.dataset!r}: purposes {', '.join(g.purposes)}; "
        f"valid until {g.valid_until.isoformat()}"
    )


@app.command("peers")
def peers(
    out: Annotated[
        Path | None, typer.Option(help="Where to write it (default: <workspace>/peers.json).")
    ] = None,
    workspace: WorkspaceOpt = Path("workspace"),
) -> None:
    """Write the registered partners' audit keys, for every partner to pin.

    Encrypted jobs need it at every node (`fedcollab node start --peer-keys`):
    the partner that deals a job's key checks each partner's transport key
    against it, and each partner checks the dealer's signature.
    """
    path = write_peer_keys(Workspace.open(workspace), out)
    typer.echo(f"peer keys written to {path}: send it to every partner")


@app.command("nodes")
def nodes(workspace: WorkspaceOpt = Path("workspace")) -> None:
    """List registered partner nodes."""
    table = Table("partner", "node id")
    for name, node_id in sorted(registered_nodes(Workspace.open(workspace)).items()):
        table.add_row(name, str(node_id))
    Console().print(table)
