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

Labels and booleans are ``true``/``false``/``1``/``0`` unless the schema says
otherwise: ``"label_values": {"true": ["yes"], "false": ["no"]}`` declares the
label's positive (``true``) and negative spellings, and a boolean feature's
``"values"`` does the same for that column. Spellings are compared
case-insensitively after stripping whitespace; any other value is still an
error. ``ignore_columns`` lists columns the file may hold that are not read
(a free-text note, a column that would leak the label), so the CSV need not be
edited. ``fedcollab data schema CSV`` drafts a schema from a file.
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

from fedcollab.common.atomic import write_atomic
from fedcollab.common.errors import SchemaError

__all__ = [
    "DEFAULT_BINARY_VALUES",
    "MISSING_CATEGORY",
    "MISSING_TOKENS",
    "BinaryValues",
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

#: Field values (after stripping, compared lower-case) that mean "missing".
MISSING_TOKENS = frozenset(
    {"", "nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}
)

Delimiter = Literal[",", ";", "\t", "|"]

_Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]


def _list_to_tuple(value: object) -> object:
    # Strict mode refuses a Python list for a tuple field; JSON arrays are fine.
    # Accept lists so that code can build schemas naturally, and store tuples
    # so that a frozen schema is immutable all the way down.
    return tuple(value) if isinstance(value, list) else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


_Spelling = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f]+$")]
_Spellings = Annotated[
    tuple[_Spelling, ...], Field(min_length=1, max_length=20), BeforeValidator(_list_to_tuple)
]


class BinaryValues(_Strict):
    """How a two-valued column spells its values: ``{"true": ["yes"], "false": ["no"]}``.

    For a label, ``true`` is the positive class. Compared case-insensitively
    after stripping; a spelling may not mean both, nor be a missing-value token.
    """

    true: _Spellings
    false: _Spellings

    @model_validator(mode="after")
    def _disjoint(self) -> BinaryValues:
        seen: dict[str, str] = {}
        for side, spellings in (("true", self.true), ("false", self.false)):
            for spelling in spellings:
                key = spelling.strip().lower()
                if not key:
                    raise ValueError(f"{spelling!r} is blank")
                if key in MISSING_TOKENS:
                    raise ValueError(f"{spelling!r} means a missing value, not {side}")
                if key in seen:
                    raise ValueError(f"{spelling!r} is listed twice (under {seen[key]!r})")
                seen[key] = side
        return self

    @property
    def true_keys(self) -> tuple[str, ...]:
        return tuple(v.strip().lower() for v in self.true)

    @property
    def false_keys(self) -> tuple[str, ...]:
        return tuple(v.strip().lower() for v in self.false)


#: The spellings a label or boolean column accepts when its schema declares none.
DEFAULT_BINARY_VALUES = BinaryValues(true=("true", "1"), false=("false", "0"))


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
    """A true/false column: ``true``, ``false``, ``1``, ``0`` (any case) unless ``values`` says."""

    name: _Name
    type: Literal["boolean"] = "boolean"
    missing: Literal["forbid"] = "forbid"
    values: BinaryValues | None = None

    @property
    def spellings(self) -> BinaryValues:
        return self.values or DEFAULT_BINARY_VALUES


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
    #: The label's spellings; ``None``: true/false/1/0.
    label_values: BinaryValues | None = None
    features: Annotated[tuple[Feature, ...], BeforeValidator(_list_to_tuple)]
    #: Columns the file may hold that are not read (absent ones are fine too).
    ignore_columns: Annotated[
        tuple[_Name, ...], Field(max_length=10_000), BeforeValidator(_list_to_tuple)
    ] = ()

    @model_validator(mode="after")
    def _columns_are_distinct(self) -> DatasetSchema:
        if not self.features and self.label_column is None:
            raise ValueError("the schema has neither features nor a label column")
        if self.label_column is not None and self.label_column == self.id_column:
            raise ValueError(f"{self.id_column!r} is both the id and the label column")
        if self.label_values is not None and self.label_column is None:
            raise ValueError("label_values is set but there is no label_column")
        used = {self.id_column, *(f.name for f in self.features)}
        if self.label_column is not None:
            used.add(self.label_column)
        ignored: set[str] = set()
        for name in self.ignore_columns:
            if name in used:
                raise ValueError(f"{name!r} is both used and listed in ignore_columns")
            if name in ignored:
                raise ValueError(f"ignore_columns lists {name!r} twice")
            ignored.add(name)
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
    def label_spellings(self) -> BinaryValues:
        """The label's spellings (true/false/1/0 unless ``label_values`` says)."""
        return self.label_values or DEFAULT_BINARY_VALUES

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

    def to_json_dict(self) -> dict[str, Any]:
        """The schema as JSON data, leaving out optional keys at their defaults.

        A schema without spellings or ignored columns reads (and fingerprints)
        exactly as it did before those keys existed.
        """
        data = self.model_dump(mode="json")
        for key, default in (("label_values", None), ("ignore_columns", [])):
            if data[key] == default:
                del data[key]
        for feature in data["features"]:
            if feature.get("type") == "boolean" and feature.get("values") is None:
                del feature["values"]
        return data

    def canonical_json(self, *, include_dataset: bool = True) -> str:
        """Sorted keys, no whitespace: the bytes the fingerprint is taken over."""
        data = self.to_json_dict()
        if not include_dataset:
            del data["dataset"]
            # Which extra columns a partner's file holds is that partner's business.
            data.pop("ignore_columns", None)
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    def fingerprint(self) -> str:
        """sha256 hex of the canonical JSON, *without* the ``dataset`` name.

        Two partners whose schemas agree on version, delimiter, id, label and
        features (names, types, vocabularies, missing policies, spellings,
        order) get the same fingerprint whatever they call their dataset and
        whichever extra columns their files hold (``ignore_columns``).
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
    text = json.dumps(schema.to_json_dict(), indent=2, ensure_ascii=False)
    write_atomic(path, text + "\n")
