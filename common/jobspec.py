"""Job specification: what an operator asks the federation to do.

A job spec is a TOML file (untrusted input: validated strictly by pydantic)::

    name = "purchase-prediction"
    task = "purchase_prediction"          # or "segmentation"
    purpose = "purchase-prediction"       # a registered processing purpose
    schema = "partners/region-1.schema.json"  # the data contract every partner must match
    participants = ["region-1", "region-2", "region-3"]   # empty: every connected partner
    min_partners = 3
    rounds = 30

    [model]
    kind = "logreg"                       # or "mlp"

    [training]
    local_epochs = 1
    learning_rate = 0.01

    [privacy]
    encryption = "ckks"                   # aggregate under homomorphic encryption
    aggregation = "ckks+masked"           # the default: masks inside the CKKS plaintext

The spec travels to the coordinator and to every partner as canonical JSON
(:meth:`JobSpec.to_json`), so both sides see exactly the same job.

The sections are their own modules: :mod:`common.jobspec_sections` (model, training,
evaluation, segmentation, and the bounds they share), :mod:`common.jobspec_privacy`
and :mod:`common.jobspec_vertical`; their names are importable from here too.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    model_validator,
)

from fedcollab.common.errors import JobSpecError, SchemaError
from fedcollab.common.jobspec_privacy import (
    DEFAULT_AGGREGATION,
    NO_KEY_DEALER,
    PrivacySpec,
    resolve_key_dealer,
    resolve_vertical_aggregation,
)
from fedcollab.common.jobspec_sections import (
    MAX_HIDDEN_WEIGHTS,
    MAX_LAYER_WIDTH,
    MAX_LAYERS,
    MAX_TIMEOUT_S,
    STRICT,
    EvaluationSpec,
    ModelSpec,
    SegmentationSpec,
    TrainingSpec,
)
from fedcollab.common.jobspec_vertical import VerticalPartySpec, VerticalSpec
from fedcollab.common.schema import DatasetSchema

__all__ = [
    "DEFAULT_AGGREGATION",
    "MAX_HIDDEN_WEIGHTS",
    "MAX_LAYERS",
    "MAX_LAYER_WIDTH",
    "MAX_TIMEOUT_S",
    "EvaluationSpec",
    "JobSpec",
    "ModelSpec",
    "PrivacySpec",
    "SegmentationSpec",
    "TrainingSpec",
    "VerticalPartySpec",
    "VerticalSpec",
    "load_job_spec",
]


class JobSpec(BaseModel):
    """A validated job specification (see the module docstring)."""

    model_config = STRICT

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    task: Literal["purchase_prediction", "segmentation", "vertical"]
    purpose: str = Field(min_length=1, max_length=128)
    participants: tuple[str, ...] = Field(default=(), max_length=10_000)
    min_partners: int = Field(default=2, ge=1, le=10_000)
    rounds: int = Field(default=20, ge=1, le=10000)
    #: Seconds to wait for a round's replies before counting a partner as dropped.
    round_timeout_s: float = Field(default=120.0, gt=0.0, le=MAX_TIMEOUT_S)
    #: Seconds to wait at the start for min_partners partners to be online.
    startup_timeout_s: float = Field(default=120.0, gt=0.0, le=MAX_TIMEOUT_S)
    #: The common data contract, embedded as a dict (a path in the TOML file).
    data_schema: dict[str, Any] = Field(alias="schema")
    model: ModelSpec = ModelSpec()
    training: TrainingSpec = TrainingSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    segmentation: SegmentationSpec = SegmentationSpec()
    privacy: PrivacySpec = PrivacySpec()
    vertical: VerticalSpec = VerticalSpec()

    @model_validator(mode="before")
    @classmethod
    def _vertical_aggregation(cls, data: Any) -> Any:
        return resolve_vertical_aggregation(data)

    @model_validator(mode="before")
    @classmethod
    def _key_dealer(cls, data: Any) -> Any:
        return resolve_key_dealer(data)

    @model_validator(mode="after")
    def _check(self) -> JobSpec:
        if self.task == "vertical" and self.privacy.masked:
            raise ValueError(
                f"privacy.aggregation = {self.privacy.aggregation!r} is for horizontal jobs; "
                "a vertical job masks its payloads in its own protocol: leave it unset"
            )
        if self.task == "vertical":
            self._check_vertical()
        elif self.vertical.parties:
            raise ValueError("[vertical] parties are only for task = 'vertical'")
        if len(set(self.participants)) != len(self.participants):
            raise ValueError("participants lists a partner twice")
        if self.participants and self.min_partners > len(self.participants):
            raise ValueError(
                f"min_partners={self.min_partners} exceeds the "
                f"{len(self.participants)} participants"
            )
        if self.privacy.encrypted and self.min_partners < 2:
            raise ValueError(
                "an encrypted job needs min_partners >= 2: an aggregate of one partner "
                "is that partner's vector, and partners refuse to decrypt it"
            )
        if self.privacy.dp == "client" and self.task != "purchase_prediction":
            raise ValueError("privacy.dp = 'client' applies to purchase prediction only")
        if self.privacy.dp != "none" and self.segmentation.seeding == "kfed":
            raise ValueError("k-FED seeding has no DP mechanism: use seeding = 'summed' or 'auto'")
        if self.privacy.masked and self.min_partners < 2:
            raise ValueError(
                f"privacy.aggregation = {self.privacy.aggregation!r} needs min_partners >= 2: "
                "masks cannot hide a single partner's 'sum'"
            )
        if self.privacy.masked and self.segmentation.seeding == "kfed":
            raise ValueError(
                "segmentation.seeding = 'kfed' sends each partner's local clusters, which "
                "masks cannot hide: use 'summed' or 'auto'"
            )
        if self.privacy.encrypted and self.segmentation.seeding == "kfed":
            raise ValueError(
                "segmentation.seeding = 'kfed' sends each partner's local clusters, which "
                "cannot be aggregated under encryption: use 'summed' or 'auto'"
            )
        if self.task != "vertical" and self.privacy.encrypted and not self.privacy.key_dealer:
            raise ValueError(NO_KEY_DEALER)
        if (
            self.privacy.key_dealer
            and self.participants
            and self.privacy.key_dealer not in self.participants
        ):
            raise ValueError(f"privacy.key_dealer {self.privacy.key_dealer!r} is not a participant")
        return self

    def check_value_bounds(self) -> None:
        """Refuse (:class:`JobSpecError`, exit 12) a horizontal DP job whose
        ``[privacy.value_bounds]`` do not name exactly the schema's numeric features.

        A DP job clips every numeric feature to its declared bounds (the moments'
        sensitivity, :func:`protocols.dp_statistics.private_moments`); a feature without
        bounds makes every partner refuse the moments request, and a misspelled bound
        leaves the real column unbounded. Called where a job starts (``fedcollab run``,
        ``job submit``, the coordinator before it asks any partner), not on every parse:
        a spec is also parsed for requests that need no bounds."""
        if self.privacy.dp == "none" or self.task == "vertical":
            return
        try:
            schema = DatasetSchema.model_validate(self.data_schema)
        except ValidationError:
            return  # the schema's own errors are reported where it is loaded
        numeric = [f.name for f in schema.numeric_features]
        bounds = self.privacy.value_bounds
        missing = [c for c in numeric if c not in bounds]
        unknown = sorted(set(bounds) - set(numeric))
        if not missing and not unknown:
            return
        parts = []
        if missing:
            parts.append(f"numeric feature(s) {missing} have no [privacy.value_bounds]")
        for col in unknown:
            near = difflib.get_close_matches(col, numeric, n=1)
            parts.append(
                f"[privacy.value_bounds] {col!r} is not a numeric feature of the schema"
                + (f" (did you mean {near[0]!r}?)" if near else "")
            )
        raise JobSpecError(
            f"job {self.name!r}, privacy.dp = {self.privacy.dp!r}: " + "; ".join(parts),
            hint="a DP job clips each numeric feature to [low, high] to bound what one row "
            "can change: declare column = [low, high] under [privacy.value_bounds] for "
            "exactly the schema's numeric features (public bounds, e.g. from the data's "
            "documentation, not computed from the data)",
        )

    def _check_vertical(self) -> None:
        v = self.vertical
        roles = [p.role for p in v.parties.values()]
        if roles.count("label_holder") != 1 or roles.count("feature_party") < 1:
            raise ValueError(
                "a vertical job needs exactly one party with role = 'label_holder' and at "
                "least one with role = 'feature_party' under [vertical.parties.NAME]"
            )
        if set(self.participants) != set(v.parties):
            raise ValueError(
                "a vertical job's participants must be exactly its [vertical.parties] "
                f"(got {sorted(self.participants)}, parties {sorted(v.parties)})"
            )
        if self.min_partners != len(v.parties):
            raise ValueError(
                f"a vertical job needs every party: min_partners must be {len(v.parties)}"
            )
        for name, party in v.parties.items():
            schema = DatasetSchema.model_validate(party.data_schema)
            if party.role == "label_holder" and schema.label_column is None:
                raise ValueError(f"label holder {name!r}: its schema names no label_column")
            if party.role == "feature_party" and not schema.features:
                raise ValueError(f"feature party {name!r}: its schema has no features")
        if self.privacy.dp == "client":
            raise ValueError("privacy.dp = 'client' is for horizontal purchase prediction")
        if v.predict_with and (v.model != "logreg" or self.privacy.dp != "none"):
            raise ValueError(
                "joint inference (vertical.predict_with) serves logistic-regression models "
                "without DP in this version"
            )
        if self.privacy.dp == "sample" and v.model != "split_nn":
            raise ValueError(
                "vertical DP adds Gaussian noise to the split NN's embeddings: "
                "set vertical.model = 'split_nn', or privacy.dp = 'none'"
            )

    def to_json(self) -> str:
        """Canonical JSON (sorted keys) used on the wire and for the job hash."""
        return json.dumps(
            self.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":")
        )

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        try:
            return cls.model_validate_json(text, strict=False)
        except ValidationError as exc:
            raise JobSpecError(
                f"job spec on the wire is invalid: {_summarise(exc)}",
                hint="the coordinator and this node may run different fedcollab versions",
            ) from exc

    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.to_json().encode()).hexdigest()

    def check_wire(self) -> None:
        """Refuse (:class:`JobSpecError`, naming each invalid field) a spec that its
        receivers would refuse when they parse :meth:`to_json`: one changed in Python
        without validation (``model_copy(update=...)`` does not validate)."""
        try:
            type(self).model_validate_json(self.to_json(), strict=False)
        except ValidationError as exc:
            raise JobSpecError(
                f"job spec {self.name!r} is invalid: {_summarise(exc)}",
                hint="build job specs with load_job_spec or JobSpec.model_validate "
                "(model_copy(update=...) skips validation)",
            ) from exc


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def load_job_spec(path: Path) -> JobSpec:
    """Read and validate a TOML job spec; the ``schema`` path is resolved and embedded."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise JobSpecError(f"cannot read job spec {path}: {exc}", hint="check the path") from exc
    except tomllib.TOMLDecodeError as exc:
        raise JobSpecError(
            f"{path} is not valid TOML: {exc}", hint="fix the syntax (see README, 'Job specs')"
        ) from exc
    if raw.get("task") == "vertical":
        _embed_vertical(path, raw)
    schema_ref = raw.get("schema")
    if isinstance(schema_ref, dict):  # vertical: the label holder's, embedded above
        return _validate(path, raw, path)
    if not isinstance(schema_ref, str):
        raise JobSpecError(
            f"{path}: 'schema' must name the partners' schema file",
            hint='add schema = "path/to/dataset.schema.json" (relative to the job file)',
        )
    schema_path = (path.parent / schema_ref).resolve()
    try:
        raw["schema"] = json.loads(schema_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JobSpecError(
            f"{path}: cannot read schema {schema_path}: {exc}",
            hint="point 'schema' at a schema file written by `fedcollab data schema` "
            "or `fedcollab data split`",
        ) from exc
    return _validate(path, raw, schema_path)


def _read_schema(path: Path, ref: object, where: str) -> dict[str, Any]:
    if not isinstance(ref, str):
        raise JobSpecError(
            f"{path}: {where} must name a schema file",
            hint='add schema = "path/to/dataset.schema.json" (relative to the job file)',
        )
    schema_path = (path.parent / ref).resolve()
    try:
        data = json.loads(schema_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JobSpecError(
            f"{path}: cannot read schema {schema_path} ({where}): {exc}",
            hint="point it at a schema file written by `fedcollab data schema` or "
            "`fedcollab data split`",
        ) from exc
    if not isinstance(data, dict):
        raise JobSpecError(f"{path}: {schema_path} is not a JSON object", hint="fix the schema")
    return data


def _embed_vertical(path: Path, raw: dict[str, Any]) -> None:
    """Embed each party's schema; participants and min_partners default to every party;
    the top-level schema is the label holder's."""
    vertical = raw.get("vertical")
    parties = vertical.get("parties") if isinstance(vertical, dict) else None
    if not isinstance(parties, dict) or not parties:
        raise JobSpecError(
            f"{path}: task = 'vertical' needs [vertical.parties.NAME] tables",
            hint="give each party a role and a schema (see README, 'Vertical jobs')",
        )
    for name, party in parties.items():
        if not isinstance(party, dict):
            raise JobSpecError(f"{path}: [vertical.parties.{name}] must be a table", hint="")
        party["schema"] = _read_schema(path, party.get("schema"), f"vertical.parties.{name}")
        if party.get("role") == "label_holder" and "schema" not in raw:
            raw["schema"] = party["schema"]
    if "schema" not in raw:
        raise JobSpecError(
            f"{path}: a vertical job needs exactly one party with role = 'label_holder'",
            hint="set role = 'label_holder' on the party that holds the labels",
        )
    raw.setdefault("participants", sorted(parties))
    raw.setdefault("min_partners", len(parties))


def _validate(path: Path, raw: dict[str, Any], schema_path: Path) -> JobSpec:
    for key in ("participants",):
        if isinstance(raw.get(key), list):
            raw[key] = tuple(raw[key])
    for table in ("model", "vertical"):
        if isinstance(raw.get(table), dict) and isinstance(raw[table].get("hidden_sizes"), list):
            raw[table]["hidden_sizes"] = tuple(raw[table]["hidden_sizes"])
    schemas: list[tuple[str, object, Path]] = [("schema", raw["schema"], schema_path)]
    if raw.get("task") == "vertical":
        schemas += [
            (f"vertical.parties.{n}", p["schema"], path)
            for n, p in raw["vertical"]["parties"].items()
        ]
    for where, schema, origin in schemas:
        try:
            DatasetSchema.model_validate(schema)
        except ValidationError as exc:
            raise SchemaError(
                f"{origin} ({where}): {_summarise(exc)}",
                hint="the job's schema must be a valid data contract (see `fedcollab data split`)",
            ) from exc
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise JobSpecError(
            f"{path}: {_summarise(exc)}", hint="see README, 'Job specs', for every field"
        ) from exc
