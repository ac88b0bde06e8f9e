"""The ``fedcollab`` console script: wiring only.

Each command group lives in its own module, named after the group; this file
adds them to one Typer app and maps :class:`common.errors.FedcollabError`
subclasses to their exit codes.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from fedcollab.common.errors import FedcollabError
from fedcollab.common.third_party_noise import set_verbose

__all__ = ["app", "main"]

app = typer.Typer(
    name="fedcollab",
    help=(
        "Privacy-preserving federated collaboration for e-commerce partners.\n\n"
        "Operators: federation, coordinator, job, run, demo, console.  "
        "First steps: example.  "
        "Partners: node, data, grant, budget.  Compliance officers: audit, registry."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# (module, group): group None adds the module's commands at the top level; a group
# that already exists receives the module's commands (``audit report``).
_GROUPS: list[tuple[str, str | None]] = [
    ("fedcollab.cli.data", "data"),
    ("fedcollab.cli.data_schema", "data"),
    ("fedcollab.cli.federation", "federation"),
    ("fedcollab.cli.coordinator", "coordinator"),
    ("fedcollab.cli.node", "node"),
    ("fedcollab.cli.job", "job"),
    ("fedcollab.cli.audit", "audit"),
    ("fedcollab.cli.report", "audit"),
    ("fedcollab.cli.crossref", "audit"),
    ("fedcollab.cli.registry", "registry"),
    ("fedcollab.cli.grant", "grant"),
    ("fedcollab.cli.budget", "budget"),
    ("fedcollab.cli.run", None),
    ("fedcollab.cli.demo", None),
    ("fedcollab.cli.example", "example"),
    ("fedcollab.cli.console", "console"),
]


@app.callback()
def _options(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show detail: fedcollab's log and third-party warnings (Flower, Ray).",
        ),
    ] = False,
) -> None:
    set_verbose(verbose)


for _module_name, _group in _GROUPS:
    _sub: typer.Typer = importlib.import_module(_module_name).app
    _existing = [g.typer_instance for g in app.registered_groups if g.name == _group]
    if _group is None:
        app.registered_commands.extend(_sub.registered_commands)
    elif _existing and _existing[0] is not None:
        _existing[0].registered_commands.extend(_sub.registered_commands)
    else:
        app.add_typer(_sub, name=_group)


def main() -> None:
    """Entry point: run the app, turn our typed errors into exit codes."""
    # No wrapping (messages must stay greppable in logs) and no markup (an error's
    # text may contain brackets).
    err = Console(stderr=True, soft_wrap=True)
    try:
        app(standalone_mode=False)
    except FedcollabError as exc:
        text = (
            "the job failed: what happened and what to do are shown above"
            if exc.shown
            else exc.diagnostics()
        )
        err.print(f"[bold red]error ({type(exc).__name__}):[/] {escape(text)}", highlight=False)
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
