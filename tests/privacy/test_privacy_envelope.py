"""Sealed, signed partner-to-partner payloads through the relay (privacy.envelope)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedcollab.common.errors import CiphertextError
from fedcollab.common.keys import Signer
from fedcollab.compliance.trail import create_party_key
from fedcollab.privacy.envelope import Envelope, open_envelope, seal
from fedcollab.privacy.key_transport import PeerKeys, TransportKey

RUN = "run-7"
PARTIES = ("platform", "payment", "billing")


@pytest.fixture(scope="module")
def signers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Signer]:
    root = tmp_path_factory.mktemp("keys")
    return {n: Signer.load(create_party_key(root / n, n)[0]) for n in PARTIES}


@pytest.fixture(scope="module")
def peers(signers: dict[str, Signer]) -> PeerKeys:
    return PeerKeys({n: s.public_key for n, s in signers.items()})


@pytest.fixture(scope="module")
def transport() -> dict[str, TransportKey]:
    return {n: TransportKey.generate() for n in PARTIES}


def _seal(
    signers: dict[str, Signer],
    transport: dict[str, TransportKey],
    data: bytes = b"masked scores",
    *,
    sender: str = "payment",
    recipient: str = "platform",
    topic: str = "step-3/scores",
) -> Envelope:
    return seal(
        data,
        run=RUN,
        sender=sender,
        recipient=recipient,
        topic=topic,
        recipient_key=transport[recipient].public_bytes(),
        signer=signers[sender],
    )


def test_round_trip_and_opacity(
    signers: dict[str, Signer], transport: dict[str, TransportKey], peers: PeerKeys
) -> None:
    secret = b"0.123456789 partial score bytes" * 10
    env = _seal(signers, transport, secret)
    raw = env.to_bytes()
    assert secret not in raw  # the relay sees ciphertext only
    got = open_envelope(
        raw,
        run=RUN,
        me="platform",
        sender="payment",
        topic="step-3/scores",
        key=transport["platform"],
        peers=peers,
    )
    assert got == secret


@pytest.mark.parametrize(
    ("field", "value"),
    [("recipient", "billing"), ("sender", "billing"), ("topic", "step-4/scores")],
)
def test_relay_cannot_redirect_or_replay(
    signers: dict[str, Signer],
    transport: dict[str, TransportKey],
    peers: PeerKeys,
    field: str,
    value: str,
) -> None:
    env = replace(_seal(signers, transport), **{field: value})  # type: ignore[arg-type]
    with pytest.raises(CiphertextError):
        open_envelope(
            env.to_bytes(),
            run=RUN,
            me="platform",
            sender="payment",
            topic="step-3/scores",
            key=transport["platform"],
            peers=peers,
        )


def test_forged_and_tampered_payloads_are_refused(
    signers: dict[str, Signer], transport: dict[str, TransportKey], peers: PeerKeys
) -> None:
    kwargs = {
        "run": RUN,
        "me": "platform",
        "sender": "payment",
        "topic": "step-3/scores",
        "key": transport["platform"],
        "peers": peers,
    }
    env = _seal(signers, transport)
    # Signed by another party (the relay cannot sign as payment).
    forged = seal(
        b"forged",
        run=RUN,
        sender="payment",
        recipient="platform",
        topic="step-3/scores",
        recipient_key=transport["platform"].public_bytes(),
        signer=signers["billing"],
    )
    with pytest.raises(CiphertextError, match="not signed"):
        open_envelope(forged.to_bytes(), **kwargs)  # type: ignore[arg-type]
    flipped = bytearray(env.to_bytes())
    flipped[-1] ^= 1
    with pytest.raises(CiphertextError):
        open_envelope(bytes(flipped), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(CiphertextError, match="malformed"):
        open_envelope(b"garbage", **kwargs)  # type: ignore[arg-type]
    other_run = {**kwargs, "run": "run-8"}
    with pytest.raises(CiphertextError):
        open_envelope(env.to_bytes(), **other_run)  # type: ignore[arg-type]
    wrong_key = {**kwargs, "key": transport["billing"]}
    with pytest.raises(CiphertextError):
        open_envelope(env.to_bytes(), **wrong_key)  # type: ignore[arg-type]
