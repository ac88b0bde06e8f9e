"""Attacks on a vertical job's CM20 PSI (``vertical.psi = "cm20"``) through the real party code.

Every request goes through ``client.client_app._serve`` at parties with real
audit keys, pinned peer keys, run contracts and stores
(:mod:`tests.adversarial.vertical_support`); the relay is
:func:`coordinator.vertical._psi_cm20`'s schedule with a ``tamper`` hook. The
attacker is the relay (any request, meta or part, in any order), a feature
party (with its own keys), or the label holder where docs/vertical.md says it is
trusted (semi-honest in cm20). Each test asserts the safe behaviour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nacl import bindings as sodium

from fedcollab.client.vertical_store import VerticalStore, array_bytes
from fedcollab.common.errors import ProtocolError
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.serde import Payload
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.coordinator.vertical import _psi_cm20, _WithOffers, drive
from fedcollab.demo.vertical_summary import true_alignment
from fedcollab.protocols.psi_oprf import (
    OprfPsiConfig,
    OprfPsiReceiver,
    OprfPsiSender,
    cm20_params,
)
from tests.support.vertical import (
    LABEL,
    Refused,
    ServeRelay,
    VerticalWorld,
    as_party,
    spec_for,
    vertical_sources,
)

FEATURES = ("billing", "payment")
PLAINTEXT = {"allow-plaintext-vertical": "true"}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    return vertical_sources(tmp_path_factory.mktemp("cm20-data"))


@pytest.fixture(scope="module")
def spec(sources: list[Any]) -> JobSpec:
    return spec_for(sources, encrypted=False, iterations=1, psi="cm20")


def _world(tmp_path: Path, spec: JobSpec, sources: list[Any]) -> VerticalWorld:
    world = VerticalWorld.create(tmp_path, spec, sources, **PLAINTEXT)
    world.handshake()
    return world


def _relay(world: VerticalWorld, tamper: Any = None) -> tuple[ServeRelay, _WithOffers]:
    inner = ServeRelay(world, tamper=tamper)
    return inner, _WithOffers(inner, {"offers": world.offers, "mask_offers": world.masks})


def _psi(world: VerticalWorld, tamper: Any = None) -> tuple[ServeRelay, Payload]:
    """The coordinator's CM20 schedule, then the label holder's ``intersect``."""
    inner, relay = _relay(world, tamper)
    inputs = _psi_cm20(relay, world.spec)
    reply = relay.send("intersect", {LABEL: ({"phase": "intersect"}, inputs)})[LABEL]
    return inner, reply


def _aligned_ids(world: VerticalWorld) -> dict[str, list[str]]:
    out = {}
    for party, config in world.configs.items():
        rows = VerticalStore.from_config(config, world.run).get_array("aligned")
        out[party] = [str(i) for i in as_party(world, party).data.dataset.ids[rows]]
    return out


def _sizes(world: VerticalWorld) -> dict[str, int]:
    return {p: int(as_party(world, p).data.dataset.n_rows) for p in world.configs}


# -- the honest schedule: exact and aligned (the baseline every attack is measured by) ----
def test_honest_cm20_alignment_is_exact(tmp_path: Path, spec: JobSpec, sources: list[Any]) -> None:
    world = _world(tmp_path, spec, sources)
    drive(ServeRelay(world), spec, JobOutputs(tmp_path / "out"), run=world.run,
          offers=world.offers, masks=world.masks)  # fmt: skip
    ids = _aligned_ids(world)
    assert ids["payment"] == ids["billing"] == ids[LABEL]
    truth = true_alignment(sources)
    label_ids = as_party(world, LABEL).data.dataset.ids
    assert sorted(ids[LABEL]) == sorted(str(i) for i in label_ids[truth[LABEL]])


def test_aligned_order_says_nothing_about_the_label_holders_row_order(
    tmp_path: Path, spec: JobSpec, sources: list[Any]
) -> None:
    """Every feature party trains on the common rows in the aligned order. In the ring
    that order is the fully blinded tags' (random to all); CM20's must be as
    uninformative: the label holder's file order (sorted by sign-up date, by label, by
    risk) restricted to the common users must not reach the feature parties."""
    world = _world(tmp_path, spec, sources)
    drive(ServeRelay(world), spec, JobOutputs(tmp_path / "out"), run=world.run,
          offers=world.offers, masks=world.masks)  # fmt: skip
    label_rows = VerticalStore.from_config(world.configs[LABEL], world.run).get_array("aligned")
    n = label_rows.size
    assert n > 500
    # Spearman's rank correlation of the aligned position with the label holder's row.
    ranks = np.argsort(np.argsort(label_rows)).astype(np.float64)
    rho = float(np.corrcoef(np.arange(n, dtype=np.float64), ranks)[0, 1])
    assert abs(rho) < 0.2, f"the aligned order follows the label holder's rows (rho={rho:.3f})"
    assert not bool(np.all(np.diff(label_rows) > 0))


def test_a_label_sorted_file_does_not_reach_the_feature_parties(
    tmp_path: Path,
) -> None:
    """The concrete case: the label holder's CSV lists its defaulters first. payment, a
    feature party, guesses that the first ``k`` users of its aligned (training) order
    default, ``k`` the number of defaulters among the common users (an upper bound on
    what it could know). With the label holder's row order as the aligned order the
    guess is right for every user; with an order that says nothing it is a coin toss
    weighted by the base rate (about 0.65)."""
    root = tmp_path / "data"
    sorted_sources = vertical_sources(root)
    platform = root / "parties" / "platform.csv"
    header, *lines = platform.read_text().splitlines()
    lines.sort(key=lambda line: -int(line.rsplit(",", 1)[1]))
    platform.write_text("\n".join([header, *lines]) + "\n")
    spec = spec_for(sorted_sources, encrypted=False, iterations=1, psi="cm20")
    world = _world(tmp_path / "world", spec, sorted_sources)
    drive(ServeRelay(world), spec, JobOutputs(tmp_path / "out"), run=world.run,
          offers=world.offers, masks=world.masks)  # fmt: skip
    label_rows = VerticalStore.from_config(world.configs[LABEL], world.run).get_array("aligned")
    labels = as_party(world, LABEL).data.dataset.labels
    assert labels is not None
    truth = np.asarray(labels)[label_rows].astype(int)
    k = int(truth.sum())
    assert 0 < k < truth.size
    guess = np.zeros(truth.size, dtype=int)
    guess[:k] = 1
    accuracy = float(np.mean(guess == truth))
    assert accuracy < 0.8, f"payment reads the labels off its training order ({accuracy:.3f})"


# -- the relay swaps sealed parts between the feature parties -------------------------------
def _swap(step: str, target: str, key: str, source: Any) -> Any:
    """A tamper that hands ``target`` the other feature party's part at ``step``."""
    other = {"payment": "billing", "billing": "payment"}

    def tamper(s: str, party: str, meta: dict[str, Any], parts: dict[str, bytes]) -> Any:
        if s != step or party != target:
            return meta, parts
        if party == LABEL:  # the label holder gets both: exchange them
            a, b = f"{key}/payment", f"{key}/billing"
            parts[a], parts[b] = parts[b], parts[a]
        else:
            parts[key] = source(other[target])
        return meta, parts

    return tamper


@pytest.mark.parametrize(
    ("step", "target", "key"),
    [
        ("psi-answer", "payment", "salt"),
        ("psi-answer", "payment", "setup"),
        ("psi-matrix", LABEL, "reply"),
        ("psi-values", "payment", "matrix"),
        ("intersect", LABEL, "values"),
    ],
)
def test_swapped_sealed_parts_are_refused(
    tmp_path: Path, spec: JobSpec, sources: list[Any], step: str, target: str, key: str
) -> None:
    world = _world(tmp_path, spec, sources)
    holder: dict[str, ServeRelay] = {}

    def source(other: str) -> bytes:
        replies = holder["relay"].replies
        if step == "psi-answer" and key == "salt":
            return replies["psi-salt"][LABEL].part(f"salt/{other}")
        if step == "psi-answer":
            return replies["psi-setup"][LABEL].part(f"setup/{other}")
        return replies["psi-matrix"][LABEL].part(f"matrix/{other}")

    inner, relay = _relay(world, _swap(step, target, key, source))
    holder["relay"] = inner
    with pytest.raises(Refused) as refused:
        inputs = _psi_cm20(relay, spec)
        relay.send("intersect", {LABEL: ({"phase": "intersect"}, inputs)})
    assert refused.value.step == step and refused.value.party == target
    assert refused.value.kind == "CiphertextError"
    assert "aligned" not in _stored(world, target)


def _stored(world: VerticalWorld, party: str) -> set[str]:
    root = VerticalStore.from_config(world.configs[party], world.run).root
    return {p.name for p in root.iterdir()} if root.exists() else set()


# -- the relay replays an older run's messages ----------------------------------------------
@pytest.mark.parametrize(
    ("step", "party", "key"),
    [
        ("psi-answer", "payment", "salt"),
        ("psi-answer", "payment", "setup"),
        ("psi-matrix", LABEL, "reply/payment"),
        ("psi-values", "payment", "matrix"),
        ("intersect", LABEL, "values/payment"),
    ],
)
def test_an_older_runs_messages_are_refused(
    tmp_path: Path, spec: JobSpec, sources: list[Any], step: str, party: str, key: str
) -> None:
    world = _world(tmp_path, spec, sources)
    old, _ = _psi(world)
    sent: dict[str, dict[str, bytes]] = {}

    def record(s: str, p: str, meta: dict[str, Any], parts: dict[str, bytes]) -> Any:
        sent.setdefault(f"{s}|{p}", dict(parts))
        return meta, parts

    # Replay run 1 again to learn what each party was sent (the relay saw every part).
    world.run = "run-cm20-old-copy"
    world.handshake()
    _psi(world, record)
    old_parts = sent
    world.run = "run-cm20-new"
    world.handshake()

    def replay(s: str, p: str, meta: dict[str, Any], parts: dict[str, bytes]) -> Any:
        if s == step and p == party:
            parts[key] = old_parts[f"{s}|{p}"][key]
        return meta, parts

    with pytest.raises(Refused) as refused:
        _psi(world, replay)
    assert (refused.value.step, refused.value.party) == (step, party)
    assert refused.value.kind == "CiphertextError"
    assert old.replies  # the first run itself completed


# -- the relay truncates or extends sealed parts --------------------------------------------
@pytest.mark.parametrize(
    ("step", "party", "key", "how"),
    [
        ("psi-values", "payment", "matrix", "truncate"),
        ("psi-values", "payment", "matrix", "extend"),
        ("intersect", LABEL, "values/billing", "truncate"),
        ("intersect", LABEL, "values/billing", "extend"),
        ("psi-matrix", LABEL, "reply/payment", "flip"),
    ],
)
def test_altered_sealed_parts_are_refused(
    tmp_path: Path, spec: JobSpec, sources: list[Any], step: str, party: str, key: str, how: str
) -> None:
    world = _world(tmp_path, spec, sources)

    def alter(s: str, p: str, meta: dict[str, Any], parts: dict[str, bytes]) -> Any:
        if s == step and p == party:
            blob = parts[key]
            if how == "truncate":
                parts[key] = blob[: len(blob) - 64]
            elif how == "extend":
                parts[key] = blob + bytes(64)
            else:
                parts[key] = blob[:-40] + bytes([blob[-40] ^ 1]) + blob[-39:]
        return meta, parts

    with pytest.raises(Refused) as refused:
        _psi(world, alter)
    assert (refused.value.step, refused.value.party) == (step, party)
    assert refused.value.kind in {"CiphertextError", "ProtocolError"}


# -- steps twice, out of order, or of the other PSI -----------------------------------------
def test_psi_setup_twice_is_refused(tmp_path: Path, spec: JobSpec, sources: list[Any]) -> None:
    world = _world(tmp_path, spec, sources)
    _inner, relay = _relay(world)
    first = relay.send(
        "psi-salt",
        {LABEL: ({"phase": "psi_salt"}, {}), **{f: ({"phase": "oprf_size"}, {}) for f in FEATURES}},
    )
    sizes = {f: int(first[f].meta["n_values"]) for f in FEATURES}
    relay.send("psi-setup", {LABEL: ({"phase": "oprf_start", "sizes": sizes}, {})})
    for again in ("psi-setup", "psi-salt"):
        phase = "oprf_start" if again == "psi-setup" else "psi_salt"
        with pytest.raises(Refused, match="ProtocolError"):
            relay.send(again, {LABEL: ({"phase": phase, "sizes": sizes}, {})})
    with pytest.raises(Refused, match="ProtocolError"):  # a feature party's size, again
        relay.send("psi-salt", {"payment": ({"phase": "oprf_size"}, {})})


@pytest.mark.parametrize(
    "attack",
    [
        "matrix-before-setup",
        "values-before-answer",
        "intersect-before-values",
        "intersect-before-matrix",
        "answer-before-salt",
    ],
)
def test_steps_out_of_order_are_refused(
    tmp_path: Path, spec: JobSpec, sources: list[Any], attack: str
) -> None:
    world = _world(tmp_path, spec, sources)
    _inner, relay = _relay(world)
    if attack == "answer-before-salt":  # nothing stored yet at payment
        with pytest.raises(Refused):
            relay.send("psi-answer", {"payment": ({"phase": "oprf_answer", "n_receiver": 5}, {})})
        return
    first = relay.send(
        "psi-salt",
        {LABEL: ({"phase": "psi_salt"}, {}), **{f: ({"phase": "oprf_size"}, {}) for f in FEATURES}},
    )
    sizes = {f: int(first[f].meta["n_values"]) for f in FEATURES}
    if attack == "matrix-before-setup":
        with pytest.raises(Refused):
            relay.send("psi-matrix", {LABEL: ({"phase": "oprf_matrix"}, {})})
        return
    setup = relay.send("psi-setup", {LABEL: ({"phase": "oprf_start", "sizes": sizes}, {})})[LABEL]
    n_label = int(first[LABEL].meta["n_values"])
    if attack == "values-before-answer":
        with pytest.raises(Refused):
            relay.send("psi-values", {"payment": ({"phase": "oprf_values"}, {})})
        return
    if attack == "intersect-before-matrix":
        with pytest.raises(Refused):
            relay.send("intersect", {LABEL: ({"phase": "intersect"}, {})})
        assert "aligned" not in _stored(world, LABEL)
        return
    answers = relay.send(
        "psi-answer",
        {
            f: (
                {"phase": "oprf_answer", "n_receiver": n_label},
                {"salt": first[LABEL].part(f"salt/{f}"), "setup": setup.part(f"setup/{f}")},
            )
            for f in FEATURES
        },
    )
    replies = {f"reply/{f}": answers[f].part("reply") for f in FEATURES}
    relay.send("psi-matrix", {LABEL: ({"phase": "oprf_matrix"}, replies)})
    # The label holder's intersect before any values: with the replies in their place.
    with pytest.raises(Refused):
        empty = {"values/payment": b"", "values/billing": b""}
        relay.send("intersect", {LABEL: ({"phase": "intersect"}, empty)})
    assert "aligned" not in _stored(world, LABEL)


def test_ring_phases_are_refused_in_a_cm20_job_and_vice_versa(
    tmp_path: Path, spec: JobSpec, sources: list[Any]
) -> None:
    world = _world(tmp_path, spec, sources)
    _inner, relay = _relay(world)
    ring_asks = [
        ("psi-own", "payment", {"phase": "psi_own"}),
        ("psi-own", LABEL, {"phase": "psi_own"}),
        ("psi-hop-1", "payment", {"phase": "psi_hop", "owner": LABEL, "hop": 1}),
        # a CM20 phase under another step's name, or at the other role
        ("psi-answer", "payment", {"phase": "oprf_values"}),
        ("psi-values", "payment", {"phase": "oprf_answer", "n_receiver": 5}),
        ("psi-setup", "payment", {"phase": "oprf_start", "sizes": {}}),
        ("psi-answer", LABEL, {"phase": "oprf_answer", "n_receiver": 5}),
    ]
    for step, party, meta in ring_asks:
        with pytest.raises(Refused, match="ProtocolError"):
            relay.send(step, {party: (meta, {})})
    ring = spec_for(sources, encrypted=False, iterations=1)
    ring_world = _world(tmp_path / "ring", ring, sources)
    _inner, ring_relay = _relay(ring_world)
    cm20_asks = [
        ("psi-salt", "payment", {"phase": "oprf_size"}),
        ("psi-setup", LABEL, {"phase": "oprf_start", "sizes": {"payment": 5, "billing": 5}}),
        ("psi-answer", "payment", {"phase": "oprf_answer", "n_receiver": 5}),
        ("psi-matrix", LABEL, {"phase": "oprf_matrix"}),
        ("psi-values", "payment", {"phase": "oprf_values"}),
    ]
    for step, party, meta in cm20_asks:
        with pytest.raises(Refused, match="ProtocolError"):
            ring_relay.send(step, {party: (meta, {})})


# -- the relay states set sizes (0, 1, off by one, huge) ------------------------------------
@pytest.mark.parametrize(
    ("who", "size"),
    [
        ("label", 0),
        ("label", 1),
        ("label", "true+1"),
        ("label", 1 << 32),
        ("feature", 0),
        ("feature", 1),
        ("feature", 1 << 32),
    ],
)
def test_stated_set_sizes_other_than_the_truth_are_refused(
    tmp_path: Path, spec: JobSpec, sources: list[Any], who: str, size: Any
) -> None:
    """Both parties check CM20's parameter header against the sizes they know: a relay
    that tells the label holder payment holds 0, 1 or 2^32 ids (weak or absurd
    parameters), or tells payment the label holder holds them, gets a refusal at
    payment's ``psi-answer`` before any OPRF value exists."""
    world = _world(tmp_path, spec, sources)
    true = _sizes(world)

    def lie(s: str, p: str, meta: dict[str, Any], parts: dict[str, bytes]) -> Any:
        if who == "label" and s == "psi-setup":
            stated = true["payment"] + 1 if size == "true+1" else size
            meta["sizes"] = {**meta["sizes"], "payment": stated}
        if who == "feature" and s == "psi-answer" and p == "payment":
            meta["n_receiver"] = size
        return meta, parts

    inner, relay = _relay(world, lie)
    with pytest.raises(Refused) as refused:
        _psi_cm20(relay, spec)
    assert (refused.value.step, refused.value.party) == ("psi-answer", "payment")
    assert refused.value.kind == "ProtocolError"
    assert "psi-values" not in inner.replies
    assert not VerticalStore.from_config(world.configs["payment"], world.run).has("psi.cm20.sender")


@pytest.mark.parametrize("size", [-1, (1 << 32) + 1, True, "5", 2.0])
def test_set_sizes_outside_the_model_are_refused(
    tmp_path: Path, spec: JobSpec, sources: list[Any], size: Any
) -> None:
    world = _world(tmp_path, spec, sources)

    def lie(s: str, p: str, meta: dict[str, Any], parts: dict[str, bytes]) -> Any:
        if s == "psi-setup":
            meta["sizes"] = {**meta["sizes"], "payment": size}
        return meta, parts

    _inner, relay = _relay(world, lie)
    with pytest.raises(Refused) as refused:
        _psi_cm20(relay, spec)
    assert (refused.value.step, refused.value.party) == ("psi-setup", LABEL)


# -- a malicious feature party's values -----------------------------------------------------
@pytest.mark.parametrize("how", ["repeated", "short", "long", "empty"])
def test_a_feature_partys_malformed_values_are_refused(
    tmp_path: Path, spec: JobSpec, sources: list[Any], how: str
) -> None:
    """payment (its own keys, with the relay) seals values of the wrong count or with a
    repeated value to the label holder: refused, no alignment at all."""
    world = _world(tmp_path, spec, sources)
    payment = as_party(world, "payment")
    sizes = _sizes(world)
    size = cm20_params(sizes["payment"], sizes[LABEL]).hash_bytes
    n = sizes["payment"]
    rng = np.random.default_rng(1)
    distinct = rng.bytes(n * size)
    bad = {
        "repeated": distinct[: size * (n - 1)] + distinct[:size],
        "short": distinct[: size * (n - 1)],
        "long": distinct + rng.bytes(size),
        "empty": b"",
    }[how]

    def forge(s: str, p: str, meta: dict[str, Any], parts: dict[str, bytes]) -> Any:
        if s == "intersect":
            parts["values/payment"] = payment.seal_to(LABEL, "psi/cm20/payment/values", bad)
        return meta, parts

    with pytest.raises(Refused) as refused:
        _psi(world, forge)
    assert (refused.value.step, refused.value.kind) == ("intersect", "ProtocolError")
    assert "aligned" not in _stored(world, LABEL)


@pytest.mark.parametrize("bad", [["n"], [3, 3], [0, 10**9]])
def test_positions_outside_a_feature_partys_set_are_refused(
    tmp_path: Path, spec: JobSpec, sources: list[Any], bad: list[Any]
) -> None:
    """Even the label holder (or its key, stolen) cannot point payment at a row it does
    not hold, or at one row twice: payment refuses the alignment and trains on nothing."""
    world = _world(tmp_path, spec, sources)
    _psi(world)
    label = as_party(world, LABEL)
    n = _sizes(world)["payment"]
    bad = [n if b == "n" else b for b in bad]
    padded = np.full(n, -1, dtype=np.int64)
    padded[: len(bad)] = bad
    sealed = label.seal_to("payment", "psi/align/payment", array_bytes(padded))
    reply = world.vertical("payment", "step-0", {"phase": "step", "iteration": 0},
                           {"align": sealed})  # fmt: skip
    assert reply.refused is not None
    assert "aligned" not in _stored(world, "payment")


# -- a party's stored CM20 state restores only for its own run and pair ----------------------
def _ids(n: int, tag: str) -> list[str]:
    return [f"{tag}{i}" for i in range(n)]


@pytest.mark.parametrize(
    "other",
    [
        OprfPsiConfig("run-2/payment", 40, 30, bytes(32)),  # another run, same sizes
        OprfPsiConfig("run-1/billing", 40, 30, bytes(32)),  # another feature party's run
        OprfPsiConfig("run-1/payment", 40, 30, b"\x01" * 32),  # another salt
    ],
)
def test_a_stored_state_restores_only_for_its_own_run(other: OprfPsiConfig) -> None:
    """docs: the state is "tagged with the role and the run's parameter header, so it
    restores only for that run". The header holds the sizes, not the run: the tag must
    bind the run, pair and salt too, or a state restores for any run of the same sizes."""
    mine = OprfPsiConfig("run-1/payment", 40, 30, bytes(32))
    receiver = OprfPsiReceiver(mine, _ids(30, "y"))
    sender = OprfPsiSender(mine, _ids(40, "x"))
    setup = receiver.start()
    receiver_state = receiver.to_bytes()
    sender.answer(setup)
    sender_state = sender.to_bytes()
    assert OprfPsiReceiver.restore(mine, receiver_state) is not None
    assert OprfPsiSender.restore(mine, sender_state) is not None
    with pytest.raises(ProtocolError, match="another run"):
        OprfPsiReceiver.restore(other, receiver_state)
    with pytest.raises(ProtocolError, match="another run"):
        OprfPsiSender.restore(other, sender_state)


# -- two run names that share a party's state folder ------------------------------------------
@pytest.mark.parametrize("alias", ["cm20/x", "cm20.x", "cm20 x", "cm20_x/"])
def test_run_names_that_share_a_state_folder_are_refused(
    tmp_path: Path, spec: JobSpec, sources: list[Any], alias: str
) -> None:
    """The relay names its runs. The stores map a run to a folder by replacing every
    character outside ``[A-Za-z0-9_.-]`` with ``_``, so ``cm20/x`` would share run
    ``cm20_x``'s folder (its CM20 states, salt, rows and transport key) while the run
    contract counts it as another run: the label holder would set up a CM20 with another
    run's salt. Safe: every party refuses such a name before it touches a store."""
    world = _world(tmp_path, spec, sources)
    world.run = "cm20_x"
    world.handshake()
    _inner, relay = _relay(world)
    first = relay.send(
        "psi-salt",
        {LABEL: ({"phase": "psi_salt"}, {}), **{f: ({"phase": "oprf_size"}, {}) for f in FEATURES}},
    )
    sizes = {f: int(first[f].meta["n_values"]) for f in FEATURES}
    world.run = alias
    for party in world.configs:
        reply = world.serve(party, "query.handshake", "handshake", {})
        assert reply.refused == "ProtocolError", party
    reply = world.vertical(LABEL, "psi-setup", {"phase": "oprf_start", "sizes": sizes})
    assert reply.refused == "ProtocolError"


# -- the relay's offers and party lists ---------------------------------------------------------
@pytest.mark.parametrize("attack", ["swap-offers", "older-run-offer"])
def test_swapped_or_stale_transport_offers_are_refused(
    tmp_path: Path, spec: JobSpec, sources: list[Any], attack: str
) -> None:
    """The relay hands the label holder billing's signed transport key as payment's (so
    payment's CM20 set-up would be sealed to billing), or payment's key of an older run."""
    world = _world(tmp_path, spec, sources)
    stale = dict(world.offers)
    world.run = "run-cm20-later"
    world.handshake()

    def tamper(s: str, p: str, meta: dict[str, Any], parts: dict[str, bytes]) -> Any:
        if s == "psi-setup":
            offers = dict(meta["offers"])
            offers["payment"] = offers["billing"] if attack == "swap-offers" else stale["payment"]
            meta["offers"] = offers
        return meta, parts

    inner, relay = _relay(world, tamper)
    with pytest.raises(Refused) as refused:
        _psi_cm20(relay, spec)
    assert (refused.value.step, refused.value.party) == ("psi-setup", LABEL)
    assert "psi-answer" not in inner.replies


@pytest.mark.parametrize("extra", [LABEL, "stranger"])
def test_a_set_up_naming_other_parties_is_refused(
    tmp_path: Path, spec: JobSpec, sources: list[Any], extra: str
) -> None:
    """The label holder runs CM20 with exactly the job's feature parties: not with itself
    (a size stated for it), nor with a party the job does not name."""
    world = _world(tmp_path, spec, sources)

    def tamper(s: str, p: str, meta: dict[str, Any], parts: dict[str, bytes]) -> Any:
        if s == "psi-setup":
            meta["sizes"] = {**meta["sizes"], extra: 5}
        return meta, parts

    _inner, relay = _relay(world, tamper)
    with pytest.raises(Refused) as refused:
        _psi_cm20(relay, spec)
    assert (refused.value.step, refused.value.kind) == ("psi-setup", "ProtocolError")


def test_switching_the_psi_mid_run_is_refused(
    tmp_path: Path, spec: JobSpec, sources: list[Any]
) -> None:
    """After CM20's first step the relay sends the same run's requests under the ring's
    spec (psi = "ecdh-ring"), to have the parties blind their sets for it: the run is
    pinned to the CM20 job, so every party refuses."""
    world = _world(tmp_path, spec, sources)
    _inner, relay = _relay(world)
    relay.send(
        "psi-salt",
        {LABEL: ({"phase": "psi_salt"}, {}), **{f: ({"phase": "oprf_size"}, {}) for f in FEATURES}},
    )
    ring = spec_for(sources, encrypted=False, iterations=1)
    assert ring.vertical.psi == "ecdh-ring"
    for party in world.configs:
        meta = {"offers": world.offers, "mask_offers": world.masks, "phase": "psi_own",
                "step": "psi-own"}  # fmt: skip
        reply = world.serve(party, "query.vertical", "psi-own", meta, {}, spec=ring)
        assert reply.refused is not None, party
        assert not VerticalStore.from_config(world.configs[party], world.run).has("psi.key")


@pytest.mark.parametrize("how", ["identity-point", "small-order-point", "short", "non-canonical"])
def test_a_feature_partys_malformed_ot_reply_is_refused(
    tmp_path: Path, spec: JobSpec, sources: list[Any], how: str
) -> None:
    """payment (its own keys, with the relay) answers the label holder's set-up with base-OT
    points outside the prime-order subgroup (the identity, a point of order 8, a
    non-canonical encoding) or too few of them: the label holder refuses before it builds
    a matrix from its set."""
    world = _world(tmp_path, spec, sources)
    payment = as_party(world, "payment")
    sizes = _sizes(world)
    width = cm20_params(sizes["payment"], sizes[LABEL]).width
    identity = b"\x01" + bytes(31)
    order_8 = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
    p_plus_1 = (2**255 - 19 + 1).to_bytes(32, "little")  # y = 1 again: not canonical
    valid = [
        sodium.crypto_scalarmult_ed25519_base_noclamp(
            sodium.crypto_core_ed25519_scalar_reduce(bytes([i % 256, 1 + i // 256]) + bytes(62))
        )
        for i in range(width)
    ]
    assert all(sodium.crypto_core_ed25519_is_valid_point(q) for q in valid)
    honest = b"".join(valid)
    bad_point = {"identity-point": identity, "small-order-point": order_8,
                 "non-canonical": p_plus_1}.get(how, b"")  # fmt: skip
    assert not bad_point or not sodium.crypto_core_ed25519_is_valid_point(bad_point)
    middle = 32 * (width // 2)  # the bad point among valid ones
    points = (
        honest[:middle] + bad_point + honest[middle + 32 :]
        if bad_point
        else honest[: 32 * (width - 1)]
    )
    forged = bytes(16) + points

    def forge(s: str, p: str, meta: dict[str, Any], parts: dict[str, bytes]) -> Any:
        if s == "psi-matrix":
            parts["reply/payment"] = payment.seal_to(LABEL, "psi/cm20/payment/reply", forged)
        return meta, parts

    inner, relay = _relay(world, forge)
    with pytest.raises(Refused) as refused:
        _psi_cm20(relay, spec)
    assert (refused.value.step, refused.value.party) == ("psi-matrix", LABEL)
    assert refused.value.kind == "ProtocolError"
    assert "psi-values" not in inner.replies
