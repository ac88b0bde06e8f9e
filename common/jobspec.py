"""Job specification: what an operator asks the federation to do.

Long module: one pydantic model tree for the job spec, validated as a whole. Planned
split: one module per task's section.

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
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from fedcollab.common.errors import JobSpecError, SchemaError
from fedcollab.common.schema import DatasetSchema

__all__ = [
    "DEFAULT_AGGREGATION",
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

_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

#: Bounds on what one job may ask of a partner's machine (see :func:`_check_hidden`).
MAX_LAYERS = 8
MAX_LAYER_WIDTH = 4096
MAX_HIDDEN_WEIGHTS = 4_000_000
#: A day: no wait of a job may be longer (a finite timeout also bounds key lifetimes).
MAX_TIMEOUT_S = 86_400.0
_SEED = Field(default=0, ge=0, le=2**31 - 1)

#: The aggregation a horizontal job gets when its spec names none, by
#: ``privacy.encryption`` (issue 14). Vertical jobs mask and encrypt in their own
#: protocol (client.vertical): their encrypted aggregation is always "ckks".
DEFAULT_AGGREGATION: dict[str, str] = {"none": "plaintext", "ckks": "ckks+masked"}
#: What each ``privacy.encryption`` allows.
_AGGREGATIONS: dict[str, tuple[str, ...]] = {
    "none": ("plaintext", "masked"),
    "ckks": ("ckks+masked", "ckks"),
}


def _check_hidden(sizes: tuple[int, ...]) -> tuple[int, ...]:
    """Hidden layer sizes a partner can afford: at most 8 layers of at most 4,096 units
    and 4 million weights between hidden layers (a spec like ``[2e9, 2e9]`` is refused
    before any partner allocates it)."""
    if len(sizes) > MAX_LAYERS or any(not 1 <= h <= MAX_LAYER_WIDTH for h in sizes):
        raise ValueError(
            f"hidden_sizes must be at most {MAX_LAYERS} layers of 1..{MAX_LAYER_WIDTH} units"
        )
    if sum(a * b for a, b in itertools.pairwise(sizes)) > MAX_HIDDEN_WEIGHTS:
        raise ValueError(f"hidden_sizes make more than {MAX_HIDDEN_WEIGHTS:,} hidden weights")
    return sizes


class ModelSpec(BaseModel):
    model_config = _STRICT
    kind: Literal["logreg", "mlp"] = "logreg"
    hidden_sizes: Annotated[tuple[int, ...], AfterValidator(_check_hidden)] = (32, 16)


class TrainingSpec(BaseModel):
    model_config = _STRICT
    local_epochs: int = Field(default=1, ge=1, le=100)
    batch_size: int = Field(default=64, ge=1, le=65536)
    learning_rate: float = Field(default=0.01, gt=0.0, le=10.0)
    optimizer: Literal["sgd", "adam"] = "adam"
    #: FedProx proximal weight mu (Li et al. 2020); 0 is plain FedAvg.
    proximal_mu: float = Field(default=0.0, ge=0.0, le=100.0)
    seed: int = _SEED


class EvaluationSpec(BaseModel):
    model_config = _STRICT
    validation_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(default=0.2, gt=0.0, lt=0.5)
    #: Early stopping on the federated validation AUC; 0 disables it.
    early_stopping_patience: int = Field(default=5, ge=0, le=10_000)
    early_stopping_min_delta: float = Field(default=1e-4, ge=0.0, le=1.0)
    split_seed: int = _SEED
    #: Which model a DP purchase-prediction job releases. "last_round": the last model,
    #: unvalidated; "validation": every round validates the model it starts from on
    #: Gaussian-noised histograms (charged to the partners' ledgers like the other
    #: statistics, privacy.dp_plan) and the job keeps the best, as a job without DP
    #: does. The default is measured (docs/privacy.md, "Measured"): selection costs the
    #: statistics' share of the budget (noisier moments) and picked worse models.
    dp_model_selection: Literal["last_round", "validation"] = "last_round"


class SegmentationSpec(BaseModel):
    model_config = _STRICT
    k: int = Field(default=5, ge=2, le=100)
    k_local: int = Field(default=10, ge=2, le=200)
    #: Local clusters smaller than this are never reported at seeding.
    min_cluster_size: int = Field(default=10, ge=2, le=1_000_000)
    lloyd_iterations: int = Field(default=20, ge=1, le=500)
    tolerance: float = Field(default=1e-6, ge=0.0, le=1e6)
    seed: int = _SEED
    #: "kfed": partners report local clusters (per-partner, plaintext); "summed":
    #: Lloyd steps from random candidates, summed over partners (works under
    #: encryption); "auto": kfed in plaintext jobs, summed in encrypted ones.
    seeding: Literal["auto", "kfed", "summed"] = "auto"
    seed_candidates: int = Field(default=100, ge=2, le=1000)
    seed_steps: int = Field(default=2, ge=1, le=20)

    def seeding_for(self, *, encrypted: bool, dp: bool = False) -> Literal["kfed", "summed"]:
        if self.seeding == "auto":
            return "summed" if encrypted or dp else "kfed"
        return self.seeding


class PrivacySpec(BaseModel):
    model_config = _STRICT
    #: "ckks": every aggregate is summed under CKKS homomorphic encryption, so the
    #: coordinator never sees one partner's update or statistics (privacy.ckks).
    encryption: Literal["none", "ckks"] = "none"
    #: How every horizontal aggregate is formed (issue 14, docs/secure_aggregation.md):
    #: "plaintext" (tests and comparisons only: the coordinator sees each reply),
    #: "masked" (pairwise masks with dropout recovery, Bonawitz et al. 2017; no HE),
    #: "ckks+masked" (the masked words inside the CKKS plaintext) or "ckks" (CKKS
    #: alone, the measured baseline). Empty: the default for the job's encryption
    #: (:data:`DEFAULT_AGGREGATION`), resolved at validation so the spec digest pins it.
    aggregation: Literal["", "plaintext", "masked", "ckks+masked", "ckks"] = ""
    #: The partner that runs the job's key ceremony; empty: the first by name.
    key_dealer: str = ""
    #: Differential privacy: "sample" (record-level: DP-SGD at each partner for
    #: purchase prediction, Gaussian noise on k-means sums and counts for
    #: segmentation) or "client" (partner-level DP-FedAvg; needs encryption or masks).
    dp: Literal["none", "sample", "client"] = "none"
    #: Give exactly one: the job's epsilon (noise derived from it) or the noise
    #: multiplier (epsilon reported).
    target_epsilon: float | None = Field(default=None, gt=0.0, le=1000.0)
    noise_multiplier: float | None = Field(default=None, gt=0.0, le=1000.0)
    target_delta: float = Field(default=1e-5, gt=0.0, lt=0.01)
    #: DP-SGD: per-example gradient clipping norm and Poisson sampling rate.
    max_grad_norm: float = Field(default=1.0, gt=0.0, le=1000.0)
    sample_rate: float = Field(default=0.02, gt=0.0, le=1.0)
    #: DP-FedAvg: a partner's model update is clipped to this L2 norm.
    clip_norm: float = Field(default=1.0, gt=0.0, le=1000.0)
    #: DP-FedAvg: each partner takes part in a round with this probability.
    client_sample_rate: float = Field(default=1.0, gt=0.0, le=1.0)
    #: Segmentation with DP: each standardised row is clipped to this L2 norm.
    row_clip_norm: float = Field(default=5.0, gt=0.0, le=1000.0)
    #: DP jobs: each numeric column's values are clipped to [low, high] before the
    #: noisy moments (protocols.dp_statistics), which bounds one row's effect on them.
    #: Public domain knowledge (never read off the data); required for every numeric
    #: column of a DP job.
    value_bounds: dict[str, list[float]] = Field(default_factory=dict, max_length=1000)

    @property
    def encrypted(self) -> bool:
        return self.encryption == "ckks"

    @property
    def masked(self) -> bool:
        """Partners mask their replies (alone or inside the CKKS plaintext)."""
        return self.aggregation in ("masked", "ckks+masked")

    @model_validator(mode="before")
    @classmethod
    def _default_aggregation(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("aggregation"):
            mode = DEFAULT_AGGREGATION.get(str(data.get("encryption", "none")), "plaintext")
            return {**data, "aggregation": mode}
        return data

    @model_validator(mode="after")
    def _check_aggregation(self) -> PrivacySpec:
        allowed = _AGGREGATIONS[self.encryption]  # the Literal refused any other
        if self.aggregation not in allowed:
            raise ValueError(
                f"privacy.aggregation = {self.aggregation!r} does not go with encryption = "
                f"{self.encryption!r}: use one of {', '.join(map(repr, allowed))}"
                + (" (or encryption = 'ckks')" if self.aggregation.startswith("ckks") else "")
            )
        return self

    @model_validator(mode="after")
    def _check_dp(self) -> PrivacySpec:
        for col, pair in self.value_bounds.items():
            if len(pair) != 2 or not pair[0] < pair[1] or max(map(abs, pair)) > 1e12:
                raise ValueError(
                    f"privacy.value_bounds.{col} must be [low, high] with low < high, "
                    f"|values| <= 1e12; got {pair!r}"
                )
        if self.dp == "none":
            if self.target_epsilon is not None or self.noise_multiplier is not None:
                raise ValueError("target_epsilon / noise_multiplier need privacy.dp set")
            return self
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ValueError(
                f"privacy.dp = {self.dp!r} needs exactly one of target_epsilon "
                "(noise derived from it) or noise_multiplier (epsilon reported)"
            )
        if self.dp == "client" and not (self.encrypted or self.masked):
            raise ValueError(
                "privacy.dp = 'client' adds noise shares at each partner that only protect "
                "in the sum: it needs encryption = 'ckks' or aggregation = 'masked' so the "
                "coordinator sees only the sum"
            )
        return self


class VerticalPartySpec(BaseModel):
    """One party of a vertical job: its role and its data contract (own columns)."""

    model_config = _STRICT
    role: Literal["label_holder", "feature_party"]
    #: The party's schema, embedded as a dict (a path in the TOML file): its id
    #: column and its own feature columns; the label holder's also names the label.
    data_schema: dict[str, Any] = Field(alias="schema")


class VerticalSpec(BaseModel):
    """A vertical job: same users, different columns at each party (``task = "vertical"``).

    ::

        [vertical]
        model = "logreg"                       # or "split_nn"
        iterations = 30
        [vertical.parties.platform]
        role = "label_holder"
        schema = "platform.schema.json"
        [vertical.parties.payment]
        role = "feature_party"
        schema = "payment.schema.json"
    """

    model_config = _STRICT
    model: Literal["logreg", "split_nn"] = "logreg"
    parties: dict[str, VerticalPartySpec] = Field(default_factory=dict)
    #: Training steps; each costs two relay hops (feature parties, then label holder).
    iterations: int = Field(default=30, ge=1, le=5000)
    #: Step size; default 1.0 for logistic regression (a damped Newton-like step),
    #: 0.05 (Adam) for the split NN.
    learning_rate: float | None = Field(default=None, gt=0.0, le=100.0)
    #: L2 penalty on the weights (logistic regression), as in sklearn's 1/(C n).
    l2: float = Field(default=1e-4, ge=0.0, le=100.0)
    #: Split neural network: bottom MLP per party, top MLP at the label holder.
    hidden_sizes: Annotated[tuple[int, ...], AfterValidator(_check_hidden)] = (32,)
    embedding_dim: int = Field(default=8, ge=1, le=256)
    batch_size: int = Field(default=4096, ge=16, le=1_000_000)
    #: Split NN with privacy.dp = "sample": each embedding row is clipped to this norm.
    embedding_clip_norm: float = Field(default=1.0, gt=0.0, le=1000.0)
    seed: int = _SEED
    #: Joint inference: the name of a completed vertical training job whose model
    #: shares the parties hold; the job scores the label holder's query ids (its
    #: node's ``vertical-queries`` file, else all its rows) and trains nothing.
    predict_with: str = Field(default="", pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,63})?$")
    #: How the parties align their users (docs/vertical.md, "PSI"): "ecdh-ring", every
    #: party's ids blinded by every party's X25519 key round a ring (protocols.psi);
    #: "cm20", the label holder and each feature party run the OT-based PSI of Chase
    #: and Miao 2020 (protocols.psi_oprf; about 7x faster, 1M x 1M in about 20 s on 2
    #: cores), which a malicious label holder can turn into a test of guessed ids
    #: against a feature party's set (the ring cannot).
    psi: Literal["ecdh-ring", "cm20"] = "ecdh-ring"

    @property
    def step_size(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1.0 if self.model == "logreg" else 0.05

    @property
    def label_holder(self) -> str:
        return next(n for n, p in self.parties.items() if p.role == "label_holder")

    @property
    def feature_parties(self) -> list[str]:
        return sorted(n for n, p in self.parties.items() if p.role == "feature_party")


class JobSpec(BaseModel):
    """A validated job specification (see the module docstring)."""

    model_config = _STRICT

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
        """A vertical job's sums are the vertical protocol's: "ckks" or "plaintext"."""
        if not isinstance(data, dict) or data.get("task") != "vertical":
            return data
        given = data.get("privacy")
        encryption: str
        if isinstance(given, PrivacySpec):  # built in code: its mode is resolved already
            encryption = given.encryption
            if given.aggregation != DEFAULT_AGGREGATION[encryption]:
                return data
            privacy = given.model_dump()
        elif isinstance(given, dict):
            privacy = dict(given)
            encryption = str(privacy.get("encryption", "none"))
            if privacy.get("aggregation"):
                return data
        else:
            return data
        privacy["aggregation"] = "ckks" if encryption == "ckks" else "plaintext"
        return {**data, "privacy": privacy}

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
        if (
            self.privacy.key_dealer
            and self.participants
            and self.privacy.key_dealer not in self.participants
        ):
            raise ValueError(f"privacy.key_dealer {self.privacy.key_dealer!r} is not a participant")
        return self

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
            hint="point 'schema' at a schema file written by `fedcollab data split`",
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
            hint="point it at a schema file written by `fedcollab data split`",
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
