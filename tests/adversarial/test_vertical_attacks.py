"""Attacks on vertical jobs through the real party code path (issue 15).

Every request goes through ``client.client_app._serve`` at parties with real
audit keys, grants, pinned peer keys, run contracts and budget ledgers
(:mod:`tests.support.vertical`). The attacker is the relay, a
feature party, or both together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedcollab.client.vertical_store import bytes_array
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.serde import pack_blobs
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.coordinator.vertical import drive
from fedcollab.privacy.vertical_he import PublicContext, draw_masks, encrypted_gradient
from tests.support.vertical import (
    LABEL,
    Refused,
    ServeRelay,
    VerticalWorld,
    as_party,
    spec_for,
    vertical_sources,
)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    return vertical_sources(tmp_path_factory.mktemp("vertical-data"))


def _world(tmp_path: Path, spec: JobSpec, sources: list[Any], **node: str) -> VerticalWorld:
    world = VerticalWorld.create(tmp_path, spec, sources, **node)
    world.handshake()
    return world


def _labels_in_order(world: VerticalWorld) -> np.ndarray:
    """The label holder's training labels in aligned order (the attacker's target)."""
    from fedcollab.client.vertical_rows import PartyRows

    return PartyRows(as_party(world, LABEL)).labels[0]


# -- 1. crafted-gradient label attack on vertical LR ---------------------------------
def _crafted_gradient_attack(world: VerticalWorld, *, columns: int) -> tuple[Any, np.ndarray]:
    """payment (a feature party, with the relay's help) replaces its iteration-1 gradient
    by ``columns`` ciphertexts of one-hot "columns" scaled by 1000 and reads the label
    holder's decryption: sign(0.5 - y_i) at iteration 0, where every score is 0."""
    payment = as_party(world, "payment")
    masks = draw_masks(columns)
    seen: dict[str, bytes] = {}

    def tamper(step: str, party: str, meta: dict[str, Any], parts: dict[str, bytes]) -> Any:
        if step == "step-1" and party == "payment":
            seen["residual"] = parts["residual"]
        if step == "label-step-1" and party == LABEL:
            enc = payment.open_from(LABEL, "it-0/residual", seen["residual"])
            public = PublicContext.from_bytes(payment.store.get("context"))
            n = len(_labels_in_order(world))
            x = np.zeros((n, columns))
            x[np.arange(columns), np.arange(columns)] = 1000.0
            cts = encrypted_gradient(public, enc, x, masks)
            parts["grad/payment"] = payment.seal_to(LABEL, "it-1/grad", pack_blobs(cts))
        return meta, parts

    relay = ServeRelay(world, tamper=tamper)
    try:
        drive(relay, world.spec, JobOutputs(world_dir(world)), run=world.run,
              offers=world.offers, masks=world.masks)  # fmt: skip
    except Refused as exc:
        return exc, masks
    reply = relay.replies["label-step-1"][LABEL].part("grad/payment")
    decrypted = bytes_array(payment.open_from(LABEL, "it-1/decrypted", reply), what="grad")
    return decrypted - masks, masks


def world_dir(world: VerticalWorld) -> Path:
    return Path(world.configs[LABEL]["state-dir"]).parent / "out"


def test_crafted_gradient_with_64_columns_is_refused(tmp_path: Path, sources: list[Any]) -> None:
    """On the old code the label holder decrypted all 64 ciphertexts: 64 of 64 labels."""
    world = _world(tmp_path, spec_for(sources, iterations=3), sources)
    out, _ = _crafted_gradient_attack(world, columns=64)
    assert isinstance(out, Refused), "the label holder decrypted 64 values for 12 columns"
    assert (out.party, out.step, out.kind) == (LABEL, "label-step-1", "ProtocolError")
    refused = [e for e in _trail(world, LABEL) if e["type"] == "request.refused"]
    assert refused and refused[-1]["body"]["step"] == "label-step-1"


def test_crafted_gradient_within_the_column_count_reads_only_noisy_residuals(
    tmp_path: Path, sources: list[Any]
) -> None:
    """The best a party can do within its 12 columns: 12 residuals per iteration, each
    with the label holder's Gaussian noise (std z/n, z calibrated to its epsilon and
    charged to its ledger); on the old code they came out exact."""
    world = _world(tmp_path, spec_for(sources, iterations=3), sources, **{"label-epsilon": "1"})
    out, _ = _crafted_gradient_attack(world, columns=12)
    assert not isinstance(out, Refused), out
    y = _labels_in_order(world)[:12]
    n = len(_labels_in_order(world))
    read = out * n / 1000.0  # = 0.5 - y_i + z * N(0, 1), if the noise is there
    spread = float(np.std(read - (0.5 - y)))
    charges = _charges(world, LABEL)
    assert [c.step for c in charges] == ["vertical-label-residuals"]
    z = float(charges[0].mechanism.to_dict()["noise_multiplier"])
    assert z > 1.0 and spread > 0.4 * z, (z, spread)


def test_plaintext_job_is_refused_by_the_label_holder(tmp_path: Path, sources: list[Any]) -> None:
    """The coordinator chose encryption = "none": the residual went to every feature party
    in the clear (3000 of 3000 labels). The label holder's node refuses the job."""
    spec = spec_for(sources, encrypted=False, iterations=2)
    world = _world(tmp_path, spec, sources)
    reply = world.vertical(LABEL, "psi-own", {"phase": "psi_own"})
    assert reply.refused == "PolicyRefusal" and not reply.parts


def test_plaintext_when_allowed_for_testing_releases_only_noisy_residuals(
    tmp_path: Path, sources: list[Any]
) -> None:
    spec = spec_for(sources, encrypted=False, iterations=2)
    world = _world(tmp_path, spec, sources, **{"allow-plaintext-vertical": "true"})
    relay = ServeRelay(world)
    drive(relay, spec, JobOutputs(tmp_path / "out"), run=world.run,
          offers=world.offers, masks=world.masks)  # fmt: skip
    payment = as_party(world, "payment")
    sealed = relay.replies["label-step-0"][LABEL].part("residual/payment")
    d = bytes_array(payment.open_from(LABEL, "it-0/residual", sealed), what="residual")
    y = _labels_in_order(world)
    guessed = (d < 0).astype(float)  # d = (0.5 - y)/n + noise at iteration 0
    assert float(np.mean(guessed == y)) < 0.9  # exact residuals give 1.0
    # The loss (a function of every label) stays at the label holder.
    assert all(r.meta.get("loss") is None for s, rs in relay.replies.items()
               if s.startswith("label-step") for r in rs.values())  # fmt: skip


# -- 2. split NN: every embedding release counted, eval answered once -----------------
def test_repeated_split_nn_eval_is_refused(tmp_path: Path, sources: list[Any]) -> None:
    """Old code: 400 eval calls averaged the embedding noise from 0.99 down to 0.05."""
    spec = spec_for(sources, model="split_nn", encrypted=False, iterations=2,
                    privacy={"dp": "sample", "noise_multiplier": 1.0})  # fmt: skip
    world = _world(tmp_path, spec, sources, **{"allow-plaintext-vertical": "true"})
    relay = ServeRelay(world)
    drive(relay, spec, JobOutputs(tmp_path / "out"), run=world.run,
          offers=world.offers, masks=world.masks)  # fmt: skip
    first = relay.replies["eval"]["payment"]
    assert first.refused is None and first.parts
    for meta in ({"phase": "eval"}, {"phase": "eval", "iteration": 1}):
        again = world.vertical("payment", "eval", meta)
        assert again.refused == "ProtocolError" and not again.parts
    # Another step name for the same phase is not in the plan either.
    assert world.vertical("payment", "eval-2", {"phase": "eval"}).refused == "ProtocolError"
    # The one charge covers the planned releases: 2 training steps and 1 evaluation.
    (charge,) = _charges(world, "payment")
    assert charge.step == "vertical-embeddings"


# -- 3. joint inference: one predict per run ------------------------------------------
def test_second_predict_with_another_alignment_is_refused(
    tmp_path: Path, sources: list[Any]
) -> None:
    """Two alignments in one run gave each party's partial scores as a difference (the
    same masks, step 0, for both calls)."""
    trained = spec_for(sources, iterations=2)
    world = _world(tmp_path, trained, sources)
    drive(ServeRelay(world), trained, JobOutputs(tmp_path / "out"), run=world.run,
          offers=world.offers, masks=world.masks)  # fmt: skip
    doc = trained.model_dump(mode="json", by_alias=True)
    doc["name"], doc["vertical"]["predict_with"] = "scores", trained.name
    spec = JobSpec.model_validate(doc, strict=False)
    world.spec, world.run = spec, "run-vertical-predict-1"
    world.handshake()
    relay = ServeRelay(world)
    drive(relay, spec, JobOutputs(tmp_path / "out2"), run=world.run,
          offers=world.offers, masks=world.masks)  # fmt: skip
    align = relay.replies["intersect"][LABEL].part("align/payment")
    # The relay asks payment again, with the alignment and then without it.
    for parts in ({"align": align}, {}):
        again = world.vertical("payment", "predict", {"phase": "predict"}, parts)
        assert again.refused == "ProtocolError" and not again.parts
    # A predict request under the training job's spec is refused: the run is pinned.
    other = world.serve("payment", "query.vertical", "predict",
                        {"phase": "predict", "step": "predict"}, spec=trained)  # fmt: skip
    assert other.refused == "ProtocolError"


# -- 4. query.vertical answered once per (run, phase, step) ---------------------------
@pytest.mark.parametrize(
    ("step", "meta"),
    [
        ("psi-own", {"phase": "psi_own"}),  # a repeat: a second blinding of other ids
        ("psi-hop-1", {"phase": "psi_own"}),  # a planned step under another phase
    ],
)
def test_vertical_steps_outside_the_plan_or_repeated_are_refused(
    tmp_path: Path, sources: list[Any], step: str, meta: dict[str, Any]
) -> None:
    spec = spec_for(sources, iterations=2)
    world = _world(tmp_path, spec, sources)
    salt = world.vertical(LABEL, "psi-salt", {"phase": "psi_salt"})
    parts = {"salt": salt.parts["salt/payment"]} if salt.refused is None else {}
    assert world.vertical("payment", "psi-own", {"phase": "psi_own"}, parts).refused is None
    reply = world.vertical("payment", step, meta, parts)
    assert reply.refused == "ProtocolError" and not reply.parts


def _trail(world: VerticalWorld, party: str) -> list[dict[str, Any]]:
    import json

    from fedcollab.compliance.trail import Trail

    cfg = world.configs[party]
    with Trail.open(Path(cfg["audit-db"]), Path(cfg["audit-key"]), actor=party) as t:
        return [json.loads(raw) for raw in t.log.entries()]


def _charges(world: VerticalWorld, party: str) -> list[Any]:
    from fedcollab.privacy.budget_ledger import BudgetLedger

    with BudgetLedger.open(Path(world.configs[party]["state-dir"]) / "budget.db") as ledger:
        return ledger.charges()


# -- 5. PSI against the relay ---------------------------------------------------------
def test_psi_dictionary_attack_by_the_relay_fails(tmp_path: Path, sources: list[Any]) -> None:
    """The relay hashes 30,000 candidate ids (the id hash was public: domain, run, id),
    sends them through payment's hop (payment is hop 1 of billing's set) and matches the
    result with payment's own blinded set. Old code: every id of payment recovered."""
    from fedcollab.protocols.psi import _hash_ids

    world = _world(tmp_path, spec_for(sources, iterations=2), sources)
    # The relay runs the protocol's first steps honestly.
    salt = world.vertical(LABEL, "psi-salt", {"phase": "psi_salt"})
    parts = {"salt": salt.parts["salt/payment"]} if salt.refused is None else {}
    own = world.vertical("payment", "psi-own", {"phase": "psi_own"}, parts)
    assert own.refused is None
    candidates = [str(i) for i in range(1, 30_001)]
    hashed = b"".join(_hash_ids(candidates, run=world.run, party="relay"))
    hop = world.vertical(
        "payment",
        "psi-hop-1",
        {"phase": "psi_hop", "owner": "billing", "hop": 1, "final": False},
        {"set": hashed},
    )
    blob = hop.parts.get("set", b"")
    tags = {blob[i : i + 32]: candidates[i // 32] for i in range(0, len(blob), 32)}
    mine = own.part("set")
    chunks = [mine[i : i + 32] for i in range(0, len(mine), 32)]
    recovered = {tags[c] for c in chunks if c in tags}
    assert recovered == set(), f"the relay recovered {len(recovered)} of payment's ids"
    assert hop.refused == "CiphertextError"  # not sealed and signed by billing for hop 1
