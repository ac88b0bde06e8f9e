"""What every partner-side handler shares: its rows, their encoding, the job's DP plan.

The handlers (:mod:`client.handlers`, :mod:`client.handlers_training`,
:mod:`client.handlers_segmentation`) take the partner's validated data, the job spec and
the request's decoded payload, and return ``(meta, vector)`` for the reply. This module
holds what they all use: which rows a request may touch (the partner's own
train/validation/test assignment), how rows are encoded with the coordinator's
preprocessor (category values held fewer than ``MIN_CATEGORY_COUNT`` times stay
unknown), the labels, the DP plan derived from the pinned spec, and the floors below
which nothing leaves (``MIN_AGGREGATE_ROWS``).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import Any

import numpy as np

from fedcollab.client.partner_data import PartnerData
from fedcollab.common.errors import SchemaError
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.messages import PreprocessedRequest
from fedcollab.common.schema import DatasetSchema
from fedcollab.common.serde import Payload
from fedcollab.privacy.dp_plan import DpPlan, resolve
from fedcollab.protocols import preprocessing

__all__ = [
    "EVAL_BINS",
    "MIN_AGGREGATE_ROWS",
    "MIN_CATEGORY_COUNT",
    "Reply",
    "check_job",
    "dp_plan",
    "features",
    "labels_of",
    "own_vocabulary",
    "request_preprocessor",
    "split_rows",
]

Reply = tuple[dict[str, Any], np.ndarray | None]
EVAL_BINS = 1000
#: A category value a partner holds fewer times than this never leaves it (a rare
#: value can identify a customer); it is then encoded as "unknown" (all zeros).
MIN_CATEGORY_COUNT = 10
#: A cluster or segment with fewer of this partner's rows is reported as empty,
#: since its sums would describe a handful of customers (or one).
MIN_AGGREGATE_ROWS = 5


_PLANS: dict[str, DpPlan | None] = {}


def dp_plan(spec: JobSpec) -> DpPlan | None:
    """The job's DP plan, derived here from the spec (never taken from the coordinator)."""
    digest = spec.digest()
    if digest not in _PLANS:
        _PLANS[digest] = resolve(spec)
    return _PLANS[digest]


def check_job(data: PartnerData, spec: JobSpec) -> None:
    """Refuse a job this partner is not part of or whose data contract differs."""
    if spec.participants and data.partner not in spec.participants:
        raise SchemaError(
            f"partner {data.partner!r} is not a participant of job {spec.name!r}",
            hint="the operator must list this partner in the job's participants",
        )
    contract = spec.data_schema
    if spec.task == "vertical":
        party = spec.vertical.parties.get(data.partner)
        if party is None:
            raise SchemaError(
                f"partner {data.partner!r} is not a party of vertical job {spec.name!r}",
                hint="the operator must list this partner under [vertical.parties]",
            )
        contract = party.data_schema
    expected = DatasetSchema.model_validate(contract).fingerprint()
    if data.dataset.schema.fingerprint() != expected:
        raise SchemaError(
            f"this partner's schema does not match job {spec.name!r}'s data contract",
            hint="align the schema file with the job's schema (same columns, types, policies)",
        )


def split_rows(data: PartnerData, spec: JobSpec, which: str) -> np.ndarray:
    if spec.task == "segmentation" or which == "all":
        return np.arange(data.dataset.n_rows)
    return {"train": data.train, "validation": data.validation, "test": data.test}[which]


#: Encoded feature matrices kept per (partner, data, vocabulary basis, preprocessor,
#: rows): a job asks for the same rows under the same preprocessor every round, and a
#: long-running node executor (client/node_runtime.py) would otherwise encode them
#: again for each message.
_FEATURES: OrderedDict[tuple[str, ...], np.ndarray] = OrderedDict()
_FEATURES_MAX = 16
_FEATURES_MAX_BYTES = 64 << 20


def features(
    data: PartnerData, spec: JobSpec, pre: preprocessing.Preprocessor, rows: np.ndarray
) -> np.ndarray:
    """Rows encoded by the coordinator's preprocessor, except that every one-hot column
    whose vocabulary entry is not a value this partner holds ``MIN_CATEGORY_COUNT``
    times (in the rows it counted for the handshake, :func:`own_vocabulary`) is zero,
    whatever vocabulary the preprocessor lists: one planned reply with centroids on such
    a value would otherwise describe those rows. Entries are compared as exact strings,
    so no spelling (a marker, a trailing NUL numpy drops) reaches a withheld value.

    The result depends only on the partner's data, the vocabulary basis, the
    preprocessor and the rows, so it is cached under their digests (a fresh copy is
    returned: callers may write to it)."""
    rows_c = np.ascontiguousarray(rows)
    basis = _vocabulary_rows(data, spec)
    key = (
        *_data_key(data, basis),
        hashlib.sha256(json.dumps(pre.to_dict(), sort_keys=True).encode()).hexdigest(),
        _rows_digest(rows_c),
    )
    cached = _FEATURES.get(key)
    if cached is None:
        cached = _encode(data, pre, rows_c, own_vocabulary(data, spec))
        if cached.nbytes <= _FEATURES_MAX_BYTES:
            _FEATURES[key] = cached
            while len(_FEATURES) > _FEATURES_MAX:
                _FEATURES.popitem(last=False)
    else:
        _FEATURES.move_to_end(key)
    return cached.copy()


def _encode(
    data: PartnerData,
    pre: preprocessing.Preprocessor,
    rows: np.ndarray,
    own: dict[str, list[str]],
) -> np.ndarray:
    sub = data.dataset.subset(rows)
    x = pre.transform(sub.numeric, sub.categorical, sub.boolean)
    # Columns in transform's order: numeric, each categorical vocabulary, boolean.
    at = len(pre.numeric_names)
    for col, vocab in pre.categorical_vocab.items():
        held = set(own.get(col, ()))
        for j, value in enumerate(vocab):
            if value not in held:
                x[:, at + j] = 0.0
        at += len(vocab)
    return x


def _vocabulary_rows(data: PartnerData, spec: JobSpec) -> np.ndarray:
    """The rows whose values the handshake counted: the training rows, every row in a
    segmentation job (client/handlers.py counts over ``split_rows(..., "train")``)."""
    return split_rows(data, spec, "train")


def _data_key(data: PartnerData, basis: np.ndarray) -> tuple[str, str, str, str]:
    """What a cached encoding depends on: the partner, its file, its schema, and the
    rows its vocabulary is counted in (the split follows the pinned spec)."""
    return (
        data.partner,
        data.dataset.content_hash,
        data.dataset.schema.fingerprint(),
        _rows_digest(np.ascontiguousarray(basis)),
    )


def _rows_digest(rows: np.ndarray) -> str:
    return hashlib.sha256(str(rows.dtype).encode() + rows.tobytes()).hexdigest()


_OWN_VOCAB: dict[tuple[str, ...], dict[str, tuple[str, ...]]] = {}


def own_vocabulary(data: PartnerData, spec: JobSpec) -> dict[str, list[str]]:
    """Category values this partner holds at least ``MIN_CATEGORY_COUNT`` times in the
    rows the handshake counts for this job (a node serves many jobs, whose splits
    differ); a fresh dict each call."""
    basis = _vocabulary_rows(data, spec)
    key = _data_key(data, basis)
    if key not in _OWN_VOCAB:
        sub = data.dataset.subset(basis)
        columns = [f.name for f in data.dataset.schema.categorical_features]
        counted = preprocessing.local_vocabulary(
            sub.categorical, columns, min_count=MIN_CATEGORY_COUNT
        )
        _OWN_VOCAB[key] = {col: tuple(values) for col, values in counted.items()}
    return {col: list(values) for col, values in _OWN_VOCAB[key].items()}


def labels_of(data: PartnerData, rows: np.ndarray) -> np.ndarray:
    if data.dataset.labels is None:
        raise SchemaError(
            "this partner's data has no label column", hint="purchase prediction needs labels"
        )
    labels: np.ndarray = data.dataset.labels[rows]
    return labels


def request_preprocessor(payload: Payload) -> preprocessing.Preprocessor:
    """The request's preprocessor (typed by common.messages; the class checks its form)."""
    meta = payload.as_(PreprocessedRequest).preprocessor
    return preprocessing.Preprocessor.from_dict(meta.model_dump())
