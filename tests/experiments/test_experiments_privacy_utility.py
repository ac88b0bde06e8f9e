"""experiments.privacy_utility: the attack metrics and the aggregation over seeds.

Pure functions on synthetic losses and run records; no simulation runs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from experiments.privacy_utility import (
    SAMPLE_RATE,
    Setting,
    advantage_bound,
    attack_advantage,
    attack_auc,
    job_for,
    loss_threshold_attack,
    mean_std,
    per_example_loss,
    settings_for,
    summarise,
)
from fedcollab.common.jobspec import JobSpec

DATA = Path(__file__).resolve().parents[2] / "data"

# --- membership-inference metrics ---------------------------------------------------------


def test_perfect_separation_gives_auc_and_advantage_one() -> None:
    members = np.linspace(0.01, 0.2, 50)  # every member has a lower loss than any non-member
    nonmembers = np.linspace(0.5, 3.0, 50)
    assert attack_auc(members, nonmembers) == 1.0
    assert attack_advantage(members, nonmembers) == 1.0


def test_reversed_separation_gives_auc_zero_and_no_advantage() -> None:
    # The attack says "member" for low loss; here members have the high losses.
    assert attack_auc([2.0, 3.0], [0.1, 0.2]) == 0.0
    assert attack_advantage([2.0, 3.0], [0.1, 0.2]) == 0.0


def test_identical_distributions_are_at_chance() -> None:
    rng = np.random.default_rng(1)
    members = rng.exponential(0.4, 5000)
    nonmembers = rng.exponential(0.4, 5000)
    r = loss_threshold_attack(members, nonmembers)
    assert abs(r["auc"] - 0.5) < 4 * r["null_auc_std"]
    assert r["null_auc_std"] == pytest.approx(math.sqrt(10001 / (12 * 5000**2)))
    # The advantage is a KS statistic: small but not 0 for two samples of one law.
    assert 0.0 < r["advantage"] < 4 * r["null_advantage_mean"]
    assert r["null_advantage_mean"] == pytest.approx(0.8687 * math.sqrt(2 / 5000), rel=1e-3)


def test_equal_losses_are_exactly_chance() -> None:
    assert attack_auc([0.7] * 10, [0.7] * 30) == 0.5
    assert attack_advantage([0.7] * 10, [0.7] * 30) == 0.0


def test_partial_overlap_auc_counts_pairs() -> None:
    # Pairs (member loss < non-member loss): 0.1 beats both, 0.6 beats 0.8 only -> 3/4.
    assert attack_auc([0.1, 0.6], [0.5, 0.8]) == pytest.approx(0.75)
    # Threshold between 0.1 and 0.5: TPR 1/2, FPR 0.
    assert attack_advantage([0.1, 0.6], [0.5, 0.8]) == pytest.approx(0.5)


def test_attack_summary_fields() -> None:
    r = loss_threshold_attack([0.1, 0.3], [0.5, 0.7, 0.9])
    assert (r["n_members"], r["n_nonmembers"]) == (2, 3)
    assert r["mean_member_loss"] == pytest.approx(0.2)
    assert r["mean_nonmember_loss"] == pytest.approx(0.7)


@pytest.mark.parametrize(
    ("members", "nonmembers"), [([], [1.0]), ([1.0], []), ([float("nan")], [1.0])]
)
def test_attack_refuses_empty_or_non_finite_losses(members: Any, nonmembers: Any) -> None:
    with pytest.raises(ValueError):
        attack_auc(members, nonmembers)


def test_per_example_loss_is_binary_cross_entropy_and_finite() -> None:
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.9, 1.0, 0.0])
    loss = per_example_loss(y, p)
    assert loss[0] == pytest.approx(-math.log(0.9))
    assert loss[1] == pytest.approx(-math.log(0.1))
    assert loss[2] == pytest.approx(0.0, abs=1e-9) and loss[3] == pytest.approx(0.0, abs=1e-9)
    assert np.all(np.isfinite(per_example_loss([1, 0], [0.0, 1.0])))  # clipped, not inf
    with pytest.raises(ValueError):
        per_example_loss([1, 0], [0.5])


def test_advantage_bound() -> None:
    assert advantage_bound(0.0, target_delta=0.0) == 0.0
    assert advantage_bound(0.0, target_delta=1e-5) == pytest.approx(1e-5)
    assert advantage_bound(1.0, target_delta=0.0) == pytest.approx((math.e - 1) / (math.e + 1))
    assert advantage_bound(None, target_delta=1e-5) == 1.0
    assert advantage_bound(1000.0, target_delta=1e-5) == 1.0
    values = [advantage_bound(e, target_delta=1e-5) for e in (0.5, 1, 3, 8)]
    assert values == sorted(values)


# --- aggregation over seeds -----------------------------------------------------------------


def test_mean_std() -> None:
    assert mean_std([0.8, 0.9, 1.0]) == {
        "mean": pytest.approx(0.9),
        "std": pytest.approx(0.1),
        "n": 3,
    }
    assert mean_std([0.7]) == {"mean": 0.7, "std": None, "n": 1}
    assert mean_std([None, None]) == {"mean": None, "std": None, "n": 0}
    assert mean_std([1.0, None, 3.0])["n"] == 2


def _run(setting: Setting, seed: int, auc: float, eps: float | None, mia: float) -> dict[str, Any]:
    return {
        "setting": setting.key,
        "level": setting.level,
        "target_epsilon": setting.target_epsilon,
        "seed": seed,
        "aggregation": setting.encryption,
        "noise_multiplier": None if eps is None else 1.5,
        "test_auc": auc,
        "epsilon": eps,
        "record_level_epsilon": eps,
        "advantage_bound": 1.0,
        "wall_time_s": 10.0 + seed,
        "mia": {"auc": mia, "advantage": mia - 0.5, "null_auc_std": 0.01},
    }


def test_summarise_groups_by_setting_in_order() -> None:
    none, s3 = Setting("none"), Setting("sample", 3.0)
    runs = [
        _run(none, 0, 0.88, None, 0.51),
        _run(s3, 0, 0.85, 2.999, 0.50),
        _run(none, 1, 0.90, None, 0.53),
        _run(s3, 1, 0.87, 3.0, 0.52),
    ]
    summary = summarise(runs)
    assert [s["setting"] for s in summary] == ["no-dp", "sample-eps3"]
    n, s = summary
    assert n["seeds"] == [0, 1] and n["test_auc"]["mean"] == pytest.approx(0.89)
    assert n["test_auc"]["std"] == pytest.approx(math.sqrt(2) * 0.01)
    assert n["mia_auc"]["mean"] == pytest.approx(0.52)
    assert n["mia_advantage"]["mean"] == pytest.approx(0.02)
    assert n["epsilon"] == {"mean": None, "std": None, "n": 0}
    assert n["epsilon_within_target"] is None and n["epsilon_max"] is None
    assert s["epsilon_max"] == 3.0 and s["epsilon_within_target"] is True
    assert s["noise_multiplier"] == 1.5 and s["aggregation"] == "none"
    assert s["wall_time_s"]["mean"] == pytest.approx(10.5)
    assert s["test_auc_exact"]["n"] == 0  # absent measures are counted as absent


def test_summarise_flags_an_epsilon_above_target_or_missing() -> None:
    c1 = Setting("client", 1.0)
    over = summarise([_run(c1, 0, 0.6, 0.9, 0.5), _run(c1, 1, 0.6, 1.0001, 0.5)])
    assert over[0]["epsilon_within_target"] is False
    missing = summarise([_run(c1, 0, 0.6, 0.9, 0.5), _run(c1, 1, 0.6, None, 0.5)])
    assert missing[0]["epsilon_within_target"] is False


def test_settings_for() -> None:
    keys = [s.key for s in settings_for([8, 1, 3, 3])]
    assert keys == [
        "no-dp",
        "sample-eps1", "sample-eps3", "sample-eps8",
        "client-eps1", "client-eps3", "client-eps8",
    ]  # fmt: skip
    assert Setting("client", 1.0).encryption == "ckks"  # DP-FedAvg needs encrypted sums
    assert Setting("sample", 1.0).encryption == Setting("none").encryption == "none"


def test_job_for_sets_the_experiment_settings() -> None:
    schema = json.loads((DATA / "online_shoppers.schema.json").read_text())
    base = JobSpec.model_validate(
        {"name": "p", "task": "purchase_prediction", "purpose": "p", "schema": schema},
        strict=False,
    )
    plain = job_for(base, Setting("none"), seed=3, rounds=12, n_partners=9, dealer="region-1")
    assert (plain.rounds, plain.min_partners, plain.training.seed) == (12, 9, 3)
    assert plain.evaluation.early_stopping_patience == 0  # every run spends its planned epsilon
    assert plain.evaluation.split_seed == base.evaluation.split_seed  # same test rows
    assert plain.privacy.dp == "none" and plain.privacy.target_epsilon is None
    sample = job_for(
        base, Setting("sample", 3.0), seed=0, rounds=12, n_partners=9, dealer="region-1"
    )
    assert (sample.privacy.dp, sample.privacy.target_epsilon) == ("sample", 3.0)
    assert sample.privacy.encryption == "none" and sample.privacy.sample_rate == SAMPLE_RATE
    client = job_for(
        base, Setting("client", 1.0), seed=0, rounds=12, n_partners=9, dealer="region-1"
    )
    assert (client.privacy.dp, client.privacy.encryption) == ("client", "ckks")
    assert client.privacy.key_dealer == "region-1" and plain.privacy.key_dealer == ""
    # DP-FedAvg: few long rounds (the module's Notes); never more rounds than asked.
    assert (client.rounds, client.training.local_epochs) == (3, 3)
    assert (sample.rounds, sample.training.local_epochs) == (12, base.training.local_epochs)
    short = job_for(base, Setting("client", 1.0), seed=0, rounds=2, n_partners=9, dealer="region-1")
    assert short.rounds == 2
    custom = job_for(
        base, Setting("client", 8.0), seed=0, rounds=12, n_partners=9, dealer="region-1",
        client_rounds=6, client_local_epochs=2,
    )  # fmt: skip
    assert (custom.rounds, custom.training.local_epochs) == (6, 2)
    assert len({plain.name, sample.name, client.name}) == 3
