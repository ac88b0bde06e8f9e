"""What a partner computes for each coordinator request.

Each handler takes the partner's validated data, the job spec and the
request's decoded payload, and returns ``(meta, vector)`` for the reply. They
call only pure protocol functions, so they run unchanged in tests, in the
simulation engine and on a real SuperNode. Every vector they return is an
aggregate (sums and counts over at least one row, never a row).

Here: the handshake, the moments and the table of every action's handler; training,
evaluation and permutation importance are in :mod:`client.handlers_training`, k-means
and segment profiles in :mod:`client.handlers_segmentation`, and what they share
(rows, encoding, DP plan, floors) in :mod:`client.handler_rows`.
"""

from __future__ import annotations

from collections.abc import Callable

from fedcollab.client.handler_rows import (
    EVAL_BINS,
    MIN_AGGREGATE_ROWS,
    MIN_CATEGORY_COUNT,
    Reply,
    check_job,
    dp_plan,
    split_rows,
)
from fedcollab.client.handlers_segmentation import kmeans_seed, kmeans_step, segment_profile
from fedcollab.client.handlers_training import evaluate, permutation, train
from fedcollab.client.partner_data import PartnerData
from fedcollab.common.errors import ProtocolError
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.messages import MomentsRequest
from fedcollab.common.serde import Payload
from fedcollab.protocols import dp_statistics, preprocessing

__all__ = [
    "EVAL_BINS",
    "HANDLERS",
    "MIN_AGGREGATE_ROWS",
    "MIN_CATEGORY_COUNT",
    "Reply",
    "check_job",
    "dp_plan",
]


def handshake(data: PartnerData, spec: JobSpec, payload: Payload) -> Reply:
    """Who this partner is, and the category values it holds in open vocabularies.

    The vocabulary rides on the handshake to save a round trip: every message costs
    each partner its own hops through the Fleet API.
    """
    ds = data.dataset
    if spec.task == "vertical":  # no vocabulary or row count: each party encodes its own
        return (
            {
                "partner": data.partner,
                "dataset": ds.schema.dataset,
                "dataset_hash": ds.content_hash,
                "schema_fingerprint": ds.schema.fingerprint(),
            },
            None,
        )
    columns = [f.name for f in ds.schema.categorical_features if f.vocabulary is None]
    sub = ds.subset(split_rows(data, spec, "train"))
    return (
        {
            "partner": data.partner,
            "dataset": ds.schema.dataset,
            "dataset_hash": ds.content_hash,
            "schema_fingerprint": ds.schema.fingerprint(),
            # Under encryption the row count stays with the partner (FedAvg weights
            # travel encrypted); the coordinator learns only the total.
            **(
                {}
                if spec.privacy.encrypted or spec.privacy.masked or spec.privacy.dp != "none"
                else {"n_rows": ds.n_rows}
            ),
            "vocab": preprocessing.local_vocabulary(
                sub.categorical, columns, min_count=MIN_CATEGORY_COUNT
            ),
        },
        None,
    )


def _layout(payload: Payload) -> preprocessing.MomentsLayout:
    raw = payload.as_(MomentsRequest).layout
    return preprocessing.MomentsLayout(
        numeric_names=tuple(raw.numeric),
        categorical_vocab={k: tuple(v) for k, v in raw.categorical.items()},
        boolean_names=tuple(raw.boolean),
    )


def moments(data: PartnerData, spec: JobSpec, payload: Payload) -> Reply:
    """Counts, sums and sums of squares over the training rows.

    The layout names this partner's own columns, in its schema's order, or the
    request is refused; a category value it holds fewer than
    ``MIN_CATEGORY_COUNT`` times is counted as 0 whatever vocabulary the
    coordinator lists (the value never left this partner at the handshake either).
    """
    requested = _layout(payload)
    schema = data.dataset.schema
    numeric = tuple(f.name for f in schema.numeric_features)
    boolean = tuple(f.name for f in schema.boolean_features)
    categorical = [f.name for f in schema.categorical_features]
    if (requested.numeric_names, requested.boolean_names) != (numeric, boolean) or set(
        requested.categorical_vocab
    ) != set(categorical):
        raise ProtocolError(
            "the moments layout does not list this partner's columns in its schema's order",
            hint="the coordinator builds the layout from the job's data contract; refused",
        )
    # Categorical columns in the schema's order (the wire's JSON object is key-sorted).
    layout = preprocessing.MomentsLayout(
        numeric_names=numeric,
        categorical_vocab={c: requested.categorical_vocab[c] for c in categorical},
        boolean_names=boolean,
    )
    for f in schema.categorical_features:
        if f.vocabulary is not None and set(layout.categorical_vocab[f.name]) - set(f.vocabulary):
            raise ProtocolError(
                f"the moments layout lists values outside column {f.name!r}'s declared vocabulary",
                hint="declared vocabularies are fixed by the data contract; refused",
            )
    sub = data.dataset.subset(split_rows(data, spec, "train"))
    plan = dp_plan(spec)
    if plan is not None:  # clipped to the declared bounds, Gaussian noise (charged)
        return {}, dp_statistics.private_moments(
            layout,
            sub.numeric,
            sub.categorical,
            sub.boolean,
            bounds=spec.privacy.value_bounds,
            noise_multiplier=plan.statistics_noise_multiplier,
        )
    vec = preprocessing.local_moments(
        layout, sub.numeric, sub.categorical, sub.boolean, min_category_count=MIN_CATEGORY_COUNT
    )
    return {}, vec


HANDLERS: dict[str, Callable[[PartnerData, JobSpec, Payload], Reply]] = {
    "query.handshake": handshake,
    "query.moments": moments,
    "train.fedavg": train,
    "evaluate.fedavg": evaluate,
    "evaluate.permutation": permutation,
    "query.kmeans_seed": kmeans_seed,
    "query.kmeans_step": kmeans_step,
    "query.segment_profile": segment_profile,
}
