"""Where a partner's data comes from, loaded and validated once per process.

A real SuperNode is started with ``--node-config "partner='acme' data='/p/acme.csv'
schema='/p/acme.schema.json'"`` (``fedcollab node start`` writes it). In Flower's
simulation engine every virtual node gets ``partition-id`` instead, and the
ClientApp built for the simulation lists the local partner files (``sim-partners``,
JSON), so the same ClientApp code serves both. Either way the settings are
validated by the strict :class:`client.node_settings.NodeSettings` model.

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

from fedcollab.client.node_settings import NodeSettings
from fedcollab.common.dataset import Dataset, load_dataset, split_indices
from fedcollab.common.errors import SchemaError
from fedcollab.common.schema import DatasetSchema, load_schema

__all__ = [
    "PartnerData",
    "PartnerSource",
    "load_partner",
    "partner_config",
    "partner_settings",
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


#: What Flower's simulation engine puts in a virtual node's node config.
_SIMULATED_NODE_KEYS = frozenset({"partition-id", "num-partitions"})


def partner_settings(
    node_config: Mapping[str, object], local_config: Mapping[str, object]
) -> NodeSettings:
    """This partner's validated settings (:class:`client.node_settings.NodeSettings`):
    its node config, or for a node of Flower's simulation engine (a node config of
    ``partition-id``/``num-partitions`` only) its entry of ``sim-partners`` in
    ``local_config``, the run config the ClientApp was built with in this process
    (:func:`client.client_app.make_client_app`). SchemaError on an unknown key, a
    missing ``partner``/``data``/``schema`` or a malformed value.

    A real node never takes its settings from the run config, which the coordinator
    writes: a node config with any other key is the node's own and validated as it is.
    """
    if "partition-id" not in node_config or not set(node_config) <= _SIMULATED_NODE_KEYS:
        return NodeSettings.parse(node_config)
    try:
        partners = json.loads(str(local_config.get("sim-partners", "[]")))
        index = int(str(node_config["partition-id"]))
    except ValueError as exc:
        raise SchemaError(
            f"simulation settings are malformed ({exc})",
            hint="run simulations with `fedcollab run`, which lists the partner files",
        ) from exc
    if not isinstance(partners, list) or not 0 <= index < len(partners):
        raise SchemaError(
            f"simulation node {index} has no partner file",
            hint="run simulations with `fedcollab run`, which lists the partner files",
        )
    entry = partners[index]
    if not isinstance(entry, dict):
        raise SchemaError(
            f"simulation node {index}'s partner entry is not an object",
            hint="run simulations with `fedcollab run`, which lists the partner files",
        )
    return NodeSettings.parse(entry)


def partner_config(
    node_config: Mapping[str, object], local_config: Mapping[str, object]
) -> dict[str, str]:
    """:func:`partner_settings` as the string mapping the node's helpers read
    (:meth:`NodeSettings.as_config`)."""
    return partner_settings(node_config, local_config).as_config()


def source_from_config(config: Mapping[str, str]) -> PartnerSource:
    """The partner's name and files from :func:`partner_config`'s result (or any
    settings mapping: a missing key is a SchemaError)."""
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
