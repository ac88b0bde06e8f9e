"""``fedcollab data schema CSV``: draft a schema (and a starter job) for a person to review.

    fedcollab data schema CSV [--out S] [--label COL] [--positive VALUE] [--negative VALUE]
                              [--ignore COL ...] [--id COL] [--no-label]
                              [--fixed-vocabularies] [--job JOB.toml]

The guesses are :func:`common.schema_draft.draft_schema`'s; this module writes
the files and prints what to review and the next command.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.table import Table

from fedcollab.common.atomic import write_atomic
from fedcollab.common.errors import WorkspaceError
from fedcollab.common.schema import save_schema
from fedcollab.common.schema_draft import SchemaDraft, draft_schema

__all__ = ["app"]

app = typer.Typer()

_CsvArg = Annotated[
    Path, typer.Argument(metavar="CSV", help="The CSV file.", dir_okay=False, show_default=False)
]
_OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace files that already exist.")
]


@app.command(
    "schema",
    epilog="Example: fedcollab data schema bank.csv --label y --ignore duration "
    "--job bank.job.toml",
)
def schema_draft(
    csv_path: _CsvArg,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Where to write the schema.", show_default="CSV.schema.json"
        ),
    ] = None,
    label: Annotated[
        str | None, typer.Option(metavar="COLUMN", help="The label column (else guessed).")
    ] = None,
    positive: Annotated[
        str | None,
        typer.Option(metavar="VALUE", help="The label's positive value, e.g. yes (else guessed)."),
    ] = None,
    negative: Annotated[
        str | None,
        typer.Option(
            metavar="VALUE",
            help="The label's negative value: needed only when this file's rows all have the "
            "positive one.",
        ),
    ] = None,
    no_label: Annotated[
        bool, typer.Option("--no-label", help="The file has no label (segmentation, features).")
    ] = False,
    id_column: Annotated[
        str | None,
        typer.Option("--id", metavar="COLUMN", help="The id column (else guessed or generated)."),
    ] = None,
    ignore: Annotated[
        list[str] | None,
        typer.Option(metavar="COLUMN", help="A column not to read (repeat the option)."),
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="The dataset's name.", show_default="from the file name")
    ] = None,
    fixed_vocabularies: Annotated[
        bool,
        typer.Option(
            "--fixed-vocabularies",
            help="Write the text values seen as vocabularies (default: computed federatedly; "
            "the schema travels to every party of a job).",
        ),
    ] = False,
    job: Annotated[
        Path | None,
        typer.Option(metavar="JOB.toml", help="Also write a starter job spec for this schema."),
    ] = None,
    overwrite: _OverwriteOpt = False,
) -> None:
    """Draft a schema for CSV (types, vocabularies, id and label) for you to review."""
    if no_label and (label is not None or positive is not None or negative is not None):
        raise click.UsageError("--no-label excludes --label, --positive and --negative")
    draft = draft_schema(
        csv_path,
        dataset=dataset,
        label=label,
        positive=positive,
        negative=negative,
        id_column=id_column,
        ignore=ignore or (),
        no_label=no_label,
        fixed_vocabularies=fixed_vocabularies,
    )
    out = out or csv_path.with_name(csv_path.name.split(".")[0] + ".schema.json")
    targets = [out] if job is None else [out, job]
    if job is not None and out.resolve() == job.resolve():
        raise click.UsageError("--out and --job name the same file")
    for target in targets:
        _check_output(target, overwrite)
    _write_all(draft, out, job)
    _print_draft(draft, out, csv_path, job)


def _check_output(target: Path, overwrite: bool) -> None:
    """Refuse, before anything is written, an output this command cannot or must not write."""
    folder = target.parent
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise WorkspaceError(
            f"cannot write {target}: the folder {folder} {state}",
            hint=f"create the folder first (mkdir -p {shlex.quote(str(folder))}), "
            "or choose another path; nothing was written",
        )
    if target.is_dir():
        raise WorkspaceError(
            f"cannot write {target}: it is a folder",
            hint="name a file (e.g. bank.schema.json, bank.job.toml); nothing was written",
        )
    if target.exists() and not overwrite:
        raise WorkspaceError(
            f"{target} already exists", hint="choose another path, or pass --overwrite"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise WorkspaceError(
            f"cannot write {target}: the folder {folder} is not writable for you",
            hint="choose another path; nothing was written",
        )


def _write_all(draft: SchemaDraft, out: Path, job: Path | None) -> None:
    """Write the schema and the job, each atomically, and both or neither.

    If the second write fails, the first file is removed again (or, with
    ``--overwrite``, given back its previous content).
    """
    writes: list[tuple[Path, Callable[[], object]]] = [
        (out, lambda: save_schema(draft.schema, out))
    ]
    if job is not None:
        job_file, job_text = job, _starter_job(draft, out, job)
        writes.append((job_file, lambda: write_atomic(job_file, job_text)))
    before = {path: path.read_bytes() if path.is_file() else None for path, _ in writes}
    written: list[Path] = []
    current = out
    try:
        for current, write in writes:
            write()
            written.append(current)
    except BaseException as exc:
        left = [path for path in reversed(written) if not _restore(path, before[path])]
        if not isinstance(exc, OSError):
            raise
        state = (
            f"{', '.join(map(str, left))} could not be restored" if left else "nothing was written"
        )
        raise WorkspaceError(
            f"cannot write {current}: {exc.strerror or exc} ({state})",
            hint="check the folder's free space and permissions, or choose another path",
        ) from exc


def _restore(path: Path, content: bytes | None) -> bool:
    """Put ``path`` back as it was before this command (absent, or ``content``)."""
    try:
        if content is None:
            path.unlink(missing_ok=True)
        else:
            write_atomic(path, content)
    except OSError:
        return False
    return True


def _starter_job(draft: SchemaDraft, schema_path: Path, job: Path) -> str:
    schema = draft.schema
    try:
        ref = schema_path.resolve().relative_to(job.resolve().parent).as_posix()
    except ValueError:
        ref = schema_path.resolve().as_posix()
    if schema.label_column is not None:
        task, purpose, extra = (
            "purchase_prediction",
            "purchase-prediction",
            '\n[model]\nkind = "logreg"\n',
        )
    else:
        task, purpose, extra = "segmentation", "user-segmentation", "\n[segmentation]\nk = 5\n"
    return (
        "# Drafted by `fedcollab data schema`: review it, then run it (README, 'Job specs').\n"
        f'name = "{schema.dataset[:64]}"\n'
        f'task = "{task}"\n'
        f'purpose = "{purpose}"          # a purpose registered in the federation\'s registry\n'
        f"schema = {ref!r}\n"
        "min_partners = 2\n"
        "rounds = 20\n"
        "startup_timeout_s = 600    # simulated nodes start slowly on a busy machine\n" + extra
    )


def _print_draft(draft: SchemaDraft, out: Path, csv_path: Path, job: Path | None) -> None:
    schema = draft.schema
    console = Console(soft_wrap=True)
    console.print(f"[bold]draft schema[/] for {csv_path} ({draft.n_rows:,} rows) written to {out}")
    table = Table()
    for heading in ("column", "role", "type", "missing", "values"):
        table.add_column(heading)
    table.add_row(
        schema.id_column,
        "id",
        "-",
        "-",
        "generated from row numbers" if draft.ids_from_row_number else "unique",
    )
    if schema.label_column is not None:
        spell = schema.label_spellings
        table.add_row(
            schema.label_column, "label", "binary", "forbid",
            f"positive {'/'.join(spell.true)}, negative {'/'.join(spell.false)}",
        )  # fmt: skip
    for feature in schema.features:
        values = ""
        if feature.type == "categorical":
            values = (
                "computed federatedly"
                if feature.vocabulary is None
                else ", ".join(feature.vocabulary[:8])
            )
        elif feature.type == "boolean":
            spell = feature.spellings
            values = f"true {'/'.join(spell.true)}, false {'/'.join(spell.false)}"
        table.add_row(feature.name, "feature", feature.type, feature.missing, values)
    for name in schema.ignore_columns:
        table.add_row(name, "ignored", "-", "-", "not read")
    console.print(table)
    for note in draft.notes:
        console.print(f"  - {note}")
    ids = " --id-from-row-number" if draft.ids_from_row_number else ""
    console.print("Review the schema (types, label, ignored columns), then:")
    console.print(f"  fedcollab data validate {csv_path} --schema {out}{ids}")
    if job is not None:
        console.print(f"  fedcollab run {job} --csv {csv_path} --iid 3{ids}")
