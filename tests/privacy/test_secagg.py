"""Secure aggregation end to end (real X25519, HPKE, Ed25519, ChaCha20): the unmasked sum
equals the sum of the survivors' rounded vectors with 0, 1 and n - t dropouts; masks never
repeat across runs, steps or purposes; every stage is answered once and in order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedcollab.privacy.secagg_messages as secagg_messages
import fedcollab.privacy.secagg_partner as secagg_partner
from fedcollab.common.keys import Signer
from fedcollab.privacy.key_transport import PeerKeys
from fedcollab.privacy.masking import MaskingKey
from fedcollab.privacy.secagg_messages import UnmaskRequest
from fedcollab.privacy.secagg_partner import SecAggPartner, SessionLedger, Stage
from fedcollab.privacy.secagg_session import (
    SecAggConfig,
    SecAggRefusal,
    mask_stream,
    minimum_threshold,
    pairwise_seed,
    self_mask_key,
)
from tests.support.secagg import CODEC, Federation, make_config, run_session


def _inputs(config: SecAggConfig, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.uniform(-1e3, 1e3, size=config.length) for n in config.cohort}


def _expected(config: SecAggConfig, inputs: dict[str, np.ndarray], who: tuple[str, ...]):
    total = sum(config.codec.quantise(inputs[n]).astype(object) for n in who)
    return np.array([float(v) * config.codec.grid for v in total])


@pytest.mark.parametrize("dropouts", ["none", "one", "n-t"])
def test_sum_is_exact_on_the_grid_with_dropouts(dropouts: str) -> None:
    config = make_config(7, length=33)
    inputs = _inputs(config, 1)
    count = {"none": 0, "one": 1, "n-t": 7 - config.threshold}[dropouts]
    dropped = config.cohort[1 : 1 + count]
    result = run_session(config, inputs, drop_after_share=dropped)
    assert result.dropped == tuple(sorted(dropped))
    assert result.contributors == tuple(n for n in config.cohort if n not in dropped)
    assert np.array_equal(result.values, _expected(config, inputs, result.contributors))
    # and within the grid's rounding of the float64 sum
    float_sum = sum(inputs[n] for n in result.contributors)
    assert np.max(np.abs(result.values - float_sum)) <= len(result.contributors) * CODEC.grid


def test_dropouts_before_sharing_and_after_signing() -> None:
    config = make_config(8, length=5)  # t = 5
    inputs = _inputs(config, 2)
    result = run_session(
        config,
        inputs,
        drop_before_share=["p000"],
        drop_after_share=["p007"],
        drop_after_unmask_signing=["p003"],  # signed, then sent no shares: t responders remain
    )
    assert result.contributors == ("p001", "p002", "p003", "p004", "p005", "p006")
    assert np.array_equal(result.values, _expected(config, inputs, result.contributors))


@settings(max_examples=8, deadline=None)
@given(n=st.integers(2, 6), length=st.integers(1, 20), data=st.data())
def test_property_sum_exact_for_any_tolerable_dropout_set(
    n: int, length: int, data: st.DataObject
) -> None:
    config = make_config(n, length=length)
    inputs = _inputs(config, data.draw(st.integers(0, 2**32 - 1)))
    dropped = data.draw(
        st.lists(st.sampled_from(config.cohort), unique=True, max_size=n - config.threshold)
    )
    result = run_session(config, inputs, drop_after_share=dropped)
    assert np.array_equal(result.values, _expected(config, inputs, result.contributors))


def test_too_many_dropouts_are_refused() -> None:
    config = make_config(5)
    with pytest.raises(SecAggRefusal, match="threshold"):
        run_session(config, _inputs(config, 3), drop_after_share=["p000", "p001"])


def test_masks_never_repeat_across_runs_steps_and_purposes() -> None:
    """Same X25519 keys (the worst case), different sessions: every stream differs."""
    a, b = MaskingKey.generate(), MaskingKey.generate()
    sessions = [
        make_config(2, run="r1", step=0),
        make_config(2, run="r2", step=0),
        make_config(2, run="r1", step=1),
        SecAggConfig("r1", 0, "kmeans", ("p000", "p001"), 2, 8, CODEC),
    ]
    streams = set()
    for cfg in sessions:
        seed_a = pairwise_seed(cfg, a, me="p000", peer="p001", peer_public=b.public_bytes())
        seed_b = pairwise_seed(cfg, b, me="p001", peer="p000", peer_public=a.public_bytes())
        assert seed_a == seed_b  # both sides derive the same seed ...
        streams.add(mask_stream(seed_a, 64).tobytes())
        streams.add(mask_stream(self_mask_key(cfg, "p000", b"\x01" * 32), 64).tobytes())
    assert len(streams) == 2 * len(sessions)  # ... and no stream appears twice


def test_fresh_partners_never_reuse_masked_words() -> None:
    """Two sessions with the same input give unrelated masked replies."""
    replies = []
    for step in (0, 1):
        config = make_config(3, length=64, step=step)
        fed = Federation.start(config)
        everyone = set(config.cohort)
        fed.advertise(everyone)
        fed.share(everyone)
        fed.mask({n: np.zeros(64) for n in everyone}, everyone)
        replies.append(fed.masked["p000"].vector(config))
    assert np.count_nonzero(replies[0] == replies[1]) <= 1


def test_stages_are_answered_once_and_in_order() -> None:
    config = make_config(3)
    fed = Federation.start(config)
    p = fed.partners["p000"]
    with pytest.raises(SecAggRefusal, match="stage NEW"):
        p.masked_input({}, np.zeros(config.length))
    fed.advertise(config.cohort)
    with pytest.raises(SecAggRefusal, match="stage ADVERTISED"):
        p.advertise()  # a second advertisement (fresh keys) is refused
    fed.share(config.cohort)
    assert p.stage is Stage.SHARED
    with pytest.raises(SecAggRefusal):
        p.share_keys(fed.adverts)
    fed.mask({n: np.ones(config.length) for n in config.cohort}, config.cohort)
    with pytest.raises(SecAggRefusal, match="stage MASKED"):
        p.masked_input(fed.inboxes["p000"], np.ones(config.length))
    fed.sign(config.cohort, config.cohort)
    with pytest.raises(SecAggRefusal, match="stage SIGNED"):
        p.sign_survivors(config.cohort)
    fed.finish(config.cohort, config.cohort)
    assert p.stage is Stage.UNMASKED


def test_ledger_opens_a_session_once() -> None:
    config = make_config(2)
    signer = Signer.generate()
    peers = PeerKeys({"p000": signer.public_key, "p001": Signer.generate().public_key})
    ledger = SessionLedger()
    ledger.open(config, me="p000", signer=signer, peers=peers)
    with pytest.raises(SecAggRefusal, match="already opened"):
        ledger.open(config, me="p000", signer=signer, peers=peers)
    ledger.open(make_config(2, step=1), me="p000", signer=signer, peers=peers)
    assert SessionLedger(ledger.opened).opened == ledger.opened


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cohort": ("a",), "threshold": 1},
        {"cohort": ("b", "a"), "threshold": 2},
        {"cohort": ("a", "b", "c", "d"), "threshold": 2},  # t = n/2
        {"cohort": ("a", "b", "c", "d"), "threshold": 5},
        {"cohort": ("a", "b", "c"), "threshold": 2},  # t > n/2 but coordinator + 1 colluder
    ],
)
def test_configs_that_cannot_protect_are_refused(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {"run": "r", "step": 0, "purpose": "x", "length": 4, "codec": CODEC}
    with pytest.raises(SecAggRefusal):
        SecAggConfig(**(base | kwargs))  # type: ignore[arg-type]


def test_minimum_threshold_resists_the_stated_collusion() -> None:
    for n in range(2, 200):
        for c in (0, 1, 2):
            t = minimum_threshold(n, colluders=c)
            assert 2 * t - n > c and 2 * (t - 1) - n <= c and t > n / 2


def test_own_pinned_key_must_be_own() -> None:
    config = make_config(2)
    with pytest.raises(SecAggRefusal, match="own name"):
        SecAggPartner(
            config,
            me="p000",
            signer=Signer.generate(),
            peers=PeerKeys({n: Signer.generate().public_key for n in config.cohort}),
        )


def test_public_surface() -> None:
    assert set(secagg_partner.__all__) == {"SecAggPartner", "SessionLedger", "Stage"}
    assert set(secagg_messages.__all__) == {
        "MaskedInput",
        "SurvivorSignature",
        "UnmaskRequest",
        "UnmaskResponse",
        "input_statement",
        "shares_topic",
        "survivor_statement",
    }


def test_masked_input_wire_form_round_trips() -> None:
    config = make_config(2, length=3)
    fed = Federation.start(config)
    fed.advertise(config.cohort)
    fed.share(config.cohort)
    fed.mask({n: np.ones(3) for n in config.cohort}, config.cohort)
    item = fed.masked["p001"]
    raw = item.to_bytes()
    assert len(raw) - 8 * config.length < 100  # name + signature + header
    assert type(item).from_bytes(raw) == item


_STAGES = ("advertise", "share", "mask", "sign", "unmask")


@settings(max_examples=15, deadline=None)
@given(calls=st.lists(st.sampled_from(_STAGES), min_size=1, max_size=8))
def test_property_only_the_next_stage_is_ever_answered(calls: list[str]) -> None:
    """Any sequence of stage requests to p000: the next stage is answered (the whole
    federation takes that step), any other request is refused for its stage and changes
    nothing."""
    config = make_config(3, length=4)
    fed = Federation.start(config)
    p = fed.partners["p000"]
    cohort = config.cohort
    honest = {
        "advertise": lambda: fed.advertise(cohort),
        "share": lambda: fed.share(cohort),
        "mask": lambda: fed.mask({n: np.zeros(4) for n in cohort}, cohort),
        "sign": lambda: fed.sign(cohort, cohort),
        "unmask": lambda: fed.finish(cohort, cohort),
    }
    wrong = {
        "advertise": lambda: p.advertise(),
        "share": lambda: p.share_keys(fed.adverts),
        "mask": lambda: p.masked_input(fed.inboxes.get("p000", {}), np.zeros(4)),
        "sign": lambda: p.sign_survivors(cohort),
        # A dropout claimed without signatures (the unsigned no-dropout request is a
        # valid next stage after "mask": tests/adversarial/test_secagg_no_dropout.py).
        "unmask": lambda: p.unmask(UnmaskRequest(cohort[:-1], {}, cohort[-1:])),
    }
    done = 0
    for stage in calls:
        before = p.stage
        if done < len(_STAGES) and stage == _STAGES[done]:
            honest[stage]()
            done += 1
            assert p.stage.value == before.value + 1
        else:
            with pytest.raises(SecAggRefusal, match="stage"):
                wrong[stage]()
            assert p.stage is before


def test_partner_that_drops_after_sending_is_unmasked_away() -> None:
    """p003 sends its masked input, then vanishes before the survivor check: the
    coordinator leaves it out of U3 (its reply is discarded, its masking key rebuilt),
    and the sum over the others is exact."""
    config = make_config(6, length=9)  # t = 4
    inputs = _inputs(config, 5)
    fed = Federation.start(config)
    everyone = config.cohort
    fed.advertise(everyone)
    fed.share(everyone)
    fed.mask(inputs, everyone)
    survivors = tuple(n for n in everyone if n != "p003")
    fed.sign(survivors, survivors)
    result = fed.finish(survivors, survivors)
    assert result.dropped == ("p003",)
    assert np.array_equal(result.values, _expected(config, inputs, survivors))


def test_one_masked_reply_looks_uniform_whatever_the_input() -> None:
    """Bytes of a single masked reply pass a chi-square test for uniformity for an
    all-zero and an all-maximal input (p > 1e-6: a false alarm once in a million runs)."""
    from scipy.stats import chisquare

    for value in (0.0, CODEC.max_abs_value):
        config = make_config(3, length=8192)
        fed = Federation.start(config)
        fed.advertise(config.cohort)
        fed.share(config.cohort)
        fed.mask({n: np.full(8192, value) for n in config.cohort}, config.cohort)
        raw = np.frombuffer(fed.masked["p001"].words, dtype=np.uint8)
        counts = np.bincount(raw, minlength=256)
        assert chisquare(counts).pvalue > 1e-6


def test_a_session_survives_being_stored_between_stages() -> None:
    """A partner node serves each stage in a fresh process: storing and restoring the
    session between every stage gives the same exact sum as keeping it in memory."""
    from fedcollab.privacy.secagg_partner import SecAggPartner

    config = make_config(4, length=6)
    fed = Federation.start(config)

    def cycle() -> None:
        fed.partners = {
            n: SecAggPartner.restore(
                p.to_bytes(), config, me=n, signer=fed.signers[n], peers=fed.peers
            )
            for n, p in fed.partners.items()
        }

    inputs = {n: np.arange(6, dtype=float) * (i + 1) / 8 for i, n in enumerate(config.cohort)}
    everyone = set(config.cohort)
    cycle()
    fed.advertise(everyone)
    cycle()
    fed.share(everyone)
    cycle()
    survivors = everyone - {config.cohort[0]}
    fed.mask(inputs, survivors)
    cycle()
    fed.sign(survivors, survivors)
    cycle()
    result = fed.finish(survivors, survivors)
    assert np.array_equal(result.values, sum(inputs[n] for n in sorted(survivors)))
    other = make_config(4, length=6, step=1)
    with pytest.raises(SecAggRefusal):
        SecAggPartner.restore(
            fed.partners[config.cohort[1]].to_bytes(), other, me=config.cohort[1],
            signer=fed.signers[config.cohort[1]], peers=fed.peers,
        )  # fmt: skip
