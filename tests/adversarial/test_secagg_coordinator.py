"""A malicious coordinator against the real secure-aggregation partner code.

Each test plays one attack with real keys and messages and asserts the refusal, and,
where the attack gets partway, what the coordinator still learns (nothing about one
partner's vector beyond the survivors' sum).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedcollab.common.errors import PrivacyError
from fedcollab.common.keys import Signer
from fedcollab.privacy.masking import MaskingKey
from fedcollab.privacy.secagg_messages import MaskedInput, UnmaskRequest
from fedcollab.privacy.secagg_session import SecAggRefusal, mask_stream, pair_sign, pairwise_seed
from fedcollab.privacy.secagg_unmask import unmask_request, unmask_sum
from fedcollab.privacy.shamir import combine
from tests.support.secagg import Federation, make_config

VICTIM = "p002"


def _through_masking(n: int = 5, length: int = 16) -> tuple[Federation, dict[str, np.ndarray]]:
    config = make_config(n, length=length)
    fed = Federation.start(config)
    everyone = set(config.cohort)
    fed.advertise(everyone)
    fed.share(everyone)
    rng = np.random.default_rng(7)
    inputs = {n: rng.uniform(-100, 100, size=length) for n in config.cohort}
    fed.mask(inputs, everyone)
    return fed, inputs


def test_coordinator_cannot_drop_a_live_partner_after_the_check() -> None:
    """All survivors signed U3 (victim included); the coordinator then presents U3 minus
    the victim and asks for the victim's masking-key shares: refused by every partner."""
    fed, _ = _through_masking()
    cohort = fed.config.cohort
    fed.sign(cohort, cohort)
    honest = unmask_request(
        fed.config, list(fed.signatures.values()), survivors=cohort, u2=fed.u2, peers=fed.peers
    )
    fake_survivors = tuple(n for n in cohort if n != VICTIM)
    forged = UnmaskRequest(
        fake_survivors,
        {n: honest.signatures[n] for n in fake_survivors},  # signatures on the *other* set
        (VICTIM,),
    )
    for name in fake_survivors:
        with pytest.raises(SecAggRefusal, match="another survivor set"):
            fed.partners[name].unmask(forged)


def test_survivor_signatures_must_match_the_set() -> None:
    """Partners that signed nothing yet: the coordinator shows them a set excluding the
    live victim with re-used signatures from nobody: refused for missing signatures."""
    fed, _ = _through_masking()
    cohort = fed.config.cohort
    fake = tuple(n for n in cohort if n != VICTIM)
    # The victim itself refuses to sign a set that leaves it out.
    with pytest.raises(SecAggRefusal, match="leaves out this partner"):
        fed.partners[VICTIM].sign_survivors(fake)
    # The others sign it (they cannot know the victim is alive) ...
    fed.sign(fake, fake[:-1])
    request = UnmaskRequest(
        fake, {n: s.signature for n, s in fed.signatures.items()}, (VICTIM,)
    )  # ... but one survivor's signature is missing
    with pytest.raises(SecAggRefusal, match="did not sign"):
        fed.partners[fake[0]].unmask(request)
    with pytest.raises(SecAggRefusal, match="did not sign"):
        unmask_request(
            fed.config, list(fed.signatures.values()), survivors=fake, u2=fed.u2, peers=fed.peers
        )


def test_dropping_a_live_partner_before_the_check_still_hides_its_vector() -> None:
    """The coordinator claims the victim dropped *before* anyone signed: every survivor
    reveals the victim's masking-key shares, none its self-mask shares. What the
    coordinator learns about the victim is x_v + PRG(b_v): uniform, unrelated to x_v."""
    fed, inputs = _through_masking(length=64)
    cohort = fed.config.cohort
    fake = tuple(n for n in cohort if n != VICTIM)
    fed.sign(fake, fake)
    request = unmask_request(
        fed.config, list(fed.signatures.values()), survivors=fake, u2=fed.u2, peers=fed.peers
    )
    responses = {n: fed.partners[n].unmask(request) for n in fake}
    assert all(VICTIM not in r.self_shares and VICTIM in r.key_shares for r in responses.values())
    # The coordinator strips every pairwise mask off the victim's (withheld) reply ...
    key = MaskingKey.from_bytes(
        combine([r.key_shares[VICTIM] for r in responses.values()], threshold=fed.config.threshold)
    )
    y = fed.masked[VICTIM].vector(fed.config)
    for u in fake:
        seed = pairwise_seed(
            fed.config, key, me=VICTIM, peer=u, peer_public=fed.adverts[u].masking_key
        )
        if pair_sign(VICTIM, u) > 0:
            y = y - mask_stream(seed, fed.config.length)
        else:
            y = y + mask_stream(seed, fed.config.length)
    leaked = fed.config.codec.decode(y, summands=1)
    # ... and is left with the self-masked vector: nowhere near the victim's values.
    assert np.count_nonzero(np.abs(leaked - inputs[VICTIM]) < 1e3) <= 1
    # The honest sum over the claimed survivors is still what it should be.
    total = unmask_sum(
        fed.config,
        adverts=fed.adverts,
        u2=fed.u2,
        masked={n: fed.masked[n] for n in fake},
        request=request,
        responses=responses,
        peers=fed.peers,
    )
    assert np.allclose(total.values, sum(inputs[n] for n in fake), atol=1e-5)


def test_request_for_both_kinds_of_share_is_refused() -> None:
    fed, _ = _through_masking()
    cohort = fed.config.cohort
    fed.sign(cohort, cohort)
    honest = unmask_request(
        fed.config, list(fed.signatures.values()), survivors=cohort, u2=fed.u2, peers=fed.peers
    )
    greedy = replace(honest, dropped=(VICTIM,))  # b_v (survivor) and s_v (dropped) at once
    with pytest.raises(SecAggRefusal, match="masking-key shares of survivors"):
        fed.partners["p000"].unmask(greedy)
    # The refusal left the partner able to answer the honest request, once.
    fed.partners["p000"].unmask(honest)
    with pytest.raises(SecAggRefusal, match="stage UNMASKED"):
        fed.partners["p000"].unmask(greedy)


def test_coordinator_plus_one_partner_cannot_get_two_fully_signed_sets() -> None:
    """n = 5, t = 4, colluder p004 signs anything. Honest partners sign one set each; a
    second set of t members always contains an honest partner that signed the first."""
    fed, _ = _through_masking()
    first = ("p000", "p001", "p002", "p004")  # victim p002 included: gives b_v shares
    fed.sign(first, first)
    second = ("p000", "p001", "p003", "p004")  # victim excluded: would give s_v shares
    for honest in ("p000", "p001"):
        with pytest.raises(SecAggRefusal):
            fed.partners[honest].sign_survivors(second)
    with pytest.raises(SecAggRefusal, match="threshold"):
        fed.partners["p003"].sign_survivors(("p003", "p004"))


def test_substituted_peer_key_is_refused() -> None:
    """The coordinator swaps the victim's masking key for one it holds (and re-signs the
    advertisement with a key that is not the victim's pinned audit key)."""
    fed = Federation.start(make_config(4))
    fed.advertise(fed.config.cohort)
    own = MaskingKey.generate()
    forged = replace(fed.adverts[VICTIM], masking_key=own.public_bytes()).signed(Signer.generate())
    unsigned = replace(fed.adverts[VICTIM], masking_key=own.public_bytes())
    for bad in (forged, unsigned):
        with pytest.raises(SecAggRefusal, match="pinned audit key"):
            fed.partners["p000"].share_keys({**fed.adverts, VICTIM: bad})
    # The victim refuses a relayed copy of its own entry that is not its own keys.
    with pytest.raises(SecAggRefusal, match="own"):
        fed.partners[VICTIM].share_keys({**fed.adverts, VICTIM: forged})


def test_advertisement_from_another_session_is_refused() -> None:
    old = Federation.start(make_config(4, step=3))
    old.advertise(old.config.cohort)
    fed = Federation.start(make_config(4, step=4), signers=old.signers)
    fed.advertise(fed.config.cohort)
    with pytest.raises(SecAggRefusal, match="another session"):
        fed.partners["p000"].share_keys({**fed.adverts, VICTIM: old.adverts[VICTIM]})


def test_forged_or_unsigned_masked_input_is_refused() -> None:
    fed, _ = _through_masking()
    cohort = fed.config.cohort
    fed.sign(cohort, cohort)
    request = unmask_request(
        fed.config, list(fed.signatures.values()), survivors=cohort, u2=fed.u2, peers=fed.peers
    )
    responses = {n: fed.partners[n].unmask(request) for n in cohort}
    real = fed.masked[VICTIM]
    zeros = bytes(len(real.words))
    for bad in (
        MaskedInput(VICTIM, zeros, b""),
        MaskedInput(VICTIM, zeros, real.signature),
        MaskedInput(VICTIM, zeros, Signer.generate().sign(zeros)),
    ):
        with pytest.raises(SecAggRefusal, match="not signed"):
            unmask_sum(
                fed.config,
                adverts=fed.adverts,
                u2=fed.u2,
                masked={**fed.masked, VICTIM: bad},
                request=request,
                responses=responses,
                peers=fed.peers,
            )


def test_wrong_share_from_a_partner_is_caught() -> None:
    """A malicious survivor reveals a wrong self-mask share: with exactly t replies the
    commitment check catches it, with more the Shamir cross-check does."""
    fed, _ = _through_masking()
    cohort = fed.config.cohort
    fed.sign(cohort, cohort)
    request = unmask_request(
        fed.config, list(fed.signatures.values()), survivors=cohort, u2=fed.u2, peers=fed.peers
    )
    responses = {n: fed.partners[n].unmask(request) for n in cohort}
    bad_share = responses["p004"].self_shares[VICTIM]
    tampered = replace(
        responses["p004"],
        self_shares={
            **responses["p004"].self_shares,
            VICTIM: replace(bad_share, y=bad_share.y ^ 1),
        },
    )
    for who in (cohort, cohort[1:]):  # 5 replies (redundant), then exactly t = 4
        replies = {n: responses[n] for n in who} | {"p004": tampered}
        with pytest.raises(PrivacyError):  # SecAggRefusal or InconsistentSharesError
            unmask_sum(
                fed.config,
                adverts=fed.adverts,
                u2=fed.u2,
                masked=fed.masked,
                request=request,
                responses=replies,
                peers=fed.peers,
            )
