"""A partner's dataset schema: the columns of its CSV and how to treat them.

The schema is untrusted input (a JSON file a partner edits by hand), so it is
parsed by strict pydantic models that refuse unknown keys and type coercion.
Every partner in one job must hold the same schema apart from its ``dataset``
name; :meth:`DatasetSchema.fingerprint` is what they compare.

Example (``online_shoppers.schema.json``, abridged)::

    {"version": 1, "dataset": "online-shoppers-region-1", "delimiter": ";",
     "id_column": "session_id", "label_column": "Revenue",
     "features": [
       {"name": "PageValues", "type": "numeric", "missing": "mean"},
       {"name": "Month", "type": "categorical", "vocabulary": null, "missing": "forbid"},
       {"name": "Weekend", "type": "boolean", "missing": "forbid"}]}

A categorical ``vocabulary`` of ``null`` means the vocabulary is computed
federatedly before training; ``label_column`` is ``null`` for a vertical party
that holds features only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from fedcollab.common.errors import SchemaError

__all__ = [
    "MISSING_CATEGORY",
    "BooleanFeature",
    "CategoricalFeature",
    "DatasetSchema",
    "Delimiter",
    "Feature",
    "NumericFeature",
    "load_schema",
    "save_schema",
]

#: The category a missing categorical value becomes under ``missing: "category"``.
MISSING_CATEGORY = "__missing__"

Delimiter = Literal[",", ";", "\t", "|"]

_Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]


def _list_to_tuple(value: object) -> object:
    # Strict mode refuses a Python list for a tuple field; JSON arrays are fine.
    # Accept lists so that code can build schemas naturally, and store tuples
    # so that a frozen schema is immutable all the way down.
    return tuple(value) if isinstance(value, list) else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NumericFeature(_Strict):
    """A real-valued column; ``missing="mean"`` lets missing values be imputed later."""

    name: _Name
    type: Literal["numeric"] = "numeric"
    missing: Literal["forbid", "mean"] = "forbid"


class CategoricalFeature(_Strict):
    """A text-valued column; ``vocabulary=None`` means "computed federatedly"."""

    name: _Name
    type: Literal["categorical"] = "categorical"
    vocabulary: Annotated[
        tuple[Annotated[str, Field(min_length=1)], ...] | None, BeforeValidator(_list_to_tuple)
    ] = None
    missing: Literal["forbid", "category"] = "forbid"

    @model_validator(mode="after")
    def _vocabulary_is_a_set(self) -> CategoricalFeature:
        if self.vocabulary is None:
            return self
        if len(self.vocabulary) == 0:
            raise ValueError("vocabulary is empty; use null to compute it federatedly")
        seen: set[str] = set()
        for value in self.vocabulary:
            if value in seen:
                raise ValueError(f"vocabulary lists {value!r} twice")
            seen.add(value)
        if MISSING_CATEGORY in seen:
            raise ValueError(f"{MISSING_CATEGORY!r} is reserved for missing values")
        return self


class BooleanFeature(_Strict):
    """A true/false column (``true``, ``false``, ``1``, ``0``, any case)."""

    name: _Name
    type: Literal["boolean"] = "boolean"
    missing: Literal["forbid"] = "forbid"


Feature = Annotated[
    NumericFeature | CategoricalFeature | BooleanFeature, Field(discriminator="type")
]


class DatasetSchema(_Strict):
    """The columns of one partner's CSV file.

    The file holds ``id_column``, every feature and (unless ``None``)
    ``label_column``, in any order, separated by ``delimiter``.
    """

    version: Literal[1] = 1
    dataset: _Name
    delimiter: Delimiter = ","
    id_column: _Name
    label_column: _Name | None = None
    features: Annotated[tuple[Feature, ...], BeforeValidator(_list_to_tuple)]

    @model_validator(mode="after")
    def _columns_are_distinct(self) -> DatasetSchema:
        if not self.features and self.label_column is None:
            raise ValueError("the schema has neither features nor a label column")
        if self.label_column is not None and self.label_column == self.id_column:
            raise ValueError(f"{self.id_column!r} is both the id and the label column")
        seen: set[str] = set()
        for feature in self.features:
            if feature.name in seen:
                raise ValueError(f"feature {feature.name!r} is listed twice")
            seen.add(feature.name)
            if feature.name == self.id_column:
                raise ValueError(f"the id column {feature.name!r} is also listed as a feature")
            if feature.name == self.label_column:
                raise ValueError(f"the label column {feature.name!r} is also listed as a feature")
        return self

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Feature names in schema order."""
        return tuple(f.name for f in self.features)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the CSV must hold: id, features, then label."""
        label = () if self.label_column is None else (self.label_column,)
        return (self.id_column, *self.feature_names, *label)

    @property
    def numeric_features(self) -> tuple[NumericFeature, ...]:
        return tuple(f for f in self.features if isinstance(f, NumericFeature))

    @property
    def categorical_features(self) -> tuple[CategoricalFeature, ...]:
        return tuple(f for f in self.features if isinstance(f, CategoricalFeature))

    @property
    def boolean_features(self) -> tuple[BooleanFeature, ...]:
        return tuple(f for f in self.features if isinstance(f, BooleanFeature))

    def feature(self, name: str) -> NumericFeature | CategoricalFeature | BooleanFeature:
        """The feature called ``name``; ``KeyError`` if there is none."""
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def canonical_json(self, *, include_dataset: bool = True) -> str:
        """Sorted keys, no whitespace: the bytes the fingerprint is taken over."""
        data = self.model_dump(mode="json", exclude=None if include_dataset else {"dataset"})
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    def fingerprint(self) -> str:
        """sha256 hex of the canonical JSON, *without* the ``dataset`` name.

        Two partners whose schemas agree on version, delimiter, id, label and
        features (names, types, vocabularies, missing policies, order) get the
        same fingerprint whatever they call their dataset.
        """
        text = self.canonical_json(include_dataset=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key!r} appears twice in one object")
        result[key] = value
    return result


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"  {loc}: {error['msg']}")
    return "\n".join(lines)


def load_schema(path: str | Path) -> DatasetSchema:
    """Read and validate a schema JSON file.

    Raises :class:`SchemaError` naming the file and, for a structural problem,
    each offending location (``features.2.vocabulary``, ...).
    """
    path = Path(path)
    hint_fix = "fix the schema file (see data/online_shoppers.schema.json for an example)"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SchemaError(
            f"{path}: schema file not found", hint="check the path passed as --schema"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError(
            f"{path}: cannot read schema file: {exc}", hint="save the schema as UTF-8 JSON"
        ) from exc
    try:
        json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise SchemaError(
            f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            hint=hint_fix,
        ) from exc
    except ValueError as exc:
        raise SchemaError(f"{path}: not valid JSON: {exc}", hint=hint_fix) from exc
    try:
        return DatasetSchema.model_validate_json(text)
    except ValidationError as exc:
        raise SchemaError(
            f"{path}: invalid schema:\n{_format_validation_error(exc)}", hint=hint_fix
        ) from exc


def save_schema(schema: DatasetSchema, path: str | Path) -> None:
    """Write ``schema`` as indented JSON that :func:`load_schema` reads back equal."""
    text = json.dumps(schema.model_dump(mode="json"), indent=2, ensure_ascii=False)
    Path(path).write_text(text + "\n", encoding="utf-8")
