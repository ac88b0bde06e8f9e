"""``fedcollab example``: a ready-to-run job on the data shipped with the package.

Commands::

    fedcollab example purchase --out DIR [--rounds N] [--overwrite]

It works from any folder and from a non-editable install (the sample data and
the example job spec travel inside the ``fedcollab`` package, ``fedcollab/data``):
it writes ``DIR/data/`` (the Online Shoppers table and its schema),
``DIR/partners/`` (one CSV + schema per Region, as ``fedcollab data split
horizontal ... --by Region --id-from-row-number`` writes them) and
``DIR/purchase.toml``, then prints the command that runs the job in Flower's
simulation engine.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path
from typing import Annotated

import tomli_w
import typer
from rich.console import Console

from fedcollab.common.atomic import write_atomic
from fedcollab.common.errors import WorkspaceError
from fedcollab.common.schema import load_schema
from fedcollab.common.split import split_horizontal

__all__ = ["DATA_DIR", "app", "write_purchase_example"]

#: The sample data shipped in the package (``src/fedcollab/data`` links ``data/``).
DATA_DIR = Path(__file__).resolve().parent.parent / "data"

_CSV = "online_shoppers_intention.csv"
_SCHEMA = "online_shoppers.schema.json"
_JOB = "purchase.example.toml"

app = typer.Typer(help="Ready-to-run example jobs on the data shipped with fedcollab.")


def write_purchase_example(
    out: Path, *, rounds: int | None = None, overwrite: bool = False
) -> Path:
    """Write the purchase-prediction example into ``out``; returns the job spec's path."""
    job_path = out / "purchase.toml"
    if job_path.exists() and not overwrite:
        raise WorkspaceError(
            f"{job_path} exists",
            hint="pass --overwrite to write the example again, or choose another --out",
        )
    missing = [n for n in (_CSV, _SCHEMA, _JOB) if not (DATA_DIR / n).is_file()]
    if missing:
        raise WorkspaceError(
            f"the sample data is not installed ({', '.join(missing)} missing in {DATA_DIR})",
            hint="reinstall fedcollab (`pip install .` from a clone ships fedcollab/data)",
        )
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name in (_CSV, _SCHEMA):
        shutil.copyfile(DATA_DIR / name, data / name)
    split_horizontal(
        data / _CSV,
        load_schema(data / _SCHEMA),
        out / "partners",
        mode="column",
        by_column="Region",
        id_from_row_number=True,
        overwrite=True,
    )
    spec = tomllib.loads((DATA_DIR / _JOB).read_text(encoding="utf-8"))
    if rounds is not None:
        spec["rounds"] = rounds
    write_atomic(job_path, tomli_w.dumps(spec))
    return job_path


@app.command("purchase")
def purchase(
    out: Annotated[Path, typer.Option(help="Folder to write the example into.")] = Path(
        "fedcollab-example"
    ),
    rounds: Annotated[
        int | None, typer.Option(min=1, max=1000, help="Training rounds (default: the spec's 30).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an example already in --out.")] = False,
) -> None:
    """Write a purchase-prediction job on nine Region partners of the shipped data."""
    job_path = write_purchase_example(out, rounds=rounds, overwrite=overwrite)
    console = Console(soft_wrap=True, highlight=False)
    console.print(f"wrote {job_path} and nine partners in {out / 'partners'}")
    console.print(
        f"run it: fedcollab run {job_path} --partners {out / 'partners'} --out {out / 'results'}"
    )
