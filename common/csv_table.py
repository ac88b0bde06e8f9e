"""Reading a partner's CSV into fields: structure checked, values not parsed yet.

:func:`read_table` checks what a file *is* (UTF-8, header, delimiter, the
schema's columns, fields per row) and keeps the file line of every row;
:mod:`common.dataset` then parses and checks the values. Every refusal is a
:class:`~common.errors.DataValidationError` naming the file, row and column.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedcollab.common.errors import DataValidationError
from fedcollab.common.schema import DatasetSchema

__all__ = ["RawTable", "file_sha256", "read_table"]

_DELIMITER_NAMES = {",": "comma ','", ";": "semicolon ';'", "\t": "tab", "|": "pipe '|'"}


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
    ignored = set(schema.ignore_columns)
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
    seen -= ignored
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
    extra = [c for c in header if c not in expected and c not in ignored]
    raise DataValidationError(
        f"unexpected column (not in the schema: {', '.join(map(repr, extra))})",
        file=file,
        row=1,
        column=extra[0],
        hint="declare it in the schema, list it in the schema's ignore_columns, "
        "or delete it from the file",
    )
