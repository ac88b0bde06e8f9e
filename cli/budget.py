"""``fedcollab budget``: a partner's privacy budget per dataset (its own ledger)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedcollab.privacy.budget_ledger import BudgetLedger

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="Your privacy budget per dataset (partners).")

LedgerOpt = Annotated[
    Path,
    typer.Option(help="Your node's ledger (default of `node start`: budget.db beside audit.db)."),
]


@app.command("set")
def set_cap(
    dataset: Annotated[str, typer.Option(help="Dataset name (the `dataset` of its schema).")],
    epsilon: Annotated[float, typer.Option(help="Cap on the total epsilon, over all jobs.")],
    ledger: LedgerOpt,
    delta: Annotated[float, typer.Option(help="The delta every epsilon is computed at.")] = 1e-5,
) -> None:
    """Set (or change) the cap of a dataset. Without a cap the node refuses every DP job
    on that dataset.

    Example: fedcollab budget set --dataset region-1 --epsilon 8 --ledger keys/budget.db
    """
    with BudgetLedger.open(ledger) as book:
        book.set_cap(dataset, epsilon_cap=epsilon, delta=delta)
        b = book.budget(dataset)
    typer.echo(
        f"{dataset}: cap epsilon {b.cap_epsilon:g} at delta {b.delta:g}; "
        f"spent {b.spent_epsilon:.3f}, {b.remaining_epsilon:.3f} left"
    )


@app.command("show")
def show(ledger: LedgerOpt) -> None:
    """Caps, spent and remaining epsilon per dataset, and every charge."""
    with BudgetLedger.open(ledger) as book:
        budgets, charges = book.datasets(), book.charges()
    table = Table("dataset", "cap", "delta", "spent", "remaining", "charges")
    for b in budgets:
        table.add_row(
            b.dataset, f"{b.cap_epsilon:g}", f"{b.delta:g}", f"{b.spent_epsilon:.3f}",
            f"{b.remaining_epsilon:.3f}", str(b.charges),
        )  # fmt: skip
    console = Console()
    console.print(table)
    if charges:
        detail = Table("time", "dataset", "job", "run", "step", "mechanism", "epsilon after")
        for c in charges:
            detail.add_row(
                c.recorded_at, c.dataset, c.job, c.run[:12], c.step,
                str(c.mechanism.to_dict()), f"{c.epsilon_after:.3f}",
            )  # fmt: skip
        console.print(detail)
