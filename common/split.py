"""Split one CSV into partner files, to simulate a federation from one table.

Horizontal splits give every partner the same columns and different rows:

* ``column`` -- one partner per distinct value of a column (``Region`` ->
  ``region-1`` ... ``region-9``): the natural, non-IID split;
* ``iid`` -- a random permutation cut into ``n_partners`` near-equal parts;
* ``dirichlet`` -- label skew: for each label class, proportions over the
  partners are drawn from ``Dir(alpha)`` and that class's rows dealt out
  accordingly, as in Yurochkin et al. 2019 (arXiv:1905.12022) and the
  NIID-Bench of Li et al. 2021 (arXiv:2102.02079); Hsu et al. 2019
  (arXiv:1909.06335) introduced Dirichlet label skew for federated
  benchmarks. Smaller ``alpha`` means more skew.

Vertical splits give every party the same ids (up to ``overlap``) and
different columns; see :class:`VerticalParty`.

Each partner gets ``<out>/<name>.csv`` and ``<out>/<name>.schema.json``. The
source is validated against its schema first, so no partner file is written
from a file that breaks it. Values are copied as they are in the source (the
delimiter and the header order are kept, rows stay in file order).

Sources without an id column (Online Shoppers) can be split with
``id_from_row_number=True``: ids ``s000001``, ``s000002``, ... are generated in
file order and written as the first column, so ids are stable across splits.

Notes
-----
Seeds feed :func:`numpy.random.default_rng`; the same source, schema, options
and seed always produce byte-identical partner files.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from fedcollab.common.dataset import RawTable, parse_table, read_table
from fedcollab.common.errors import DataValidationError, FedcollabError
from fedcollab.common.schema import DatasetSchema, save_schema

__all__ = [
    "PartnerFiles",
    "SplitArgumentError",
    "VerticalParty",
    "assign_by_value",
    "assign_dirichlet",
    "assign_iid",
    "choose_overlap",
    "split_horizontal",
    "split_vertical",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_Indices = npt.NDArray[np.int64]


class SplitArgumentError(ValueError):
    """The split was asked for something inconsistent (a caller's mistake, not the data's).

    The CLI turns it into a usage error (exit 2).
    """


@dataclass(frozen=True)
class PartnerFiles:
    """The two files written for one partner."""

    name: str
    csv: Path
    schema: Path
    n_rows: int


@dataclass(frozen=True)
class VerticalParty:
    """One party of a vertical split.

    ``columns`` are feature names of the source schema; ``overlap`` is the
    fraction of ids (rows) the party holds, chosen at random; the party with
    ``has_label`` (usually with ``overlap=1.0``) also gets the label column.
    """

    name: str
    columns: tuple[str, ...]
    overlap: float = 1.0
    has_label: bool = False


# --- pure assignment functions ------------------------------------------------------


def assign_by_value(values: Sequence[str]) -> dict[str, _Indices]:
    """Row indices per distinct value, values sorted numerically when they all are numbers."""
    array = np.asarray(values, dtype=object)
    distinct = sorted(set(array.tolist()), key=_natural_key)
    return {v: np.flatnonzero(array == v).astype(np.int64) for v in distinct}


def _natural_key(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def assign_iid(n_rows: int, n_partners: int, *, seed: int = 0) -> list[_Indices]:
    """A random permutation of ``range(n_rows)`` cut into near-equal parts, each sorted."""
    _check_counts(n_rows, n_partners)
    permutation = np.random.default_rng(seed).permutation(n_rows)
    return [np.sort(part).astype(np.int64) for part in np.array_split(permutation, n_partners)]


def assign_dirichlet(
    labels: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    n_partners: int,
    *,
    alpha: float,
    seed: int = 0,
    max_draws: int = 100,
) -> list[_Indices]:
    """Label-skewed partition: per class, proportions over partners ~ ``Dir(alpha)``.

    Draws are repeated (up to ``max_draws`` times) until every partner has a
    row; if none succeeds, the largest partners each give one row to an empty
    one, so no partner is ever empty.
    """
    _check_counts(len(labels), n_partners)
    if not alpha > 0:
        raise SplitArgumentError("alpha must be positive")
    rng = np.random.default_rng(seed)
    classes = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    parts: list[list[int]] = []
    for _ in range(max_draws):
        parts = [[] for _ in range(n_partners)]
        for rows in classes:
            shuffled = rng.permutation(rows)
            proportions = rng.dirichlet(np.full(n_partners, alpha))
            cuts = (np.cumsum(proportions)[:-1] * len(shuffled)).astype(int)
            for part, chunk in zip(parts, np.split(shuffled, cuts), strict=True):
                part.extend(chunk.tolist())
        if all(parts):
            break
    for empty in (p for p in parts if not p):
        empty.append(max(parts, key=len).pop())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def choose_overlap(n_rows: int, overlap: float, *, rng: np.random.Generator) -> _Indices:
    """``round(overlap * n_rows)`` (at least 1) row indices chosen at random, sorted."""
    if not 0 < overlap <= 1:
        raise SplitArgumentError("overlap must lie in (0, 1]")
    keep = min(n_rows, max(1, round(overlap * n_rows)))
    return np.sort(rng.choice(n_rows, size=keep, replace=False)).astype(np.int64)


def _check_counts(n_rows: int, n_partners: int) -> None:
    if n_partners < 1:
        raise SplitArgumentError("n_partners must be at least 1")
    if n_rows < n_partners:
        raise SplitArgumentError(f"cannot split {n_rows} rows among {n_partners} partners")


# --- file-level splits ------------------------------------------------------------


def split_horizontal(
    csv_path: str | Path,
    schema: DatasetSchema,
    out_dir: str | Path,
    *,
    mode: Literal["column", "iid", "dirichlet"],
    by_column: str | None = None,
    n_partners: int | None = None,
    alpha: float = 0.5,
    seed: int = 0,
    prefix: str = "partner",
    id_from_row_number: bool = False,
    overwrite: bool = False,
) -> list[PartnerFiles]:
    """Write one CSV + schema per partner; partners share columns, not rows.

    ``mode="column"`` needs ``by_column`` (a feature, kept in the files) and
    names partners ``f"{by_column.lower()}-{value}"``; ``"iid"`` and
    ``"dirichlet"`` need ``n_partners`` and name them ``f"{prefix}-{i}"``.
    """
    if mode == "column":
        if by_column is None or n_partners is not None:
            raise SplitArgumentError('mode "column" takes by_column and no n_partners')
        if by_column not in schema.feature_names:
            raise SplitArgumentError(
                f"{by_column!r} is not a feature of the schema, cannot split by it"
            )
    else:
        if n_partners is None or by_column is not None:
            raise SplitArgumentError(f"mode {mode!r} takes n_partners and no by_column")
        if not _NAME.match(prefix):
            raise SplitArgumentError(f"prefix {prefix!r} must match {_NAME.pattern}")
    if mode == "dirichlet" and schema.label_column is None:
        raise SplitArgumentError("a Dirichlet label-skew split needs a schema with a label_column")

    table = read_table(csv_path, schema, id_from_row_number=id_from_row_number)
    dataset = parse_table(table, schema)
    if n_partners is not None and table.n_rows < n_partners:
        raise DataValidationError(
            f"only {table.n_rows} data rows for {n_partners} partners",
            file=str(table.path),
            hint="ask for fewer partners",
        )
    groups: dict[str, _Indices]
    if mode == "column":
        assert by_column is not None
        column = table.header.index(by_column)
        values = [row[column].strip() for row in table.rows]
        by_value = assign_by_value(values)
        groups = {f"{by_column.lower()}-{_slug(value)}": idx for value, idx in by_value.items()}
        if len(groups) != len(by_value):
            raise DataValidationError(
                "two values of this column give the same partner name once made file-name safe",
                file=str(table.path),
                column=by_column,
                hint="split by a column whose values differ in letters, digits or '_'",
            )
    elif mode == "iid":
        assert n_partners is not None
        parts = assign_iid(table.n_rows, n_partners, seed=seed)
        groups = {f"{prefix}-{i}": idx for i, idx in enumerate(parts, start=1)}
    else:
        assert n_partners is not None and dataset.labels is not None
        parts = assign_dirichlet(dataset.labels, n_partners, alpha=alpha, seed=seed)
        groups = {f"{prefix}-{i}": idx for i, idx in enumerate(parts, start=1)}

    out = _prepare_out_dir(out_dir, list(groups), overwrite=overwrite)
    # Ignored columns are not read, so they are not copied to partners either.
    ignored = set(schema.ignore_columns)
    kept = tuple(j for j, name in enumerate(table.header) if name not in ignored)
    partner_schema = schema.model_copy(update={"ignore_columns": ()})
    return [
        _write_partner(out, name, table, idx, kept, partner_schema) for name, idx in groups.items()
    ]


def split_vertical(
    csv_path: str | Path,
    schema: DatasetSchema,
    out_dir: str | Path,
    *,
    parties: Sequence[VerticalParty],
    seed: int = 0,
    id_from_row_number: bool = False,
    overwrite: bool = False,
) -> list[PartnerFiles]:
    """Write one CSV + schema per party; parties share ids, not columns.

    Each party gets the id column, its ``columns`` (in the source's header
    order) and, if ``has_label``, the label, for a random ``overlap`` fraction
    of the rows. Each party's rows are drawn from its own seed derived from
    ``seed`` and its name, so adding a party does not change the others.
    """
    _check_parties(parties, schema)
    table = read_table(csv_path, schema, id_from_row_number=id_from_row_number)
    parse_table(table, schema)
    out = _prepare_out_dir(out_dir, [p.name for p in parties], overwrite=overwrite)
    written = []
    for party in parties:
        name_seed = int.from_bytes(hashlib.sha256(party.name.encode()).digest()[:8], "big")
        rng = np.random.default_rng([seed, name_seed])
        idx = choose_overlap(table.n_rows, party.overlap, rng=rng)
        wanted = {schema.id_column, *party.columns}
        if party.has_label and schema.label_column is not None:
            wanted.add(schema.label_column)
        keep = tuple(j for j, name in enumerate(table.header) if name in wanted)
        features = [
            schema.feature(table.header[j]) for j in keep if table.header[j] in party.columns
        ]
        party_schema = DatasetSchema(
            version=schema.version,
            dataset=party.name,
            delimiter=schema.delimiter,
            id_column=schema.id_column,
            label_column=schema.label_column if party.has_label else None,
            label_values=schema.label_values if party.has_label else None,
            features=tuple(features),
        )
        written.append(_write_partner(out, party.name, table, idx, keep, party_schema))
    return written


def _check_parties(parties: Sequence[VerticalParty], schema: DatasetSchema) -> None:
    if not parties:
        raise SplitArgumentError("a vertical split needs at least one party")
    names: set[str] = set()
    owner: dict[str, str] = {}
    for party in parties:
        if not _NAME.match(party.name):
            raise SplitArgumentError(f"party name {party.name!r} must match {_NAME.pattern}")
        if party.name in names:
            raise SplitArgumentError(f"party name {party.name!r} is used twice")
        names.add(party.name)
        if not 0 < party.overlap <= 1:
            raise SplitArgumentError(f"party {party.name!r}: overlap must lie in (0, 1]")
        if not party.columns and not party.has_label:
            raise SplitArgumentError(f"party {party.name!r} holds neither columns nor the label")
        for column in party.columns:
            if column not in schema.feature_names:
                raise SplitArgumentError(
                    f"party {party.name!r}: {column!r} is not a feature of the schema"
                )
            if column in owner:
                raise SplitArgumentError(
                    f"column {column!r} is given to both {owner[column]!r} and {party.name!r}"
                )
            owner[column] = party.name
    holders = [p.name for p in parties if p.has_label]
    if schema.label_column is None and holders:
        raise SplitArgumentError("the schema has no label column, so no party can hold the label")
    if schema.label_column is not None and len(holders) != 1:
        raise SplitArgumentError(f"exactly one party must hold the label (got {len(holders)})")


def _slug(value: str) -> str:
    """A file-name-safe partner name part: ``admin.`` -> ``admin``, ``blue collar`` ->
    ``blue-collar``, ``1.5`` -> ``1-5`` (runs of other characters become one ``-``).

    >>> [_slug(v) for v in ("admin.", "blue collar", "self-employed", "a__b", "?", "1.5")]
    ['admin', 'blue-collar', 'self-employed', 'a__b', 'empty', '1-5']
    """
    return re.sub(r"[^A-Za-z0-9_]+", "-", value).strip("-_") or "empty"


def _prepare_out_dir(out_dir: str | Path, names: Sequence[str], *, overwrite: bool) -> Path:
    out = Path(out_dir)
    existing = [
        path
        for name in names
        for path in (out / f"{name}.csv", out / f"{name}.schema.json")
        if path.exists()
    ]
    if existing and not overwrite:
        raise FedcollabError(
            f"{existing[0]} already exists ({len(existing)} partner files would be overwritten)",
            hint="choose another output directory, or pass --overwrite",
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def _write_partner(
    out: Path,
    name: str,
    table: RawTable,
    rows: _Indices,
    columns: tuple[int, ...],
    schema: DatasetSchema,
) -> PartnerFiles:
    csv_path = out / f"{name}.csv"
    schema_path = out / f"{name}.schema.json"
    with csv_path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter=table.delimiter, lineterminator="\n")
        writer.writerow([table.header[j] for j in columns])
        source = table.rows
        writer.writerows([source[i][j] for j in columns] for i in rows.tolist())
    save_schema(schema.model_copy(update={"dataset": name}), schema_path)
    return PartnerFiles(name=name, csv=csv_path, schema=schema_path, n_rows=len(rows))
