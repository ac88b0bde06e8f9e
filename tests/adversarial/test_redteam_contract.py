"""Red team against the partner's run contract (issue 13), through the real partner path.

Every test drives ``client.client_app._serve`` with real keys, grants, ledgers and
trails (:class:`tests.support.adversarial.Attacker`). Attacks that still work are
marked ``xfail(strict=True)`` with the leak in the reason (five found by the red team are
fixed and run as ordinary tests): they document the gap, keep
CI green, and turn red (XPASS) once the fix lands, so the marker must then go.
Attacks the contract already refuses are plain tests.

Where a test needs 24 hours to pass, it ages the node's pinned runs in its real
``contract.db`` (the wall clock moving on), rather than waiting.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.common.config import parse_config_args

from fedcollab.client.budget import ledger_path
from fedcollab.client.he_keys import NodeKeyStore
from fedcollab.client.partner_data import load_partner, source_from_config
from fedcollab.client.run_contract import (
    KEY_TTL_S,
    RequestPlan,
    RunContract,
    contract_path,
    node_split,
)
from fedcollab.common.errors import ProtocolError
from fedcollab.compliance.trail import digest_bytes
from fedcollab.coordinator.encryption import session_from_keygen
from fedcollab.privacy.budget_ledger import BudgetLedger
from fedcollab.privacy.ckks import PARAMETER_SETS, EncryptedSum
from fedcollab.protocols import models, preprocessing
from tests.support.adversarial import (
    BOUNDS,
    Attacker,
    encrypted_job,
    job,
    layout_meta,
    preprocessor_dict,
)

CHANNELS = ["app", "web"]


def _segmentation() -> Any:
    return job(
        name="seg",
        task="segmentation",
        purpose="user-segmentation",
        segmentation={"k": 2, "lloyd_iterations": 3, "seeding": "summed", "seed_steps": 1,
                      "seed_candidates": 4},
    )  # fmt: skip


def _encrypted() -> Any:
    return job(privacy={"encryption": "ckks", "aggregation": "ckks", "key_dealer": "a"})


def _state(atk: Attacker, partner: str) -> Path:
    return contract_path(atk.configs[partner]).parent


def _age_runs(atk: Attacker, partner: str) -> None:
    """Let more than KEY_TTL_S pass for every run the node pinned so far."""
    db = sqlite3.connect(contract_path(atk.configs[partner]))
    try:
        db.execute("UPDATE runs SET pinned_at = pinned_at - ?", (2 * KEY_TTL_S,))
        db.commit()
    finally:
        db.close()


# --------------------------------------------------------------------------- attacks that work


def test_a_dotted_run_name_does_not_let_the_coordinator_wipe_the_node_state(
    tmp_path: Path,
) -> None:
    """Attack: pin a run named ``..`` at the handshake of an encrypted job; once its keys
    expire, the next request of any run erases ``<state>/he/..``, i.e. the node's state
    directory: its tamper-evident trail is gone, and with it the budget ledger (DP budget
    reset) and the answered-steps table (every step answerable again)."""
    atk = Attacker.against(tmp_path, _encrypted(), names=("a", "b"))
    assert atk.handshake("a").refused is None  # an honest encrypted run: <state>/he exists
    atk.handshake("a", run="..")
    _age_runs(atk, "a")
    atk.handshake("a", run="run-attack-2")  # any later request runs the TTL erasure
    state = _state(atk, "a")
    assert (state / "audit.db").exists() and (state / "grant.json").exists()
    assert atk.trail("a")  # the trail survived


def test_dp_only_set_through_flower_node_config_refuses_jobs_without_dp(
    tmp_path: Path,
) -> None:
    """Attack: none needed; the partner set the policy the way Flower's node config takes
    it (there is no `fedcollab node start --dp-only` option), and a malicious coordinator
    submits a dp = "none" job: its moments are answered exactly, nothing charged."""
    atk = Attacker.against(tmp_path, job())
    node = {**atk.configs["a"], **parse_config_args(["dp-only=true"])}
    assert atk.handshake("a", node_config=node).refused == "PolicyRefusal"
    reply = atk.send(
        "a", "query.moments", step="moments", meta=layout_meta(channel=CHANNELS),
        node_config=node,
    )  # fmt: skip
    assert reply.vector is None


def test_a_misspelt_dp_only_setting_is_refused_not_silently_ignored(tmp_path: Path) -> None:
    """Attack: none needed; the partner wrote ``dp_only`` for ``dp-only`` in its node
    config. Ignored, the node would serve a coordinator's dp = "none" job exactly; the
    strict settings (client.node_settings) refuse every request until it is fixed."""
    atk = Attacker.against(tmp_path, job())
    node = {**atk.configs["a"], "dp_only": "true"}
    assert atk.handshake("a", node_config=node).refused == "SchemaError"
    reply = atk.send(
        "a", "query.moments", step="moments", meta=layout_meta(channel=CHANNELS),
        node_config=node,
    )  # fmt: skip
    assert reply.refused == "SchemaError" and reply.vector is None
    assert atk.trail("a") == []  # refused before its trail or data were opened


def test_the_coordinator_s_run_config_cannot_supply_a_node_s_settings(tmp_path: Path) -> None:
    """Attack: the coordinator writes the run config; it lists ``sim-partners`` that
    point the node at a file of its choice (with no grant, no dp-only), and the node
    config Flower's simulation engine would give (``partition-id``). A deployed ClientApp
    takes simulation entries only from its own process (client.partner_data)."""
    atk = Attacker.against(tmp_path, job())
    own = atk.configs["a"]
    chosen = {k: own[k] for k in ("partner", "data", "schema")}
    run_config = {"sim-partners": json.dumps([chosen])}
    for node in ({"partition-id": 0}, {"partition-id": 0, "num-partitions": 1}, {}):
        reply = atk.handshake("a", node_config=node, run_config=run_config)
        assert reply.refused == "SchemaError", node
    # The node's own settings still win over whatever the run config lists.
    assert atk.handshake("a", run_config=run_config).refused is None


@pytest.mark.parametrize("spelling", ["kiosk", "\x00withheld", "kiosk\x00"])
def test_rare_category_values_are_not_encoded_when_the_preprocessor_names_them(
    tmp_path: Path, spelling: str
) -> None:
    """Attack: a pinned-but-malicious preprocessor lists the rare value "kiosk"; centroids
    that differ only in the kiosk coordinate put exactly the kiosk rows in cluster 0.
    Second red-team pass: the partner replaced rare values by the marker "\x00withheld"
    before encoding, so a vocabulary naming the marker marked exactly those rows (the 8
    kiosk rows' sums released before the fix). The partner now zeroes every column whose
    entry it does not hold often enough, compared as exact strings: numpy drops a
    trailing NUL, so "kiosk\x00" would otherwise match the raw "kiosk" values."""
    atk = Attacker.against(tmp_path, _segmentation())
    assert atk.handshake("a").refused is None
    pre = preprocessor_dict(tmp_path)
    for column in pre["categorical"]:
        if column["name"] == "channel":
            column["vocabulary"] = ["app", spelling, "web"]
    # features: spend, visits, channel=app, channel=kiosk, channel=web, member
    centroids = [[0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0]]
    reply = atk.send(
        "a", "query.kmeans_step", step="lloyd-1",
        meta={"preprocessor": pre, "centroids": centroids},
    )  # fmt: skip
    assert reply.refused is not None or reply.vector is not None
    if reply.vector is not None:
        k, d = 2, 6
        counts = reply.vector[k * d : k * d + k]
        assert counts[0] == 0, f"cluster of the rare value's rows released: {counts[0]:g} rows"


def test_the_same_step_is_not_answered_again_under_a_fresh_run_name(tmp_path: Path) -> None:
    """Attack: within one Flower run (context.run_id 1 in every request), mint run names:
    each gets a fresh plan, so every Lloyd step can be re-asked with new centroids."""
    atk = Attacker.against(tmp_path, _segmentation())
    pre = preprocessor_dict(tmp_path)
    answered = 0
    for i, centroids in enumerate(([[0.0] * 5, [1.0] * 5], [[0.0] * 5, [0.5] * 5])):
        run = f"run-minted-{i}"
        atk.handshake("a", run=run, flower_run=1)
        reply = atk.send(
            "a", "query.kmeans_step", step="lloyd-1", run=run, flower_run=1,
            meta={"preprocessor": pre, "centroids": centroids},
        )  # fmt: skip
        answered += reply.vector is not None
    assert answered <= 1
    refused = atk.refusals("a")
    assert refused and refused[0]["run"] == "run-minted-1"  # refused at its handshake, logged


def test_keys_of_an_expired_run_are_not_recreated_by_a_new_handshake(tmp_path: Path) -> None:
    atk = Attacker.against(tmp_path, _encrypted(), names=("a", "b"))
    assert atk.handshake("a").refused is None
    keys = _state(atk, "a") / "he" / atk.run
    assert keys.exists()
    _age_runs(atk, "a")
    atk.handshake("a", run="run-attack-2")  # the TTL erasure runs
    assert not keys.exists()
    atk.handshake("a")  # the expired run, again
    _age_runs(atk, "a")
    atk.handshake("a", run="run-attack-3")
    assert not keys.exists(), "a key of an expired run is on disk for good"


def test_a_dp_job_s_evaluation_does_not_read_out_rows_through_a_chosen_model(
    tmp_path: Path,
) -> None:
    """Attack: in a dp = "sample" job (target epsilon 1), send the planned
    final-evaluation request with a model whose score is sigmoid(0.8 * z_spend); each row
    lands in the histogram bin of its own spend, and bins invert to values."""
    atk = Attacker.against(
        tmp_path,
        job(privacy={"dp": "sample", "target_epsilon": 1.0, "value_bounds": BOUNDS}),
        names=("a",),
    )
    cfg = atk.configs["a"]
    with BudgetLedger.open(ledger_path(cfg)) as ledger:
        ledger.set_cap("shop", epsilon_cap=5.0, delta=1e-5)
    assert atk.handshake("a").refused is None
    pre = preprocessor_dict(tmp_path)
    weights = models.get_weights(
        models.build_model("logreg", n_features=5, hidden_sizes=(), seed=0)
    )
    slope = 0.8
    weights[0][:] = 0.0
    weights[0][0, 0] = slope  # column 0 of the standardised features: spend
    weights[1][:] = 0.0
    reply = atk.send(
        "a", "evaluate.fedavg", step="final-evaluation", meta={"preprocessor": pre},
        vector=models.flatten(weights),
    )  # fmt: skip
    with BudgetLedger.open(ledger_path(cfg)) as ledger:
        charged = ledger.budget("shop").spent_epsilon
    split = node_split(cfg)
    data = load_partner(
        source_from_config(cfg),
        validation_fraction=split.validation_fraction,
        test_fraction=split.test_fraction,
        split_seed=split.split_seed,
    )
    spend = data.dataset.numeric["spend"]
    true = np.sort(np.concatenate([spend[data.validation], spend[data.test]]))
    mean, std = pre["numeric"][0]["mean"], pre["numeric"][0]["std"]
    decoded: list[float] = []
    if reply.vector is not None:
        bins, length = 1000, 3 + 2 * 1000
        for part in (reply.vector[:length], reply.vector[length:]):
            hist = part[3 : 3 + bins] + part[3 + bins :]
            for i in np.nonzero(hist)[0]:
                p = (i + 0.5) / bins
                z = float(np.log(p / (1 - p))) / slope
                decoded += [z * std + mean] * max(round(float(hist[i])), 0)
    readout = len(decoded) == len(true) and np.max(np.abs(np.sort(decoded) - true)) < 1.0
    assert charged > 0 or not readout, "each evaluation row's spend read out, 0 epsilon charged"
    # Answered, noised and charged: one statistics release, logged as privacy.spent.
    assert reply.vector is not None and not readout, reply.meta
    assert charged > 0
    spent = [e["body"] for e in atk.trail("a") if e["type"] == "privacy.spent"]
    assert [s["step"] for s in spent] == ["final-evaluation"]


@pytest.mark.parametrize("inputs", ["none", "genuine", "forged-as-b"])
def test_a_single_partner_s_ciphertext_is_not_decrypted_as_an_aggregate(
    tmp_path: Path, inputs: str
) -> None:
    """Attack: ask a and b the planned moments step (one reply each), then send the
    decryptor b's ciphertext plus an encrypted 1 in the contribution slot (the public key
    encrypts anything), claimed as the sum of a's and b's contributions; with no
    contributor ciphertexts, with the genuine ones, or with the forgery passed off as b's.
    The decryptor sums the signed contributions itself, so none of them decrypts."""
    atk, session = encrypted_job(tmp_path)
    ciphertexts, bindings = _moments_replies(atk, session)
    # b's ciphertext plus a plaintext 1 in the contribution slot: "two contributions".
    forged = session.public.load(ciphertexts["b"], params="wide", length=_MOMENTS_LENGTH)
    forged.add_([0.0] * _MOMENTS_LENGTH + [1.0])
    parts = {
        "none": {},
        "genuine": ciphertexts,
        "forged-as-b": {"a": ciphertexts["a"], "b": forged.serialize()},
    }[inputs]
    he = {**session.request_meta("a", params="wide"), "step": "moments",
          "contributors": ["a", "b"], "length": _MOMENTS_LENGTH}  # fmt: skip
    reply = atk.send(
        "a", "query.he_decrypt", step="moments.decrypt",
        meta={"he": he, "bindings": bindings}, ciphertext=forged.serialize(), parts=parts,
    )  # fmt: skip
    assert reply.vector is None, f"b's own moments decrypted: count {reply.vector[0]:g}"
    assert reply.refused == "CiphertextError"


def test_the_genuine_sum_is_decrypted_once_from_the_contributions(tmp_path: Path) -> None:
    """The honest path still works: the decryptor recomputes a + b from the signed
    ciphertexts, decrypts it, logs the sum's and each input's digest; a second request
    for the step (e.g. with an offset added) is refused."""
    atk, session = encrypted_job(tmp_path)
    ciphertexts, bindings = _moments_replies(atk, session)
    total = EncryptedSum(session.public, params="wide", length=_MOMENTS_LENGTH)
    for ct in ciphertexts.values():
        total.add(ct)
    he = {**session.request_meta("a", params="wide"), "step": "moments",
          "contributors": ["a", "b"], "length": _MOMENTS_LENGTH}  # fmt: skip
    reply = atk.send(
        "a", "query.he_decrypt", step="moments.decrypt",
        meta={"he": he, "bindings": bindings}, ciphertext=total.serialize(), parts=ciphertexts,
    )  # fmt: skip
    assert reply.refused is None and reply.vector is not None
    logged = [e["body"] for e in atk.trail("a") if e["type"] == "he.decrypted"]
    assert len(logged) == 1
    assert logged[0]["ciphertext"] == digest_bytes(total.serialize())
    assert logged[0]["inputs"] == {n: digest_bytes(c) for n, c in sorted(ciphertexts.items())}
    # Flooded (privacy.flooding): the released sum differs from the exact one by noise of
    # the width a's own plan sizes, not by CKKS's error (~1e-12), which a decryption
    # oracle reads the key from; the old code released the sum rounded to 2^-20, exact.
    keys = NodeKeyStore.from_config(atk.configs["a"]).keys(atk.run)
    assert keys is not None
    exact = keys.decrypt(total.serialize(), params="wide", length=_MOMENTS_LENGTH, contributors=2)
    planned = len(RequestPlan.for_job(atk.spec, partner="a").aggregates)
    width = PARAMETER_SETS["wide"].flooding_width(contributors=2, decryptions=planned)
    noise = reply.vector - exact
    assert float(np.max(np.abs(noise))) < 8 * width and float(np.std(noise)) > width / 4
    offset = session.public.load(total.serialize(), params="wide", length=_MOMENTS_LENGTH)
    offset.add_([0.5] + [0.0] * _MOMENTS_LENGTH)
    again = atk.send(
        "a", "query.he_decrypt", step="moments.decrypt",
        meta={"he": he, "bindings": bindings}, ciphertext=offset.serialize(), parts=ciphertexts,
    )  # fmt: skip
    assert again.vector is None and again.refused == "ProtocolError"


@pytest.mark.parametrize("step", ["moments-2", "round-1", "x", "lloyd-1"])
def test_decryptions_are_only_of_planned_steps(tmp_path: Path, step: str) -> None:
    """Attack (44 decryptions in one run): decrypt the moments contributions again under
    step names the coordinator makes up. The plan lists the job's aggregate steps (a
    3-round purchase-prediction job has no lloyd-1); the contributions are signed for
    "moments", so a planned step of another name refuses them too."""
    atk, session = encrypted_job(tmp_path)
    ciphertexts, bindings = _moments_replies(atk, session)
    he = {**session.request_meta("a", params="wide"), "step": step,
          "contributors": ["a", "b"], "length": _MOMENTS_LENGTH}  # fmt: skip
    reply = atk.send(
        "a", "query.he_decrypt", step=f"{step}.decrypt",
        meta={"he": he, "bindings": bindings}, parts=ciphertexts,
    )  # fmt: skip
    assert reply.vector is None and reply.refused in {"ProtocolError", "CiphertextError"}


def test_an_offset_search_gets_no_answer(tmp_path: Path) -> None:
    """Attack (Li & Micciancio 2021's first step): add chosen plaintext offsets to the
    genuine sum and ask for decryptions, binary-searching each slot below the rounding
    grid. The decryptor decrypts only the sum it recomputes from the signed ciphertexts,
    so the first offset query is already refused, and the step is then spent."""
    atk, session = encrypted_job(tmp_path)
    ciphertexts, bindings = _moments_replies(atk, session)
    total = EncryptedSum(session.public, params="wide", length=_MOMENTS_LENGTH)
    for ct in ciphertexts.values():
        total.add(ct)
    he = {**session.request_meta("a", params="wide"), "step": "moments",
          "contributors": ["a", "b"], "length": _MOMENTS_LENGTH}  # fmt: skip
    answers = 0
    for offset in (2.0**-21, 2.0**-22, 2.0**-23):
        probe = session.public.load(total.serialize(), params="wide", length=_MOMENTS_LENGTH)
        probe.add_([offset] * _MOMENTS_LENGTH + [0.0])
        reply = atk.send(
            "a", "query.he_decrypt", step="moments.decrypt",
            meta={"he": he, "bindings": bindings}, ciphertext=probe.serialize(),
            parts=ciphertexts,
        )  # fmt: skip
        answers += reply.vector is not None
    assert answers == 0


_MOMENTS_LENGTH = preprocessing.MomentsLayout(
    numeric_names=("spend", "visits"),
    categorical_vocab={"channel": tuple(CHANNELS)},
    boolean_names=("member",),
).length


def _moments_replies(atk: Attacker, session: Any) -> tuple[dict[str, bytes], list[Any]]:
    ciphertexts: dict[str, bytes] = {}
    bindings = []
    for name in ("a", "b"):
        reply = atk.send(
            name, "query.moments", step="moments",
            meta={**layout_meta(channel=CHANNELS),
                  "he": session.request_meta(name, params="wide")},
        )  # fmt: skip
        assert reply.ciphertext is not None, reply.meta
        ciphertexts[name] = reply.ciphertext
        session.installed.add(name)
        bindings.append(reply.meta["binding"])
    return ciphertexts, bindings


def test_k_fed_seeding_never_releases_clusters_below_the_partner_s_floor(
    tmp_path: Path,
) -> None:
    """Attack: a segmentation job (the grant's purpose) whose spec asks k-FED seeding with
    many local clusters and min_cluster_size = 2; the partner's 5-row floor, applied to
    every Lloyd step and profile, is not applied here."""
    spec = job(
        name="seg", task="segmentation", purpose="user-segmentation",
        segmentation={"k": 2, "k_local": 60, "min_cluster_size": 2, "seeding": "kfed",
                      "lloyd_iterations": 1},
    )  # fmt: skip
    atk = Attacker.against(tmp_path, spec, names=("a",))
    assert atk.handshake("a").refused is None
    reply = atk.send(
        "a",
        "query.kmeans_seed",
        step="kmeans-seed",
        meta={"preprocessor": preprocessor_dict(tmp_path)},
    )
    assert reply.vector is not None, reply.meta
    counts = reply.vector.reshape(60, -1)[:, 0]
    small = counts[(counts > 0) & (counts < 5)]
    assert small.size == 0, f"{small.size} clusters of 2-4 rows released"


# ----------------------------------------------------------------- attacks that are refused


def test_a_zero_std_preprocessor_is_refused_before_anything_is_released(
    tmp_path: Path,
) -> None:
    """Attack: pin a preprocessor with std 0 for one column (the transform divides by it)."""
    atk = Attacker.against(tmp_path, _segmentation())
    atk.handshake("a")
    pre = preprocessor_dict(tmp_path)
    pre["numeric"][0]["std"] = 0.0
    reply = atk.send(
        "a", "query.kmeans_step", step="lloyd-1",
        meta={"preprocessor": pre, "centroids": [[0.0] * 5, [1.0] * 5]},
    )  # fmt: skip
    assert reply.refused == "ProtocolError" and reply.vector is None


@pytest.mark.parametrize(
    ("action", "step"),
    [
        ("query.vertical", "psi-1"),  # a vertical phase in a horizontal job
        ("query.he_keygen", "he-keygen"),  # key ceremony in a plaintext job
        ("query.he_decrypt", "moments.decrypt"),  # decryption in a plaintext job
        ("query.cosign", "cosign-2"),  # a second cosign under another step name
        ("query.moments", "round-1"),  # a planned step name under another action
        ("evaluate.fedavg", "round-1"),
        ("query.handshake", "moments"),
    ],
)
def test_actions_and_step_names_outside_the_plan_are_refused(
    tmp_path: Path, action: str, step: str
) -> None:
    atk = Attacker.against(tmp_path, job(), names=("a",))
    atk.handshake("a")
    reply = atk.send("a", action, step=step, meta=layout_meta(channel=CHANNELS))
    assert reply.refused == "ProtocolError" and reply.vector is None
    assert atk.refusals("a")[-1]["action"] == action


def test_repeated_handshakes_with_other_meta_give_the_same_answer(tmp_path: Path) -> None:
    """Attack: replay the handshake with other meta (a layout, a round) hoping for fresh
    values; the handshake reads nothing from the request but the spec."""
    atk = Attacker.against(tmp_path, job(), names=("a",))
    first = atk.handshake("a")
    again = atk.handshake("a", meta={**layout_meta(channel=["kiosk"]), "round": 9})
    assert first.refused is None and again.refused is None
    assert first.vector is None and again.vector is None
    drop = {"cosigned_size"}
    assert {k: v for k, v in first.meta.items() if k not in drop} == {
        k: v for k, v in again.meta.items() if k not in drop
    }


def test_two_claims_of_one_step_at_once_answer_it_once(tmp_path: Path) -> None:
    """Two ClientApp processes get the same step at the same moment: SQLite's BEGIN
    IMMEDIATE lets exactly one claim it."""
    contract = RunContract(tmp_path / "state" / "contract.db")
    contract.pin("run-1", job())
    n = 8
    barrier = threading.Barrier(n)
    outcomes: list[str] = []
    lock = threading.Lock()

    def claim() -> None:
        barrier.wait()
        try:
            RunContract(contract.path).claim("run-1", "query.moments", "moments")
            result = "claimed"
        except ProtocolError:
            result = "refused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=claim) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["claimed"] + ["refused"] * (n - 1)
    assert contract.answered("run-1") == [("query.moments", "moments")]


def test_two_handshakes_with_different_specs_at_once_pin_one(tmp_path: Path) -> None:
    path = tmp_path / "state" / "contract.db"
    specs = [job(rounds=r) for r in (2, 3, 4, 5)]
    barrier = threading.Barrier(len(specs))
    won: list[int] = []
    lock = threading.Lock()

    def pin(i: int) -> None:
        barrier.wait()
        try:
            RunContract(path).pin("run-1", specs[i])
        except ProtocolError:
            return
        with lock:
            won.append(i)

    threads = [threading.Thread(target=pin, args=(i,)) for i in range(len(specs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    RunContract(path).check_pinned("run-1", specs[won[0]])


def test_a_run_pinned_with_one_spec_refuses_a_handshake_with_another(tmp_path: Path) -> None:
    """Attack: re-handshake the run with a spec that differs in one field, to get a fresh
    plan (more rounds) for the same run."""
    atk = Attacker.against(tmp_path, job(), names=("a",))
    assert atk.handshake("a").refused is None
    assert atk.handshake("a", spec=job(rounds=9)).refused == "ProtocolError"
    assert json.loads(job().to_json()) != json.loads(job(rounds=9).to_json())


def test_a_decryptor_that_did_not_answer_the_step_refuses_to_decrypt(tmp_path: Path) -> None:
    """Attack: a (the dealer) never answered the moments step; the coordinator asks it to
    decrypt b's and c's sum anyway, so the decryptor has no request to compare with."""
    atk = Attacker.against(
        tmp_path,
        job(privacy={"encryption": "ckks", "aggregation": "ckks", "key_dealer": "a"}),
        names=("a", "b", "c"),
    )
    offers = {name: atk.handshake(name).meta["he_offer"] for name in atk.configs}
    keygen = atk.send("a", "query.he_keygen", step="he-keygen", meta={"offers": offers})
    session = session_from_keygen(keygen.meta, dealer="a")
    total = EncryptedSum(session.public, params="wide", length=_MOMENTS_LENGTH)
    bindings = []
    parts: dict[str, bytes] = {}
    for name in ("b", "c"):
        reply = atk.send(
            name, "query.moments", step="moments",
            meta={**layout_meta(channel=CHANNELS),
                  "he": session.request_meta(name, params="wide")},
        )  # fmt: skip
        assert reply.ciphertext is not None
        total.add(reply.ciphertext)
        parts[name] = reply.ciphertext
        session.installed.add(name)
        bindings.append(reply.meta["binding"])
    he = {**session.request_meta("a", params="wide"), "step": "moments",
          "contributors": ["b", "c"], "length": _MOMENTS_LENGTH}  # fmt: skip
    reply = atk.send(
        "a", "query.he_decrypt", step="moments.decrypt",
        meta={"he": he, "bindings": bindings}, ciphertext=total.serialize(), parts=parts,
    )  # fmt: skip
    assert reply.refused == "CiphertextError" and reply.vector is None


def test_contribution_statements_of_another_run_are_refused(tmp_path: Path) -> None:
    """Attack: keep b's genuine signed statement from run 1 and present it with run 2's
    aggregate, where b was sent another request (or none)."""
    atk, session = encrypted_job(tmp_path)
    _, old_bindings = _moments_replies(atk, session)
    atk.run = "run-attack-2"
    offers = {name: atk.handshake(name).meta["he_offer"] for name in atk.configs}
    keygen = atk.send("a", "query.he_keygen", step="he-keygen", meta={"offers": offers})
    session2 = session_from_keygen(keygen.meta, dealer="a")
    ciphertexts, bindings = _moments_replies(atk, session2)
    total = EncryptedSum(session2.public, params="wide", length=_MOMENTS_LENGTH)
    for ct in ciphertexts.values():
        total.add(ct)
    he = {**session2.request_meta("a", params="wide"), "step": "moments",
          "contributors": ["a", "b"], "length": _MOMENTS_LENGTH}  # fmt: skip
    replayed = [bindings[0], old_bindings[1]]  # b's statement of run 1
    reply = atk.send(
        "a", "query.he_decrypt", step="moments.decrypt",
        meta={"he": he, "bindings": replayed}, ciphertext=total.serialize(), parts=ciphertexts,
    )  # fmt: skip
    assert reply.refused == "CiphertextError" and reply.vector is None


def test_a_value_common_in_one_job_s_training_rows_stays_unknown_in_a_job_where_it_is_rare(
    tmp_path: Path,
) -> None:
    """Attack (found while caching encodings for the long-running node executor): the node
    serves every job from one process, and the values it would encode were cached per
    partner and file, counted in the *first* job's training rows. A coordinator runs a job
    whose split puts most "kiosk" rows in training (>= 10: encodable), then a job whose
    split leaves fewer than 10 there: its replies then describe those few rows. The
    vocabulary is counted in each job's own training rows."""
    from fedcollab.client.handler_rows import MIN_CATEGORY_COUNT, features, own_vocabulary
    from tests.support.adversarial import write_partner

    source = write_partner(tmp_path / "data", "a", seed=0)
    lines = source.data.read_text().splitlines()
    for i in range(1, 15):  # 14 kiosk rows in all (write_partner puts 8)
        cells = lines[i].split(",")
        cells[3] = "kiosk"
        lines[i] = ",".join(cells)
    source.data.write_text("\n".join(lines) + "\n")

    def kiosk_in_train(split: tuple[float, float]) -> tuple[Any, int]:
        data = load_partner(
            source, validation_fraction=split[0], test_fraction=split[1], split_seed=7
        )
        channel = np.asarray(data.dataset.categorical["channel"], dtype=object)
        return data, int((channel[data.train] == "kiosk").sum())

    wide, wide_count = kiosk_in_train((0.01, 0.01))
    narrow, narrow_count = kiosk_in_train((0.45, 0.45))
    assert wide_count >= MIN_CATEGORY_COUNT > narrow_count  # the premise
    pre_dict = preprocessor_dict(tmp_path)
    for column in pre_dict["categorical"]:
        if column["name"] == "channel":
            column["vocabulary"] = ["app", "kiosk", "web"]
    pre = preprocessing.Preprocessor.from_dict(pre_dict)
    spec = job()

    assert "kiosk" in own_vocabulary(wide, spec)["channel"]
    kiosk_col = pre.feature_names.index("channel=kiosk")
    assert features(wide, spec, pre, wide.train)[:, kiosk_col].sum() == wide_count
    # The next job, same node process, same file: fewer than 10 kiosk training rows.
    assert "kiosk" not in own_vocabulary(narrow, spec)["channel"]
    assert features(narrow, spec, pre, narrow.train)[:, kiosk_col].sum() == 0
    # A segmentation job counts (and published at its handshake) every row's values: the
    # 14 kiosk rows are encoded there even with the narrow split.
    seg = _segmentation()
    assert "kiosk" in own_vocabulary(narrow, seg)["channel"]
    every = np.arange(narrow.dataset.n_rows)
    assert features(narrow, seg, pre, every)[:, kiosk_col].sum() == 14
    # Encodings are cached per (data, preprocessor, rows): a caller writing to its copy
    # (noise added in place) changes nothing for the next request, and another
    # preprocessor gets its own encoding.
    first = features(wide, spec, pre, wide.train)
    first[:] = 0.0
    assert features(wide, spec, pre, wide.train)[:, kiosk_col].sum() == wide_count
    own = own_vocabulary(wide, spec)
    own["channel"].clear()  # a caller's write to its copy changes nothing either
    assert "kiosk" in own_vocabulary(wide, spec)["channel"]
    shifted = preprocessing.Preprocessor.from_dict(
        {**pre_dict, "numeric": [{**c, "mean": c["mean"] + 1.0} for c in pre_dict["numeric"]]}
    )
    spend = pre.feature_names.index("spend")
    assert not np.allclose(
        features(wide, spec, shifted, wide.train)[:, spend],
        features(wide, spec, pre, wide.train)[:, spend],
    )
