"""A malicious coordinator against the CKKS decryptor's checks (privacy.verified_decryption).

The attacks of issue 14 on today's decryptor: a forged aggregate (one partner's ciphertext
plus a plaintext), repeated decryptions, offset search. The decryptor now decrypts only a
sum it recomputed from contributions signed for this run, step and request.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedcollab.common.keys import Signer
from fedcollab.privacy.ckks import PARAMETER_SETS, SecretKeys
from fedcollab.privacy.key_transport import PeerKeys
from fedcollab.privacy.verified_decryption import (
    DecryptionLedger,
    DecryptionRefusal,
    SignedContribution,
    flooded_decrypt,
    flooding_sigma,
    sign_contribution,
    verify_contributions,
)

RUN, STEP, REQ, LENGTH = "run-9", 3, "sha256:request", 4


@pytest.fixture(scope="module")
def keys() -> SecretKeys:
    return SecretKeys.generate()


@pytest.fixture(scope="module")
def signers() -> dict[str, Signer]:
    return {n: Signer.generate() for n in ("a", "b", "c")}


def _peers(signers: dict[str, Signer]) -> PeerKeys:
    return PeerKeys({n: s.public_key for n, s in signers.items()})


def _contribution(keys: SecretKeys, signer: Signer, name: str, vec: list[float], **kw: object):
    blob = keys.encrypt(vec, params="wide")
    args = {"run": RUN, "step": STEP, "request_digest": REQ} | kw
    return sign_contribution(blob, partner=name, signer=signer, **args)  # type: ignore[arg-type]


def _verify(keys: SecretKeys, signers: dict[str, Signer], items, **kw: object):
    args = {
        "peers": _peers(signers),
        "public": keys.public(),
        "params": "wide",
        "length": LENGTH,
        "request_digest": REQ,
        "run": RUN,
        "step": STEP,
        "min_partners": 2,
    } | kw
    return verify_contributions([(i.partner, i) for i in items], **args)  # type: ignore[arg-type]


def test_forged_aggregate_of_one_partner_is_refused(keys, signers) -> None:
    """ct_A + [0, ..., 0, 1] posing as a two-partner sum: the decryptor never decrypts the
    coordinator's aggregate, and one signed contribution is below min_partners."""
    a = _contribution(keys, signers["a"], "a", [1.0, 2.0, 3.0, 4.0])
    vec = keys.public().load(a.blob, params="wide", length=LENGTH)
    forged = vec + ([0.0] * LENGTH + [1.0])
    # Today's decryptor accepts it as a two-partner sum and returns A's vector:
    old = keys.decrypt(forged.serialize(), params="wide", length=LENGTH, contributors=2)
    assert np.allclose(old, [1.0, 2.0, 3.0, 4.0], atol=1e-5)
    unsigned_b = SignedContribution("b", forged.serialize(), b"")
    with pytest.raises(DecryptionRefusal, match="not signed"):
        _verify(keys, signers, [a, unsigned_b])
    with pytest.raises(DecryptionRefusal, match="1 distinct contributors"):
        _verify(keys, signers, [a])
    with pytest.raises(DecryptionRefusal, match="twice"):
        _verify(keys, signers, [a, a])


def test_contribution_for_another_step_or_request_is_refused(keys, signers) -> None:
    a = _contribution(keys, signers["a"], "a", [1.0] * LENGTH)
    for kw in ({"step": STEP + 1}, {"request_digest": "sha256:other"}, {"run": "run-0"}):
        b = _contribution(keys, signers["b"], "b", [1.0] * LENGTH, **kw)
        with pytest.raises(DecryptionRefusal, match="not signed"):
            _verify(keys, signers, [a, b])


def test_signature_by_a_key_that_is_not_pinned_is_refused(keys, signers) -> None:
    a = _contribution(keys, signers["a"], "a", [1.0] * LENGTH)
    b = _contribution(keys, Signer.generate(), "b", [1.0] * LENGTH)  # coordinator's own key
    with pytest.raises(DecryptionRefusal, match="pinned"):
        _verify(keys, signers, [a, b])


def test_repeated_and_extra_decryptions_are_refused(keys, signers) -> None:
    """Offset search needs many decryptions of related sums: one sum per step, Q per run,
    and the same sum again gets the same flooded answer (no fresh noise to average)."""
    ledger = DecryptionLedger(planned=2)
    sigma = PARAMETER_SETS["wide"].flooding_width(contributors=2, decryptions=2)
    noise_key = b"\x05" * 32
    a = _contribution(keys, signers["a"], "a", [1.0, 2.0, 3.0, 4.0])
    b = _contribution(keys, signers["b"], "b", [0.5, 0.5, 0.5, 0.5])
    verified = _verify(keys, signers, [a, b])
    args = {"ledger": ledger, "noise_key": noise_key, "params": "wide", "length": LENGTH}
    first = flooded_decrypt(keys, verified, **args)  # type: ignore[arg-type]
    again = flooded_decrypt(keys, verified, **args)  # type: ignore[arg-type]
    assert np.array_equal(first, again)
    assert np.all(np.abs(first - [1.5, 2.5, 3.5, 4.5]) < 8 * sigma)
    # An offset on the same step is another sum: refused.
    c = _contribution(keys, signers["c"], "c", [0.0, 0.0, 0.0, 1e-6])
    with pytest.raises(DecryptionRefusal, match="already decrypted"):
        flooded_decrypt(keys, _verify(keys, signers, [a, b, c]), **args)  # type: ignore[arg-type]
    # A second step is fine, a third exceeds the plan.
    for step, ok in ((STEP + 1, True), (STEP + 2, False)):
        items = [_contribution(keys, signers[n], n, [1.0] * LENGTH, step=step) for n in ("a", "b")]
        verified = _verify(keys, signers, items, step=step)
        if ok:
            flooded_decrypt(keys, verified, **args)  # type: ignore[arg-type]
        else:
            with pytest.raises(DecryptionRefusal, match="planned decryptions"):
                flooded_decrypt(keys, verified, **args)  # type: ignore[arg-type]
    assert len(ledger.entries) == 2


def test_flooding_noise_has_the_stated_width() -> None:
    from fedcollab.privacy.flooding import gaussian

    z = gaussian(b"\x01" * 32, 200_001)
    assert abs(float(np.mean(z))) < 0.01 and abs(float(np.std(z)) - 1.0) < 0.01
    assert flooding_sigma(error_bound=1e-9, decryptions=1, security_bits=40) == pytest.approx(
        np.sqrt(12) * 2**20 * 1e-9
    )


def test_min_partners_below_two_is_refused(keys, signers) -> None:
    a = _contribution(keys, signers["a"], "a", [1.0] * LENGTH)
    with pytest.raises(DecryptionRefusal, match="alone"):
        _verify(keys, signers, [a], min_partners=1)


def test_key_holder_with_coordinator_sees_only_one_time_padded_words(keys) -> None:
    """ckks+masked: the coordinator hands a key holder (every partner holds the key) the
    victim's single ciphertext and it decrypts it offline, with no check at all. What it
    gets is the victim's masked words y_v, uniform whatever x_v is (self-mask b_v)."""
    from fedcollab.privacy.secagg_ckks import ckks_plaintext, masked_total
    from tests.support.secagg import Federation, make_config

    config = make_config(4, length=64)
    fed = Federation.start(config)
    fed.advertise(config.cohort)
    fed.share(config.cohort)
    x = {n: np.full(config.length, 42.0) for n in config.cohort}
    fed.mask(x, config.cohort)
    blob = keys.encrypt(ckks_plaintext(fed.masked["p002"].vector(config)), params="limbs")
    raw = keys.decrypt(blob, params="limbs", length=2 * config.length, contributors=1)
    words = masked_total(np.rint(raw), length=config.length)
    leaked = config.codec.decode(words, summands=1)
    assert np.array_equal(words, fed.masked["p002"].vector(config))  # decryption is exact
    assert np.count_nonzero(np.abs(leaked - 42.0) < 1e3) <= 1  # ... and useless
