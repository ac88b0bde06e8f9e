"""Issue 13, "DP jobs charge every release" and "one run per Flower run": a malicious
coordinator against the real partner path (:class:`tests.support.adversarial.Attacker`).

Every value a partner releases in a DP job is a charged Gaussian release or a function
of nothing; a job without DP on a dataset with a budget cap is refused; run names
minted inside one Flower run and runs beyond the node's daily limit are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedcollab.client.budget import ledger_path
from fedcollab.client.handlers import EVAL_BINS
from fedcollab.client.partner_data import load_partner, source_from_config
from fedcollab.client.run_contract import node_split
from fedcollab.privacy.budget_ledger import BudgetLedger
from fedcollab.protocols import evaluation, models, preprocessing
from tests.support.adversarial import BOUNDS, Attacker, job, layout_meta, preprocessor_dict

CHANNELS = ["app", "kiosk", "web"]


def _dp_job(**privacy: Any) -> Any:
    return job(privacy={"dp": "sample", "target_epsilon": 1.0, "value_bounds": BOUNDS, **privacy})


def _cap(atk: Attacker, partner: str, cap: float) -> None:
    with BudgetLedger.open(ledger_path(atk.configs[partner])) as ledger:
        ledger.set_cap("shop", epsilon_cap=cap, delta=1e-5)


def _exact_moments(atk: Attacker, partner: str) -> np.ndarray:
    cfg = atk.configs[partner]
    split = node_split(cfg)
    data = load_partner(
        source_from_config(cfg),
        validation_fraction=split.validation_fraction,
        test_fraction=split.test_fraction,
        split_seed=split.split_seed,
    )
    sub = data.dataset.subset(data.train)
    layout = preprocessing.MomentsLayout(
        numeric_names=("spend", "visits"),
        categorical_vocab={"channel": tuple(CHANNELS)},
        boolean_names=("member",),
    )
    return preprocessing.local_moments(layout, sub.numeric, sub.categorical, sub.boolean)


def _charges(atk: Attacker, partner: str) -> list[tuple[str, str]]:
    with BudgetLedger.open(ledger_path(atk.configs[partner])) as ledger:
        return [(c.run, c.step) for c in ledger.charges("shop")]


# ------------------------------------------------------------------ DP jobs charge every release


def test_a_dp_job_s_moments_are_noised_and_charged(tmp_path: Path) -> None:
    """Attack: a DP job's moments, with the rare value "kiosk" in the category list: on
    main they are exact (the 8 kiosk rows' count and every sum) and cost nothing."""
    atk = Attacker.against(tmp_path, _dp_job(), names=("a",))
    _cap(atk, "a", 5.0)
    assert atk.handshake("a").refused is None
    reply = atk.send("a", "query.moments", step="moments", meta=layout_meta(channel=CHANNELS))
    assert reply.vector is not None, reply.meta
    exact = _exact_moments(atk, "a")
    assert not np.allclose(reply.vector, exact, atol=0.5)  # not the exact statistics
    assert _charges(atk, "a") == [(atk.run, "moments")]
    spent = [e["body"] for e in atk.trail("a") if e["type"] == "privacy.spent"]
    assert spent[0]["mechanism"]["kind"] == "gaussian" and spent[0]["epsilon"] > 0


def test_a_dp_job_without_value_bounds_gets_no_moments(tmp_path: Path) -> None:
    """A DP job that declares no ranges for its numeric columns has no bounded
    sensitivity for their sums: refused from the handshake on, nothing released, nothing
    charged (it used to be charged at the moments request, then refused: budget spent
    on a release that never happened)."""
    spec = job(privacy={"dp": "sample", "target_epsilon": 1.0})
    atk = Attacker.against(tmp_path, spec, names=("a",))
    _cap(atk, "a", 5.0)
    assert atk.handshake("a").refused == "JobSpecError"
    reply = atk.send("a", "query.moments", step="moments", meta=layout_meta(channel=CHANNELS))
    assert reply.refused == "JobSpecError" and reply.vector is None
    assert _charges(atk, "a") == []


def test_a_dp_release_over_the_cap_is_refused_and_nothing_is_charged(tmp_path: Path) -> None:
    """The charge is atomic with the release: with the cap lowered after the handshake,
    the evaluation is refused with a typed error, no vector leaves, the ledger is as it
    was."""
    atk = Attacker.against(tmp_path, _dp_job(), names=("a",))
    _cap(atk, "a", 5.0)
    assert atk.handshake("a").refused is None
    _cap(atk, "a", 1e-3)  # the partner lowers its cap
    reply = atk.send("a", "query.moments", step="moments", meta=layout_meta(channel=CHANNELS))
    assert reply.refused == "BudgetExceededError" and reply.vector is None
    assert _charges(atk, "a") == []


def test_a_dp_job_s_rounds_are_not_evaluated_twice(tmp_path: Path) -> None:
    """Attack: ask the second final evaluation ("final-evaluation-best") of a DP job,
    which releases its last model and evaluates it once: outside the plan."""
    atk = Attacker.against(tmp_path, _dp_job(), names=("a",))
    _cap(atk, "a", 5.0)
    assert atk.handshake("a").refused is None
    reply = atk.send(
        "a", "evaluate.fedavg", step="final-evaluation-best",
        meta={"preprocessor": preprocessor_dict(tmp_path)}, vector=np.zeros(6),
    )  # fmt: skip
    assert reply.refused == "ProtocolError" and reply.vector is None


def _round_one(atk: Attacker, tmp_path: Path) -> np.ndarray:
    """The validation slots of partner a's reply to round 1 (the model: logreg, 5 inputs)."""
    model = models.flatten(
        models.get_weights(models.build_model("logreg", n_features=5, hidden_sizes=(), seed=0))
    )
    reply = atk.send(
        "a", "train.fedavg", step="round-1",
        meta={"round": 1, "preprocessor": preprocessor_dict(tmp_path)}, vector=model,
    )  # fmt: skip
    assert reply.refused is None and reply.vector is not None, reply.meta
    n_update = model.size + 1  # weights, then the example count
    tail: np.ndarray = reply.vector[n_update:]
    assert tail.size == evaluation.eval_vector_length(bins=EVAL_BINS)
    return tail


def test_a_dp_job_s_round_validation_is_noised_and_charged_when_it_selects(
    tmp_path: Path,
) -> None:
    """A DP job that selects its released model by validation (dp_model_selection =
    "validation"): each round's validation histogram is a Gaussian release charged as a
    step of its own beside the round's, and the second final evaluation (of the best
    model) is in the plan; nothing else about the validation rows leaves."""
    spec = job(
        privacy={"dp": "sample", "target_epsilon": 1.0, "value_bounds": BOUNDS},
        evaluation={"dp_model_selection": "validation"},
    )
    atk = Attacker.against(tmp_path, spec, names=("a",))
    _cap(atk, "a", 50.0)
    assert atk.handshake("a").refused is None
    tail = _round_one(atk, tmp_path)
    assert np.all(tail[:3] == 0.0)  # no exact n, correct count or loss
    hist = tail[3:]
    assert np.any(hist != np.round(hist))  # noised counts, not the exact histogram
    assert _charges(atk, "a") == [(atk.run, "round-1"), (atk.run, "round-1/validation")]
    spent = [e["body"]["step"] for e in atk.trail("a") if e["type"] == "privacy.spent"]
    assert spent == ["round-1", "round-1/validation"]
    best = atk.send(
        "a", "evaluate.fedavg", step="final-evaluation-best",
        meta={"preprocessor": preprocessor_dict(tmp_path)}, vector=np.zeros(6),
    )  # fmt: skip
    assert best.refused is None and best.vector is not None


def test_a_dp_job_that_releases_its_last_round_sends_no_validation(tmp_path: Path) -> None:
    """A DP job releases its last round by default: the validation slots are zeros, a
    function of nothing, and only the round is charged."""
    atk = Attacker.against(tmp_path, _dp_job(), names=("a",))
    _cap(atk, "a", 50.0)
    assert atk.handshake("a").refused is None
    assert np.all(_round_one(atk, tmp_path) == 0.0)
    assert _charges(atk, "a") == [(atk.run, "round-1")]


def test_a_job_without_dp_on_a_capped_dataset_is_refused(tmp_path: Path) -> None:
    """Attack: the partner capped its dataset's budget; the coordinator submits the same
    analysis with dp = "none", whose exact moments no ledger can charge (on main they are
    answered, nothing charged)."""
    atk = Attacker.against(tmp_path, job(), names=("a",))
    _cap(atk, "a", 5.0)
    assert atk.handshake("a").refused == "PolicyRefusal"
    reply = atk.send("a", "query.moments", step="moments", meta=layout_meta(channel=CHANNELS))
    assert reply.vector is None
    assert _charges(atk, "a") == []
    assert atk.refusals("a")[0]["error"] == "PolicyRefusal"


def test_a_partner_may_allow_jobs_without_dp_on_a_capped_dataset(tmp_path: Path) -> None:
    """The partner's explicit choice (`node start --no-dp-only`) serves them."""
    atk = Attacker.against(tmp_path, job(), names=("a",), **{"dp-only": "false"})
    _cap(atk, "a", 5.0)
    assert atk.handshake("a").refused is None


def test_a_segmentation_job_under_a_purchase_prediction_purpose_is_refused(
    tmp_path: Path,
) -> None:
    """Attack: a partner granted only purchase-prediction; the coordinator labels a
    segmentation job (raw per-segment sums) with that purpose."""
    spec = job(
        name="seg", task="segmentation", purpose="purchase-prediction",
        segmentation={"k": 2, "lloyd_iterations": 1, "seeding": "summed", "seed_steps": 1,
                      "seed_candidates": 4},
    )  # fmt: skip
    atk = Attacker.against(tmp_path, spec, names=("a",))
    atk.handshake("a")
    reply = atk.send(
        "a", "query.segment_profile", step="segment-profiles",
        meta={"preprocessor": preprocessor_dict(tmp_path), "centroids": [[0.0] * 5, [1.0] * 5]},
    )  # fmt: skip
    assert reply.vector is None


# ------------------------------------------------------------------ one run per Flower run


def test_a_run_is_answered_only_in_the_flower_run_that_started_it(tmp_path: Path) -> None:
    """Attack: replay a run's name from another Flower run (a second `flwr run` of the
    coordinator) to ask its steps there."""
    atk = Attacker.against(tmp_path, job(), names=("a",))
    assert atk.handshake("a", flower_run=7).refused is None
    reply = atk.send(
        "a", "query.moments", step="moments", flower_run=8, meta=layout_meta(channel=CHANNELS)
    )
    assert reply.refused == "ProtocolError" and reply.vector is None
    again = atk.handshake("a", flower_run=8)
    assert again.refused == "ProtocolError"


def test_fresh_runs_beyond_the_node_s_daily_limit_are_refused(tmp_path: Path) -> None:
    """Attack: start a fresh Flower run (and run name) per differencing query; the node
    accepts max-runs-per-day runs in 24 hours and refuses the rest, logged."""
    atk = Attacker.against(tmp_path, job(), names=("a",), **{"max-runs-per-day": "2"})
    outcomes = [atk.handshake("a", run=f"run-fresh-{i}").refused for i in range(4)]
    assert outcomes == [None, None, "RunLimitError", "RunLimitError"]
    assert [r["run"] for r in atk.refusals("a")] == ["run-fresh-2", "run-fresh-3"]
    # An accepted run is still served.
    assert atk.handshake("a", run="run-fresh-0").refused is None


def test_a_bad_daily_limit_setting_fails_closed(tmp_path: Path) -> None:
    """Refused by the strict node settings (client.node_settings) before any check runs."""
    atk = Attacker.against(tmp_path, job(), names=("a",), **{"max-runs-per-day": "0"})
    assert atk.handshake("a").refused == "SchemaError"
