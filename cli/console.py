"""``fedcollab console``: the operator's web console and its users.

Commands::

    fedcollab console init -w WS
    fedcollab console user add NAME --role operator|partner|compliance [--partner P]
                                    [--password-stdin] -w WS
    fedcollab console user list -w WS
    fedcollab console user remove NAME -w WS
    fedcollab console ledger add PARTNER PATH -w WS
    fedcollab console bundle add PARTNER BUNDLE_DIR -w WS
    fedcollab console jobs add DIR -w WS
    fedcollab console start -w WS [--host 127.0.0.1] [--port 8080] [--jobs DIR ...]
                                  [--tls-cert FILE --tls-key FILE]

There is no default user and no default password: ``start`` refuses to run
until a user exists, and refuses a non-loopback address without TLS
(:class:`common.errors.ConsoleError`, exit code 40).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from fedcollab.common.errors import ConsoleError
from fedcollab.coordinator.console.auth import Role, UserStore
from fedcollab.coordinator.console.settings import (
    ConsoleConfig,
    ConsolePaths,
    add_jobs_dir,
    add_ledger,
    add_partner_bundle,
    init_console,
    is_loopback,
)
from fedcollab.coordinator.superlink import partner_audit_keys, registered_nodes
from fedcollab.coordinator.workspace import Workspace

__all__ = ["app"]

app = typer.Typer(help="Operator: the web console (jobs, budgets, audit) and its users.")
user_app = typer.Typer(help="Console users: add, list, remove.", no_args_is_help=True)
ledger_app = typer.Typer(help="Partners' budget ledgers the console may read.")
app.add_typer(user_app, name="user")
jobs_app = typer.Typer(help="Folders of job outputs the console lists.")
app.add_typer(ledger_app, name="ledger")
app.add_typer(jobs_app, name="jobs")
bundle_app = typer.Typer(help="Partners' exported audit bundles the compliance report checks.")
app.add_typer(bundle_app, name="bundle")

Workspace_ = Annotated[Path, typer.Option("--workspace", "-w", help="Federation workspace.")]


def _store(workspace: Path) -> tuple[Workspace, UserStore]:
    ws = Workspace.open(workspace)
    paths = ConsolePaths.of(ws)
    paths.require()
    return ws, UserStore(paths.users)


@app.command("init")
def init(workspace: Workspace_ = Path("workspace")) -> None:
    """Create the console's session secret, audit key and config in WS/console."""
    paths = init_console(Workspace.open(workspace))
    typer.echo(f"console initialised in {paths.root}")
    typer.echo("add a user: fedcollab console user add NAME --role operator -w " + str(workspace))


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    first: str = typer.prompt("Password", hide_input=True)
    second: str = typer.prompt("Repeat the password", hide_input=True)
    if first != second:
        raise ConsoleError("the passwords do not match", hint="type the same password twice")
    return first


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="User name (lower case).")],
    role: Annotated[Role, typer.Option(help="operator, partner or compliance.")],
    partner: Annotated[
        str | None, typer.Option(help="The registered partner a partner user acts for.")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from one stdin line.")
    ] = False,
    workspace: Workspace_ = Path("workspace"),
) -> None:
    """Add a console user; the password (12+ characters) is asked twice, or read from stdin."""
    ws, store = _store(workspace)
    if role is Role.PARTNER:
        known = set(registered_nodes(ws)) | set(partner_audit_keys(ws))
        if partner is None or partner not in known:
            raise ConsoleError(
                f"{partner!r} is not a registered partner of this federation"
                if partner
                else "a partner user needs --partner NAME",
                hint=f"registered partners: {', '.join(sorted(known)) or 'none yet'}",
            )
    elif partner is not None:
        raise ConsoleError("--partner is only for --role partner")
    user = store.add(name, _read_password(password_stdin), role=role, partner=partner)
    typer.echo(f"added {user.name} ({user.role})" + (f" for {partner}" if partner else ""))


@user_app.command("list")
def user_list(workspace: Workspace_ = Path("workspace")) -> None:
    """List console users (never their password hashes)."""
    _ws, store = _store(workspace)
    for user in store.users():
        typer.echo(f"{user.name}\t{user.role}\t{user.partner or '-'}\tcreated {user.created}")


@user_app.command("remove")
def user_remove(
    name: Annotated[str, typer.Argument(help="User name.")],
    workspace: Workspace_ = Path("workspace"),
) -> None:
    """Remove a user; their sessions end at their next request."""
    _ws, store = _store(workspace)
    store.remove(name)
    typer.echo(f"removed {name}")


@ledger_app.command("add")
def ledger_add(
    partner: Annotated[str, typer.Argument(help="The partner the ledger belongs to.")],
    path: Annotated[Path, typer.Argument(help="The partner's budget ledger (SQLite).")],
    workspace: Workspace_ = Path("workspace"),
) -> None:
    """Let the console show PARTNER's privacy budget from PATH (read-only)."""
    resolved = add_ledger(Workspace.open(workspace), partner, path)
    typer.echo(f"the console reads {partner}'s ledger from {resolved}")


@bundle_app.command("add")
def bundle_add(
    partner: Annotated[str, typer.Argument(help="The partner whose log the bundle is.")],
    path: Annotated[
        Path, typer.Argument(help="The partner's bundle folder (`fedcollab audit export`).")
    ],
    workspace: Workspace_ = Path("workspace"),
) -> None:
    """Cross-check PARTNER's exported audit bundle in every compliance report (read-only)."""
    resolved = add_partner_bundle(Workspace.open(workspace), partner, path)
    typer.echo(f"the compliance report cross-checks {partner}'s log from {resolved}")


@jobs_app.command("add")
def jobs_add(
    directory: Annotated[Path, typer.Argument(help="A folder of job outputs, e.g. results/demo.")],
    workspace: Workspace_ = Path("workspace"),
) -> None:
    """List every job output folder under DIRECTORY in the console (kept in its config)."""
    resolved = add_jobs_dir(Workspace.open(workspace), directory)
    typer.echo(f"the console lists the jobs in {resolved}")


def check_bind(host: str, tls_cert: Path | None, tls_key: Path | None) -> bool:
    """Refuse plain HTTP beyond loopback; returns whether TLS is on."""
    if (tls_cert is None) != (tls_key is None):
        raise ConsoleError("pass both --tls-cert and --tls-key, or neither")
    tls = tls_cert is not None
    if not tls and not is_loopback(host):
        raise ConsoleError(
            f"refusing to serve the console on {host} without TLS: passwords and session "
            "cookies would cross the network in clear",
            hint="pass --tls-cert and --tls-key (e.g. the workspace's coordinator/server.crt "
            "and server.key), or bind to 127.0.0.1 and use an SSH tunnel",
        )
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            raise ConsoleError(f"{path} does not exist")
    return tls


@app.command("start")
def start(
    workspace: Workspace_ = Path("workspace"),
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    jobs: Annotated[
        list[Path] | None,
        typer.Option("--jobs", help="Extra folder of job outputs, e.g. results/demo (repeatable)."),
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
) -> None:
    """Serve the console until interrupted (Ctrl-C)."""
    import uvicorn

    from fedcollab.coordinator.console.app import create_app

    tls = check_bind(host, tls_cert, tls_key)
    _ws, store = _store(workspace)
    if not store.users():
        raise ConsoleError(
            "the console has no user: there is no default account",
            hint=f"add one: fedcollab console user add NAME --role operator -w {workspace}",
        )
    config = ConsoleConfig.load(workspace, jobs_dirs=tuple(jobs or ()), tls=tls)
    scheme = "https" if tls else "http"
    typer.echo(f"fedcollab console on {scheme}://{host}:{port}/ (Ctrl-C to stop)")
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        proxy_headers=False,
        server_header=False,
        log_level="info",
    )
