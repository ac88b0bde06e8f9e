"""Masked jobs (``privacy.aggregation = "masked"``) end to end: the real coordinator
(``coordinator.job.run_job``) and the real partner ClientApp over an in-memory Grid.

A masked job must give the plaintext job's results to the fixed-point grid (2^-20 per
value and partner), while the coordinator only ever receives masked words.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fedcollab.common import batch
from fedcollab.common.job_files import read_progress
from fedcollab.common.jobspec import JobSpec
from fedcollab.compliance.trail import Trail
from fedcollab.federation.inmemory import in_memory_federation
from fedcollab.privacy.dp_plan import resolve
from fedcollab.protocols import client_dp
from tests.support.jobs import run_in_memory
from tests.support.partners import SCHEMA, make_partner

warnings.filterwarnings("ignore", message=".*does not fit in a single ciphertext.*")
torch.set_num_threads(1)


def _job(task: str, aggregation: str, n: int) -> JobSpec:
    extra: dict[str, Any] = (
        {"segmentation": {"k": 3, "lloyd_iterations": 3, "seeding": "summed", "seed_steps": 1,
                          "seed_candidates": 6}}
        if task == "segmentation"
        else {"rounds": 2, "training": {"learning_rate": 0.05}}
    )  # fmt: skip
    purpose = "user-segmentation" if task == "segmentation" else "purchase-prediction"
    return JobSpec.model_validate(
        {"name": "masked", "task": task, "purpose": purpose, "schema": SCHEMA,
         "participants": [f"p{i}" for i in range(n)], "min_partners": 2,
         "privacy": {"aggregation": aggregation,
                     "encryption": "ckks" if aggregation.startswith("ckks") else "none"},
         **extra},
        strict=False,
    )  # fmt: skip


def _run(
    tmp_path: Path,
    spec: JobSpec,
    n: int,
    *,
    budget_cap: float | None = None,
    pushes: list[list[str]] | None = None,
    dies: tuple[str, str] | None = None,
    dies_too: tuple[str, str] | None = None,
) -> tuple[dict[str, Any], Path, Path]:
    """Run ``spec`` over ``n`` partners; ``budget_cap`` caps every partner's "shop" ledger;
    ``dies``: (partner, group id) whose replies are lost from the exchange that sends that
    group on (the partner computed them, then died)."""
    from fedcollab.privacy.budget_ledger import BudgetLedger

    sources = [make_partner(tmp_path / "data", f"p{i}", seed=i, n=300) for i in range(n)]
    grid, audit, policy = in_memory_federation(spec, sources, tmp_path)
    for death in (d for d in (dies, dies_too) if d is not None):
        victim, group = 1 + [s.partner for s in sources].index(death[0]), death[1]
        serve, dead = grid.push_messages, [False]

        def push(
            messages: Any, victim: int = victim, group: str = group, serve: Any = serve,
            dead: list[bool] = dead,
        ) -> list[str]:  # fmt: skip
            messages = list(messages)
            dead[0] = dead[0] or any(group in batch.steps(m) for m in messages)
            ids = serve(messages)
            for msg, msg_id in zip(messages, ids, strict=True):
                if dead[0] and msg.metadata.dst_node_id == victim:
                    grid._replies.pop(msg_id, None)
            return list(ids)

        grid.push_messages = push  # type: ignore[method-assign]
    if budget_cap is not None:
        for s in sources:
            db = tmp_path / "audit" / "partners" / s.partner / "budget.db"
            with BudgetLedger.open(db) as ledger:
                ledger.set_cap("shop", epsilon_cap=budget_cap, delta=1e-5)
    out = tmp_path / "out"
    metrics = run_in_memory(grid, spec, out, audit, policy)
    if pushes is not None:
        pushes.extend(grid.pushes)
    return metrics, out, audit.db


def _events(db: Path) -> list[dict[str, Any]]:
    with Trail.open(db, db.parent / "audit.key", actor="coordinator") as trail:
        return [json.loads(raw) for raw in trail.log.entries()]


@pytest.mark.parametrize("mode", ["masked", "ckks+masked"])
def test_a_masked_segmentation_job_equals_the_plaintext_job(tmp_path: Path, mode: str) -> None:
    plain, _, _ = _run(tmp_path / "plain", _job("segmentation", "plaintext", 3), 3)
    masked, _out, db = _run(tmp_path / "masked", _job("segmentation", mode, 3), 3)
    assert masked["objective"] == plain["objective"] or np.isclose(
        masked["objective"], plain["objective"], rtol=1e-6
    ), (masked["objective"], plain["objective"])
    events = _events(db)
    protections = {e["body"]["protection"] for e in events if e["type"] == "round.aggregated"}
    shares = "secagg-sealed-shares"  # each partner's sealed shares, as its trail logs them
    if mode == "masked":
        assert protections == {shares, "masked-sum"}
    else:  # the decryptor's release is logged too: limb sums of one-time-padded words
        assert protections == {shares, "ckks+masked-sum", "ckks-decrypted"}
    unmasked = {e["body"]["step"]: e["body"] for e in events if e["type"] == "secagg.unmasked"}
    assert unmasked["lloyd-1"]["contributors"] == ["p0", "p1", "p2"]
    assert unmasked["lloyd-1"]["dropped"] == []
    # Every partner found each reply it sent recorded in the log, and cosigned it.
    for name in ("p0", "p1", "p2"):
        pdb = db.parents[1] / "partners" / name / "audit.db"
        with Trail.open(pdb, pdb.parent / "audit.key", actor=name) as trail:
            types = [json.loads(raw)["type"] for raw in trail.log.entries()]
        assert "checkpoint.cosigned" in types and "request.refused" not in types, name
    steps = {e["body"]["step"] for e in events if e["type"] == "round.aggregated"}
    assert {"moments", "lloyd-1", "segment-profiles", "moments.secagg-share"} <= steps


@pytest.mark.parametrize("mode", ["masked", "ckks+masked"])
def test_a_masked_prediction_job_equals_the_plaintext_job(tmp_path: Path, mode: str) -> None:
    plain, _, _ = _run(tmp_path / "plain", _job("purchase_prediction", "plaintext", 3), 3)
    pushes: list[list[str]] = []
    masked, _, _ = _run(tmp_path / "masked", _job("purchase_prediction", mode, 3), 3, pushes=pushes)
    for split in ("validation", "test"):
        for key in ("n", "auc", "accuracy", "log_loss"):
            got, want = masked["final"][split][key], plain["final"][split][key]
            assert abs(got - want) < 1e-4, (split, key, got, want)
    # The exchanges per aggregate step: advertise, share, the step, unmask (no partner
    # dropped, so no survivor set is signed); in ckks+masked the decryption rides in the
    # unmasking's exchange (one push for both). A round's keys are advertised with the
    # previous round's request and shared with its unmasking: from round 2 on, a round
    # costs two exchanges, not four (the job has 2 rounds).
    per_step: dict[str, list[set[str]]] = {}
    for push in pushes:
        in_push: dict[str, set[str]] = {}
        for g in push:
            if ".secagg-" in g or g.endswith(".decrypt"):
                step, stage = g.rsplit(".", 1)
                in_push.setdefault(step, set()).add(stage)
        for step, stages in in_push.items():
            per_step.setdefault(step, []).append(stages)
    assert {"round-1", "round-2"} <= set(per_step), sorted(per_step)
    for step, exchanges in per_step.items():
        assert not any("secagg-sign" in e for e in exchanges), (step, exchanges)
        unmasking = {"decrypt", "secagg-unmask"} if mode == "ckks+masked" else {"secagg-unmask"}
        assert exchanges == [{"secagg-advertise"}, {"secagg-share"}, unmasking], (step, exchanges)
    together = [set(push) for push in pushes]
    for rnd in (2,):
        assert {f"round-{rnd - 1}", f"round-{rnd}.secagg-advertise"} in together, together
        assert any(
            {f"round-{rnd - 1}.secagg-unmask", f"round-{rnd}.secagg-share"} <= push
            for push in together
        ), together
    assert not any("round-3" in g for push in pushes for g in push)  # 2 rounds: none ahead
    # After the last round the final evaluation's keys are set up the same way.
    assert {"round-2", "final-evaluation.secagg-advertise"} in together, together
    pair = {"round-2.secagg-unmask", "final-evaluation.secagg-share"}
    assert any(pair <= push for push in together), together
    # Without the advertisement riding on it, round 1 sets its own keys up first.
    firsts = [push for push in together if any(g.startswith("round-1.") for g in push)]
    assert firsts[:2] == [{"round-1.secagg-advertise"}, {"round-1.secagg-share"}], firsts


@pytest.mark.parametrize("mode", ["masked", "ckks+masked"])
def test_a_partner_that_dies_while_the_next_round_is_set_up_is_a_dropout(
    tmp_path: Path, mode: str
) -> None:
    """p3 sent its round-1 input (and round 2's advertisement with it), then died: it
    answers neither round 1's unmasking nor round 2's key sharing, which share one
    exchange. Round 1's sum still counts its input (its self-mask is rebuilt from the
    others' shares), round 2 runs with the other three (threshold 3 of 4)."""
    # The in-memory partners answer as they are asked: the dead one's silence needs
    # only a short deadline.
    spec = _job("purchase_prediction", mode, 4).model_copy(update={"round_timeout_s": 3.0})
    metrics, out, db = _run(tmp_path, spec, 4, dies=("p3", "round-2.secagg-share"))
    assert [d["partner"] for d in metrics["dropouts"]] == ["p3"]
    assert metrics["dropouts"][0]["step"] in ("round-1.secagg-unmask", "round-2.secagg-share")
    unmasked = {e["body"]["step"]: e["body"] for e in _events(db) if e["type"] == "secagg.unmasked"}
    assert unmasked["round-1"]["contributors"] == ["p0", "p1", "p2", "p3"]
    assert unmasked["round-2"]["contributors"] == ["p0", "p1", "p2"]
    assert json.loads((out / "result.json").read_text())["status"] == "completed"


def _refusing(monkeypatch: pytest.MonkeyPatch, refuse: set[tuple[str, str]]) -> list[str]:
    """Partners refuse exactly the (partner, step) requests in ``refuse`` (a partner's
    real refusal, with no data); returns the list of refusals made."""
    from fedcollab.client import client_app
    from fedcollab.client.partner_data import partner_config
    from fedcollab.common.errors import ProtocolError
    from fedcollab.common.serde import refusal

    serve = client_app._answer_one
    made: list[str] = []

    def answer_one(action: str, step: str, content: Any, context: Any, overrides: Any) -> Any:
        me = partner_config(context.node_config, overrides)["partner"]
        if (me, step) in refuse:
            made.append(f"{me}:{step}")
            return refusal(ProtocolError("refused"), reason="this partner refuses it")
        return serve(action, step, content, context, overrides)

    monkeypatch.setattr(client_app, "_answer_one", answer_one)
    return made


def test_a_partner_that_refuses_only_the_next_round_s_keys_stays_in_this_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next round's advertisement rides with this round's request. p0 answers round 1
    and refuses only round 2's advertisement: its round-1 input still counts (no dropout
    there, so no survivor set is signed and no masking-key share of anyone is revealed),
    and it is dropped at round 2's set-up. (A red team found it dropped before round 1's
    unmasking: its input discarded, its key shares revealed, the step signed.)"""
    refused = _refusing(monkeypatch, {("p0", "round-2.secagg-advertise")})
    metrics, out, db = _run(tmp_path, _job("purchase_prediction", "masked", 5), 5)
    assert refused == ["p0:round-2.secagg-advertise"]
    assert [(d["partner"], d["step"]) for d in metrics["dropouts"]] == [
        ("p0", "round-2.secagg-advertise")
    ]
    unmasked = {e["body"]["step"]: e["body"] for e in _events(db) if e["type"] == "secagg.unmasked"}
    assert unmasked["round-1"]["contributors"] == ["p0", "p1", "p2", "p3", "p4"]
    assert unmasked["round-1"]["dropped"] == [] and unmasked["round-1"]["consistency"] == (
        "no-dropout"
    )
    assert unmasked["round-2"]["contributors"] == ["p1", "p2", "p3", "p4"]
    assert json.loads((out / "result.json").read_text())["status"] == "completed"


@pytest.mark.parametrize(
    ("refuse", "dies", "round_1"),
    [
        # A survivor that refused the next advertisement still signs and unmasks here.
        ({("p0", "round-2.secagg-advertise")}, ("p4", "round-1"), ["p0", "p1", "p2", "p3"]),
        # Two refuse it: round 1 is whole; round 2 cannot start with 3 of t = 4.
        ({("p0", "round-2.secagg-advertise"), ("p1", "round-2.secagg-advertise")}, None,
         ["p0", "p1", "p2", "p3", "p4"]),
        # Two refuse round 2's key sharing: never a second advertisement of round 2.
        ({("p0", "round-2.secagg-share"), ("p1", "round-2.secagg-share")}, None,
         ["p0", "p1", "p2", "p3", "p4"]),
    ],
)  # fmt: skip
def test_a_failed_set_up_of_the_next_round_fails_there_and_only_there(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    refuse: set[tuple[str, str]],
    dies: tuple[str, str] | None,
    round_1: list[str],
) -> None:
    """Round 1 is unmasked over everyone who sent its input, whatever they do with round
    2's keys; then round 2's set-up has too few partners (5 in its cohort, t = 4) and the
    job stops there with that reason, without asking anyone a stage twice. (A second
    red team: p0 was asked to sign but its signature was discarded, two refusers were not
    asked to unmask so round 1 failed, and round 2 was advertised again, which every
    partner refused.)"""
    from fedcollab.common.errors import NotEnoughPartnersError

    _refusing(monkeypatch, refuse)
    spec = _job("purchase_prediction", "masked", 5).model_copy(update={"round_timeout_s": 3.0})
    with pytest.raises(NotEnoughPartnersError, match="keys of step round-2 could not be set up"):
        _run(tmp_path, spec, 5, dies=dies)
    events = _events(tmp_path / "audit" / "coordinator" / "audit.db")
    unmasked = {e["body"]["step"]: e["body"] for e in events if e["type"] == "secagg.unmasked"}
    assert unmasked["round-1"]["contributors"] == round_1
    reasons = [e["body"]["reason"] for e in events if e["type"] == "partner.dropped"]
    assert not any("already" in r for r in reasons), reasons


def test_a_next_round_set_up_that_breaks_the_quorum_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """p0 refuses round 2's key sharing (which rides with round 1's unmasking) and is
    dropped: 2 partners left, below min_partners = 3. Round 2 stops with that reason
    (before: "too few partners answered its advertisement or shared their keys")."""
    from fedcollab.common.errors import NotEnoughPartnersError

    _refusing(monkeypatch, {("p0", "round-2.secagg-share")})
    spec = _job("purchase_prediction", "masked", 3).model_copy(update={"min_partners": 3})
    with pytest.raises(NotEnoughPartnersError) as caught:
        _run(tmp_path, spec, 3)
    assert caught.value.message == (
        "the keys of step round-2 could not be set up: 2 partners left after "
        "round-2.secagg-share, below min_partners=3 (dropped: ['p0'])"
    )
    assert "or lower min_partners" in caught.value.hint  # the quorum's own hint
    # The failed job's log is cosigned by the partners still active (its job.failed
    # record included), and they erase the run's keys at it, as after a completed job.
    events = _events(tmp_path / "audit" / "coordinator" / "audit.db")
    kinds = [e["type"] for e in events]
    assert kinds.index("checkpoint.cosignatures") > kinds.index("job.failed")
    cosigned = next(e["body"] for e in events if e["type"] == "checkpoint.cosignatures")
    assert cosigned["cosigned_by"] == ["p1", "p2"]
    # p0, dropped, is not asked: its keys go at the node's key TTL (client/key_sweep.py).
    left = sorted(p.relative_to(tmp_path).parts[2] for p in tmp_path.rglob("secagg") if p.is_dir())
    assert left == ["p0"], f"keys of the failed run still on disk: {left}"


def test_a_partner_that_signs_another_request_leaves_the_step_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """p0's statement names a request it was not sent (a malicious partner, or a broken
    one). Every survivor checks all survivors' statements before revealing a share, so
    forwarding it would make each of them refuse the step (red team of 2026-12-07: one
    partner stopped every masked step of the job). The coordinator refuses that reply
    itself: p0 is dropped at round 1 and the job completes with the other four."""
    from fedcollab.client import actions

    sign = actions.sign_contribution

    def lying(signer: Any, **fields: Any) -> Any:
        if fields["partner"] == "p0":
            fields["request"] = "sha256:" + "00" * 32
        return sign(signer, **fields)

    monkeypatch.setattr(actions, "sign_contribution", lying)
    _, out, _ = _run(tmp_path, _job("purchase_prediction", "masked", 5), 5)
    assert json.loads((out / "result.json").read_text())["status"] == "completed"
    events = _events(tmp_path / "audit" / "coordinator" / "audit.db")
    dropped = [e["body"] for e in events if e["type"] == "partner.dropped"]
    assert [d["partner"] for d in dropped] == ["p0"]
    assert "'p0' answered another request" in dropped[0]["reason"]
    unmasked = [e["body"] for e in events if e["type"] == "secagg.unmasked"]
    assert unmasked and all("p0" not in u["contributors"] for u in unmasked)


def test_too_few_survivors_for_the_threshold_blame_no_survivor(tmp_path: Path) -> None:
    """p0 dies at round 1's request, which carried round 2's advertisement, so round 2's
    cohort still counts it (5 partners, t = 4; one dropout fewer tolerated there than with
    a cohort of 4). p1 dies at round 2's request: 3 survivors, below t. The coordinator
    stops the step itself instead of asking the survivors to sign a set each of them
    refuses, and drops none of them for it. (A red team saw the three honest survivors
    dropped as "refused".)"""
    from fedcollab.common.errors import NotEnoughPartnersError

    spec = _job("purchase_prediction", "masked", 5).model_copy(update={"round_timeout_s": 3.0})
    with pytest.raises(NotEnoughPartnersError, match="3 survivors, the session's threshold is 4"):
        _run(tmp_path, spec, 5, dies=("p0", "round-1"), dies_too=("p1", "round-2"))
    events = _events(tmp_path / "audit" / "coordinator" / "audit.db")
    dropped = [e["body"] for e in events if e["type"] == "partner.dropped"]
    assert [(d["partner"], d["step"]) for d in dropped] == [("p0", "round-1"), ("p1", "round-2")]
    assert not any(e["type"] == "aggregate.refused" and "sign" in json.dumps(e) for e in events)


def _dp_client_job(aggregation: str, n: int, selection: str = "last_round") -> JobSpec:
    return JobSpec.model_validate(
        {"name": "dp-client", "task": "purchase_prediction", "purpose": "purchase-prediction",
         "schema": SCHEMA, "participants": [f"p{i}" for i in range(n)], "min_partners": n,
         "rounds": 2, "training": {"learning_rate": 0.05},
         "evaluation": {"dp_model_selection": selection},
         "privacy": {"encryption": "ckks" if aggregation.startswith("ckks") else "none",
                     "aggregation": aggregation, "dp": "client", "target_epsilon": 50.0,
                     "value_bounds": {"noise": [-5.0, 5.0], "signal": [-5.0, 5.0]}}},
        strict=False,
    )  # fmt: skip


@pytest.mark.parametrize(("mode", "selection"), [("masked", "last_round"),
                         ("ckks+masked", "last_round"), ("masked", "validation")])  # fmt: skip
def test_a_client_level_dp_job_runs_with_masks(tmp_path: Path, mode: str, selection: str) -> None:
    """DP-FedAvg (dp = "client") under masks. Every partner used to refuse the first
    masked step: its DP plan had no mechanism for ``query.secagg`` and failed closed.
    The stages release no data, so they are not charged; each round is charged once."""
    from fedcollab.privacy.budget_ledger import BudgetLedger

    spec = _dp_client_job(mode, 3, selection)
    assert spec.privacy.aggregation == mode
    sources = [make_partner(tmp_path / "data", f"p{i}", seed=i, n=300) for i in range(3)]
    grid, audit, policy = in_memory_federation(spec, sources, tmp_path)
    ledgers = [tmp_path / "audit" / "partners" / s.partner / "budget.db" for s in sources]
    for path in ledgers:
        with BudgetLedger.open(path) as ledger:
            ledger.set_cap("shop", epsilon_cap=1000.0, delta=1e-5)
    metrics = run_in_memory(grid, spec, tmp_path / "out", audit, policy)
    assert metrics["rounds_run"] == 2 and 0 < metrics["epsilon"] <= 50.0
    assert metrics["final"]["test"]["n"] > 0
    # The noise-over-signal figure the progress display warns on (cli.progress).
    plan = resolve(spec)
    assert plan is not None
    state = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    d = sum(v.numel() for v in state.values())  # the released model's parameters
    expected = client_dp.noise_to_signal(
        noise_multiplier=plan.noise_multiplier, n_parameters=d, contributors=3,
        min_partners=3, rounds=2,
    )  # fmt: skip
    assert metrics["noise_to_signal"] == pytest.approx(expected)
    signal = [e for e in read_progress(tmp_path / "out")[0] if e["event"] == "dp_signal"]
    assert [(e["n_parameters"], e["contributors"], e["rounds"]) for e in signal] == [(d, 3, 2)]
    events = _events(audit.db)
    unmasked = {e["body"]["step"]: e["body"] for e in events if e["type"] == "secagg.unmasked"}
    for step in ("moments", "round-1", "round-2", "final-evaluation"):
        assert unmasked[step]["contributors"] == ["p0", "p1", "p2"], step
    for path in ledgers:
        with BudgetLedger.open(path) as ledger:
            steps = sorted(c.step for c in ledger.charges("shop"))
        # moments, two rounds, the final evaluation; never a secagg stage
        planned = {"final-evaluation", "moments", "round-1", "round-2"}
        if selection == "validation":  # each round's noised validation histogram, charged,
            # and the best model's evaluation if it is not the last
            planned |= {"round-1/validation", "round-2/validation"}
            if metrics["best_round"] != 2:
                planned.add("final-evaluation-best")
        assert steps == sorted(planned), steps
        pdb = path.with_name("audit.db")
        with Trail.open(pdb, pdb.parent / "audit.key", actor=path.parent.name) as trail:
            types = [json.loads(raw)["type"] for raw in trail.log.entries()]
        assert "request.refused" not in types and "checkpoint.cosigned" in types


def test_a_dp_job_decodes_its_noisy_moments_on_the_columns_scale(tmp_path: Path) -> None:
    """A DP job's moments are noisier than the data's own spread here (target epsilon 1,
    900 rows): the coordinator decodes them with the plan's public noise std, so every
    std stays between the noise floor and the bounds' half-width and every mean inside
    the bounds. The exact decoder gave std 1 whenever noise pushed a variance below 0
    (the privacy study's released model then read values up to 100 divided by 1)."""
    import math

    from fedcollab.privacy.dp_plan import resolve
    from fedcollab.protocols import dp_statistics, preprocessing

    bounds = {"noise": [-5.0, 5.0], "signal": [-5.0, 5.0]}
    spec = JobSpec.model_validate(
        {"name": "dp-sample", "task": "purchase_prediction", "purpose": "purchase-prediction",
         "schema": SCHEMA, "participants": ["p0", "p1", "p2"], "min_partners": 3,
         "rounds": 1, "training": {"learning_rate": 0.05},
         "privacy": {"dp": "sample", "target_epsilon": 1.0, "value_bounds": bounds}},
        strict=False,
    )  # fmt: skip
    _metrics, out, _db = _run(tmp_path, spec, 3, budget_cap=10.0)
    pre = preprocessing.Preprocessor.from_dict(json.loads((out / "preprocessor.json").read_text()))
    plan = resolve(spec)
    assert plan is not None
    layout = preprocessing.MomentsLayout(
        numeric_names=pre.numeric_names,
        categorical_vocab=pre.categorical_vocab,
        boolean_names=pre.boolean_names,
    )
    noise_std = (
        plan.statistics_noise_multiplier * dp_statistics.moments_sensitivity(layout) * 3**0.5
    )
    # the floor at m = 0 and the most rows (all 900)
    floor_t = dp_statistics.NOISE_FLOOR_SE * noise_std / 900
    for name, mean, std in zip(pre.numeric_names, pre.means, pre.stds, strict=True):
        assert -5.0 <= mean <= 5.0, name
        assert 5.0 * math.sqrt(floor_t) * 0.7 <= std <= 5.0, (name, std)


def _cross_check_logs(tmp_path: Path, n: int) -> Any:
    """Every party's real log exported, verified under its pinned key, cross-checked."""
    from fedcollab.common.keys import Signer
    from fedcollab.compliance.bundle import export_bundle, verify_bundle
    from fedcollab.compliance.crossref import cross_check
    from fedcollab.compliance.log import AuditLog
    from fedcollab.compliance.trail import load_verifier_key
    from fedcollab.compliance.trust import TrustPolicy

    audit = tmp_path / "audit"
    folders = {"coordinator": audit / "coordinator"}
    folders.update({f"p{i}": audit / "partners" / f"p{i}" for i in range(n)})
    keys = {name: load_verifier_key(d / "audit.pub")[1] for name, d in folders.items()}
    for name, d in folders.items():
        with AuditLog.open(d / "audit.db", origin=name, signer=Signer.load(d / "audit.key")) as log:
            shipped = {p: k for p, k in keys.items() if p != "coordinator"}
            export_bundle(
                log, tmp_path / "b" / name, public_keys=shipped if name == "coordinator" else {}
            )
    policy = TrustPolicy.from_keys(keys)
    verified = {name: verify_bundle(tmp_path / "b" / name, policy) for name in folders}
    return cross_check(verified.pop("coordinator"), verified)


@pytest.mark.parametrize("min_partners", [2, 4], ids=["job-completes", "job-fails"])
def test_a_partner_lost_with_a_batched_reply_leaves_logs_that_agree(
    tmp_path: Path, min_partners: int
) -> None:
    """Red team of the crossref fix (2026-12-06): with keys ahead, round 1's unmasking and
    round 2's key shares travel in one message; p3 answers both (its log holds the
    round-2 shares as sent) and its reply is lost. The coordinator drops p3 once, at
    round 1's step, and either completes (2 of 4 needed) or fails its quorum mid-exchange
    before it records round 2's shares of the others (4 of 4 needed). Neither is a
    dishonest log: crossref lists those sends as in flight, with no finding."""
    spec = _job("purchase_prediction", "masked", 4).model_copy(
        update={"round_timeout_s": 3.0, "min_partners": min_partners}
    )
    if min_partners == 2:
        _run(tmp_path, spec, 4, dies=("p3", "round-2.secagg-share"))
    else:
        with pytest.raises(Exception, match="partners"):
            _run(tmp_path, spec, 4, dies=("p3", "round-2.secagg-share"))
    result = _cross_check_logs(tmp_path, 4)
    assert result.findings == (), result.findings
    assert any("'p3'" in c and "round-2.secagg-share" in c for c in result.cut_short)
