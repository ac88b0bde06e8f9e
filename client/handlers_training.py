"""A partner's training, evaluation and permutation-importance replies (purchase prediction).

``train.fedavg`` evaluates the received global model on the partner's validation rows
and trains it locally (plain, DP-SGD or DP-FedAvg), ``evaluate.fedavg`` scores a model
on validation and test rows, ``evaluate.permutation`` its permutation importance on
the partner's test rows (:mod:`client.handlers` dispatches; rows, encoding and the DP
plan come from :mod:`client.handler_rows`). torch is imported only here, when a
request needs it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedcollab.client.handler_rows import (
    EVAL_BINS,
    MIN_AGGREGATE_ROWS,
    Reply,
    dp_plan,
    features,
    labels_of,
    request_preprocessor,
    split_rows,
)
from fedcollab.client.partner_data import PartnerData
from fedcollab.common.errors import ProtocolError
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.messages import FedAvgRequest
from fedcollab.common.serde import Payload
from fedcollab.privacy.dp_plan import validates_rounds
from fedcollab.protocols import attribution, client_dp, dp_statistics, evaluation, fedavg

__all__ = ["evaluate", "permutation", "train"]


def _model_from(payload: Payload, spec: JobSpec, n_features: int) -> Any:
    # torch is imported only by the requests that need it (about a second): the node's
    # executor imports it once at start (client/node_runtime.py), a simulation's or
    # test's partner on its first training request.
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

    pre = request_preprocessor(payload)
    model = _model_from(payload, spec, pre.n_features)
    plan = dp_plan(spec)
    val_rows = split_rows(data, spec, "validation")
    if plan is not None and validates_rounds(spec):
        # Charged as train.validation beside the round (privacy.dp_plan, Notes): coarse
        # histograms, Gaussian noise; a row is in one bin: sensitivity 1.
        val_eval = dp_statistics.private_eval_vector(
            labels_of(data, val_rows),
            predict_proba(model, features(data, spec, pre, val_rows)),
            bins=EVAL_BINS,
            noise_std=plan.statistics_noise_multiplier,
        )
    elif plan is not None:
        # The job releases its last model: the rounds carry no validation histogram,
        # zeros, a function of nothing (privacy.dp_plan, Notes).
        val_eval = np.zeros(evaluation.eval_vector_length(bins=EVAL_BINS))
    else:
        val_eval = evaluation.local_eval_vector(
            labels_of(data, val_rows),
            predict_proba(model, features(data, spec, pre, val_rows)),
            bins=EVAL_BINS,
        )
    train_rows = split_rows(data, spec, "train")
    t = spec.training
    x, y = features(data, spec, pre, train_rows), labels_of(data, train_rows)
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

    pre = request_preprocessor(payload)
    model = _model_from(payload, spec, pre.n_features)
    plan = dp_plan(spec)
    parts = []
    for which in ("validation", "test"):
        rows = split_rows(data, spec, which)
        y, p = labels_of(data, rows), predict_proba(model, features(data, spec, pre, rows))
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

    pre = request_preprocessor(payload)
    groups = attribution.column_groups(pre)
    length = attribution.permutation_vector_length(n_columns=len(groups), bins=EVAL_BINS)
    rows = split_rows(data, spec, "test")
    plan = dp_plan(spec)
    if plan is not None:  # row-local ablation, Gaussian noise (protocols.dp_statistics)
        model = _model_from(payload, spec, pre.n_features)
        return {}, dp_statistics.private_permutation_vector(
            lambda x: predict_proba(model, x),
            features(data, spec, pre, rows),
            labels_of(data, rows),
            groups,
            bins=EVAL_BINS,
            noise_multiplier=plan.statistics_noise_multiplier,
        )
    if len(rows) < MIN_AGGREGATE_ROWS:
        return {}, np.zeros(length)
    model = _model_from(payload, spec, pre.n_features)
    return {}, attribution.local_permutation_vector(
        lambda x: predict_proba(model, x),
        features(data, spec, pre, rows),
        labels_of(data, rows),
        groups,
        seed=spec.training.seed,
        bins=EVAL_BINS,
    )
