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
