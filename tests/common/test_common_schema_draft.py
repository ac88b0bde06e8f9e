"""Tests for common.schema_draft: a schema guessed from a CSV loads that CSV strictly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcollab.common.dataset import load_dataset
from fedcollab.common.errors import DataValidationError, SchemaError
from fedcollab.common.schema import (
    BooleanFeature,
    CategoricalFeature,
    DatasetSchema,
    NumericFeature,
    load_schema,
    save_schema,
)
from fedcollab.common.schema_draft import GENERATED_ID, draft_schema
from fedcollab.common.schema_label import LABEL_NAMES

BANK = [
    "age;job;balance;housing;duration;note;y",
    "30;admin.;100;yes;12;n1;no",
    "41;technician;-5;no;300;n2;yes",
    "52;admin.;;yes;45;n3;no",
    "29;services;2000;no;800;n4;YES",
]


def write(tmp_path: Path, lines: list[str], name: str = "bank-full.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_bank_like_file(tmp_path: Path) -> None:
    path = write(tmp_path, BANK)
    draft = draft_schema(path, ignore=["duration"])
    schema = draft.schema
    assert schema.dataset == "bank-full"
    assert schema.delimiter == ";"
    assert draft.ids_from_row_number and schema.id_column == GENERATED_ID
    assert schema.label_column == "y"
    assert schema.label_values is not None
    assert (schema.label_values.true, schema.label_values.false) == (("yes",), ("no",))
    assert schema.features == (
        NumericFeature(name="age"),
        CategoricalFeature(name="job", vocabulary=None),
        NumericFeature(name="balance", missing="mean"),
        BooleanFeature(name="housing", values={"true": ["yes"], "false": ["no"]}),  # type: ignore[arg-type]
    )
    assert schema.ignore_columns == ("duration", "note")
    assert any("positive value 'yes'" in n for n in draft.notes)
    # The draft is what the rest of the product reads: saved, reloaded, loads the file.
    out = tmp_path / "bank.schema.json"
    save_schema(schema, out)
    assert load_schema(out) == schema
    ds = load_dataset(path, load_schema(out), id_from_row_number=True)
    assert ds.labels is not None and ds.labels.tolist() == [0.0, 1.0, 0.0, 1.0]
    assert DatasetSchema.model_validate_json(out.read_text()) == schema


def test_fixed_vocabularies_and_guessed_id(tmp_path: Path) -> None:
    path = write(tmp_path, ["customer_id,plan,churn", "c1,a,1", "c2,b,0", "c3,a,0"], "c.csv")
    draft = draft_schema(path, fixed_vocabularies=True)
    schema = draft.schema
    assert (schema.id_column, schema.label_column) == ("customer_id", "churn")
    assert not draft.ids_from_row_number
    assert schema.label_values is None  # 1/0 needs no declaration
    assert schema.features == (CategoricalFeature(name="plan", vocabulary=("a", "b")),)
    load_dataset(path, schema)


def test_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, ["a,b,outcome", "1,x,good", "2,y,bad", "3,x,good"], "o.csv")
    with pytest.raises(SchemaError, match="cannot tell which value") as info:
        draft_schema(path, label="outcome")
    assert "--positive" in info.value.hint
    schema = draft_schema(path, label="outcome", positive="good").schema
    assert schema.label_values is not None and schema.label_values.true == ("good",)
    assert draft_schema(path, no_label=True).schema.label_column is None
    with pytest.raises(SchemaError, match="no column 'B'"):
        draft_schema(path, ignore=["B"])
    with pytest.raises(SchemaError, match="not a value"):
        draft_schema(path, label="outcome", positive="maybe")


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="header and at least one data row"):
        draft_schema(write(tmp_path, ["a,b"]))
    with pytest.raises(DataValidationError, match="row has 1 fields"):
        draft_schema(write(tmp_path, ["a,b", "1"]))
    with pytest.raises(DataValidationError, match="repeated column"):
        draft_schema(write(tmp_path, ["a,a", "1,2"]))


def test_draft_of_the_shipped_data_loads_it() -> None:
    repo = Path(__file__).resolve().parents[2]
    path = repo / "data" / "online_shoppers_intention.csv"
    draft = draft_schema(path)
    schema = draft.schema
    assert schema.label_column == "Revenue" and schema.delimiter == ";"
    assert "PageValues" in schema.feature_names
    ds = load_dataset(path, schema, id_from_row_number=draft.ids_from_row_number)
    assert ds.n_rows == 12330
    assert json.loads(schema.canonical_json())["label_column"] == "Revenue"


# The label guess: the best-named column is the label or an error, never skipped.
BANK_HEADER = "age,default,balance,duration,y"


def bank_rows(label: object, n: int = 50) -> list[str]:
    """A Bank-Marketing-shaped file: ``default`` a yes/no feature, ``y`` the label."""
    rows = [BANK_HEADER]
    for i in range(n):
        y = label(i) if callable(label) else label
        rows.append(f"{20 + i},{'yes' if i % 3 else 'no'},{i * 10},{i * 7},{y}")
    return rows


def test_label_guess_prefers_y_over_default(tmp_path: Path) -> None:
    path = write(tmp_path, bank_rows(lambda i: "yes" if i % 4 == 0 else "no"), "bank.csv")
    draft = draft_schema(path, ignore=["duration"])
    assert draft.schema.label_column == "y"
    assert "default" in draft.schema.feature_names
    note = next(n for n in draft.notes if n.startswith("label column guessed"))
    assert "'y'" in note and "'default'" in note and "--label" in note


def test_label_guess_with_missing_labels_fails_naming_y(tmp_path: Path) -> None:
    rows = bank_rows(lambda i: "" if i % 10 == 0 else ("yes" if i % 4 == 0 else "no"))
    path = write(tmp_path, rows, "labelmissing.csv")
    with pytest.raises(SchemaError) as info:
        draft_schema(path, ignore=["duration"])
    error = info.value
    assert error.exit_code == 11
    assert "column 'y' is named like the label" in error.message
    assert "5 of 50 rows have no value" in error.message
    assert "'no', 'yes'" in error.message
    assert "fill in or drop" in error.hint and "--label COLUMN" in error.hint
    # The ways out the hint names work: another label, or none.
    assert draft_schema(path, label="default").schema.label_column == "default"
    assert draft_schema(path, no_label=True).schema.label_column is None


def test_label_guess_with_one_class_fails_naming_y(tmp_path: Path) -> None:
    path = write(tmp_path, bank_rows("no"), "oneclass.csv")
    with pytest.raises(SchemaError) as info:
        draft_schema(path, ignore=["duration"])
    assert "column 'y'" in info.value.message
    assert "holds only 'no'" in info.value.message
    assert "oneclass.csv is the whole table" in info.value.hint
    assert "--label COLUMN" in info.value.hint


def test_label_guess_with_many_values_fails_and_truncates(tmp_path: Path) -> None:
    long = "x" * 40
    path = write(tmp_path, bank_rows(lambda i: f"{long}{i:02d}"), "many.csv")
    with pytest.raises(SchemaError) as info:
        draft_schema(path)
    message = info.value.message
    assert "column 'y'" in message and "50 distinct values" in message
    assert "... (44 more)" in message and long not in message  # 6 shown, each cut short
    assert "--label COLUMN" in info.value.hint


def test_default_is_still_guessed_when_it_is_the_only_label_name(tmp_path: Path) -> None:
    rows = ["age,balance,default", *(f"{20 + i},{i},{'yes' if i % 3 else 'no'}" for i in range(9))]
    draft = draft_schema(write(tmp_path, rows, "credit.csv"))
    assert draft.schema.label_column == "default"
    assert "label column guessed: 'default'" in draft.notes


def test_an_ignored_label_name_is_no_candidate(tmp_path: Path) -> None:
    # Leaving the best-named column out is a choice: the next name is the guess.
    path = write(tmp_path, bank_rows("no"), "oneclass.csv")
    assert draft_schema(path, ignore=["y"]).schema.label_column == "default"


def test_given_label_that_is_not_two_valued(tmp_path: Path) -> None:
    rows = bank_rows(lambda i: "" if i == 3 else "no")
    with pytest.raises(SchemaError) as info:
        draft_schema(write(tmp_path, rows, "b.csv"), label="y", positive="yes")
    message = info.value.message
    assert "--label 'y' cannot be the label" in message
    assert "1 of 50 rows have no value" in message and "holds only 'no'" in message
    assert "choose another --label" in info.value.hint


def test_generic_label_names_rank_above_default() -> None:
    """``default`` is a feature of credit data as often as a label: ranked last."""
    assert LABEL_NAMES[-1] == "default"
    assert LABEL_NAMES.index("y") < LABEL_NAMES.index("default")


def _labels(path: Path, schema: DatasetSchema) -> list[float]:
    save_schema(schema, path.with_suffix(".schema.json"))
    dataset = load_dataset(
        path, load_schema(path.with_suffix(".schema.json")), id_from_row_number=True
    )
    assert dataset.labels is not None
    return [float(v) for v in dataset.labels]


def test_a_party_whose_rows_all_have_one_class_names_the_other_value(tmp_path: Path) -> None:
    """A brand's own customers may all be non-buyers: the label is still yes/no."""
    path = write(tmp_path, bank_rows("no"), "oneclass.csv")
    draft = draft_schema(path, ignore=["duration"], positive="yes")
    assert draft.schema.label_column == "y"
    assert any("one class in this file" in n and "'yes'" in n for n in draft.notes)
    assert _labels(path, draft.schema) == [0.0] * 50
    # Every row positive: the negative value is the one to give.
    path = write(tmp_path, bank_rows("Yes"), "buyers.csv")
    with pytest.raises(SchemaError) as info:
        draft_schema(path, label="y", positive="yes")
    assert "holds only 'yes'" in info.value.message and "--negative" in info.value.hint
    draft = draft_schema(path, label="y", positive="yes", negative="No")
    assert _labels(path, draft.schema) == [1.0] * 50
    draft = draft_schema(path, label="y", negative="no")  # the one value is then positive
    assert _labels(path, draft.schema) == [1.0] * 50


def test_positive_and_negative_must_fit_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, bank_rows(lambda i: "yes" if i % 2 else "no"), "b.csv")
    with pytest.raises(SchemaError, match="both 'yes'"):
        draft_schema(path, label="y", positive="yes", negative="yes")
    with pytest.raises(SchemaError, match="not a value of 'y'"):
        draft_schema(path, label="y", negative="maybe")
    draft = draft_schema(path, label="y", negative="yes")  # the other is then positive
    assert _labels(path, draft.schema) == [float(i % 2 == 0) for i in range(50)]
    one = write(tmp_path, bank_rows("no"), "one.csv")
    with pytest.raises(SchemaError, match="neither --positive"):
        draft_schema(one, label="y", positive="true", negative="false")
