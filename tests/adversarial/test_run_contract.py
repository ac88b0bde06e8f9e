"""A malicious coordinator against the partner's run contract (issue 13, points 2-5).

Each test is one attack from the issue, sent through the real partner code path
(``client.client_app._serve`` with real keys, grants, ledgers and trails). On
the code before the run contract every one of these requests was answered; the
comments say what the answers gave away and what the attacker still learns now.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from fedcollab.client.budget import ledger_path
from fedcollab.coordinator.encryption import session_from_keygen
from fedcollab.privacy.budget_ledger import BudgetLedger
from fedcollab.protocols import kmeans, models
from tests.support.adversarial import (
    BOUNDS,
    CHANNELS,
    ENCRYPTED_REPLIES,
    Attacker,
    encrypted_job,
    encrypted_moments,
    job,
    layout_meta,
    preprocessor_dict,
)

warnings.filterwarnings("ignore", message=".*does not fit in a single ciphertext.*")


def _moments(atk: Attacker, partner: str, **kw: Any) -> Any:
    return atk.send(
        partner, "query.moments", step="moments", meta=layout_meta(channel=CHANNELS), **kw
    )


def test_split_change_within_a_run_is_refused(tmp_path: Path) -> None:
    """Attack: answer moments, then ask again with another split seed, so that one row
    moves out of the training rows; the difference of the two replies is that row
    (5 of 5 rows, label included, in 90 requests on the old code)."""
    atk = Attacker.against(tmp_path, job())
    assert atk.handshake("a").refused is None
    first = _moments(atk, "a")
    assert first.refused is None and first.vector is not None
    moved = job(evaluation={"split_seed": 7})
    again = atk.send(
        "a", "query.moments", step="moments", meta=layout_meta(channel=CHANNELS), spec=moved
    )
    assert again.refused == "JobSpecError" and again.vector is None  # not the node's split
    # Any other change of the spec within the run is refused as well (the run pinned it).
    other = atk.send(
        "a", "query.moments", step="moments", meta=layout_meta(channel=CHANNELS),
        spec=job(rounds=4),
    )  # fmt: skip
    assert other.refused == "ProtocolError" and other.vector is None
    assert [r["action"] for r in atk.refusals("a")] == ["query.moments"] * 2
    # What it still learns: the one planned moments reply (sums over the training rows).
    assert first.vector[0] > 100  # a count over many rows, not a row


def test_another_split_in_a_new_run_is_refused_at_the_handshake(tmp_path: Path) -> None:
    """Attack: start a fresh run whose spec splits the rows differently and difference
    its moments with the first run's: the split is the partner's constant."""
    atk = Attacker.against(tmp_path, job())
    assert atk.handshake("a").refused is None
    moved = job(evaluation={"split_seed": 7})
    reply = atk.handshake("a", spec=moved, run="run-attack-2")
    assert reply.refused == "JobSpecError"
    refused = atk.send(
        "a", "query.moments", step="moments", meta=layout_meta(channel=CHANNELS),
        spec=moved, run="run-attack-2",
    )  # fmt: skip
    assert refused.refused is not None and refused.vector is None


def test_a_step_is_answered_once(tmp_path: Path) -> None:
    """Attack: ask the same step again (with other parameters) and subtract."""
    atk = Attacker.against(tmp_path, job())
    atk.handshake("a")
    assert _moments(atk, "a").refused is None
    second = _moments(atk, "a")
    assert second.refused == "ProtocolError" and second.vector is None


def test_requests_of_a_run_never_accepted_are_refused(tmp_path: Path) -> None:
    atk = Attacker.against(tmp_path, job())
    reply = _moments(atk, "a")  # no handshake for this run
    assert reply.refused == "ProtocolError" and reply.vector is None


def test_rare_category_values_are_not_counted_when_named(tmp_path: Path) -> None:
    """Attack: list a value the partner holds 3 times ("kiosk") in the moments layout and
    read its count; the partner withheld it from its handshake vocabulary."""
    atk = Attacker.against(tmp_path, job())
    shake = atk.handshake("a")
    assert "kiosk" not in shake.meta["vocab"]["channel"]
    reply = atk.send(
        "a", "query.moments", step="moments", meta=layout_meta(channel=["app", "kiosk", "web"])
    )
    assert reply.vector is not None
    counts = reply.vector[6:9]  # after spend, visits: [count, sum, sum of squares] each
    assert counts[1] == 0 and counts[0] > 10 and counts[2] > 10


def test_a_layout_of_other_columns_is_refused(tmp_path: Path) -> None:
    atk = Attacker.against(tmp_path, job())
    atk.handshake("a")
    meta = layout_meta(channel=CHANNELS)
    meta["layout"]["numeric"] = ["spend"]
    reply = atk.send("a", "query.moments", step="moments", meta=meta)
    assert reply.refused == "ProtocolError"


def test_actions_outside_the_task_are_refused(tmp_path: Path) -> None:
    """Attack: a partner that granted only purchase-prediction is asked for segment
    profiles (raw per-segment sums) and k-means steps."""
    atk = Attacker.against(tmp_path, job())
    atk.handshake("a")
    meta = {"preprocessor": preprocessor_dict(tmp_path), "centroids": [[0.0] * 5, [1.0] * 5]}
    for action, step in (
        ("query.segment_profile", "segment-profiles"),
        ("query.kmeans_step", "lloyd-1"),
        ("query.kmeans_seed", "kmeans-seed"),
    ):
        reply = atk.send("a", action, step=step, meta=meta)
        assert reply.refused == "ProtocolError", action
        assert reply.vector is None


def test_steps_outside_the_plan_are_refused(tmp_path: Path) -> None:
    atk = Attacker.against(tmp_path, job(rounds=3))
    atk.handshake("a")
    model = models.flatten(
        models.get_weights(models.build_model("logreg", n_features=5, hidden_sizes=(), seed=0))
    )
    pre = preprocessor_dict(tmp_path)
    for step, rnd in (("round-4", 4), ("probe", 1), ("round-1", 2)):
        reply = atk.send(
            "a", "train.fedavg", step=step, meta={"round": rnd, "preprocessor": pre},
            vector=model,
        )  # fmt: skip
        assert reply.refused == "ProtocolError", step
    ok = atk.send(
        "a", "train.fedavg", step="round-1", meta={"round": 1, "preprocessor": pre}, vector=model
    )
    assert ok.refused is None and ok.vector is not None  # the planned round is answered


def test_centroid_differencing_is_bounded_by_the_plan(tmp_path: Path) -> None:
    """Attack: chosen centroids, step after step, isolate single rows by differencing
    (4 of 4 rows in 53 requests on the old code). Now each planned Lloyd step is
    answered once, the preprocessor cannot change within the run, and steps outside
    the plan are refused: the attacker gets at most seed_steps + lloyd_iterations
    chosen-centroid replies per run. Without DP those few replies still leak (each is
    a sum over >= 5 rows per cluster, and two of them can differ by few rows): only a
    DP job bounds what they reveal (docs/privacy.md)."""
    spec = job(
        name="seg",
        task="segmentation",
        purpose="user-segmentation",
        segmentation={"k": 2, "lloyd_iterations": 3, "seeding": "summed", "seed_steps": 1,
                      "seed_candidates": 4},
    )  # fmt: skip
    atk = Attacker.against(tmp_path, spec)
    atk.handshake("a")
    pre = preprocessor_dict(tmp_path)
    d = 5  # spend, visits, channel one-hot (2), member
    rng = np.random.default_rng(0)
    answered = 0
    steps = ["kmeans-seed-1", "lloyd-1", "lloyd-2", "lloyd-3", "lloyd-4", "lloyd-1", "x-1"]
    for step in steps * 2:
        centroids = rng.normal(0, 1, (2, d)).tolist()
        reply = atk.send(
            "a", "query.kmeans_step", step=step,
            meta={"preprocessor": pre, "centroids": centroids},
        )  # fmt: skip
        answered += reply.vector is not None
    assert answered == 1 + 3  # seed_steps + lloyd_iterations, whatever was asked
    # Another preprocessor (e.g. mean 0 / std 1 on other moments) within the run: refused.
    other = atk.send(
        "a", "query.segment_profile", step="segment-profiles",
        meta={"preprocessor": preprocessor_dict(tmp_path, shift=1e4), "centroids": centroids},
    )  # fmt: skip
    assert other.refused == "ProtocolError"
    assert kmeans.cluster_vector_length(k=2, n_features=d) > 0


def test_client_dp_aggregate_of_fewer_than_min_partners_is_not_decrypted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack: in a dp = "client" job with min_partners = 3, ask the key holder to decrypt
    a 2-partner aggregate (each partner adds only 1/3 of the noise variance)."""
    spec = job(
        min_partners=3,
        privacy={"encryption": "ckks", "aggregation": "ckks", "dp": "client",
                 "target_epsilon": 50.0, "key_dealer": "a", "value_bounds": BOUNDS},
    )  # fmt: skip
    atk = Attacker.against(tmp_path, spec)
    for name, cfg in atk.configs.items():
        with BudgetLedger.open(ledger_path(cfg)) as ledger:
            ledger.set_cap("shop", epsilon_cap=1000.0, delta=1e-5)
        assert atk.handshake(name).refused is None, name
    offers = {name: atk.handshake(name).meta["he_offer"] for name in atk.configs}
    keygen = atk.send("a", "query.he_keygen", step="he-keygen", meta={"offers": offers})
    assert keygen.refused is None
    session = session_from_keygen(keygen.meta, dealer="a")
    total, bindings = encrypted_moments(atk, session, {"a": CHANNELS, "b": CHANNELS})
    he = {**session.request_meta("a", params="wide"), "step": "moments",
          "contributors": ["a", "b"], "length": total.length}  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="fedcollab.client"):
        reply = atk.send(
            "a", "query.he_decrypt", step="moments.decrypt",
            meta={"he": he, "bindings": bindings}, ciphertext=total.serialize(),
            parts=ENCRYPTED_REPLIES,
        )  # fmt: skip
    assert reply.refused == "CiphertextError"
    assert reply.vector is None
    assert "at least 3 needed" in caplog.text  # the client-DP floor, not another check


def test_an_aggregate_of_answers_to_different_requests_is_not_decrypted(
    tmp_path: Path,
) -> None:
    """Attack: send the two partners different requests in one step (here: the category
    list in another order, so that b's counts land in other slots) and have the mixed
    sum decrypted. Each reply carries a statement signed by its partner over the run,
    step and request digest; the decryptor compares them with the request it answered."""
    atk, session = encrypted_job(tmp_path)
    total, bindings = encrypted_moments(atk, session, {"a": CHANNELS, "b": CHANNELS[::-1]})
    he = {**session.request_meta("a", params="wide"), "step": "moments",
          "contributors": ["a", "b"], "length": total.length}  # fmt: skip
    reply = atk.send(
        "a", "query.he_decrypt", step="moments.decrypt",
        meta={"he": he, "bindings": bindings}, ciphertext=total.serialize(),
        parts=ENCRYPTED_REPLIES,
    )  # fmt: skip
    assert reply.refused == "CiphertextError" and reply.vector is None
    assert atk.refusals("a")[-1]["action"] == "query.he_decrypt"


@pytest.mark.parametrize("forgery", ["none", "unsigned", "other-step", "missing"])
def test_contribution_statements_must_verify(tmp_path: Path, forgery: str) -> None:
    """Statements the partners did not sign (or of another step, or fewer than the
    claimed contributors) are refused; the same request from both decrypts."""
    atk, session = encrypted_job(tmp_path)
    total, bindings = encrypted_moments(atk, session, {"a": CHANNELS, "b": CHANNELS})
    if forgery == "unsigned":
        bindings[1] = {**bindings[1], "statement": {**bindings[1]["statement"], "reply": "x"}}
    elif forgery == "other-step":
        bindings[1] = {**bindings[1], "statement": {**bindings[1]["statement"], "step": "r"}}
    elif forgery == "missing":
        bindings = bindings[:1]
    he = {**session.request_meta("a", params="wide"), "step": "moments",
          "contributors": ["a", "b"], "length": total.length}  # fmt: skip
    reply = atk.send(
        "a", "query.he_decrypt", step="moments.decrypt",
        meta={"he": he, "bindings": bindings}, ciphertext=total.serialize(),
        parts=ENCRYPTED_REPLIES,
    )  # fmt: skip
    if forgery == "none":
        assert reply.refused is None and reply.vector is not None
    else:
        assert reply.refused == "CiphertextError" and reply.vector is None


def test_a_dp_only_node_refuses_jobs_without_dp(tmp_path: Path) -> None:
    """A dataset with a budget cap was served by dp = "none" jobs with nothing charged;
    a partner that wants every release bounded starts its node with --dp-only."""
    atk = Attacker.against(tmp_path, job(), **{"dp-only": "true"})
    reply = atk.handshake("a")
    assert reply.refused == "PolicyRefusal"
    assert _moments(atk, "a").vector is None


@pytest.mark.parametrize("run", ["", "x" * 200])
def test_requests_without_a_valid_run_are_refused(tmp_path: Path, run: str) -> None:
    atk = Attacker.against(tmp_path, job())
    assert atk.handshake("a", run=run).refused == "ProtocolError"


@pytest.mark.parametrize(
    "fields",
    [
        {"model": {"kind": "mlp", "hidden_sizes": [2_000_000_000, 2_000_000_000]}},
        {"model": {"kind": "mlp", "hidden_sizes": [4096, 4096, 4096]}},
        {"round_timeout_s": float("inf")},
        {"startup_timeout_s": 1e12},
        {"segmentation": {"tolerance": float("nan")}},
    ],
)
def test_unbounded_job_specs_are_refused(fields: dict[str, Any]) -> None:
    """A spec that would make a partner allocate billions of weights or wait forever is
    refused where it is parsed, at the coordinator and at every partner alike."""
    with pytest.raises(ValidationError):
        job(**fields)
