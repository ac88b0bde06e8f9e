"""Tests for common.schema: strict parsing, helpers, fingerprint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydantic
import pytest

from fedcollab.common.errors import SchemaError
from fedcollab.common.schema import (
    BooleanFeature,
    CategoricalFeature,
    DatasetSchema,
    NumericFeature,
    load_schema,
    save_schema,
)

REPO = Path(__file__).resolve().parents[2]

EXAMPLE: dict[str, Any] = {
    "version": 1,
    "dataset": "online-shoppers-region-1",
    "delimiter": ";",
    "id_column": "session_id",
    "label_column": "Revenue",
    "features": [
        {"name": "Administrative", "type": "numeric", "missing": "forbid"},
        {"name": "PageValues", "type": "numeric", "missing": "mean"},
        {"name": "Month", "type": "categorical", "vocabulary": ["Feb", "Mar"], "missing": "forbid"},
        {"name": "VisitorType", "type": "categorical", "vocabulary": None, "missing": "category"},
        {"name": "Weekend", "type": "boolean", "missing": "forbid"},
    ],
}


def write(tmp_path: Path, data: Any, name: str = "s.schema.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def variant(**changes: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(EXAMPLE))
    data.update(changes)
    return data


def test_load_example(tmp_path: Path) -> None:
    schema = load_schema(write(tmp_path, EXAMPLE))
    assert schema.dataset == "online-shoppers-region-1"
    assert schema.delimiter == ";"
    assert schema.feature_names == (
        "Administrative",
        "PageValues",
        "Month",
        "VisitorType",
        "Weekend",
    )
    assert [f.name for f in schema.numeric_features] == ["Administrative", "PageValues"]
    assert [f.name for f in schema.categorical_features] == ["Month", "VisitorType"]
    assert [f.name for f in schema.boolean_features] == ["Weekend"]
    assert schema.columns[0] == "session_id" and schema.columns[-1] == "Revenue"
    month = schema.feature("Month")
    assert isinstance(month, CategoricalFeature) and month.vocabulary == ("Feb", "Mar")
    with pytest.raises(KeyError):
        schema.feature("nope")


def test_label_is_optional(tmp_path: Path) -> None:
    data = variant()
    del data["label_column"]
    assert load_schema(write(tmp_path, data)).label_column is None
    schema = load_schema(write(tmp_path, variant(label_column=None)))
    assert schema.columns[-1] == "Weekend"


def test_round_trip(tmp_path: Path) -> None:
    schema = load_schema(write(tmp_path, EXAMPLE))
    save_schema(schema, tmp_path / "copy.json")
    assert load_schema(tmp_path / "copy.json") == schema


@pytest.mark.parametrize("name", ["online_shoppers.schema.json", "credit_default.schema.json"])
def test_shipped_schemas_load(name: str) -> None:
    load_schema(REPO / "data" / name)


def test_fingerprint_ignores_dataset_name(tmp_path: Path) -> None:
    a = load_schema(write(tmp_path, EXAMPLE, "a.json"))
    b = load_schema(write(tmp_path, variant(dataset="region-7"), "b.json"))
    assert a.fingerprint() == b.fingerprint()
    assert len(a.fingerprint()) == 64
    int(a.fingerprint(), 16)


@pytest.mark.parametrize(
    "changes",
    [
        {"delimiter": ","},
        {"id_column": "sid"},
        {"label_column": None},
        {"features": EXAMPLE["features"][:-1]},
        {"features": [*EXAMPLE["features"][:-1], {"name": "Weekend", "type": "numeric"}]},
    ],
)
def test_fingerprint_covers_columns(tmp_path: Path, changes: dict[str, Any]) -> None:
    a = load_schema(write(tmp_path, EXAMPLE, "a.json"))
    b = load_schema(write(tmp_path, variant(**changes), "b.json"))
    assert a.fingerprint() != b.fingerprint()


def test_fingerprint_is_canonical_json(tmp_path: Path) -> None:
    import hashlib

    schema = load_schema(write(tmp_path, EXAMPLE))
    data = {k: v for k, v in EXAMPLE.items() if k != "dataset"}
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    assert schema.fingerprint() == hashlib.sha256(canonical.encode()).hexdigest()


def test_python_construction_accepts_lists_and_is_frozen() -> None:
    schema = DatasetSchema(
        dataset="d",
        id_column="id",
        features=[NumericFeature(name="x"), CategoricalFeature(name="c", vocabulary=["a"])],
    )
    assert isinstance(schema.features, tuple)
    with pytest.raises(pydantic.ValidationError):
        schema.dataset = "other"  # type: ignore[misc]
    assert BooleanFeature(name="b").missing == "forbid"


def expect_schema_error(tmp_path: Path, data: Any, *fragments: str) -> SchemaError:
    path = write(tmp_path, data)
    with pytest.raises(SchemaError) as info:
        load_schema(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    assert info.value.hint
    assert info.value.exit_code == 11
    return info.value


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="not found") as info:
        load_schema(tmp_path / "absent.json")
    assert "--schema" in info.value.hint


def test_bad_json(tmp_path: Path) -> None:
    expect_schema_error(tmp_path, '{"version": 1,\n "dataset": }', "not valid JSON", "line 2")


def test_duplicate_json_key(tmp_path: Path) -> None:
    text = json.dumps(EXAMPLE)[:-1] + ', "dataset": "again"}'
    expect_schema_error(tmp_path, text, "'dataset' appears twice")


def test_unknown_key(tmp_path: Path) -> None:
    expect_schema_error(tmp_path, variant(colour="blue"), "colour", "Extra inputs")


def test_unknown_feature_key(tmp_path: Path) -> None:
    data = variant()
    data["features"][0]["scale"] = 2
    expect_schema_error(tmp_path, data, "features.0.numeric.scale")


def test_strict_types(tmp_path: Path) -> None:
    expect_schema_error(tmp_path, variant(version="1"), "version")
    expect_schema_error(tmp_path, variant(id_column=7), "id_column")


def test_unsupported_version(tmp_path: Path) -> None:
    expect_schema_error(tmp_path, variant(version=2), "version")


def test_bad_feature_type(tmp_path: Path) -> None:
    data = variant()
    data["features"][1]["type"] = "float"
    expect_schema_error(tmp_path, data, "features.1", "'float'")


def test_bad_missing_policy(tmp_path: Path) -> None:
    data = variant()
    data["features"][4]["missing"] = "mean"  # booleans cannot be imputed
    expect_schema_error(tmp_path, data, "features.4.boolean.missing")


def test_bad_delimiter(tmp_path: Path) -> None:
    expect_schema_error(tmp_path, variant(delimiter=":"), "delimiter")


def test_duplicate_feature(tmp_path: Path) -> None:
    data = variant()
    data["features"].append({"name": "Month", "type": "numeric"})
    expect_schema_error(tmp_path, data, "'Month' is listed twice")


def test_id_listed_as_feature(tmp_path: Path) -> None:
    data = variant()
    data["features"].append({"name": "session_id", "type": "numeric"})
    expect_schema_error(tmp_path, data, "id column 'session_id' is also listed as a feature")


def test_label_listed_as_feature(tmp_path: Path) -> None:
    data = variant()
    data["features"].append({"name": "Revenue", "type": "boolean"})
    expect_schema_error(tmp_path, data, "label column 'Revenue' is also listed as a feature")


def test_id_is_label(tmp_path: Path) -> None:
    expect_schema_error(tmp_path, variant(label_column="session_id"), "both the id and the label")


@pytest.mark.parametrize(
    ("vocabulary", "fragment"),
    [
        (["Feb", "Mar", "Feb"], "'Feb' twice"),
        ([], "vocabulary is empty"),
        (["__missing__"], "reserved"),
        (["Feb", ""], "features.2.categorical.vocabulary.1"),
    ],
)
def test_bad_vocabulary(tmp_path: Path, vocabulary: list[str], fragment: str) -> None:
    data = variant()
    data["features"][2]["vocabulary"] = vocabulary
    expect_schema_error(tmp_path, data, "features.2", fragment)


def test_nothing_to_hold(tmp_path: Path) -> None:
    expect_schema_error(tmp_path, variant(features=[], label_column=None), "neither features")


def test_label_only_party_is_fine(tmp_path: Path) -> None:
    assert load_schema(write(tmp_path, variant(features=[]))).feature_names == ()


# --- declared spellings and ignored columns ------------------------------------------


def test_spellings_and_ignored_columns_round_trip(tmp_path: Path) -> None:
    data = {
        **EXAMPLE,
        "label_values": {"true": ["yes"], "false": ["no"]},
        "ignore_columns": ["notes"],
        "features": [
            *EXAMPLE["features"][:4],
            {
                "name": "Weekend",
                "type": "boolean",
                "missing": "forbid",
                "values": {"true": ["Y", "yes"], "false": ["N"]},
            },
        ],
    }
    schema = load_schema(write(tmp_path, data))
    assert schema.label_spellings.true_keys == ("yes",)
    assert schema.ignore_columns == ("notes",)
    out = tmp_path / "again.schema.json"
    save_schema(schema, out)
    assert load_schema(out) == schema


def test_schema_without_new_keys_keeps_its_fingerprint(tmp_path: Path) -> None:
    """Old schemas read and fingerprint exactly as before: no null keys are added."""
    schema = load_schema(write(tmp_path, EXAMPLE))
    assert "label_values" not in schema.canonical_json()
    assert "ignore_columns" not in schema.canonical_json()
    assert '"values"' not in schema.canonical_json()
    with_ignored = schema.model_copy(update={"ignore_columns": ("notes",)})
    assert with_ignored.fingerprint() == schema.fingerprint()
    spelled = DatasetSchema.model_validate(
        {**EXAMPLE, "label_values": {"true": ["yes"], "false": ["no"]}}
    )
    assert spelled.fingerprint() != schema.fingerprint()


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"label_values": {"true": ["yes"], "false": ["YES"]}}, "listed twice"),
        ({"label_values": {"true": ["yes"], "false": []}}, "label_values.false"),
        ({"label_values": {"true": ["NaN"], "false": ["no"]}}, "missing value"),
        ({"label_values": {"true": ["yes"]}}, "label_values.false"),
        ({"label_values": {"true": "yes", "false": "no"}}, "label_values.true"),
        ({"label_column": None, "label_values": {"true": ["y"], "false": ["n"]}}, "no label"),
        ({"ignore_columns": ["Month"]}, "both used and listed"),
        ({"ignore_columns": ["session_id"]}, "both used and listed"),
        ({"ignore_columns": ["x", "x"]}, "twice"),
    ],
)
def test_bad_spellings_and_ignored_columns(
    tmp_path: Path, changes: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(SchemaError) as info:
        load_schema(write(tmp_path, {**EXAMPLE, **changes}))
    assert fragment in str(info.value)
    assert info.value.hint
