"""Purchase prediction: FedAvg / FedProx rounds with federated evaluation.

FedAvg (McMahan et al. 2017, arXiv:1602.05629) weighted by example counts;
FedProx (Li et al. 2020, arXiv:1812.06127) when ``training.proximal_mu > 0``.

Each round the coordinator sends the global model; each partner first
evaluates it on its validation rows, then trains locally, and replies with
one vector ``[n * weights, n | evaluation sums]``. The coordinator only adds
these vectors as they arrive: the new global model is the weighted average
and the federated validation metrics (AUC from pooled score histograms,
accuracy, log-loss) of the previous global model come from the same sum.
Early stopping keeps the model with the best federated validation AUC. A round
whose validation rows are not of both classes has no AUC: it neither improves nor
worsens anything (the job warns once that early stopping and model selection are
off, and without any validation AUC releases the last model).

In a DP job every release is charged (privacy.dp_plan). With model selection by
validation (``evaluation.dp_model_selection = "validation"``; not the default) each
round's histograms are noisy and charged, and the best model by their AUC is
kept as above; otherwise the rounds carry no validation histograms and the
released model is the last round's. Either way the final evaluation comes from
noisy coarse histograms (protocols.dp_statistics), as does the permutation step:
its figures (``n`` included) are estimates, and every metrics entry says so
(``dp_estimate``).

After the final selection the ``released`` progress event names the model that was
released (the model after ``round`` rounds: ``metrics.json``'s ``best_round``), how
it was chosen, and what makes its figures weak: the initial, untrained model, or a
split with fewer than :data:`coordinator.prediction_release.MIN_MINORITY_ROWS` rows
of one class.

Attributions of the released model (:mod:`protocols.attribution`) close the
job: a logistic regression's coefficients need no further message; an MLP
gets one more federated step, ``evaluate.permutation``, whose replies are
summed like every other aggregate (in plaintext or under CKKS) and audited
the same way.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from flwr.serverapp import Grid

from fedcollab.common.jobspec import JobSpec
from fedcollab.common.messages.replies import FedAvgReply
from fedcollab.common.serde import Payload
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.coordinator.prediction_release import (
    EVAL_BINS,
    Scored,
    metrics_entry,
    release_warnings,
    score,
)
from fedcollab.coordinator.roster import Accumulator, Partner, Roster
from fedcollab.privacy.dp_plan import resolve, validates_rounds
from fedcollab.protocols import attribution, evaluation, fedavg, models, preprocessing
from fedcollab.protocols import client_dp as client_dp_noise
from fedcollab.protocols.early_stopping import EarlyStopping

__all__ = ["PredictionResult", "run_prediction"]


@dataclass
class PredictionResult:
    rounds_run: int = 0
    best_round: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    #: Under DP: the released model's epsilon after the rounds that ran.
    epsilon: float | None = None
    #: DP-FedAvg: the noise over the largest signal (protocols.client_dp.noise_to_signal).
    noise_to_signal: float | None = None


#: The step that evaluates the last model (its keys set up during the last round).
FINAL_EVALUATION = "final-evaluation"


def run_prediction(
    grid: Grid,
    roster: Roster,
    spec: JobSpec,
    pre: preprocessing.Preprocessor,
    outputs: JobOutputs,
    *,
    level_shares: dict[str, tuple[float, ...]] | None = None,
) -> PredictionResult:
    model = models.build_model(
        spec.model.kind,
        n_features=pre.n_features,
        hidden_sizes=spec.model.hidden_sizes,
        seed=spec.training.seed,
    )
    weights = models.get_weights(model)
    shapes = models.shapes_of(weights)
    n_update = fedavg.update_length(shapes)
    n_eval = evaluation.eval_vector_length(bins=EVAL_BINS)
    pre_meta = pre.to_dict()
    stopper = EarlyStopping(
        patience=max(spec.evaluation.early_stopping_patience, 1),
        min_delta=spec.evaluation.early_stopping_min_delta,
        mode="max",
    )
    result = PredictionResult()
    # Model i is the global model after i rounds (model 0: the initial one).
    global_w = weights
    # best_auc stays None while no model has a validation AUC (no rows of both classes).
    best_w, best_auc, best_idx = weights, None, 0
    warned_undefined = False
    plan = resolve(spec)
    client_dp = plan is not None and plan.level == "client"
    noisy = plan is not None
    # A job without DP always selects by validation; a DP job only if its plan charges
    # a validation histogram per round (privacy.dp_plan.validates_rounds).
    selects = plan is None or validates_rounds(spec)
    if plan is not None and client_dp:
        # How far the partners' best signal stands above the noise (a warning when below).
        drawn = round(spec.privacy.client_sample_rate * len(roster.active))
        signal = {
            "n_parameters": sum(int(np.prod(s)) for s in shapes),
            "contributors": max(spec.min_partners, drawn),
            "rounds": spec.rounds,
        }
        result.noise_to_signal = client_dp_noise.noise_to_signal(
            noise_multiplier=plan.noise_multiplier, min_partners=spec.min_partners, **signal
        )
        outputs.event("dp_signal", noise_to_signal=result.noise_to_signal, **signal)
    # Masked jobs set up a round's keys during the previous round's unmasking, and the
    # final evaluation's during the last round's, unless partners are drawn per round
    # (DP-FedAvg's subsampling).
    prefetch = spec.privacy.masked and (not client_dp or spec.privacy.client_sample_rate >= 1.0)
    ahead: Accumulator | None = None
    ahead_step = ""
    for rnd in range(1, spec.rounds + 1):
        selected = roster.sample(spec.privacy.client_sample_rate) if client_dp else None
        if selected is not None and len(selected) < spec.min_partners:
            # Too few partners drawn for the noise shares to add up: skip the round (it
            # still counts in the accounting, which assumes every round may release).
            outputs.event("round_skipped", round=rnd, sampled=len(selected))
            continue
        total = ahead if ahead is not None else roster.new_sum(n_update + n_eval, params="compact")
        ahead = None
        losses: list[float] = []

        def on_reply(_p: Partner, payload: Payload, losses: list[float] = losses) -> None:
            # A malformed reply raises ProtocolError: the partner is dropped for the round.
            loss = payload.as_(FedAvgReply).train_loss  # DP and masked jobs do not report it
            if loss is not None:
                losses.append(loss)

        if prefetch and rnd < spec.rounds:
            # The next round's keys are advertised with this round's request and shared
            # while this round is unmasked (unused if the job stops early after it).
            ahead_step = f"round-{rnd + 1}"
            ahead = roster.new_sum(n_update + n_eval, params="compact")
        elif prefetch:
            # After the last round: the final evaluation's.
            ahead_step, ahead = FINAL_EVALUATION, roster.new_sum(2 * n_eval, params="wide")
        then = None if ahead is None else (ahead_step, ahead)
        flat = models.flatten(global_w)
        senders = roster.request(
            grid,
            action="train.fedavg",
            meta={"round": rnd, "preprocessor": pre_meta},
            vector_for=lambda _n, flat=flat: flat,  # type: ignore[misc]
            on_reply=on_reply,
            into=total,
            step=f"round-{rnd}",
            expect_length=n_update + n_eval,
            only=selected,
            then=then,
        )
        summed = roster.reveal(grid, total, step=f"round-{rnd}", then=then)
        val: evaluation.EvalMetrics | None = None
        stop = False
        if selects:
            val = evaluation.metrics_from_vector(summed[n_update:], bins=EVAL_BINS, noisy=noisy)
            # No AUC (no validation rows of both classes): nothing to compare, so neither a
            # round without improvement (the stopper is not told) nor a candidate model.
            if val.auc is not None:
                if best_auc is None or val.auc > best_auc:
                    best_w, best_auc, best_idx = global_w, val.auc, rnd - 1
                stop = stopper.update(val.auc)
        if client_dp:
            # DP-FedAvg: the mean of the partners' clipped, noised updates.
            mean_delta = fedavg.decode_average(summed[:n_update], shapes)
            global_w = [w + d for w, d in zip(global_w, mean_delta, strict=True)]
        else:
            global_w = fedavg.decode_average(summed[:n_update], shapes)
        outputs.trace_step(f"round-{rnd}", models.flatten(global_w))
        eps = plan.job_epsilon(rnd) if plan is not None else None
        result.epsilon = eps
        result.history.append(
            {
                "round": rnd,
                "partners": sorted(p.name for p in senders),
                "validation_of_model_before_round": (
                    None if val is None else metrics_entry(val, noisy=noisy)
                ),
                "train_loss": float(np.mean(losses)) if losses else None,
                "epsilon": eps,
            }
        )
        result.rounds_run = rnd
        outputs.event(
            "round",
            task="purchase_prediction",
            round=rnd,
            total=spec.rounds,
            partners=len(senders),
            # Round r validates the model it starts from: the one after round r - 1.
            validated_round=rnd - 1,
            val_auc=None if val is None else val.auc,
            val_log_loss=None if val is None else val.log_loss,
            epsilon=eps,
        )
        if val is not None and val.auc is None and not warned_undefined:
            warned_undefined = True  # once per job
            outputs.event(
                "validation_undefined",
                round=rnd,
                n=val.n,
                early_stopping=spec.evaluation.early_stopping_patience > 0,
                validation_fraction=spec.evaluation.validation_fraction,
                dp_estimate=noisy,
            )
        if spec.evaluation.early_stopping_patience > 0 and stop:
            # When and why only: which model is released is decided after the last
            # model's evaluation below (the ``released`` event).
            outputs.event(
                "early_stop",
                round=rnd,
                patience=spec.evaluation.early_stopping_patience,
                min_delta=spec.evaluation.early_stopping_min_delta,
            )
            break

    # The last model has not been validated yet: evaluate it, keep the better one.
    val_last, test_last = _evaluate(
        grid, roster, pre_meta, global_w, n_eval, FINAL_EVALUATION, noisy=noisy,
        total=ahead if ahead is not None and ahead_step == FINAL_EVALUATION else None,
    )  # fmt: skip
    last_auc = val_last.metrics.auc
    if not selects:
        selection = "last_round"  # a DP job that charges no validation per round
    elif best_auc is None and last_auc is None:
        selection = "no_validation_auc"  # the last model, with nothing to compare
    else:
        selection = "validation"
    if (
        selection != "validation"
        or best_auc is None
        or (last_auc is not None and last_auc >= best_auc)
    ):
        best_w, best_idx, val_b, test_b = global_w, result.rounds_run, val_last, test_last
    else:
        val_b, test_b = _evaluate(
            grid, roster, pre_meta, best_w, n_eval, "final-evaluation-best", noisy=noisy
        )
    result.best_round = best_idx
    result.final = {
        "validation": metrics_entry(val_b.metrics, noisy=noisy),
        "test": metrics_entry(test_b.metrics, noisy=noisy),
    }
    outputs.event(
        "released",
        round=best_idx,
        rounds_run=result.rounds_run,
        selection=selection,
        validation_auc=val_b.metrics.auc,
        test_auc=test_b.metrics.auc,
        test_n=test_b.metrics.n,
        dp_estimate=noisy,
        warnings=release_warnings(best_idx, selection, val_b, test_b),
    )
    models.set_weights(model, best_w)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    outputs.write_bytes("model.pt", buf.getvalue())
    outputs.write_json("preprocessor.json", pre_meta)
    doc = attributions(grid, roster, spec, pre, best_w, level_shares=level_shares)
    if doc is None:
        outputs.event("attributions_skipped", reason="no test rows of both classes")
    else:
        outputs.write_attributions(doc)
        outputs.event("attributions", method=doc["method"], top=doc["columns"][:3])
    return result


def attributions(
    grid: Grid,
    roster: Roster,
    spec: JobSpec,
    pre: preprocessing.Preprocessor,
    weights: list[np.ndarray],
    *,
    level_shares: dict[str, tuple[float, ...]] | None = None,
) -> dict[str, Any] | None:
    """The released model's ``attributions.json`` document (None: no pooled test AUC).

    Coefficients for ``logreg`` (ranked by their effect on the population when
    the categorical levels' pooled shares are known); for ``mlp`` the
    federated permutation step.
    """
    if spec.model.kind == "logreg":
        return attribution.coefficient_document(
            job=spec.name, coefficients=weights[0].ravel(), pre=pre, level_shares=level_shares
        )
    groups = attribution.column_groups(pre)
    length = attribution.permutation_vector_length(n_columns=len(groups), bins=EVAL_BINS)
    total = roster.new_sum(length, params="wide")
    flat = models.flatten(weights)
    roster.request(
        grid,
        action="evaluate.permutation",
        meta={"preprocessor": pre.to_dict()},
        vector_for=lambda _n: flat,
        into=total,
        step="permutation-importance",
        expect_length=length,
    )
    summed = roster.reveal(grid, total, step="permutation-importance")
    result = attribution.permutation_importance(
        summed, columns=[g.column for g in groups], bins=EVAL_BINS, noisy=spec.privacy.dp != "none"
    )
    if result is None:
        return None
    return attribution.permutation_document(
        job=spec.name, model=spec.model.kind, result=result, groups=groups
    )


def _evaluate(
    grid: Grid,
    roster: Roster,
    pre_meta: dict[str, Any],
    weights: list[np.ndarray],
    n_eval: int,
    step: str,
    *,
    noisy: bool = False,
    total: Accumulator | None = None,
) -> tuple[Scored, Scored]:
    """The validation and test metrics of ``weights``; ``total``: the step's sum if its
    keys were already set up (during the last round)."""
    if total is None:
        total = roster.new_sum(2 * n_eval, params="wide")
    flat = models.flatten(weights)
    roster.request(
        grid,
        action="evaluate.fedavg",
        meta={"preprocessor": pre_meta},
        vector_for=lambda _n: flat,
        into=total,
        step=step,
        expect_length=2 * n_eval,
    )
    summed = roster.reveal(grid, total, step=step)
    return score(summed[:n_eval], noisy=noisy), score(summed[n_eval:], noisy=noisy)
