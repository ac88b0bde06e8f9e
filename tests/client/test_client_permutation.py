"""The partner's permutation-importance reply: a fixed-length vector of sums whose
total over partners is the pooled result; too few test rows reply zeros."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fedcollab.client.handlers import HANDLERS, MIN_AGGREGATE_ROWS
from fedcollab.client.partner_data import PartnerData, load_partner
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.serde import Payload
from fedcollab.privacy.accounting import Gaussian
from fedcollab.privacy.dp_plan import resolve
from fedcollab.protocols import attribution, evaluation, models, preprocessing
from fedcollab.protocols.local_training import predict_proba
from tests.support.partners import SCHEMA, make_partner

torch.set_num_threads(1)
BINS = 1000
SPEC = JobSpec.model_validate(
    {"name": "j", "task": "purchase_prediction", "purpose": "purchase-prediction",
     "schema": SCHEMA, "model": {"kind": "mlp", "hidden_sizes": [4]}},
    strict=False,
)  # fmt: skip
PRE = preprocessing.Preprocessor(
    numeric_names=("noise", "signal"),
    means=(0.0, 0.0),
    stds=(1.0, 1.0),
    categorical_vocab={"channel": ("app", "store", "web")},
    boolean_names=("member",),
    boolean_means=(0.5,),
)


def _data(tmp_path: Path, name: str, seed: int, n: int) -> PartnerData:
    src = make_partner(tmp_path, name, seed, n)
    ev = SPEC.evaluation
    return load_partner(src, validation_fraction=ev.validation_fraction,
                        test_fraction=ev.test_fraction, split_seed=ev.split_seed)  # fmt: skip


def _request() -> tuple[Payload, torch.nn.Module]:
    model = models.build_model("mlp", n_features=PRE.n_features, hidden_sizes=(4,), seed=3)
    flat = models.flatten(models.get_weights(model))
    return Payload({"preprocessor": PRE.to_dict()}, flat), model


def test_reply_is_fixed_length_and_sums_to_the_pooled_result(tmp_path: Path) -> None:
    parts = [_data(tmp_path, "a", 1, 200), _data(tmp_path, "b", 2, 300)]
    payload, model = _request()
    groups = attribution.column_groups(PRE)
    length = attribution.permutation_vector_length(n_columns=len(groups), bins=BINS)
    replies = [HANDLERS["evaluate.permutation"](d, SPEC, payload) for d in parts]
    assert all(meta == {} and vec is not None and vec.shape == (length,) for meta, vec in replies)
    total = sum(vec for _, vec in replies if vec is not None)
    # The baseline block is exactly the pooled evaluation of both partners' test rows.
    xs, ys = [], []
    for d in parts:
        sub = d.dataset.subset(d.test)
        xs.append(PRE.transform(sub.numeric, sub.categorical, sub.boolean))
        assert d.dataset.labels is not None
        ys.append(d.dataset.labels[d.test])
    pooled = evaluation.local_eval_vector(
        np.concatenate(ys), predict_proba(model, np.vstack(xs)), bins=BINS
    )
    n_eval = evaluation.eval_vector_length(bins=BINS)
    np.testing.assert_allclose(total[:n_eval], pooled, atol=1e-6)
    result = attribution.permutation_importance(
        total, columns=[g.column for g in groups], bins=BINS
    )
    assert result is not None and result.n == sum(len(d.test) for d in parts)
    assert [c for c, _, _ in result.columns] == ["noise", "signal", "channel", "member"]


def test_few_test_rows_reply_zeros(tmp_path: Path) -> None:
    data = _data(tmp_path, "tiny", 5, 20)
    assert len(data.test) < MIN_AGGREGATE_ROWS
    _, vec = HANDLERS["evaluate.permutation"](data, SPEC, _request()[0])
    groups = attribution.column_groups(PRE)
    assert vec is not None and not vec.any()
    assert vec.shape == (attribution.permutation_vector_length(n_columns=len(groups), bins=BINS),)


def test_charged_and_noised_under_dp() -> None:
    """Issue 13: in a DP job evaluation and permutation importance are Gaussian
    releases charged to the ledger, not exact histograms."""
    spec = SPEC.model_copy(
        update={
            "privacy": SPEC.privacy.model_copy(update={"dp": "sample", "noise_multiplier": 1.0})
        }
    )
    plan = resolve(spec)
    assert plan is not None
    stat = Gaussian(noise_multiplier=plan.statistics_noise_multiplier, count=1)
    assert plan.mechanism_for("evaluate.fedavg") == stat
    assert plan.mechanism_for("evaluate.permutation") == stat
