"""Drafting a schema from a CSV file, for a person to review.

:func:`draft_schema` reads a file once and guesses, column by column, what a
partner would otherwise write by hand in ``<name>.schema.json``:

* the delimiter (the one of ``,`` ``;`` tab ``|`` that splits the header most);
* each column's type: ``boolean`` when its values are two known spellings
  (``true``/``false``, ``1``/``0``, ``yes``/``no``, ``y``/``n``, ``t``/``f``),
  ``numeric`` when every value reads as a number, else ``categorical`` (up
  to :data:`MAX_VOCABULARY` distinct values, and not a different value in
  every row; else the column is more likely free text or a key and is ignored);
* each categorical's vocabulary: ``null`` (computed federatedly before
  training) unless ``fixed_vocabularies``, which writes the values seen. The
  schema travels to the coordinator and every partner inside the job spec, so
  the values of one partner's file are not written into it by default;
* the missing-value policy: ``mean`` / ``category`` when values are missing;
* the id column: a column named like an id (``id``, ``*_id``, ``uuid``, ...)
  whose values are unique; if there is none the draft names a column
  ``row_id`` that is not in the file, and ids are generated from row numbers
  (``--id-from-row-number``);
* the label: the column given, else the column named most like a label (see
  :data:`common.schema_label.LABEL_NAMES`: ``label``, ``target``, ``y``, ``class``, ``outcome``,
  then ``churn``, ``converted``, ``purchase(d)``, ``revenue``, and ``default``
  last), with its positive spelling (``yes``, ``true``, ``1``, ... or the one
  given). The guess never passes over that column to a worse-named one: if it
  cannot be a label (rows without a value, one value, more than two), drafting
  fails with a :class:`~common.errors.SchemaError` that names the column, says
  why, and says what to do (fix the rows, or ``--label COLUMN``). A model
  trained silently on another column would predict the wrong thing.

Every guess that a person should check is returned as a note; the draft is a
:class:`~common.schema.DatasetSchema`, so it is valid by construction and the
loader stays as strict as for a hand-written schema.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedcollab.common.errors import DataValidationError, SchemaError
from fedcollab.common.schema import (
    BinaryValues,
    BooleanFeature,
    CategoricalFeature,
    DatasetSchema,
    Delimiter,
    Feature,
    NumericFeature,
)
from fedcollab.common.schema_label import (
    guess_label,
    is_missing,
    positive_and_negative,
    spelled,
    two_values,
)

__all__ = ["GENERATED_ID", "MAX_VOCABULARY", "SchemaDraft", "draft_schema"]

#: The id column a draft names when the file has none (ids come from row numbers).
GENERATED_ID = "row_id"
#: A text column with more distinct values than this is not drafted as categorical.
MAX_VOCABULARY = 100

_DELIMITERS: tuple[Delimiter, ...] = (",", ";", "\t", "|")
_PAIRS = (("true", "false"), ("1", "0"), ("yes", "no"), ("y", "n"), ("t", "f"))
_ID_NAME = re.compile(r"(^|[_\s-])(id|uuid|guid|key)$|^(id|uuid|guid)[_\s-]", re.IGNORECASE)


@dataclass(frozen=True)
class SchemaDraft:
    """A drafted schema, what to review, and whether ids must be generated."""

    schema: DatasetSchema
    notes: tuple[str, ...]
    #: The file has no id column: load and split it with ``--id-from-row-number``.
    ids_from_row_number: bool
    n_rows: int


def draft_schema(
    csv_path: str | Path,
    *,
    dataset: str | None = None,
    label: str | None = None,
    positive: str | None = None,
    negative: str | None = None,
    id_column: str | None = None,
    ignore: Sequence[str] = (),
    no_label: bool = False,
    fixed_vocabularies: bool = False,
) -> SchemaDraft:
    """Guess a schema for ``csv_path``; arguments override the guesses.

    Raises :class:`DataValidationError` for a file that cannot be read as a
    table, :class:`SchemaError` when an argument names no column of it or when
    the label (given, or the best-named guess) is not two-valued in every row.
    """
    path = Path(csv_path)
    header, rows, delimiter = _read(path)
    columns = {name: [row[j].strip() for row in rows] for j, name in enumerate(header)}
    notes: list[str] = []
    for name in (label, id_column, *ignore):
        if name is not None and name not in columns:
            raise SchemaError(
                f"{path}: no column {name!r} (the header has {', '.join(map(repr, header))})",
                hint="name a column of the file's header (case matters)",
            )
    ignored = list(dict.fromkeys(ignore))

    ids_generated = False
    if id_column is None:
        id_column = _guess_id(columns, exclude={label, *ignored})
        if id_column is None:
            id_column, ids_generated = _free_name(GENERATED_ID, header), True
            notes.append(
                f"no id column found: ids are generated from row numbers as {id_column!r} "
                "(pass --id-from-row-number to `data validate` and `data split`)"
            )
        else:
            notes.append(f"id column guessed: {id_column!r} (unique in every row)")
    elif len(set(columns[id_column])) != len(rows):
        notes.append(f"id column {id_column!r} has repeated values: loading will refuse them")

    label_values: BinaryValues | None = None
    if no_label:
        label = None
    elif label is None:
        label, others = guess_label(
            path,
            columns,
            exclude={id_column, *ignored},
            one_class_ok=positive is not None or negative is not None,
        )
        if label is None:
            notes.append("no label column found: pass --label COLUMN (or --no-label)")
        elif others:
            notes.append(
                f"label column guessed: {label!r} (also named like a label: "
                f"{', '.join(map(repr, others))}; pass --label COLUMN to choose another)"
            )
        else:
            notes.append(f"label column guessed: {label!r}")
    if label is not None:
        label_values = positive_and_negative(
            path, label, columns[label], positive, notes, negative=negative
        )
    elif positive is not None or negative is not None:
        raise SchemaError(
            "--positive and --negative need a label column", hint="pass --label COLUMN too"
        )

    features: list[Feature] = []
    for name in header:
        if name in (id_column, label) or name in ignored:
            continue
        feature, note = _guess_feature(name, columns[name], len(rows), fixed_vocabularies)
        if feature is None:
            ignored.append(name)
        else:
            features.append(feature)
        if note:
            notes.append(note)
    if ignored:
        notes.append(f"ignored (not read): {', '.join(map(repr, ignored))}")
    try:
        schema = DatasetSchema(
            dataset=dataset or _dataset_name(path),
            delimiter=delimiter,
            id_column=id_column,
            label_column=label,
            label_values=label_values,
            features=tuple(features),
            ignore_columns=tuple(ignored),
        )
    except ValueError as exc:
        raise SchemaError(
            f"{path}: cannot draft a schema: {exc}", hint="check --label, --id and --ignore"
        ) from exc
    return SchemaDraft(
        schema=schema, notes=tuple(notes), ids_from_row_number=ids_generated, n_rows=len(rows)
    )


def _read(path: Path) -> tuple[list[str], list[list[str]], Delimiter]:
    file = str(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise DataValidationError(
            f"cannot read the file: {exc.strerror or exc}", file=file, hint="check the CSV path"
        ) from exc
    except UnicodeDecodeError as exc:
        raise DataValidationError(
            "the file is not UTF-8 text", file=file, hint="re-export the file as UTF-8 CSV"
        ) from exc
    first = text.split("\n", 1)[0]
    delimiter = max(_DELIMITERS, key=first.count)
    try:
        records = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if r]
    except csv.Error as exc:
        raise DataValidationError(
            f"malformed CSV: {exc}", file=file, hint="check the file's quoting"
        ) from exc
    if len(records) < 2:
        raise DataValidationError(
            "the file needs a header and at least one data row", file=file, hint="export both"
        )
    header = [name.strip() for name in records[0]]
    if len(set(header)) != len(header) or not all(header):
        raise DataValidationError(
            "the header has a blank or repeated column name",
            file=file,
            row=1,
            hint="give every column a distinct name",
        )
    rows = records[1:]
    for i, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise DataValidationError(
                f"row has {len(row)} fields, the header has {len(header)}",
                file=file,
                row=i,
                hint="every row needs one value per header column",
            )
    return header, rows, delimiter


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _guess_id(columns: dict[str, list[str]], *, exclude: set[str | None]) -> str | None:
    for name, values in columns.items():
        if name in exclude or not _ID_NAME.search(name):
            continue
        if all(not is_missing(v) for v in values) and len(set(values)) == len(values):
            return name
    return None


def _free_name(base: str, header: Sequence[str]) -> str:
    name, n = base, 1
    while name in header:
        n += 1
        name = f"{base}_{n}"
    return name


def _guess_feature(
    name: str, values: list[str], n_rows: int, fixed_vocabulary: bool
) -> tuple[Feature | None, str]:
    present = [v for v in values if not is_missing(v)]
    n_missing = n_rows - len(present)
    if not present:
        return None, f"{name!r} is empty in every row: ignored"
    two = two_values(values)
    if two is not None:
        for true, false in _PAIRS:
            if sorted((true, false)) == two:
                spellings = None
                if (true, false) not in (("true", "false"), ("1", "0")):
                    spellings = BinaryValues(
                        true=(spelled(values, true),), false=(spelled(values, false),)
                    )
                return BooleanFeature(name=name, values=spellings), ""
    if all(_is_number(v) for v in present):
        note = ""
        if n_missing:
            note = f"{name!r}: {n_missing} missing values, imputed with the federated mean"
        distinct = set(present)
        if len(distinct) <= 12 and all(float(v).is_integer() for v in distinct):
            note = note or (
                f"{name!r} holds {len(distinct)} whole numbers: drafted numeric; "
                'make it "categorical" if they are codes'
            )
        return NumericFeature(name=name, missing="mean" if n_missing else "forbid"), note
    distinct_values = sorted(set(present))
    if len(distinct_values) > MAX_VOCABULARY or len(distinct_values) == len(present) > 2:
        return None, (
            f"{name!r} has {len(distinct_values)} distinct text values in {len(present)} rows "
            "(free text or a key): ignored"
        )
    feature = CategoricalFeature(
        name=name,
        vocabulary=tuple(distinct_values) if fixed_vocabulary else None,
        missing="category" if n_missing else "forbid",
    )
    note = f"{name!r}: {n_missing} missing values become their own category" if n_missing else ""
    return feature, note


def _dataset_name(path: Path) -> str:
    stem = path.name.split(".")[0]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", stem).strip("-").lower()
    return slug or "dataset"
