"""A partner node's settings, as one strict model (issue 17).

A node's settings are the keys ``fedcollab node start`` writes to its private
``settings.json`` (:func:`client.supernode.node_settings`), which the ClientApp
receives as Flower's ``node_config``; in Flower's simulation engine they are the
node's ``sim-partners`` entry (:mod:`federation.simulation`), read by
:func:`client.partner_data.partner_settings`. :class:`NodeSettings` lists every key
a node accepts, spelled as the node config spells it (dashed keys by alias), with
its type and range. A settings mapping with an unknown key (a typo such as
``dp_only`` would otherwise silently leave that policy at its default), without
``partner``, ``data`` or ``schema``, or with a malformed value is refused with a
:class:`~fedcollab.common.errors.SchemaError` before the node computes anything.

The rest of the node keeps reading its settings as a ``Mapping[str, str]``
(:meth:`NodeSettings.as_config`: the keys given, each value in its canonical
spelling); the helpers that interpret one setting (``max-runs-per-day``, the
split, ``dp-only``, ``label-epsilon``, ...) take its parsed value from
:meth:`NodeOptions.of`, so each key is parsed and range-checked in one place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from fedcollab.common.errors import SchemaError
from fedcollab.common.jobspec import EvaluationSpec

__all__ = [
    "DEFAULT_MAX_RUNS_PER_DAY",
    "NodeOptions",
    "NodeSettings",
    "settings_error",
]

#: Runs a node accepts in any 24 hours unless its ``max-runs-per-day`` says otherwise:
#: a partner joins a handful of jobs a day; each run is a fresh plan of requests, so
#: this bounds how often one step can be asked anew (client.run_contract).
DEFAULT_MAX_RUNS_PER_DAY = 24

_HINT = (
    "start the node with `fedcollab node start` (it writes every setting; see `fedcollab "
    "node start --help`), or fix the key in its --node-config; simulations: `fedcollab run`"
)
_DEFAULT_SPLIT = EvaluationSpec()


def _text(value: object) -> str:
    """A node config value as text: Flower parses ``--node-config`` values into bool,
    int or float; a bool is spelled ``true``/``false`` as ``node start`` writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _flag(value: object) -> bool:
    text = _text(value).strip().lower()
    if text not in ("true", "false"):
        raise ValueError("must be true or false")
    return text == "true"


def _dp_only(value: object) -> bool | None:
    text = _text(value).strip().lower()
    if text == "auto":
        return None
    if text not in ("true", "false"):
        raise ValueError("must be true, false or auto")
    return text == "true"


def _path(value: object) -> Path:
    text = _text(value)
    if not text.strip():
        raise ValueError("must be a non-empty path")
    return Path(text)


def _number(value: object) -> str:
    """A number's text: pydantic parses it (lax: from a string), the field's range checks it."""
    return _text(value).strip()


_Flag = Annotated[bool, BeforeValidator(_flag)]
_Path = Annotated[Path, BeforeValidator(_path)]
_Fraction = Annotated[float, BeforeValidator(_number), Field(gt=0.0, lt=0.5, allow_inf_nan=False)]


class NodeOptions(BaseModel):
    """Every node setting but the partner's name and files; each has a default.

    :meth:`of` reads them from a settings mapping, ignoring the other keys: what the
    helpers that interpret one setting call (the full check is :meth:`NodeSettings.parse`).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    #: This partner's audit trail and signing key (without both: no trail, no cosigning).
    audit_db: _Path | None = Field(default=None, alias="audit-db")
    audit_key: _Path | None = Field(default=None, alias="audit-key")
    #: The coordinator's audit verifier key, pinned, to check what it asks to cosign.
    coordinator_key: _Path | None = Field(default=None, alias="coordinator-key")
    #: This partner's signed dataset grant (without one the node refuses every job).
    grant: _Path | None = None
    #: The partners' audit keys, pinned (encrypted jobs' key ceremony checks them).
    peer_keys: _Path | None = Field(default=None, alias="peer-keys")
    #: The privacy-budget ledger (default: budget.db in state-dir, else beside audit-db).
    budget_db: _Path | None = Field(default=None, alias="budget-db")
    #: The node's state folder (run contract, job keys, vertical state; default: the
    #: audit log's folder).
    state_dir: _Path | None = Field(default=None, alias="state-dir")
    #: Vertical jobs: show this partner's per-feature explanation to the others.
    share_explanations: _Flag = Field(default=False, alias="share-explanations")
    #: Vertical joint inference at the label holder: the ids to score, one per line.
    vertical_queries: _Path | None = Field(default=None, alias="vertical-queries")
    #: Vertical label holder: serve plaintext jobs (testing only; client.vertical).
    allow_plaintext_vertical: _Flag = Field(default=False, alias="allow-plaintext-vertical")
    #: Segmentation without DP: serve jobs whose centroids this node cannot derive itself
    #: (plaintext aggregation, k-FED seeding; client.centroid_chain). Off: refused.
    allow_unverified_centroids: _Flag = Field(default=False, alias="allow-unverified-centroids")
    #: Vertical label holder: label-DP epsilon per job (None: client.vertical_training's
    #: default).
    label_epsilon: (
        Annotated[float, BeforeValidator(_number), Field(gt=0.0, allow_inf_nan=False)] | None
    ) = Field(default=None, alias="label-epsilon")
    #: Serve only differentially private jobs; None ("auto"): only on a dataset with a
    #: privacy-budget cap (client.admission.check_dp_policy).
    dp_only: Annotated[bool | None, BeforeValidator(_dp_only)] = Field(
        default=None, alias="dp-only"
    )
    #: Runs accepted in any 24 hours (client.run_contract).
    max_runs_per_day: Annotated[int, BeforeValidator(_number), Field(ge=1)] = Field(
        default=DEFAULT_MAX_RUNS_PER_DAY, alias="max-runs-per-day"
    )
    #: How this node splits its rows (a partner's constant, checked against every job's
    #: [evaluation] split: client.run_contract.check_split); the job spec's ranges.
    split_validation: _Fraction = Field(
        default=_DEFAULT_SPLIT.validation_fraction, alias="split-validation"
    )
    split_test: _Fraction = Field(default=_DEFAULT_SPLIT.test_fraction, alias="split-test")
    split_seed: Annotated[int, BeforeValidator(_number), Field(ge=0, le=2**31 - 1)] = Field(
        default=_DEFAULT_SPLIT.split_seed, alias="split-seed"
    )

    @classmethod
    def of(cls, config: Mapping[str, object]) -> NodeOptions:
        """The options in ``config`` (other keys ignored); SchemaError on a malformed one."""
        try:
            return cls.model_validate({str(k): v for k, v in config.items()})
        except ValidationError as exc:
            raise settings_error(exc) from exc


class NodeSettings(NodeOptions):
    """Everything a node accepts: its name and files, and the :class:`NodeOptions`.

    Strict: :meth:`parse` refuses an unknown key, a missing ``partner``, ``data`` or
    ``schema``, and a malformed value. Frozen; built once per request.
    """

    #: Keys by their node-config spelling only (no ``populate_by_name``): ``dp_only``,
    #: the attribute's name, is an unknown key, not an alias of ``dp-only``.
    model_config = ConfigDict(extra="forbid", frozen=True)

    partner: str = Field(min_length=1)
    data: _Path
    #: The data file's schema (``schema`` in the node config; the attribute name avoids
    #: pydantic's deprecated ``BaseModel.schema``).
    schema_file: _Path = Field(alias="schema")

    @classmethod
    def parse(cls, config: Mapping[str, object]) -> NodeSettings:
        """Validate a node config (or a simulation's ``sim-partners`` entry): as
        :meth:`NodeOptions.of`, under this model's strict config."""
        settings = cls.of(config)
        assert isinstance(settings, NodeSettings)
        return settings

    def as_config(self) -> dict[str, str]:
        """The keys given, as the node config spells them, each value in canonical text
        (paths as given, booleans ``true``/``false``, ``dp-only`` ``auto`` for None)."""
        out: dict[str, str] = {}
        for name, info in type(self).model_fields.items():
            value: Any = getattr(self, name)
            if name not in self.model_fields_set or (value is None and name != "dp_only"):
                continue
            out[info.alias or name] = _canonical(name, value)
        return out


def _canonical(name: str, value: object) -> str:
    if name == "dp_only" and value is None:
        return "auto"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        assert math.isfinite(value)
        return repr(value)
    return str(value)


def settings_error(exc: ValidationError) -> SchemaError:
    """A SchemaError that names each refused setting (and the value refused: the message
    goes to the node's own log, the refusal reply names the error class only)."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "?"
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown setting {key!r}")
        elif err["type"] == "missing":
            problems.append(f"missing setting {key!r}")
        else:
            problems.append(f"setting {key!r}: {err['msg']} (got {err['input']!r})")
    return SchemaError("this node's settings are invalid: " + "; ".join(problems), hint=_HINT)
