"""A partner's dataset: a CSV file checked strictly against its schema.

:func:`load_dataset` reads the file, refuses anything the schema does not
allow and returns a frozen :class:`Dataset` of NumPy columns. Every refusal is
a :class:`~common.errors.DataValidationError` naming the file, the 1-based
line (the header is row 1) and the column, and saying how to fix it. When a
file has several problems the one on the earliest row is reported.

Parsing rules, in the order they are checked:

* the file is UTF-8 (a byte-order mark is allowed) and has a header and at
  least one data row; blank lines at the very end are ignored, blank lines
  elsewhere are an error;
* the header holds exactly the schema's columns (any order, no duplicates),
  separated by the schema's delimiter;
* every row has as many fields as the header;
* values are stripped of surrounding whitespace. An empty field or one of
  ``NaN``, ``inf``, ``-inf``, ``Infinity`` (any case) is *missing*, and only
  allowed where the feature's ``missing`` policy allows it. Numeric values
  are what Python's ``float`` reads; booleans and labels are ``true``,
  ``false``, ``1`` or ``0`` in any case.

:func:`split_indices` assigns each row to train/validation/test by hashing its
id, so an id lands in the same split at whichever partner holds it.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from common.errors import DataValidationError
from common.schema import MISSING_CATEGORY, CategoricalFeature, DatasetSchema, NumericFeature

__all__ = [
    "MISSING_TOKENS",
    "Dataset",
    "RawTable",
    "file_sha256",
    "load_dataset",
    "parse_table",
    "read_table",
    "split_indices",
]

#: Field values (after stripping, compared lower-case) that mean "missing".
MISSING_TOKENS = frozenset(
    {"", "nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}
)
_TRUE = ("true", "1")
_FALSE = ("false", "0")
_DELIMITER_NAMES = {",": "comma ','", ";": "semicolon ';'", "\t": "tab", "|": "pipe '|'"}

_ObjArray = npt.NDArray[np.object_]


def file_sha256(path: str | Path) -> str:
    """``"sha256:<hex>"`` of the file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


@dataclass(frozen=True)
class RawTable:
    """A CSV file split into fields, structure checked, values not yet parsed.

    ``lines[i]`` is the file line on which data row ``i`` starts (header = 1).
    When ids were generated from row numbers the id column comes first.
    """

    path: Path
    delimiter: str
    header: tuple[str, ...]
    rows: Sequence[Sequence[str]]
    lines: npt.NDArray[np.int64]
    content_hash: str
    ids_generated: bool = False

    @property
    def n_rows(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class Dataset:
    """One partner's validated rows, column by column."""

    path: Path
    schema: DatasetSchema
    ids: _ObjArray
    labels: npt.NDArray[np.float32] | None
    numeric: Mapping[str, npt.NDArray[np.float64]]
    categorical: Mapping[str, _ObjArray]
    boolean: Mapping[str, npt.NDArray[np.float64]]
    content_hash: str

    @property
    def n_rows(self) -> int:
        return int(self.ids.shape[0])

    def subset(self, idx: npt.NDArray[Any]) -> Dataset:
        """The rows at ``idx`` (integer indices or a boolean mask), same schema and hash."""
        idx = np.asarray(idx)

        def pick(columns: Mapping[str, npt.NDArray[Any]]) -> Mapping[str, Any]:
            return MappingProxyType({name: col[idx] for name, col in columns.items()})

        return dataclasses.replace(
            self,
            ids=self.ids[idx],
            labels=None if self.labels is None else self.labels[idx],
            numeric=pick(self.numeric),
            categorical=pick(self.categorical),
            boolean=pick(self.boolean),
        )


def load_dataset(
    csv_path: str | Path, schema: DatasetSchema, *, id_from_row_number: bool = False
) -> Dataset:
    """Read ``csv_path`` and check it against ``schema``.

    With ``id_from_row_number`` the file must *not* hold the schema's id
    column; ids ``s000001``, ``s000002``, ... are generated in file order
    (the Online Shoppers data set has no session id).
    """
    return parse_table(read_table(csv_path, schema, id_from_row_number=id_from_row_number), schema)


def read_table(
    csv_path: str | Path, schema: DatasetSchema, *, id_from_row_number: bool = False
) -> RawTable:
    """Split the file into fields and check its structure (header, field counts)."""
    path = Path(csv_path)
    file = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataValidationError(
            f"cannot read the file: {exc.strerror or exc}", file=file, hint="check the CSV path"
        ) from exc
    content_hash = f"sha256:{hashlib.sha256(data).hexdigest()}"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataValidationError(
            "the file is not UTF-8 text",
            file=file,
            row=data[: exc.start].count(b"\n") + 1,
            hint="re-export the file as UTF-8 CSV",
        ) from exc

    records, lines = _split_records(text, schema.delimiter, file)
    while records and not records[-1]:  # blank lines at the very end are harmless
        records.pop()
        lines.pop()
    if not records:
        raise DataValidationError(
            "no data rows (the file is empty)",
            file=file,
            hint="export the table with a header row and at least one data row",
        )
    header = tuple(name.strip() for name in records[0])
    first_line = text.split("\n", 1)[0].rstrip("\r")
    _check_header(header, first_line, schema, file, id_from_row_number=id_from_row_number)
    rows = records[1:]
    if not rows:
        raise DataValidationError(
            "no data rows (the file holds only a header)",
            file=file,
            hint="add at least one data row below the header",
        )
    for i, row in enumerate(rows):
        if len(row) != len(header):
            problem = (
                "blank line"
                if not row
                else f"row has {len(row)} fields, the header has {len(header)}"
            )
            raise DataValidationError(
                problem,
                file=file,
                row=lines[i + 1],
                hint="every row needs one value per header column; quote values that "
                "contain the delimiter and delete blank lines",
            )
    row_lines = np.asarray(lines[1:], dtype=np.int64)
    if id_from_row_number:
        width = max(6, len(str(len(rows))))
        header = (schema.id_column, *header)
        rows = [[f"s{i:0{width}d}", *row] for i, row in enumerate(rows, start=1)]
    return RawTable(
        path=path,
        delimiter=schema.delimiter,
        header=header,
        rows=rows,
        lines=row_lines,
        content_hash=content_hash,
        ids_generated=id_from_row_number,
    )


def _split_records(text: str, delimiter: str, file: str) -> tuple[list[list[str]], list[int]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        if '"' not in text:
            # Without quotes every record is exactly one line: skip the slow bookkeeping.
            records = list(reader)
            return records, list(range(1, len(records) + 1))
        records, lines = [], []
        start = 1
        for record in reader:
            records.append(record)
            lines.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataValidationError(
            f"malformed CSV: {exc}",
            file=file,
            row=reader.line_num,
            hint="check quoting on this line: a quoted value must end with a quote "
            "followed by the delimiter or the end of the line",
        ) from exc
    return records, lines


def _check_header(
    header: tuple[str, ...],
    first_line: str,
    schema: DatasetSchema,
    file: str,
    *,
    id_from_row_number: bool,
) -> None:
    expected = [c for c in schema.columns if not (id_from_row_number and c == schema.id_column)]
    if id_from_row_number and schema.id_column in header:
        raise DataValidationError(
            "the file already has the id column, yet ids were to be generated from row numbers",
            file=file,
            row=1,
            column=schema.id_column,
            hint="drop --id-from-row-number (id_from_row_number=True) to use the file's ids",
        )
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataValidationError(
                "the header names this column twice",
                file=file,
                row=1,
                column=name,
                hint="rename or delete one of the two columns",
            )
        seen.add(name)
    if seen == set(expected):
        return
    matched = len(seen & set(expected))
    for other, other_name in _DELIMITER_NAMES.items():
        if other == schema.delimiter:
            continue
        fields = [f.strip() for f in next(csv.reader([first_line], delimiter=other))]
        if len(fields) > len(header) and len(set(fields) & set(expected)) > matched:
            raise DataValidationError(
                f"the header is separated by {other_name}, but the schema's delimiter is "
                f"{_DELIMITER_NAMES[schema.delimiter]}",
                file=file,
                row=1,
                hint=f'set "delimiter": {other!r} in the schema, or re-export the file '
                f"separated by {_DELIMITER_NAMES[schema.delimiter]}",
            )
    missing = [c for c in expected if c not in seen]
    if missing:
        hint = "add the column to the file, or remove it from the schema"
        if missing[0] == schema.id_column and not id_from_row_number:
            hint = "add an id column, or generate ids from row numbers with --id-from-row-number"
        raise DataValidationError(
            f"missing column (the schema requires {', '.join(map(repr, missing))})",
            file=file,
            row=1,
            column=missing[0],
            hint=hint,
        )
    extra = [c for c in header if c not in expected]
    raise DataValidationError(
        f"unexpected column (not in the schema: {', '.join(map(repr, extra))})",
        file=file,
        row=1,
        column=extra[0],
        hint="delete the column from the file, or declare it in the schema",
    )


@dataclass(frozen=True)
class _Problem:
    index: int  # data-row position, 0-based
    column: str
    message: str
    hint: str
    count: int = 1


def _first(mask: npt.NDArray[np.bool_]) -> int:
    return int(np.flatnonzero(mask)[0])


def _normalised(col: _ObjArray) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.bool_]]:
    stripped = np.strings.strip(col.astype(np.str_))
    missing = np.isin(np.strings.lower(stripped), list(MISSING_TOKENS))
    return stripped, missing


def _problem(mask: npt.NDArray[np.bool_], column: str, message: str, hint: str) -> _Problem:
    return _Problem(_first(mask), column, message, hint, int(mask.sum()))


def parse_table(table: RawTable, schema: DatasetSchema) -> Dataset:
    """Parse the fields of a structurally valid table into typed columns."""
    if table.rows:
        grid: _ObjArray = np.array(table.rows, dtype=object)
    else:
        grid = np.empty((0, len(table.header)), dtype=object)
    position = {name: j for j, name in enumerate(table.header)}
    problems: list[_Problem] = []

    def column(name: str) -> _ObjArray:
        return grid[:, position[name]]

    ids = _parse_ids(column(schema.id_column), schema.id_column, table.lines, problems)
    labels = None
    if schema.label_column is not None:
        flags = _parse_binary(column(schema.label_column), schema.label_column, problems, True)
        labels = flags.astype(np.float32)
    numeric, categorical, boolean = {}, {}, {}
    for feature in schema.features:
        raw = column(feature.name)
        if isinstance(feature, NumericFeature):
            numeric[feature.name] = _parse_numeric(raw, feature, problems)
        elif isinstance(feature, CategoricalFeature):
            categorical[feature.name] = _parse_categorical(raw, feature, problems)
        else:
            boolean[feature.name] = _parse_binary(raw, feature.name, problems, False)
    if problems:
        first = min(problems, key=lambda p: p.index)
        more = f" ({first.count} rows in this column have this problem)" if first.count > 1 else ""
        raise DataValidationError(
            first.message + more,
            file=str(table.path),
            row=int(table.lines[first.index]),
            column=first.column,
            hint=first.hint,
        )
    return Dataset(
        path=table.path,
        schema=schema,
        ids=ids,
        labels=labels,
        numeric=MappingProxyType(numeric),
        categorical=MappingProxyType(categorical),
        boolean=MappingProxyType(boolean),
        content_hash=table.content_hash,
    )


def _parse_ids(
    raw: _ObjArray, name: str, lines: npt.NDArray[np.int64], problems: list[_Problem]
) -> _ObjArray:
    stripped, missing = _normalised(raw)
    ids: _ObjArray = stripped.astype(object)
    if missing.any():
        problems.append(
            _problem(missing, name, f"missing id {raw[_first(missing)]!r}", "give every row an id")
        )
    seen: dict[str, int] = {}
    for i, value in enumerate(ids.tolist()):
        if value in seen:
            problems.append(
                _Problem(
                    i,
                    name,
                    f"duplicate id {value!r} (rows {lines[seen[value]]} and {lines[i]})",
                    "ids must be unique within a file; remove or renumber the duplicate row",
                )
            )
            break
        seen[value] = i
    return ids


def _parse_numeric(
    raw: _ObjArray, feature: NumericFeature, problems: list[_Problem]
) -> npt.NDArray[np.float64]:
    try:
        values: npt.NDArray[np.float64] = raw.astype(np.float64)
    except ValueError:
        values = np.full(raw.shape, np.nan)
        _, missing = _normalised(raw)
        present = ~missing
        try:
            values[present] = raw[present].astype(np.float64)
        except ValueError:
            bad = np.zeros(raw.shape, dtype=bool)
            for i in np.flatnonzero(present).tolist():
                try:
                    values[i] = float(raw[i])
                except ValueError:
                    bad[i] = True
            problems.append(
                _problem(
                    bad,
                    feature.name,
                    f"{raw[_first(bad)]!r} is not a number",
                    "numeric columns hold plain numbers such as 12, -3 or 0.25 "
                    "('.' as decimal point, no thousands separator)",
                )
            )
    not_finite = ~np.isfinite(values)
    if not_finite.any():
        if feature.missing == "forbid":
            problems.append(
                _problem(
                    not_finite,
                    feature.name,
                    f"missing or non-finite value {raw[_first(not_finite)]!r}",
                    'fill in the value, or set "missing": "mean" for this feature in the schema',
                )
            )
        values[not_finite] = np.nan
    return values


def _parse_categorical(
    raw: _ObjArray, feature: CategoricalFeature, problems: list[_Problem]
) -> _ObjArray:
    stripped, missing = _normalised(raw)
    values: _ObjArray = stripped.astype(object)
    if missing.any():
        if feature.missing == "forbid":
            problems.append(
                _problem(
                    missing,
                    feature.name,
                    f"missing value {raw[_first(missing)]!r}",
                    'fill in the value, or set "missing": "category" for this feature',
                )
            )
        values[missing] = MISSING_CATEGORY
    if feature.vocabulary is not None:
        unknown = ~missing & ~np.isin(stripped, list(feature.vocabulary))
        if unknown.any():
            shown = ", ".join(map(repr, feature.vocabulary[:12]))
            if len(feature.vocabulary) > 12:
                shown += ", ..."
            problems.append(
                _problem(
                    unknown,
                    feature.name,
                    f"{str(stripped[_first(unknown)])!r} is not in the vocabulary ({shown})",
                    "correct the value, or add it to the vocabulary in the schema "
                    "(every partner must use the same vocabulary)",
                )
            )
    return values


def _parse_binary(
    raw: _ObjArray, name: str, problems: list[_Problem], is_label: bool
) -> npt.NDArray[np.float64]:
    stripped, missing = _normalised(raw)
    lowered = np.strings.lower(stripped)
    what = "label" if is_label else "boolean"
    if missing.any():
        problems.append(
            _problem(
                missing,
                name,
                f"missing {what} {raw[_first(missing)]!r}",
                "every row needs a label; drop unlabelled rows before loading"
                if is_label
                else "fill in true or false (booleans cannot be missing)",
            )
        )
    bad = ~missing & ~np.isin(lowered, [*_TRUE, *_FALSE])
    if bad.any():
        problems.append(
            _problem(
                bad,
                name,
                f"{what} {raw[_first(bad)]!r} is not binary"
                if is_label
                else f"{raw[_first(bad)]!r} is not a boolean",
                "use true/false or 1/0 (any case)",
            )
        )
    return np.isin(lowered, _TRUE).astype(np.float64)


def split_indices(
    ids: Sequence[str] | npt.NDArray[Any],
    *,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Train, validation and test row indices (ascending), decided per id.

    Each id is hashed as ``sha256(f"{seed}:{id}")``; the first 8 bytes, read
    as a fraction ``u`` in [0, 1), put the row in test if ``u < test_fraction``,
    in validation if ``u < test_fraction + validation_fraction``, else in
    train. So an id lands in the same split at every partner, and the union of
    the partners' test rows is the centralized baseline's test set.

    >>> train, val, test = split_indices(["a", "b", "c"], validation_fraction=0, test_fraction=0)
    >>> train.tolist()
    [0, 1, 2]
    """
    if not (0 <= validation_fraction < 1 and 0 <= test_fraction < 1):
        raise ValueError("validation_fraction and test_fraction must lie in [0, 1)")
    if validation_fraction + test_fraction >= 1:
        raise ValueError("validation_fraction + test_fraction must be below 1")
    u = np.fromiter(
        (
            int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:8], "big") / 2**64
            for i in (ids.tolist() if isinstance(ids, np.ndarray) else ids)
        ),
        dtype=np.float64,
        count=len(ids),
    )
    test = u < test_fraction
    val = ~test & (u < test_fraction + validation_fraction)
    train = ~test & ~val
    return (
        np.flatnonzero(train).astype(np.int64),
        np.flatnonzero(val).astype(np.int64),
        np.flatnonzero(test).astype(np.int64),
    )
