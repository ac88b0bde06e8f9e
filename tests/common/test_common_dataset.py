"""Tests for common.dataset: strict CSV loading with exact row numbers, id-hash splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcollab.common.dataset import file_sha256, load_dataset, split_indices
from fedcollab.common.errors import DataValidationError
from fedcollab.common.schema import (
    BooleanFeature,
    CategoricalFeature,
    DatasetSchema,
    NumericFeature,
    load_schema,
)

REPO = Path(__file__).resolve().parents[2]

SCHEMA = DatasetSchema(
    dataset="shop",
    delimiter=",",
    id_column="id",
    label_column="y",
    features=(
        NumericFeature(name="x", missing="forbid"),
        NumericFeature(name="m", missing="mean"),
        CategoricalFeature(name="c", vocabulary=("a", "b"), missing="forbid"),
        CategoricalFeature(name="v", vocabulary=None, missing="category"),
        BooleanFeature(name="w"),
    ),
)
HEADER = "id,x,m,c,v,w,y"
GOOD = [
    "r1,1.5,2,a,New,TRUE,FALSE",
    "r2,-3,,b,,false,TRUE",
    "r3,0,NaN,a,Old,1,0",
    "r4,1e3,7,b,New,0,1",
]


def write(tmp_path: Path, *lines: str, name: str = "data.csv", end: str = "\n") -> Path:
    path = tmp_path / name
    path.write_text("".join(line + end for line in lines), encoding="utf-8")
    return path


def expect_error(
    path: Path, row: int | None, column: str | None, *fragments: str, schema: DatasetSchema = SCHEMA
) -> DataValidationError:
    with pytest.raises(DataValidationError) as info:
        load_dataset(path, schema)
    err = info.value
    assert (err.file, err.row, err.column) == (str(path), row, column), str(err)
    message = str(err)
    assert str(path) in message
    if row is not None:
        assert f"row {row}" in message
    if column is not None:
        assert repr(column) in message
    for fragment in fragments:
        assert fragment in message, message
    assert err.hint, "every error must say what to do"
    assert err.exit_code == 10
    return err


def with_row(index: int, line: str) -> list[str]:
    """GOOD with data row ``index`` (0-based) replaced; it lands on file row index + 2."""
    rows = list(GOOD)
    rows[index] = line
    return [HEADER, *rows]


# --- valid files ----------------------------------------------------------------------


def test_load_valid(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER, *GOOD)
    ds = load_dataset(path, SCHEMA)
    assert ds.n_rows == 4
    assert ds.path == path and ds.schema is SCHEMA
    assert ds.ids.dtype == object and ds.ids.tolist() == ["r1", "r2", "r3", "r4"]
    assert ds.labels is not None and ds.labels.dtype == np.float32
    assert ds.labels.tolist() == [0, 1, 0, 1]
    assert ds.numeric["x"].dtype == np.float64
    assert ds.numeric["x"].tolist() == [1.5, -3, 0, 1000]
    m = ds.numeric["m"]
    assert m[0] == 2 and np.isnan(m[1]) and np.isnan(m[2]) and m[3] == 7
    assert ds.categorical["c"].tolist() == ["a", "b", "a", "b"]
    assert ds.categorical["v"].tolist() == ["New", "__missing__", "Old", "New"]
    assert ds.boolean["w"].dtype == np.float64 and ds.boolean["w"].tolist() == [1, 0, 1, 0]
    assert ds.content_hash == file_sha256(path)
    assert ds.content_hash.startswith("sha256:") and len(ds.content_hash) == 71


def test_columns_in_any_order_and_whitespace(tmp_path: Path) -> None:
    path = write(tmp_path, "y, w ,v,c,m,x,id", "true, 1 , z , a ,, 2 , r1 ")
    ds = load_dataset(path, SCHEMA)
    assert ds.ids.tolist() == ["r1"]
    assert ds.categorical["c"].tolist() == ["a"] and ds.categorical["v"].tolist() == ["z"]
    assert ds.numeric["x"].tolist() == [2.0]


def test_crlf_bom_and_trailing_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(("\ufeff" + "\r\n".join([HEADER, *GOOD]) + "\r\n\r\n\r\n").encode())
    assert load_dataset(path, SCHEMA).n_rows == 4


def test_single_class_label_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER, "r1,1,1,a,x,1,false", "r2,1,1,a,x,1,FALSE")
    ds = load_dataset(path, SCHEMA)
    assert ds.labels is not None and ds.labels.tolist() == [0, 0]


def test_no_label_schema(tmp_path: Path) -> None:
    schema = SCHEMA.model_copy(update={"label_column": None})
    path = write(tmp_path, "id,x,m,c,v,w", "r1,1,1,a,x,1")
    assert load_dataset(path, schema).labels is None


def test_subset(tmp_path: Path) -> None:
    ds = load_dataset(write(tmp_path, HEADER, *GOOD), SCHEMA)
    sub = ds.subset(np.array([3, 1]))
    assert sub.ids.tolist() == ["r4", "r2"]
    assert sub.labels is not None and sub.labels.tolist() == [1, 1]
    assert sub.numeric["x"].tolist() == [1000, -3]
    assert sub.categorical["v"].tolist() == ["New", "__missing__"]
    assert sub.boolean["w"].tolist() == [0, 0]
    assert sub.content_hash == ds.content_hash and sub.schema is ds.schema
    assert ds.n_rows == 4 and sub.n_rows == 2
    assert ds.subset(np.array([True, False, False, True])).ids.tolist() == ["r1", "r4"]


def test_id_from_row_number(tmp_path: Path) -> None:
    path = write(tmp_path, "x,m,c,v,w,y", "1,1,a,x,1,0", "2,2,b,x,0,1")
    ds = load_dataset(path, SCHEMA, id_from_row_number=True)
    assert ds.ids.tolist() == ["s000001", "s000002"]


def test_id_from_row_number_refuses_existing_ids(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER, *GOOD)
    with pytest.raises(DataValidationError, match="already has the id column") as info:
        load_dataset(path, SCHEMA, id_from_row_number=True)
    assert info.value.row == 1 and info.value.column == "id"


@pytest.mark.parametrize(
    ("csv_name", "schema_name", "ids", "rows", "rate"),
    [
        ("uci_credit_card_default.csv", "credit_default.schema.json", False, 30_000, 0.2212),
        ("online_shoppers_intention.csv", "online_shoppers.schema.json", True, 12_330, 0.15474),
    ],
)
def test_real_data_sets(csv_name: str, schema_name: str, ids: bool, rows: int, rate: float) -> None:
    schema = load_schema(REPO / "data" / schema_name)
    ds = load_dataset(REPO / "data" / csv_name, schema, id_from_row_number=ids)
    assert ds.n_rows == rows
    assert ds.labels is not None and ds.labels.mean() == pytest.approx(rate, abs=1e-4)


# --- structural errors ---------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    expect_error(write(tmp_path), None, None, "no data rows")


def test_whitespace_only_file(tmp_path: Path) -> None:
    expect_error(write(tmp_path, "", "", ""), None, None, "no data rows")


def test_header_only(tmp_path: Path) -> None:
    expect_error(write(tmp_path, HEADER), None, None, "no data rows")


def test_missing_file(tmp_path: Path) -> None:
    expect_error(tmp_path / "absent.csv", None, None, "cannot read")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(f"{HEADER}\n{GOOD[0]}\nr2,1,1,a,caf\xe9,1,0\n".encode("latin-1"))
    expect_error(path, 3, None, "not UTF-8")


def test_wrong_delimiter(tmp_path: Path) -> None:
    path = write(tmp_path, *[line.replace(",", ";") for line in [HEADER, *GOOD]])
    err = expect_error(path, 1, None, "semicolon ';'", "comma ','")
    assert "';'" in err.hint


def test_wrong_delimiter_tab(tmp_path: Path) -> None:
    schema = SCHEMA.model_copy(update={"delimiter": ";"})
    path = write(tmp_path, *[line.replace(",", "\t") for line in [HEADER, *GOOD]])
    expect_error(path, 1, None, "separated by tab", schema=schema)


def test_missing_column(tmp_path: Path) -> None:
    path = write(tmp_path, "id,x,c,v,w,y", "r1,1,a,x,1,0")
    expect_error(path, 1, "m", "missing column")


def test_missing_id_column_suggests_generating_ids(tmp_path: Path) -> None:
    path = write(tmp_path, "x,m,c,v,w,y", "1,1,a,x,1,0")
    err = expect_error(path, 1, "id", "missing column")
    assert "--id-from-row-number" in err.hint


def test_extra_column(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + ",extra", "r1,1,1,a,x,1,0,9")
    expect_error(path, 1, "extra", "unexpected column")


def test_duplicate_header(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + ",x", "r1,1,1,a,x,1,0,9")
    expect_error(path, 1, "x", "twice")


def test_row_with_too_many_fields(tmp_path: Path) -> None:
    expect_error(write(tmp_path, *with_row(2, GOOD[2] + ",9")), 4, None, "8 fields", "has 7")


def test_row_with_too_few_fields(tmp_path: Path) -> None:
    expect_error(write(tmp_path, *with_row(1, "r2,1,1")), 3, None, "3 fields")


def test_blank_line_in_the_middle(tmp_path: Path) -> None:
    expect_error(write(tmp_path, HEADER, GOOD[0], "", GOOD[1]), 3, None, "blank line")


def test_unterminated_quote(tmp_path: Path) -> None:
    err = expect_error(write(tmp_path, HEADER, GOOD[0], 'r2,1,1,a,"open,1,0'), 3, None)
    assert "malformed CSV" in str(err)


def test_row_numbers_count_physical_lines(tmp_path: Path) -> None:
    # A quoted value spanning two lines: the row after it starts on line 4.
    path = write(tmp_path, HEADER, 'r1,1,1,a,"two\nlines",1,0', "r2,oops,1,a,x,1,0")
    expect_error(path, 4, "x", "'oops' is not a number")


def test_row_numbers_with_crlf(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER, GOOD[0], "r2,oops,1,a,x,1,0", end="\r\n")
    expect_error(path, 3, "x", "not a number")


# --- value errors ----------------------------------------------------------------------------


def test_non_numeric(tmp_path: Path) -> None:
    err = expect_error(write(tmp_path, *with_row(2, "r3,1,2.5.1,a,x,1,0")), 4, "m")
    assert "'2.5.1' is not a number" in str(err)


def test_non_numeric_counts_rows(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER, "r1,a,1,a,x,1,0", "r2,b,1,a,x,1,0", "r3,1,1,a,x,1,0")
    expect_error(path, 2, "x", "'a' is not a number", "2 rows in this column")


@pytest.mark.parametrize("token", ["NaN", "nan", "inf", "-inf", "Infinity", "", "  ", "1e999"])
def test_missing_numeric_forbidden(tmp_path: Path, token: str) -> None:
    path = write(tmp_path, *with_row(1, f"r2,{token},1,a,x,1,0"))
    err = expect_error(path, 3, "x", "missing or non-finite value")
    assert '"mean"' in err.hint


@pytest.mark.parametrize("token", ["NaN", "inf", "-Infinity", ""])
def test_missing_numeric_allowed_with_mean(tmp_path: Path, token: str) -> None:
    ds = load_dataset(write(tmp_path, *with_row(1, f"r2,1,{token},a,x,1,0")), SCHEMA)
    assert np.isnan(ds.numeric["m"][1])


def test_categorical_outside_vocabulary(tmp_path: Path) -> None:
    err = expect_error(write(tmp_path, *with_row(3, "r4,1,1,Feb,x,1,0")), 5, "c")
    assert "'Feb' is not in the vocabulary ('a', 'b')" in str(err)


@pytest.mark.parametrize("token", ["", "NaN"])
def test_categorical_missing_forbidden(tmp_path: Path, token: str) -> None:
    path = write(tmp_path, *with_row(0, f"r1,1,1,{token},x,1,0"))
    err = expect_error(path, 2, "c", "missing value")
    assert '"category"' in err.hint


@pytest.mark.parametrize("token", ["yes", "2", "t", "1.0"])
def test_boolean_invalid(tmp_path: Path, token: str) -> None:
    path = write(tmp_path, *with_row(2, f"r3,1,1,a,x,{token},0"))
    expect_error(path, 4, "w", f"{token!r} is not a boolean")


def test_boolean_missing(tmp_path: Path) -> None:
    expect_error(write(tmp_path, *with_row(2, "r3,1,1,a,x,,0")), 4, "w", "missing boolean")


@pytest.mark.parametrize("token", ["2", "yes", "0.5", "-1"])
def test_label_not_binary(tmp_path: Path, token: str) -> None:
    path = write(tmp_path, *with_row(1, f"r2,1,1,a,x,1,{token}"))
    expect_error(path, 3, "y", f"label {token!r} is not binary")


@pytest.mark.parametrize("token", ["", "NaN"])
def test_label_missing(tmp_path: Path, token: str) -> None:
    path = write(tmp_path, *with_row(3, f"r4,1,1,a,x,1,{token}"))
    err = expect_error(path, 5, "y", "missing label")
    assert "unlabelled" in err.hint


def test_duplicate_ids_name_both_rows(tmp_path: Path) -> None:
    path = write(tmp_path, *with_row(3, "r2,1,1,a,x,1,0"))
    expect_error(path, 5, "id", "duplicate id 'r2'", "rows 3 and 5")


def test_missing_id(tmp_path: Path) -> None:
    expect_error(write(tmp_path, *with_row(1, ",1,1,a,x,1,0")), 3, "id", "missing id")


def test_earliest_problem_is_reported(tmp_path: Path) -> None:
    # The label is checked before the features, yet the numeric problem on an
    # earlier row is the one reported.
    rows = [HEADER, GOOD[0], "r2,?,1,a,x,1,0", "r3,1,1,a,x,1,0", "r4,1,1,a,x,1,maybe"]
    expect_error(write(tmp_path, *rows), 3, "x", "not a number")


def test_earliest_row_across_columns(tmp_path: Path) -> None:
    rows = [HEADER, GOOD[0], "r2,1,1,a,x,maybe,0", "r3,oops,1,a,x,1,0"]
    expect_error(write(tmp_path, *rows), 3, "w", "not a boolean")


# --- split_indices -----------------------------------------------------------------------------


def test_split_indices_partition_and_fractions() -> None:
    ids = [f"s{i:06d}" for i in range(10_000)]
    train, val, test = split_indices(ids, validation_fraction=0.1, test_fraction=0.2, seed=3)
    together = np.concatenate([train, val, test])
    assert sorted(together.tolist()) == list(range(10_000))
    assert len(test) / 10_000 == pytest.approx(0.2, abs=0.02)
    assert len(val) / 10_000 == pytest.approx(0.1, abs=0.02)
    assert all(np.all(np.diff(part) > 0) for part in (train, val, test))


def test_split_indices_depends_on_seed() -> None:
    ids = [str(i) for i in range(200)]
    assert not np.array_equal(split_indices(ids, seed=0)[2], split_indices(ids, seed=1)[2])


def test_split_indices_rejects_bad_fractions() -> None:
    with pytest.raises(ValueError):
        split_indices(["a"], validation_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError):
        split_indices(["a"], test_fraction=-0.1)


@given(
    ids=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=60, unique=True),
    cut=st.integers(min_value=0, max_value=60),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_split_of_an_id_does_not_depend_on_who_holds_it(
    ids: list[str], cut: int, seed: int
) -> None:
    def assignment(part: list[str]) -> dict[str, int]:
        splits = split_indices(np.array(part, dtype=object), seed=seed)
        return {part[i]: k for k, idx in enumerate(splits) for i in idx.tolist()}

    whole = assignment(ids)
    assert len(whole) == len(ids)
    for part in (ids[:cut], ids[cut:]):
        if part:
            assert all(whole[i] == k for i, k in assignment(part).items())


# --- declared spellings and ignored columns ------------------------------------------

YES_NO = DatasetSchema(
    dataset="bank",
    id_column="id",
    label_column="y",
    label_values={"true": ["yes"], "false": ["no"]},  # type: ignore[arg-type]
    features=(
        NumericFeature(name="x"),
        BooleanFeature(name="w", values={"true": ["Y"], "false": ["N"]}),  # type: ignore[arg-type]
    ),
    ignore_columns=("notes", "absent"),
)


def test_declared_spellings_and_an_ignored_column(tmp_path: Path) -> None:
    path = write(tmp_path, "id,notes,x,w,y", "a,free text,1,Y,yes", "b,,2,n, NO ", "c,x,3,N,Yes")
    ds = load_dataset(path, YES_NO)
    assert ds.labels is not None and ds.labels.tolist() == [1.0, 0.0, 1.0]
    assert ds.boolean["w"].tolist() == [1.0, 0.0, 0.0]
    assert set(ds.numeric) == {"x"} and not ds.categorical


def test_declared_spellings_stay_strict(tmp_path: Path) -> None:
    path = write(tmp_path, "id,x,w,y", "a,1,Y,yes", "b,2,N,true")
    err = expect_error(path, 3, "y", "'true' is not binary", schema=YES_NO)
    assert "yes for true, no for false" in err.hint
    path = write(tmp_path, "id,x,w,y", "a,1,yes,yes", name="w.csv")
    expect_error(path, 2, "w", "'yes' is not a boolean", schema=YES_NO)


def test_undeclared_yes_no_label_says_how_to_declare_it(tmp_path: Path) -> None:
    schema = YES_NO.model_copy(update={"label_values": None, "ignore_columns": ()})
    path = write(tmp_path, "id,x,w,y", "a,1,Y,yes")
    err = expect_error(path, 2, "y", "'yes' is not binary", schema=schema)
    assert '"label_values": {"true": ["yes"], "false": ["no"]}' in err.hint


def test_unlisted_extra_column_mentions_ignore_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "id,x,w,y,other", "a,1,Y,yes,3")
    err = expect_error(path, 1, "other", "unexpected column", schema=YES_NO)
    assert "ignore_columns" in err.hint
