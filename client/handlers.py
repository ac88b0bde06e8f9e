"""What a partner computes for each coordinator request.

Long module: one handler per action. Planned split: one module per task (horizontal
training, segmentation, evaluation).

Each handler takes the partner's validated data, the job spec and the
request's decoded payload, and returns ``(meta, vector)`` for the reply. They
call only pure protocol functions, so they run unchanged in tests, in the
simulation engine and on a real SuperNode. Every vector they return is an
aggregate (sums and counts over at least one row, never a row).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fedcollab.client.partner_data import PartnerData
from fedcollab.common.errors import ProtocolError, SchemaError
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.messages import (
    FedAvgRequest,
    KMeansStepRequest,
    MomentsRequest,
    PreprocessedRequest,
)
from fedcollab.common.schema import DatasetSchema
from fedcollab.common.serde import Payload
from fedcollab.privacy.dp_plan import DpPlan, resolve, validates_rounds
from fedcollab.protocols import (
    attribution,
    client_dp,
    dp_statistics,
    evaluation,
    fedavg,
    kmeans,
    preprocessing,
    segments,
)

__all__ = ["HANDLERS", "Reply", "check_job"]

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


def _rows(data: PartnerData, spec: JobSpec, which: str) -> np.ndarray:
    if spec.task == "segmentation" or which == "all":
        return np.arange(data.dataset.n_rows)
    return {"train": data.train, "validation": data.validation, "test": data.test}[which]


#: Stands in for a category value this partner holds too rarely to encode (never in a
#: vocabulary, so the preprocessor encodes it as unknown: all zeros).
_WITHHELD = "\x00withheld"


def _features(data: PartnerData, pre: preprocessing.Preprocessor, rows: np.ndarray) -> np.ndarray:
    """Rows encoded by the coordinator's preprocessor, except that category values this
    partner holds fewer than ``MIN_CATEGORY_COUNT`` times (in its training rows, as at the
    handshake) are encoded as unknown whatever vocabulary the preprocessor lists: one
    planned reply with centroids on such a value would otherwise describe those rows."""
    sub = data.dataset.subset(rows)
    own = _own_vocabulary(data)
    categorical = {
        col: np.where(np.isin(values, list(own.get(col, ()))), values, _WITHHELD)
        for col, values in ((c, np.asarray(v, dtype=object)) for c, v in sub.categorical.items())
    }
    return pre.transform(sub.numeric, categorical, sub.boolean)


_OWN_VOCAB: dict[tuple[str, str], dict[str, list[str]]] = {}


def _own_vocabulary(data: PartnerData) -> dict[str, list[str]]:
    """Category values this partner holds at least ``MIN_CATEGORY_COUNT`` times."""
    key = (data.partner, data.dataset.content_hash)
    if key not in _OWN_VOCAB:
        sub = data.dataset.subset(data.train)
        columns = [f.name for f in data.dataset.schema.categorical_features]
        _OWN_VOCAB[key] = preprocessing.local_vocabulary(
            sub.categorical, columns, min_count=MIN_CATEGORY_COUNT
        )
    return _OWN_VOCAB[key]


def _labels(data: PartnerData, rows: np.ndarray) -> np.ndarray:
    if data.dataset.labels is None:
        raise SchemaError(
            "this partner's data has no label column", hint="purchase prediction needs labels"
        )
    labels: np.ndarray = data.dataset.labels[rows]
    return labels


def handshake(data: PartnerData, spec: JobSpec, payload: Payload) -> Reply:
    """Who this partner is, and the category values it holds in open vocabularies.

    The vocabulary rides on the handshake to save a round trip: Flower starts
    one ClientApp process per message.
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
    sub = ds.subset(_rows(data, spec, "train"))
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


def _preprocessor(payload: Payload) -> preprocessing.Preprocessor:
    """The request's preprocessor (typed by common.messages; the class checks its form)."""
    meta = payload.as_(PreprocessedRequest).preprocessor
    return preprocessing.Preprocessor.from_dict(meta.model_dump())


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
    sub = data.dataset.subset(_rows(data, spec, "train"))
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


def _model_from(payload: Payload, spec: JobSpec, n_features: int) -> Any:
    # torch is imported only by the requests that need it: Flower starts a fresh
    # ClientApp process per message, and importing torch costs about a second.
    from fedcollab.protocols import models

    model = models.build_model(
        spec.model.kind,
        n_features=n_features,
        hidden_sizes=spec.model.hidden_sizes,
        seed=spec.training.seed,
    )
    if payload.vector is None:
        raise ProtocolError("training request carries no global model")
    shapes = models.shapes_of(models.get_weights(model))
    models.set_weights(model, models.unflatten(payload.vector, shapes))
    return model


def train(data: PartnerData, spec: JobSpec, payload: Payload) -> Reply:
    """Evaluate the received global model on validation rows, then train locally.

    Reply vector: ``[n * weights..., n | validation eval vector]``.
    """
    from fedcollab.protocols.local_training import predict_proba, train_local

    pre = _preprocessor(payload)
    model = _model_from(payload, spec, pre.n_features)
    plan = dp_plan(spec)
    val_rows = _rows(data, spec, "validation")
    if plan is not None and validates_rounds(spec):
        # Charged as train.validation beside the round (privacy.dp_plan, Notes): coarse
        # histograms, Gaussian noise; a row is in one bin: sensitivity 1.
        val_eval = dp_statistics.private_eval_vector(
            _labels(data, val_rows),
            predict_proba(model, _features(data, pre, val_rows)),
            bins=EVAL_BINS,
            noise_std=plan.statistics_noise_multiplier,
        )
    elif plan is not None:
        # The job releases its last model: the rounds carry no validation histogram,
        # zeros, a function of nothing (privacy.dp_plan, Notes).
        val_eval = np.zeros(evaluation.eval_vector_length(bins=EVAL_BINS))
    else:
        val_eval = evaluation.local_eval_vector(
            _labels(data, val_rows),
            predict_proba(model, _features(data, pre, val_rows)),
            bins=EVAL_BINS,
        )
    train_rows = _rows(data, spec, "train")
    t = spec.training
    x, y = _features(data, pre, train_rows), _labels(data, train_rows)
    if plan is not None and plan.level == "sample":
        # DP-SGD (Opacus): the local model is record-level DP; uniform weights, since the
        # example count is itself a statistic of the data.
        from fedcollab.protocols.dp_sgd import train_local_dp

        result = train_local_dp(
            model,
            x,
            y,
            epochs=t.local_epochs,
            sample_rate=spec.privacy.sample_rate,
            learning_rate=t.learning_rate,
            optimizer=t.optimizer,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=spec.privacy.max_grad_norm,
        )
        update = fedavg.encode_update(result.weights, n_examples=1)
        return {}, np.concatenate([update, val_eval])
    global_weights = _weights_copy(model)
    result = train_local(
        model,
        x,
        y,
        epochs=t.local_epochs,
        batch_size=t.batch_size,
        learning_rate=t.learning_rate,
        proximal_mu=t.proximal_mu,
        optimizer=t.optimizer,
        seed=t.seed + payload.as_(FedAvgRequest).round,
    )
    if plan is not None:  # DP-FedAvg: clipped update plus this partner's noise share
        delta = client_dp.private_update(
            result.weights,
            global_weights,
            clip_norm=spec.privacy.clip_norm,
            noise_multiplier=plan.noise_multiplier,
            parties=spec.min_partners,
        )
        return {}, np.concatenate([delta, [1.0], val_eval])
    update = fedavg.encode_update(result.weights, n_examples=result.n_examples)
    return {"train_loss": result.mean_loss}, np.concatenate([update, val_eval])


def _weights_copy(model: Any) -> list[np.ndarray]:
    from fedcollab.protocols.models import get_weights

    return [w.copy() for w in get_weights(model)]


def evaluate(data: PartnerData, spec: JobSpec, payload: Payload) -> Reply:
    """Evaluation vectors of the given model on validation and test rows."""
    from fedcollab.protocols.local_training import predict_proba

    pre = _preprocessor(payload)
    model = _model_from(payload, spec, pre.n_features)
    plan = dp_plan(spec)
    parts = []
    for which in ("validation", "test"):
        rows = _rows(data, spec, which)
        y, p = _labels(data, rows), predict_proba(model, _features(data, pre, rows))
        if plan is None:
            parts.append(evaluation.local_eval_vector(y, p, bins=EVAL_BINS))
        else:  # coarse histograms, Gaussian noise; a row is in one of them: sensitivity 1
            parts.append(
                dp_statistics.private_eval_vector(
                    y, p, bins=EVAL_BINS, noise_std=plan.statistics_noise_multiplier
                )
            )
    return {}, np.concatenate(parts)


def permutation(data: PartnerData, spec: JobSpec, payload: Payload) -> Reply:
    """Permutation importance of the released model on this partner's test rows.

    Reply vector: ``[test eval vector | test eval vector with column j shuffled, per
    original column j]`` (:func:`protocols.attribution.local_permutation_vector`),
    shuffled within this partner's own rows. A partner with fewer than
    ``MIN_AGGREGATE_ROWS`` test rows replies zeros of the same length: shuffling a
    handful of rows would describe those customers.
    """
    from fedcollab.protocols.local_training import predict_proba

    pre = _preprocessor(payload)
    groups = attribution.column_groups(pre)
    length = attribution.permutation_vector_length(n_columns=len(groups), bins=EVAL_BINS)
    rows = _rows(data, spec, "test")
    plan = dp_plan(spec)
    if plan is not None:  # row-local ablation, Gaussian noise (protocols.dp_statistics)
        model = _model_from(payload, spec, pre.n_features)
        return {}, dp_statistics.private_permutation_vector(
            lambda x: predict_proba(model, x),
            _features(data, pre, rows),
            _labels(data, rows),
            groups,
            bins=EVAL_BINS,
            noise_multiplier=plan.statistics_noise_multiplier,
        )
    if len(rows) < MIN_AGGREGATE_ROWS:
        return {}, np.zeros(length)
    model = _model_from(payload, spec, pre.n_features)
    return {}, attribution.local_permutation_vector(
        lambda x: predict_proba(model, x),
        _features(data, pre, rows),
        _labels(data, rows),
        groups,
        seed=spec.training.seed,
        bins=EVAL_BINS,
    )


def _segment_x(data: PartnerData, payload: Payload) -> np.ndarray:
    pre = _preprocessor(payload)
    return _features(data, pre, np.arange(data.dataset.n_rows))


def kmeans_seed(data: PartnerData, spec: JobSpec, payload: Payload) -> Reply:
    s = spec.segmentation
    vec = kmeans.local_seed_vector(
        _segment_x(data, payload),
        k_local=s.k_local,
        # The spec is the coordinator's: this partner's own floor holds whatever it says.
        min_cluster_size=max(s.min_cluster_size, MIN_AGGREGATE_ROWS),
        seed=s.seed,
    )
    return {}, vec


def _centroids(payload: Payload) -> np.ndarray:
    return np.asarray(payload.as_(KMeansStepRequest).centroids, dtype=np.float64)


def kmeans_step(data: PartnerData, spec: JobSpec, payload: Payload) -> Reply:
    centroids = _centroids(payload)
    plan = dp_plan(spec)
    if plan is not None:  # clipped rows, Gaussian noise on sums and counts, no suppression
        return {}, client_dp.private_cluster_vector(
            _segment_x(data, payload),
            centroids,
            noise_multiplier=plan.noise_multiplier,
            row_clip_norm=spec.privacy.row_clip_norm,
        )
    vec = kmeans.local_cluster_vector(_segment_x(data, payload), centroids)
    k, d = centroids.shape
    return {}, kmeans.suppress_small_clusters(vec, k=k, n_features=d, min_rows=MIN_AGGREGATE_ROWS)


def segment_profile(data: PartnerData, spec: JobSpec, payload: Payload) -> Reply:
    """Reply vector: ``[profile sums | Lloyd sums of the final centroids]``."""
    centroids = _centroids(payload)
    ds = data.dataset
    x = _segment_x(data, payload)
    plan = dp_plan(spec)
    if plan is not None:  # bounded profile (protocols.dp_segments) with Gaussian noise
        return {}, client_dp.private_profile_vector(
            x,
            centroids,
            ds.labels,
            noise_multiplier=plan.noise_multiplier,
            row_clip_norm=spec.privacy.row_clip_norm,
        )
    assignments = kmeans.assign(x, centroids)
    numeric_names = [f.name for f in ds.schema.numeric_features]
    vec = segments.local_profile_vector(
        assignments,
        ds.numeric,
        ds.labels,
        k=centroids.shape[0],
        numeric_names=numeric_names,
    )
    k, d = centroids.shape
    vec = segments.suppress_small_segments(
        vec, k=k, numeric_names=numeric_names, min_rows=MIN_AGGREGATE_ROWS
    )
    lloyd = kmeans.suppress_small_clusters(
        kmeans.local_cluster_vector(x, centroids), k=k, n_features=d, min_rows=MIN_AGGREGATE_ROWS
    )
    return {}, np.concatenate([vec, lloyd])


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
