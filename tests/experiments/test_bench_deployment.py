"""experiments/bench_deployment.py: the job it times and the verdict it prints."""

from __future__ import annotations

import pytest

from experiments.bench_deployment import GOAL, compare, spec_for
from experiments.horizontal import DATA_DIR


@pytest.mark.parametrize("encryption", ["ckks", "none"])
def test_the_benchmark_times_the_demo_s_purchase_job_every_round(encryption: str) -> None:
    spec = spec_for(
        DATA_DIR / "online_shoppers.schema.json", rounds=5, encryption=encryption,
        dealer="region-1",
    )  # fmt: skip
    assert spec.privacy.key_dealer == ("region-1" if encryption == "ckks" else "")
    assert spec.task == "purchase_prediction" and spec.model.kind == "logreg"
    assert spec.rounds == 5 and spec.evaluation.early_stopping_patience == 0
    assert spec.training.local_epochs == 3 and spec.privacy.encryption == encryption


def test_the_goal_is_judged_on_the_median_round_ratio() -> None:
    sim = {"median_round_s": 2.0, "job_wall_time_s": 20.0, "start_to_end_s": 30.0}
    slow = {"median_round_s": 2.0 * GOAL + 0.01, "job_wall_time_s": 20.0, "start_to_end_s": 30.0}
    assert compare(sim, sim)["goal"]["passed"]
    verdict = compare(sim, slow)
    assert not verdict["goal"]["passed"] and verdict["goal"]["value"] > GOAL
    assert verdict["ratio_deployment_to_simulation"]["job_wall_time"] == 1.0
