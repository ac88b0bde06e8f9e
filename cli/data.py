"""``fedcollab data``: check a partner's CSV against its schema, split one CSV into partners.

Commands (``fedcollab data schema`` lives in :mod:`cli.data_schema`)::

    fedcollab data validate CSV --schema S
    fedcollab data split horizontal CSV --schema S --out DIR (--by COL | --iid N | --dirichlet N)
    fedcollab data split vertical CSV --schema S --out DIR --party NAME:COLUMNS[:OVERLAP][:label]

Data and schema problems raise :class:`common.errors.FedcollabError`
subclasses, which ``cli.app.main`` maps to exit codes; inconsistent options are
usage errors (exit 2).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Annotated

import click
import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from fedcollab.common.dataset import Dataset, load_dataset
from fedcollab.common.schema import MISSING_CATEGORY, DatasetSchema, load_schema
from fedcollab.common.split import (
    PartnerFiles,
    SplitArgumentError,
    VerticalParty,
    split_horizontal,
    split_vertical,
)

__all__ = ["app", "parse_party"]

app = typer.Typer(
    help="Check a partner's CSV against its schema; split one CSV into partner files.",
    no_args_is_help=True,
)
split_app = typer.Typer(
    help="Split one CSV into partner files (a CSV and a schema per partner), "
    "to simulate a federation from one table.",
    no_args_is_help=True,
)
app.add_typer(split_app, name="split")

_CsvArg = Annotated[
    Path, typer.Argument(metavar="CSV", help="The CSV file.", dir_okay=False, show_default=False)
]
_SchemaOpt = Annotated[
    Path, typer.Option("--schema", "-s", help="The dataset schema JSON.", show_default=False)
]
_OutOpt = Annotated[
    Path,
    typer.Option("--out", "-o", help="Directory for the partner files.", show_default=False),
]
_SeedOpt = Annotated[int, typer.Option(help="Random seed; same seed, same files.")]
_IdsOpt = Annotated[
    bool,
    typer.Option(
        "--id-from-row-number",
        help="The file has no id column: generate ids s000001, s000002, ... in file order.",
    ),
]
_OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace partner files that already exist.")
]


@app.command(
    epilog="Example: fedcollab data validate data/uci_credit_card_default.csv "
    "--schema data/credit_default.schema.json"
)
def validate(
    csv_path: _CsvArg,
    schema: _SchemaOpt,
    id_from_row_number: _IdsOpt = False,
) -> None:
    """Check CSV against its schema and print a summary; exit 10 naming row and column if not."""
    dataset = load_dataset(csv_path, load_schema(schema), id_from_row_number=id_from_row_number)
    _print_summary(dataset)


@split_app.command(
    epilog="Examples:\n\n"
    "fedcollab data split horizontal data/online_shoppers_intention.csv "
    "--schema data/online_shoppers.schema.json --out partners --by Region --id-from-row-number"
    "\n\n"
    "fedcollab data split horizontal data/uci_credit_card_default.csv "
    "--schema data/credit_default.schema.json --out partners --dirichlet 5 --alpha 0.3"
)
def horizontal(
    csv_path: _CsvArg,
    schema: _SchemaOpt,
    out: _OutOpt,
    by: Annotated[
        str | None,
        typer.Option(
            metavar="COLUMN",
            help="One partner per value of this feature (named e.g. region-3); "
            "the column stays in the files.",
        ),
    ] = None,
    iid: Annotated[
        int | None,
        typer.Option(metavar="N", min=1, help="N partners, rows dealt out at random."),
    ] = None,
    dirichlet: Annotated[
        int | None,
        typer.Option(
            metavar="N", min=1, help="N partners with label skew: class shares ~ Dir(alpha)."
        ),
    ] = None,
    alpha: Annotated[
        float | None,
        typer.Option(help="Dirichlet concentration; smaller is more skewed.", show_default="0.5"),
    ] = None,
    prefix: Annotated[
        str, typer.Option(help="Partner name prefix for --iid/--dirichlet.")
    ] = "partner",
    seed: _SeedOpt = 0,
    id_from_row_number: _IdsOpt = False,
    overwrite: _OverwriteOpt = False,
) -> None:
    """Split CSV by rows: every partner gets every column and some of the rows.

    Choose exactly one of --by, --iid and --dirichlet.
    """
    if sum(option is not None for option in (by, iid, dirichlet)) != 1:
        raise click.UsageError("choose exactly one of --by COLUMN, --iid N, --dirichlet N")
    if alpha is not None and dirichlet is None:
        raise click.UsageError("--alpha only applies to --dirichlet")
    if alpha is not None and not alpha > 0:
        raise click.BadParameter("must be positive", param_hint="--alpha")
    loaded = load_schema(schema)
    try:
        partners = split_horizontal(
            csv_path,
            loaded,
            out,
            mode="column" if by is not None else ("iid" if iid is not None else "dirichlet"),
            by_column=by,
            n_partners=iid or dirichlet,
            alpha=0.5 if alpha is None else alpha,
            seed=seed,
            prefix=prefix,
            id_from_row_number=id_from_row_number,
            overwrite=overwrite,
        )
    except SplitArgumentError as exc:
        raise click.UsageError(str(exc)) from exc
    _print_partners(partners, title=f"{len(partners)} partners in {out}")
    Console(soft_wrap=True).print(
        f"schema fingerprint (same at every partner): {loaded.fingerprint()}"
    )


@split_app.command(
    epilog="Example (Default of Credit Card Clients: profile / payments / billing):\n\n"
    "fedcollab data split vertical data/uci_credit_card_default.csv "
    "--schema data/credit_default.schema.json --out parties "
    "--party 'platform:LIMIT_BAL,SEX,EDUCATION,MARRIAGE,AGE:1.0:label' "
    "--party 'payments:PAY_?,PAY_AMT*:0.8' --party 'billing:BILL_AMT*:0.7'"
)
def vertical(
    csv_path: _CsvArg,
    schema: _SchemaOpt,
    out: _OutOpt,
    party: Annotated[
        list[str],
        typer.Option(
            metavar="NAME:COLUMNS[:OVERLAP][:label]",
            help="One party (repeat the option). COLUMNS is a comma-separated list of "
            "features or patterns (PAY_AMT*, BILL_AMT?); OVERLAP is the fraction of "
            "ids the party holds (default 1.0); 'label' gives it the label column.",
            show_default=False,
        ),
    ],
    seed: _SeedOpt = 0,
    id_from_row_number: _IdsOpt = False,
    overwrite: _OverwriteOpt = False,
) -> None:
    """Split CSV by columns: every party gets the id column, its own features and some of the ids.

    Exactly one party holds the label (when the schema has one).
    """
    loaded = load_schema(schema)
    parties = [parse_party(spec, loaded) for spec in party]
    try:
        partners = split_vertical(
            csv_path,
            loaded,
            out,
            parties=parties,
            seed=seed,
            id_from_row_number=id_from_row_number,
            overwrite=overwrite,
        )
    except SplitArgumentError as exc:
        raise click.UsageError(str(exc)) from exc
    _print_partners(partners, title=f"{len(partners)} parties in {out}")


def parse_party(spec: str, schema: DatasetSchema) -> VerticalParty:
    """Parse ``NAME:COLUMNS[:OVERLAP][:label]``, expanding column patterns against ``schema``.

    >>> from fedcollab.common.schema import NumericFeature
    >>> s = DatasetSchema(dataset="d", id_column="id", label_column="y",
    ...                   features=[NumericFeature(name="PAY_0"), NumericFeature(name="AGE")])
    >>> parse_party("pay:PAY_*:0.8", s)
    VerticalParty(name='pay', columns=('PAY_0',), overlap=0.8, has_label=False)
    """

    def bad(why: str) -> click.BadParameter:
        return click.BadParameter(
            f"{spec!r}: {why} (expected NAME:COLUMNS[:OVERLAP][:label], "
            "e.g. 'payments:PAY_AMT*,PAY_0:0.8')",
            param_hint="--party",
        )

    name, _, rest = spec.partition(":")
    column_text, *options = rest.split(":") if rest else ("",)
    overlap, has_label = 1.0, False
    for option in options:
        if option.strip().lower() == "label":
            has_label = True
            continue
        try:
            overlap = float(option)
        except ValueError:
            raise bad(f"{option!r} is neither an overlap fraction nor 'label'") from None
    columns: list[str] = []
    for pattern in filter(None, (p.strip() for p in column_text.split(","))):
        matched = fnmatch.filter(schema.feature_names, pattern)
        if not matched:
            raise bad(f"{pattern!r} matches no feature of the schema")
        columns.extend(c for c in matched if c not in columns)
    return VerticalParty(
        name=name.strip(), columns=tuple(columns), overlap=overlap, has_label=has_label
    )


def _print_partners(partners: list[PartnerFiles], *, title: str) -> None:
    table = Table(title=title)
    for heading in ("partner", "rows", "csv", "schema"):
        table.add_column(heading, justify="right" if heading == "rows" else "left")
    for p in partners:
        table.add_row(p.name, f"{p.n_rows:,}", str(p.csv), str(p.schema))
    Console().print(table)


def _print_summary(dataset: Dataset) -> None:
    schema = dataset.schema
    console = Console(soft_wrap=True)
    console.print(f"[bold green]valid[/]: {dataset.path}  ({dataset.n_rows:,} rows)")
    console.print(f"content hash:       {dataset.content_hash}")
    console.print(f"schema fingerprint: {schema.fingerprint()}")
    if dataset.labels is not None:
        rate = float(dataset.labels.mean())
        console.print(f"label {schema.label_column!r}: positive rate {rate:.1%}")
    table = Table(title=f"{len(schema.features)} features")
    for heading in ("column", "type", "missing", "summary"):
        table.add_column(heading, justify="right" if heading == "missing" else "left")
    for feature in schema.features:
        n_missing, summary = _describe(dataset, feature.name)
        table.add_row(feature.name, feature.type, f"{n_missing:,}", summary)
    console.print(table)


def _describe(dataset: Dataset, name: str) -> tuple[int, str]:
    """Missing count and a one-line summary of one feature column."""
    if name in dataset.numeric:
        values = dataset.numeric[name]
        present = values[~np.isnan(values)]
        if not present.size:
            return int(values.size), "all missing"
        summary = f"min {present.min():.4g}  mean {present.mean():.4g}  max {present.max():.4g}"
        return int(values.size - present.size), summary
    if name in dataset.categorical:
        labels = dataset.categorical[name]
        distinct, counts = np.unique(labels.astype(str), return_counts=True)
        order = np.argsort(-counts, kind="stable")[:3]
        top = ", ".join(f"{distinct[k]} ({counts[k]:,})" for k in order)
        return int((labels == MISSING_CATEGORY).sum()), f"{len(distinct)} distinct; top {top}"
    return 0, f"true {float(dataset.boolean[name].mean()):.1%}"
