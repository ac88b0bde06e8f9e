"""Key ceremony transport: sealed to pinned partners, signed by the dealer, and every
substitution a relaying coordinator could attempt is refused."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedcollab.common.errors import CiphertextError
from fedcollab.common.keys import Signer
from fedcollab.compliance.trail import create_party_key
from fedcollab.privacy.ckks import EncryptedSum, SecretKeys
from fedcollab.privacy.key_transport import (
    PeerKeys,
    Sealed,
    TransportKey,
    accept,
    deal,
    transport_offer,
    verify_offer,
)

warnings.filterwarnings("ignore", message=".*does not fit in a single ciphertext.*")

RUN = "run-1"
PARTNERS = ("brand-a", "brand-b", "payment-c")


@pytest.fixture(scope="module")
def party(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Signer]:
    root = tmp_path_factory.mktemp("keys")
    out = {}
    for name in (*PARTNERS, "coordinator"):
        key, _ = create_party_key(root / name, name)
        out[name] = Signer.load(key)
    return out


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory, party: dict[str, Signer]) -> PeerKeys:
    root = tmp_path_factory.getbasetemp() / "keys0"
    del root
    return PeerKeys({name: party[name].public_key for name in PARTNERS})


@pytest.fixture(scope="module")
def transport() -> dict[str, TransportKey]:
    return {name: TransportKey.generate() for name in PARTNERS}


def _offers(
    party: dict[str, Signer], transport: dict[str, TransportKey]
) -> dict[str, dict[str, str]]:
    return {
        name: transport_offer(transport[name], run=RUN, partner=name, signer=party[name])
        for name in PARTNERS
    }


def test_every_partner_opens_the_same_key(
    party: dict[str, Signer], peers: PeerKeys, transport: dict[str, TransportKey]
) -> None:
    keys = SecretKeys.generate()
    sealed = deal(keys, _offers(party, transport), run=RUN, dealer="brand-a", peers=peers,
                  signer=party["brand-a"])  # fmt: skip
    assert sorted(sealed) == sorted(PARTNERS)
    opened = {
        name: accept(
            Sealed.from_json(json.loads(json.dumps(s.to_json()))),  # through the wire format
            run=RUN,
            partner=name,
            key=transport[name],
            peers=peers,
        )
        for name, s in sealed.items()
    }
    # What one partner encrypts, another decrypts: it is one key.
    total = EncryptedSum(keys.public(), params="wide", length=3)
    total.add(opened["brand-b"].encrypt(np.ones(3), params="wide"))
    total.add(opened["payment-c"].encrypt(np.ones(3), params="wide"))
    got = opened["brand-a"].decrypt(total.serialize(), params="wide", length=3, contributors=2)
    assert np.allclose(got, 2.0)
    # The secret key never appears in what the coordinator relays.
    secret = keys.to_bytes()
    for s in sealed.values():
        assert secret[100:164] not in s.blob


def test_offers_are_checked_against_pinned_keys(
    party: dict[str, Signer], peers: PeerKeys, transport: dict[str, TransportKey]
) -> None:
    offers = _offers(party, transport)
    assert verify_offer(offers["brand-b"], run=RUN, partner="brand-b", peers=peers)
    # Replayed into another run, claimed by another partner, or signed by the coordinator.
    with pytest.raises(CiphertextError, match="not signed"):
        verify_offer(offers["brand-b"], run="run-2", partner="brand-b", peers=peers)
    with pytest.raises(CiphertextError, match="not signed"):
        verify_offer(offers["brand-b"], run=RUN, partner="payment-c", peers=peers)
    forged = transport_offer(TransportKey.generate(), run=RUN, partner="brand-b",
                             signer=party["coordinator"])  # fmt: skip
    with pytest.raises(CiphertextError, match="not signed"):
        verify_offer(forged, run=RUN, partner="brand-b", peers=peers)
    with pytest.raises(CiphertextError, match="no pinned audit key"):
        verify_offer(offers["brand-b"], run=RUN, partner="stranger", peers=peers)
    # The dealer refuses to seal to a substituted transport key.
    offers["payment-c"] = forged
    with pytest.raises(CiphertextError, match="payment-c"):
        deal(SecretKeys.generate(), offers, run=RUN, dealer="brand-a", peers=peers,
             signer=party["brand-a"])  # fmt: skip


def test_accept_refuses_substitutions(
    party: dict[str, Signer], peers: PeerKeys, transport: dict[str, TransportKey]
) -> None:
    keys = SecretKeys.generate()
    sealed = deal(keys, _offers(party, transport), run=RUN, dealer="brand-a", peers=peers,
                  signer=party["brand-a"])  # fmt: skip
    mine = sealed["brand-b"]
    # Another partner's sealed key forwarded to me.
    with pytest.raises(CiphertextError, match="addressed to"):
        accept(sealed["payment-c"], run=RUN, partner="brand-b", key=transport["brand-b"],
               peers=peers)  # fmt: skip
    # A coordinator making its own key (it would know the secret) and sealing it to me:
    # it cannot produce a partner's signature.
    own = SecretKeys.generate()
    coordinator_deal = deal(own, _offers(party, transport), run=RUN, dealer="brand-a",
                            peers=peers, signer=party["coordinator"])  # fmt: skip
    with pytest.raises(CiphertextError, match="not signed by the dealer"):
        accept(coordinator_deal["brand-b"], run=RUN, partner="brand-b",
               key=transport["brand-b"], peers=peers)  # fmt: skip
    # Swapping in a blob from another deal under the real statement.
    with pytest.raises(CiphertextError, match="not signed by the dealer"):
        accept(replace(mine, blob=coordinator_deal["brand-b"].blob), run=RUN,
               partner="brand-b", key=transport["brand-b"], peers=peers)  # fmt: skip
    # Replayed into another run.
    with pytest.raises(CiphertextError, match="not signed by the dealer"):
        accept(mine, run="run-2", partner="brand-b", key=transport["brand-b"], peers=peers)
    # Opened with another node's transport key.
    with pytest.raises(CiphertextError, match="does not open"):
        accept(mine, run=RUN, partner="brand-b", key=TransportKey.generate(), peers=peers)
    assert accept(mine, run=RUN, partner="brand-b", key=transport["brand-b"],
                  peers=peers).public().digest == keys.public().digest  # fmt: skip


def test_peer_keys_file(tmp_path: Path) -> None:
    _, pub = create_party_key(tmp_path / "a", "brand-a")
    text = json.dumps({"brand-a": pub.read_text().strip()})
    assert "brand-a" in PeerKeys.from_json(text).keys
    with pytest.raises(CiphertextError, match="unreadable"):
        PeerKeys.from_json(json.dumps({"brand-b": pub.read_text().strip()}))
    with pytest.raises(CiphertextError, match="unreadable"):
        PeerKeys.from_json("[1, 2]")
