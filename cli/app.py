"""The ``fedcollab`` console script: wiring only.

Each command group lives in its own module, named after the group; this file
adds them to one Typer app and maps :class:`common.errors.FedcollabError`
subclasses to their exit codes.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console
from rich.markup import escape

from common.errors import FedcollabError

__all__ = ["app", "main"]

app = typer.Typer(
    name="fedcollab",
    help=(
        "Privacy-preserving federated collaboration for e-commerce partners.\n\n"
        "Operators: federation, coordinator, job, run, demo.  "
        "Partners: node, data.  Compliance officers: audit."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# (module, group name or None for top-level commands). Modules that are not
# written yet are skipped so that each group lands on its own.
_GROUPS: list[tuple[str, str | None]] = [
    ("cli.data", "data"),
    ("cli.federation", "federation"),
    ("cli.coordinator", "coordinator"),
    ("cli.node", "node"),
    ("cli.job", "job"),
    ("cli.audit", "audit"),
    ("cli.registry", "registry"),
    ("cli.grant", "grant"),
    ("cli.run", None),
    ("cli.demo", None),
]

# Commands that join an existing group: (module, group).
_EXTRAS: list[tuple[str, str]] = [("cli.report", "audit"), ("cli.crossref", "audit")]

for _module_name, _group in _GROUPS:
    try:
        _module = importlib.import_module(_module_name)
    except ModuleNotFoundError as exc:
        if exc.name != _module_name:
            raise
        continue
    if _group is None:
        app.registered_commands.extend(_module.app.registered_commands)
    else:
        app.add_typer(_module.app, name=_group)


for _module_name, _group in _EXTRAS:
    try:
        _module = importlib.import_module(_module_name)
    except ModuleNotFoundError as exc:
        if exc.name != _module_name:
            raise
        continue
    for _info in app.registered_groups:
        if _info.name == _group and _info.typer_instance is not None:
            _info.typer_instance.registered_commands.extend(_module.app.registered_commands)


def main() -> None:
    """Entry point: run the app, turn our typed errors into exit codes."""
    # No wrapping (messages must stay greppable in logs) and no markup (an error's
    # text may contain brackets).
    err = Console(stderr=True, soft_wrap=True)
    try:
        app(standalone_mode=False)
    except FedcollabError as exc:
        err.print(
            f"[bold red]error ({type(exc).__name__}):[/] {escape(exc.diagnostics())}",
            highlight=False,
        )
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
