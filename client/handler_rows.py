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


#: Stands in for a category value this partner holds too rarely to encode (never in a
#: vocabulary, so the preprocessor encodes it as unknown: all zeros).
_WITHHELD = "\x00withheld"


#: Encoded feature matrices kept per (partner, data, preprocessor, rows): a job asks for
#: the same rows under the same preprocessor every round, and a long-running node
#: executor (client/node_runtime.py) would otherwise encode them again for each message.
_FEATURES: OrderedDict[tuple[str, ...], np.ndarray] = OrderedDict()
_FEATURES_MAX = 16
_FEATURES_MAX_BYTES = 64 << 20


def features(data: PartnerData, pre: preprocessing.Preprocessor, rows: np.ndarray) -> np.ndarray:
    """Rows encoded by the coordinator's preprocessor, except that category values this
    partner holds fewer than ``MIN_CATEGORY_COUNT`` times (in its training rows, as at the
    handshake) are encoded as unknown whatever vocabulary the preprocessor lists: one
    planned reply with centroids on such a value would otherwise describe those rows.

    The result depends only on the partner's data, the preprocessor and the rows, so it
    is cached under their digests (a fresh copy is returned: callers may write to it)."""
    rows_c = np.ascontiguousarray(rows)
    key = (
        *_data_key(data),
        hashlib.sha256(json.dumps(pre.to_dict(), sort_keys=True).encode()).hexdigest(),
        _rows_digest(rows_c),
    )
    cached = _FEATURES.get(key)
    if cached is None:
        cached = _encode(data, pre, rows_c)
        if cached.nbytes <= _FEATURES_MAX_BYTES:
            _FEATURES[key] = cached
            while len(_FEATURES) > _FEATURES_MAX:
                _FEATURES.popitem(last=False)
    else:
        _FEATURES.move_to_end(key)
    return cached.copy()


def _encode(data: PartnerData, pre: preprocessing.Preprocessor, rows: np.ndarray) -> np.ndarray:
    sub = data.dataset.subset(rows)
    own = own_vocabulary(data)
    categorical = {
        col: np.where(np.isin(values, list(own.get(col, ()))), values, _WITHHELD)
        for col, values in ((c, np.asarray(v, dtype=object)) for c, v in sub.categorical.items())
    }
    return pre.transform(sub.numeric, categorical, sub.boolean)


def _data_key(data: PartnerData) -> tuple[str, str, str, str]:
    """What a cached encoding depends on: the partner, its file, its schema, and this
    job's training rows (the split follows the pinned spec's seed and fractions)."""
    return (
        data.partner,
        data.dataset.content_hash,
        data.dataset.schema.fingerprint(),
        _rows_digest(np.ascontiguousarray(data.train)),
    )


def _rows_digest(rows: np.ndarray) -> str:
    return hashlib.sha256(str(rows.dtype).encode() + rows.tobytes()).hexdigest()


_OWN_VOCAB: dict[tuple[str, ...], dict[str, list[str]]] = {}


def own_vocabulary(data: PartnerData) -> dict[str, list[str]]:
    """Category values this partner holds at least ``MIN_CATEGORY_COUNT`` times in this
    job's training rows (a node serves many jobs, whose splits differ)."""
    key = _data_key(data)
    if key not in _OWN_VOCAB:
        sub = data.dataset.subset(data.train)
        columns = [f.name for f in data.dataset.schema.categorical_features]
        _OWN_VOCAB[key] = preprocessing.local_vocabulary(
            sub.categorical, columns, min_count=MIN_CATEGORY_COUNT
        )
    return _OWN_VOCAB[key]


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
