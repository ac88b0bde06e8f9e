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
  ``false``, ``1`` or ``0`` in any case, or the spellings the schema declares
  (``label_values``, a boolean feature's ``values``), and nothing else;
* columns in the schema's ``ignore_columns`` are not read at all.

:func:`split_indices` assigns each row to train/validation/test by hashing its
id, so an id lands in the same split at whichever partner holds it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from fedcollab.common.csv_table import RawTable, file_sha256, read_table
from fedcollab.common.errors import DataValidationError
from fedcollab.common.schema import (
    MISSING_CATEGORY,
    MISSING_TOKENS,
    BinaryValues,
    CategoricalFeature,
    DatasetSchema,
    NumericFeature,
)

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


_ObjArray = npt.NDArray[np.object_]


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
        flags = _parse_binary(
            column(schema.label_column),
            schema.label_column,
            problems,
            schema.label_spellings,
            is_label=True,
            declared=schema.label_values is not None,
        )
        labels = flags.astype(np.float32)
    numeric, categorical, boolean = {}, {}, {}
    for feature in schema.features:
        raw = column(feature.name)
        if isinstance(feature, NumericFeature):
            numeric[feature.name] = _parse_numeric(raw, feature, problems)
        elif isinstance(feature, CategoricalFeature):
            categorical[feature.name] = _parse_categorical(raw, feature, problems)
        else:
            boolean[feature.name] = _parse_binary(
                raw,
                feature.name,
                problems,
                feature.spellings,
                is_label=False,
                declared=feature.values is not None,
            )
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
    raw: _ObjArray,
    name: str,
    problems: list[_Problem],
    spellings: BinaryValues,
    *,
    is_label: bool,
    declared: bool,
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
    true, false = spellings.true_keys, spellings.false_keys
    bad = ~missing & ~np.isin(lowered, [*true, *false])
    if bad.any():
        accepted = f"{'/'.join(spellings.true)} for true, {'/'.join(spellings.false)} for false"
        key = "label_values" if is_label else "values"
        if declared:
            hint = f"the schema accepts {accepted} (any case): correct the value or add it there"
        else:
            hint = (
                f"use true/false or 1/0 (any case), or declare this column's spellings in "
                f'the schema, e.g. "{key}": {{"true": ["yes"], "false": ["no"]}}'
            )
        problems.append(
            _problem(
                bad,
                name,
                f"{what} {raw[_first(bad)]!r} is not binary"
                if is_label
                else f"{raw[_first(bad)]!r} is not a boolean",
                hint,
            )
        )
    return np.isin(lowered, true).astype(np.float64)


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
