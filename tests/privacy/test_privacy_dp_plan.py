"""privacy.dp_plan: the whole job meets its target, the figures are the library's for the
same events, and what each request charges (or refuses) is what was meant."""

from __future__ import annotations

import doctest
import json
import math
from typing import Any

import dp_accounting
import pytest
from dp_accounting.rdp import RdpAccountant
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcollab.common.errors import PrivacyError
from fedcollab.common.jobspec import (
    JobSpec,
    ModelSpec,
    PrivacySpec,
    SegmentationSpec,
    TrainingSpec,
)
from fedcollab.privacy import dp_plan
from fedcollab.privacy.accounting import Gaussian, Mechanism, SampledGaussian, epsilon
from fedcollab.privacy.dp_plan import STATISTICS_SHARE, DpPlan, resolve, steps_per_epoch

DELTA = 1e-5
SCHEMA = {
    "version": 1,
    "dataset": "shop",
    "delimiter": ",",
    "id_column": "id",
    "label_column": "y",
    "features": [{"name": "x", "type": "numeric", "missing": "forbid"}],
}
PLAN = settings(max_examples=6, deadline=None)

LEVELS = [
    ("purchase_prediction", "sample"),
    ("purchase_prediction", "client"),
    ("segmentation", "sample"),
]


def make_spec(
    *,
    task: str = "purchase_prediction",
    dp: str = "sample",
    rounds: int = 10,
    epochs: int = 1,
    sample_rate: float = 0.02,
    client_sample_rate: float = 1.0,
    seed_steps: int = 2,
    lloyd_iterations: int = 20,
    min_partners: int = 3,
    kind: str = "logreg",
    **privacy: Any,
) -> JobSpec:
    return JobSpec(
        name="j",
        task=task,  # type: ignore[arg-type]
        purpose="p",
        schema=SCHEMA,
        min_partners=min_partners,
        rounds=rounds,
        training=TrainingSpec(local_epochs=epochs),
        model=ModelSpec(kind=kind),  # type: ignore[arg-type]
        segmentation=SegmentationSpec(seed_steps=seed_steps, lloyd_iterations=lloyd_iterations),
        privacy=PrivacySpec(
            dp=dp,  # type: ignore[arg-type]
            encryption="ckks" if dp == "client" else "none",
            key_dealer="a" if dp == "client" else "",
            sample_rate=sample_rate,
            client_sample_rate=client_sample_rate,
            target_delta=DELTA,
            **privacy,
        ),
    )


def per_release(spec: JobSpec, z: float) -> Mechanism:
    """One round / k-means request of the released output, built from the spec by hand."""
    p = spec.privacy
    if spec.task == "segmentation":
        return Gaussian(noise_multiplier=z, count=1)
    if p.dp == "client":
        return SampledGaussian(noise_multiplier=z, sample_rate=p.client_sample_rate, steps=1)
    steps = spec.training.local_epochs * math.ceil(round(1 / p.sample_rate, 9))
    return SampledGaussian(noise_multiplier=z, sample_rate=p.sample_rate, steps=steps)


def releases_of(spec: JobSpec) -> int:
    if spec.task == "segmentation":
        return spec.segmentation.seed_steps + spec.segmentation.lloyd_iterations + 1
    return spec.rounds


def statistics_of(spec: JobSpec) -> int:
    """Moments, plus the final evaluation (and permutation importance) of a prediction;
    with dp_model_selection "validation" one validation histogram per round and a second
    final evaluation (of the best model)."""
    if spec.task == "segmentation":
        return 1
    selects = spec.evaluation.dp_model_selection == "validation"
    return 2 + (spec.model.kind == "mlp") + (spec.rounds + 1 if selects else 0)


def library_epsilon(spec: JobSpec, z: float, z_stats: float | None = None) -> float:
    """dp_accounting's RdpAccountant on the job's events, without privacy.accounting;
    record level, the statistics (noise ``z_stats``) are composed in."""
    p = spec.privacy
    gaussian = dp_accounting.GaussianDpEvent(z)
    if spec.task == "segmentation":
        event, count = gaussian, releases_of(spec)
    elif p.dp == "client":
        event = dp_accounting.PoissonSampledDpEvent(p.client_sample_rate, gaussian)
        count = spec.rounds
    else:
        sampled = dp_accounting.PoissonSampledDpEvent(p.sample_rate, gaussian)
        steps = spec.training.local_epochs * math.ceil(round(1 / p.sample_rate, 9))
        event, count = dp_accounting.SelfComposedDpEvent(sampled, steps), spec.rounds
    accountant = RdpAccountant()
    accountant.compose(event, count)
    if p.dp == "sample" and z_stats is not None:
        accountant.compose(dp_accounting.GaussianDpEvent(z_stats), statistics_of(spec))
    return float(accountant.get_epsilon(DELTA))


jobs = st.fixed_dictionaries(
    {
        "task_level": st.sampled_from(LEVELS),
        "rounds": st.integers(1, 50),
        "epochs": st.integers(1, 3),
        "sample_rate": st.floats(0.01, 0.99),
        "client_sample_rate": st.floats(0.01, 0.99),
        "seed_steps": st.integers(1, 5),
        "lloyd_iterations": st.integers(1, 50),
    }
)


def spec_from(job: dict[str, Any], **privacy: Any) -> JobSpec:
    job = dict(job)
    task, level = job.pop("task_level")
    return make_spec(task=task, dp=level, **job, **privacy)


def test_public_surface_is_what_was_meant() -> None:
    assert set(dp_plan.__all__) == {
        "CHARGED_ACTIONS",
        "STATISTICS_ACTIONS",
        "STATISTICS_SHARE",
        "UNCHARGED_ACTIONS",
        "DpLevel",
        "DpPlan",
        "cluster_sensitivity",
        "profile_sensitivity",
        "VALIDATION_STEP_SUFFIX",
        "resolve",
        "statistics_requests",
        "steps_per_epoch",
        "validates_rounds",
    }


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(dp_plan).failed == 0


@pytest.mark.parametrize(
    ("rate", "steps"), [(0.02, 50), (0.3, 4), (0.25, 4), (0.1, 10), (1 / 3, 3), (1.0, 1), (0.7, 2)]
)
def test_steps_per_epoch(rate: float, steps: int) -> None:
    assert steps_per_epoch(rate) == steps


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5, math.nan, True, "0.1"])
def test_steps_per_epoch_refuses_bad_rates(rate: Any) -> None:
    with pytest.raises(PrivacyError):
        steps_per_epoch(rate)


def test_no_dp_no_plan() -> None:
    spec = JobSpec(name="j", task="segmentation", purpose="p", schema=SCHEMA)
    assert resolve(spec) is None


# --- the job meets its target, by the library's own figures ---------------------------------


@PLAN
@given(job=jobs, target=st.floats(0.5, 10.0))
def test_target_epsilon_holds_for_the_whole_job(job: dict[str, Any], target: float) -> None:
    spec = spec_from(job, target_epsilon=target)
    plan = resolve(spec)
    assert plan is not None and plan.target_epsilon == target
    n = releases_of(spec)
    assert plan.max_releases == n
    achieved = plan.job_epsilon(n)
    assert achieved <= target
    assert achieved > 0.9 * target  # calibrated: not simply drowned in noise
    z_stats = plan.statistics_noise_multiplier
    stats = [Gaussian(noise_multiplier=z_stats, count=1)] * statistics_of(spec)
    record_level = spec.privacy.dp == "sample"
    composed = epsilon(
        [per_release(spec, plan.noise_multiplier)] * n + (stats if record_level else []),
        target_delta=DELTA,
    )
    assert achieved == pytest.approx(composed, rel=1e-9)
    assert achieved == pytest.approx(
        library_epsilon(spec, plan.noise_multiplier, z_stats), rel=1e-9
    )
    assert plan.job_epsilon(max(n - 1, 0)) <= achieved  # shorter jobs spend less
    # The statistics get their share of the target, all of them together.
    share = epsilon(stats, target_delta=DELTA)
    assert share <= STATISTICS_SHARE * target * (1 + 1e-9)
    assert share > 0.9 * STATISTICS_SHARE * target


@PLAN
@given(job=jobs, z=st.floats(0.5, 20.0))
def test_given_noise_reports_the_librarys_epsilon(job: dict[str, Any], z: float) -> None:
    spec = spec_from(job, noise_multiplier=z)
    plan = resolve(spec)
    assert plan is not None and plan.noise_multiplier == z and plan.target_epsilon is None
    n = releases_of(spec)
    assert plan.statistics_noise_multiplier == z
    assert plan.job_epsilon(n) == pytest.approx(library_epsilon(spec, z, z), rel=1e-9)


def test_full_client_sampling_is_the_gaussian_mechanism() -> None:
    plan = resolve(make_spec(dp="client", client_sample_rate=1.0, noise_multiplier=2.0))
    assert plan is not None
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(2.0), 10)
    assert plan.job_epsilon(10) == pytest.approx(
        RdpAccountant().compose(event).get_epsilon(DELTA), rel=1e-12
    )


def test_resolve_is_deterministic() -> None:
    spec = make_spec(target_epsilon=3.0)
    assert resolve(spec) == resolve(spec)


def test_zero_releases_spend_nothing() -> None:
    plan = resolve(make_spec(noise_multiplier=1.0))
    assert plan is not None and plan.job_epsilon(0) == 0.0
    with pytest.raises(PrivacyError):
        plan.job_epsilon(-1)


# --- what one request charges --------------------------------------------------------------


def test_sample_level_training_round_charges_its_dp_sgd_steps() -> None:
    plan = resolve(make_spec(epochs=3, sample_rate=0.02, noise_multiplier=1.1))
    assert plan is not None and plan.steps_per_round == 150
    assert plan.mechanism_for("train.fedavg") == SampledGaussian(
        noise_multiplier=1.1, sample_rate=0.02, steps=150
    )


def test_client_level_round_charges_the_record_level_gaussian() -> None:
    # One customer can move a clipped update anywhere in the ball of radius C: sensitivity 2C.
    plan = resolve(make_spec(dp="client", client_sample_rate=0.1, noise_multiplier=3.0))
    assert plan is not None
    assert plan.mechanism_for("train.fedavg") == Gaussian(noise_multiplier=1.5, count=1)
    assert plan.partner_epsilon() > plan.job_epsilon(plan.max_releases)  # conservative


def test_segmentation_requests_charge_one_gaussian_each() -> None:
    plan = resolve(make_spec(task="segmentation", noise_multiplier=4.0))
    assert plan is not None and plan.max_releases == 2 + 20 + 1
    for action in ("query.kmeans_step", "query.segment_profile"):
        assert plan.mechanism_for(action) == Gaussian(noise_multiplier=4.0, count=1)


@pytest.mark.parametrize(("task", "level"), LEVELS)
@pytest.mark.parametrize(
    "action",
    ["query.handshake", "query.cosign", "query.he_keygen", "query.he_decrypt", "query.secagg"],
)
def test_requests_without_dp_release_charge_nothing(task: str, level: str, action: str) -> None:
    plan = resolve(make_spec(task=task, dp=level, noise_multiplier=1.0))
    assert plan is not None and plan.mechanism_for(action) is None


@pytest.mark.parametrize(("task", "level"), LEVELS)
def test_statistics_charge_one_gaussian_each(task: str, level: str) -> None:
    """Issue 13: moments and evaluation are releases of a DP job, charged like any."""
    plan = resolve(make_spec(task=task, dp=level, target_epsilon=3.0))
    assert plan is not None
    actions = ["query.moments"] + (["evaluate.fedavg"] if task != "segmentation" else [])
    for action in actions:
        assert plan.mechanism_for(action) == Gaussian(
            noise_multiplier=plan.statistics_noise_multiplier, count=1
        )
    with pytest.raises(PrivacyError, match="no DP mechanism"):
        plan.mechanism_for("evaluate.permutation")  # a logistic regression has none
    mlp = resolve(make_spec(task=task, dp=level, target_epsilon=3.0, kind="mlp"))
    assert mlp is not None
    if task != "segmentation":
        assert mlp.mechanism_for("evaluate.permutation") is not None


@pytest.mark.parametrize(
    ("task", "action"),
    [
        ("purchase_prediction", "query.kmeans_step"),
        ("purchase_prediction", "query.segment_profile"),
        ("segmentation", "train.fedavg"),
        ("segmentation", "query.kmeans_seed"),  # k-FED seeding has no DP mechanism
        ("purchase_prediction", "query.kmeans_seed"),
        ("segmentation", "query.something_new"),
    ],
)
def test_data_requests_outside_the_plan_are_refused(task: str, action: str) -> None:
    plan = resolve(make_spec(task=task, noise_multiplier=1.0))
    assert plan is not None
    with pytest.raises(PrivacyError, match="no DP mechanism"):
        plan.mechanism_for(action)


# --- the planned spend ---------------------------------------------------------------------


@pytest.mark.parametrize(("task", "level"), LEVELS)
def test_planned_is_the_sum_of_every_charge(task: str, level: str) -> None:
    spec = make_spec(task=task, dp=level, rounds=7, epochs=2, noise_multiplier=1.3)
    plan = resolve(spec)
    assert plan is not None
    planned = plan.planned()
    assert len(planned) == 2  # training and statistics: two mechanisms for ledger.preview
    charges: list[Mechanism] = []
    for action, count in (*plan.requests, *plan.statistics):
        mechanism = plan.mechanism_for(action)
        assert mechanism is not None
        charges += [mechanism] * count
    assert epsilon(planned, target_delta=DELTA) == pytest.approx(
        epsilon(charges, target_delta=DELTA), rel=1e-12
    )
    assert plan.partner_epsilon() == epsilon(planned, target_delta=DELTA)
    if level == "sample":  # the released output costs what a partner is charged
        assert plan.partner_epsilon() == pytest.approx(plan.job_epsilon(plan.max_releases))


@pytest.mark.parametrize(
    ("level", "choice", "selects"),
    [
        ("client", None, False),
        ("sample", None, False),
        ("client", "last_round", False),
        ("sample", "validation", True),
        ("client", "validation", True),
        ("sample", "last_round", False),
    ],
)
def test_model_selection_by_validation_is_planned_and_charged(
    level: str, choice: str | None, selects: bool
) -> None:
    """A job that selects its released model by validation releases one histogram per
    round and may evaluate twice; both are statistics in the plan, so the handshake's
    budget check and the partner's epsilon include them."""
    doc = json.loads(make_spec(dp=level, rounds=6, target_epsilon=3.0).to_json())
    if choice is not None:  # None: the default
        doc["evaluation"]["dp_model_selection"] = choice
    spec = JobSpec.from_json(json.dumps(doc))
    assert dp_plan.validates_rounds(spec) is selects
    plan = resolve(spec)
    assert plan is not None
    stats = dict(plan.statistics)
    if selects:
        assert stats["train.validation"] == 6 and stats["evaluate.fedavg"] == 2
        assert plan.mechanism_for("train.validation") == Gaussian(
            noise_multiplier=plan.statistics_noise_multiplier, count=1
        )
    else:
        assert "train.validation" not in stats and stats["evaluate.fedavg"] == 1
        with pytest.raises(PrivacyError, match="no DP mechanism"):
            plan.mechanism_for("train.validation")
    # The statistics' share holds with the extra releases: more of them, more noise each.
    n = sum(stats.values())
    share = epsilon(
        [Gaussian(noise_multiplier=plan.statistics_noise_multiplier, count=n)], target_delta=DELTA
    )
    assert 0.9 * STATISTICS_SHARE * 3.0 < share <= STATISTICS_SHARE * 3.0 * (1 + 1e-9)


def test_planned_counts_only_charged_requests() -> None:
    plan = resolve(make_spec(task="segmentation", noise_multiplier=2.0))
    assert plan is not None
    got = plan.planned({"query.kmeans_step": 5, "query.segment_profile": 1, "query.cosign": 9})
    assert got == [Gaussian(noise_multiplier=2.0, count=6)]
    assert plan.planned({"query.moments": 1}) == [Gaussian(noise_multiplier=2.0, count=1)]
    assert plan.planned({"query.kmeans_step": 0}) == []
    with pytest.raises(PrivacyError):
        plan.planned({"query.kmeans_step": -1})
    with pytest.raises(PrivacyError):
        plan.planned({"train.fedavg": 1})


# --- summary and construction --------------------------------------------------------------


@pytest.mark.parametrize(("task", "level"), LEVELS)
def test_summary_is_json(task: str, level: str) -> None:
    plan = resolve(make_spec(task=task, dp=level, target_epsilon=4.0))
    assert plan is not None
    summary = json.loads(json.dumps(plan.to_dict(), allow_nan=False))
    assert summary["level"] == level and summary["target_epsilon"] == 4.0
    assert summary["planned_epsilon"] <= 4.0
    assert summary["noise_multiplier"] == plan.noise_multiplier
    expected = {
        ("purchase_prediction", "sample"): "gradient_noise_std",
        ("purchase_prediction", "client"): "noise_share_std",
        ("segmentation", "sample"): "lloyd_noise_std",
    }[(task, level)]
    assert summary[expected] > 0


def test_client_noise_share_adds_up_to_the_aggregate_noise() -> None:
    plan = resolve(make_spec(dp="client", min_partners=4, noise_multiplier=2.0))
    assert plan is not None
    summary = plan.to_dict()
    assert summary["noise_share_std"] * math.sqrt(4) == pytest.approx(
        summary["aggregate_noise_std"]
    )


def test_a_plan_without_a_mechanism_is_refused() -> None:
    plan = resolve(make_spec(noise_multiplier=1.0))
    assert plan is not None
    with pytest.raises(PrivacyError, match="no DP mechanism"):
        DpPlan(**{**plan.__dict__, "task": "segmentation", "level": "client"})
    with pytest.raises(PrivacyError, match="requests"):
        DpPlan(**{**plan.__dict__, "requests": (("query.kmeans_step", 3),)})
    with pytest.raises(PrivacyError):
        DpPlan(**{**plan.__dict__, "noise_multiplier": 0.0})
