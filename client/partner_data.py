"""Where a partner's data comes from, loaded and validated once per process.

A real SuperNode is started with ``--node-config "partner='acme' data='/p/acme.csv'
schema='/p/acme.schema.json'"``. In Flower's simulation engine every virtual
node gets ``partition-id`` instead, and the job's run config lists the local
partner files (``sim-partners``, JSON), so the same ClientApp code serves both.

Validation happens here, before anything is computed from the data; a
partner whose file breaks its schema answers every request with a refusal
(:func:`common.serde.refusal`) that carries no data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedcollab.common.dataset import Dataset, load_dataset, split_indices
from fedcollab.common.errors import SchemaError
from fedcollab.common.schema import DatasetSchema, load_schema

__all__ = [
    "PartnerData",
    "PartnerSource",
    "load_partner",
    "partner_config",
    "source_from_config",
]


@dataclass(frozen=True)
class PartnerSource:
    """A partner's name and the local files it trains on."""

    partner: str
    data: Path
    schema: Path


@dataclass(frozen=True)
class PartnerData:
    """A partner's validated dataset and its deterministic train/val/test rows."""

    partner: str
    dataset: Dataset
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


def partner_config(
    node_config: Mapping[str, object], run_config: Mapping[str, object]
) -> dict[str, str]:
    """This partner's local settings: from the SuperNode's node config, or in a
    simulation from the run config's ``sim-partners`` entry for this node.

    Keys: ``partner``, ``data``, ``schema`` and optionally ``audit-db``,
    ``audit-key``, ``coordinator-key``, ``grant``.
    """
    if "data" in node_config:
        return {str(k): str(v) for k, v in node_config.items()}
    if "partition-id" not in node_config:
        # A real node never takes its settings from the run config, which the
        # coordinator writes: only Flower's simulation engine numbers its nodes.
        raise SchemaError(
            "this node's config names no data file",
            hint="start the node with `fedcollab node start` (it sets partner, data, schema)",
        )
    partners = json.loads(str(run_config.get("sim-partners", "[]")))
    index = int(str(node_config.get("partition-id", -1)))
    if not 0 <= index < len(partners):
        raise SchemaError(
            f"simulation node {index} has no partner file",
            hint="run simulations with `fedcollab run`, which lists the partner files",
        )
    return {str(k): str(v) for k, v in partners[index].items()}


def source_from_config(config: Mapping[str, str]) -> PartnerSource:
    """The partner's name and files from :func:`partner_config`'s result."""
    try:
        return PartnerSource(
            partner=config["partner"], data=Path(config["data"]), schema=Path(config["schema"])
        )
    except KeyError as exc:
        raise SchemaError(
            f"node config lacks {exc.args[0]!r}",
            hint="start the node with `fedcollab node start` (it sets partner, data, schema)",
        ) from exc


_CACHE_SIZE = 16  # a simulation actor serves many virtual partners
_CACHE: dict[tuple[str, str, float, float, float, float, int], PartnerData] = {}


def load_partner(
    source: PartnerSource, *, validation_fraction: float, test_fraction: float, split_seed: int
) -> PartnerData:
    """Load and validate (DataValidationError/SchemaError on failure), cached per file version."""
    key = (
        str(source.data),
        str(source.schema),
        os.stat(source.data).st_mtime if source.data.exists() else -1.0,
        os.stat(source.schema).st_mtime if source.schema.exists() else -1.0,
        validation_fraction,
        test_fraction,
        split_seed,
    )
    if key not in _CACHE:
        schema: DatasetSchema = load_schema(source.schema)
        dataset = load_dataset(source.data, schema)
        train, val, test = split_indices(
            dataset.ids,
            validation_fraction=validation_fraction,
            test_fraction=test_fraction,
            seed=split_seed,
        )
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = PartnerData(
            partner=source.partner, dataset=dataset, train=train, validation=val, test=test
        )
    return _CACHE[key]
