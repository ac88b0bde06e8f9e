"""The no-dropout unmasking (no survivor set signed when every partner of U2 sent its
masked input), attacked as a coordinator would: it must not help unmask anyone.

Partners answer an unsigned unmask request only for exactly their own U2, with no
dropped peer, and only with self-mask (``b``) shares; after it they sign nothing and
answer no other unmasking. A coordinator that sends the unsigned request to some
partners and claims to the others that the target dropped (the split that the consistency
check of Bonawitz et al. 2017 is about) gets the target's ``b`` shares from the first
group and its masking-key (``s``) shares from the second, which overlap only in the
colluding partner: with ``2t - n > 1`` it never holds ``t`` of both, for any split
(checked exhaustively below, with real X25519, HPKE, Ed25519 and ChaCha20)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fedcollab.privacy.secagg_messages import UnmaskRequest
from fedcollab.privacy.secagg_partner import Stage
from fedcollab.privacy.secagg_session import SecAggRefusal
from fedcollab.privacy.secagg_unmask import unmask_request, unmask_sum
from fedcollab.privacy.shamir import combine
from tests.support.secagg import Federation, make_config


def _masked_federation(n: int, length: int = 6, seed: int = 0) -> tuple[Federation, dict]:
    config = make_config(n, length=length)
    rng = np.random.default_rng(seed)
    inputs = {p: rng.uniform(-50, 50, size=length) for p in config.cohort}
    fed = Federation.start(config)
    fed.advertise(config.cohort)
    fed.share(config.cohort)
    fed.mask(inputs, config.cohort)
    return fed, inputs


@pytest.mark.parametrize("lost", [0, 1, 2])
def test_without_a_dropout_the_sum_is_unmasked_with_no_signatures(lost: int) -> None:
    """7 partners (t = 5), every masked input in: one unsigned request, self-mask shares
    only, from 7, 6 or 5 of them; the sum of all 7 is exact on the grid. (On the code
    before, every partner refused it: "expected SIGNED".)"""
    fed, inputs = _masked_federation(7)
    cohort = fed.config.cohort
    request = UnmaskRequest(cohort, {}, ())
    responders = cohort[lost:]
    responses = {n: fed.partners[n].unmask(request) for n in responders}
    assert all(not r.key_shares and set(r.self_shares) == set(cohort) for r in responses.values())
    result = unmask_sum(
        fed.config,
        adverts=fed.adverts,
        u2=fed.u2,
        masked=fed.masked,
        request=request,
        responses=responses,
        peers=fed.peers,
    )
    codec = fed.config.codec
    want = sum(codec.decode(codec.encode(inputs[n]), summands=1) for n in cohort)
    assert result.contributors == cohort and result.dropped == ()
    assert np.allclose(result.values, want, atol=len(cohort) * codec.grid)


@pytest.mark.parametrize(
    "request_",
    [
        UnmaskRequest(("p000", "p001", "p002", "p003"), {}, ()),  # p004 left out, unsigned
        UnmaskRequest(("p000", "p001", "p002", "p003", "p004", "p005"), {}, ()),  # an outsider
    ],
)
def test_an_unsigned_request_must_name_exactly_the_partners_that_shared(
    request_: UnmaskRequest,
) -> None:
    fed, _ = _masked_federation(5)
    p = fed.partners["p001"]
    with pytest.raises(SecAggRefusal, match="exactly the partners that shared"):
        p.unmask(request_)
    assert p.stage is Stage.MASKED  # nothing revealed, nothing changed


def test_an_unsigned_request_that_names_a_dropped_peer_is_refused() -> None:
    """Asking for p004's masking-key shares needs t survivors' signatures on a set
    without p004; without them the request is refused as out of order."""
    fed, _ = _masked_federation(5)
    cohort = fed.config.cohort
    p = fed.partners["p001"]
    with pytest.raises(SecAggRefusal, match="expected SIGNED"):
        p.unmask(UnmaskRequest(cohort[:4], {}, (cohort[4],)))
    assert p.stage is Stage.MASKED


def test_after_the_unsigned_unmasking_a_partner_signs_and_reveals_nothing_more() -> None:
    fed, _ = _masked_federation(5)
    cohort = fed.config.cohort
    p = fed.partners["p001"]
    p.unmask(UnmaskRequest(cohort, {}, ()))
    with pytest.raises(SecAggRefusal, match="stage UNMASKED"):
        p.sign_survivors(cohort[:4])
    with pytest.raises(SecAggRefusal, match="stage UNMASKED"):
        p.unmask(UnmaskRequest(cohort, {}, ()))


def test_a_partner_that_signed_refuses_the_unsigned_request() -> None:
    fed, _ = _masked_federation(5)
    cohort = fed.config.cohort
    p = fed.partners["p001"]
    p.sign_survivors(cohort)
    with pytest.raises(SecAggRefusal, match="signatures"):
        p.unmask(UnmaskRequest(cohort, {}, ()))


def test_splitting_partners_between_the_two_unmaskings_never_unmasks_the_target() -> None:
    """n = 5, t = 4, colluder p004 (it hands over everything it holds), target p000.
    Every assignment of the honest partners p000..p003 to "unsigned request", "told p000
    dropped" or "not asked": the coordinator never holds t self-mask shares *and* t
    masking-key shares of p000, so it cannot strip p000's masks. Where it holds t of one
    kind the reconstruction works (the test would see a leak)."""
    colluder, target = "p004", "p000"
    honest = ("p000", "p001", "p002", "p003")
    reached_b = reached_s = 0
    for roles in itertools.product(("fast", "claim", "idle"), repeat=len(honest)):
        fed, _ = _masked_federation(5, length=2, seed=1)
        cfg, cohort = fed.config, fed.config.cohort
        assert cfg.threshold == 4
        b_shares = [fed.partners[colluder]._state.held[target][1]]
        s_shares = [fed.partners[colluder]._state.held[target][0]]
        without = tuple(n for n in cohort if n != target)
        signatures = [fed.partners[colluder].sign_survivors(without)]
        for name, role in zip(honest, roles, strict=True):
            if role == "fast":
                resp = fed.partners[name].unmask(UnmaskRequest(cohort, {}, ()))
                b_shares.append(resp.self_shares[target])
                assert not resp.key_shares
            elif role == "claim":
                try:
                    signatures.append(fed.partners[name].sign_survivors(without))
                except SecAggRefusal:
                    assert name == target  # it will not sign a set without itself
        try:
            request = unmask_request(cfg, signatures, survivors=without, u2=fed.u2, peers=fed.peers)
        except SecAggRefusal:
            request = None  # fewer than t signatures: no honest partner reveals s shares
        if request is not None:
            for name, role in zip(honest, roles, strict=True):
                if role == "claim" and name != target:
                    resp = fed.partners[name].unmask(request)
                    s_shares.append(resp.key_shares[target])
                    assert target not in resp.self_shares
        got_b, got_s = len(b_shares) >= cfg.threshold, len(s_shares) >= cfg.threshold
        assert not (got_b and got_s), roles
        secret = fed.partners[target]
        if got_b:  # the target's self-mask alone: its pairwise masks still hide x
            assert combine(b_shares, threshold=cfg.threshold) == secret._self_seed
            reached_b += 1
        if got_s:  # its masking key alone: its self-mask still hides x
            key = combine(s_shares, threshold=cfg.threshold)
            assert key == secret._masking_key.to_bytes()
            reached_s += 1
    # Both kinds were within reach, just never together.
    assert reached_b and reached_s
