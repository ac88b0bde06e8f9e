"""Trust anchors on the real partner path (issue 14): the pinned peer list and the dealer.

The coordinator's operator writes ``peers.json`` and may send it: swapping one entry let
it deal its own CKKS key to a partner "as" another partner and read what that partner
encrypts. A node now refuses a peer list whose entry for itself is not its own key, and
accepts the job key only from the spec's ``privacy.key_dealer``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedcollab.common.keys import Signer, format_verifier_key
from fedcollab.common.serde import Payload
from fedcollab.coordinator.encryption import HeSession
from fedcollab.privacy.ckks import SecretKeys
from fedcollab.privacy.key_transport import PeerKeys, deal
from tests.support.adversarial import Attacker, job, layout_meta


def _swap(atk: Attacker, partner: str, entry: str, key: Signer, tmp_path: Path) -> None:
    """Give ``partner`` a peer list in which ``entry``'s key is ``key``'s."""
    cfg = atk.configs[partner]
    peers = json.loads(Path(cfg["peer-keys"]).read_text())
    peers[entry] = format_verifier_key(entry, key.public_key)
    path = tmp_path / f"peers-{partner}.json"
    path.write_text(json.dumps(peers))
    cfg["peer-keys"] = str(path)


def _moments_under_a_key_dealt_by_b(atk: Attacker, offer: Any, signer: Signer) -> Payload:
    """c's moments, asked with a fresh CKKS key dealt "by b" (signed by ``signer``) and
    sealed to c's transport ``offer``."""
    keys = SecretKeys.generate()
    c_pins = PeerKeys.from_json(Path(atk.configs["c"]["peer-keys"]).read_text())
    sealed = deal(keys, {"c": offer}, run=atk.run, dealer="b", peers=c_pins, signer=signer)
    session = HeSession(public=keys.public(), dealer="b", sealed={"c": sealed["c"].to_json()})
    return atk.send(
        "c", "query.moments", step="moments",
        meta={**layout_meta(channel=["app", "web"]),
              "he": session.request_meta("c", params="wide")},
    )  # fmt: skip


def test_a_peer_list_with_another_key_under_the_node_s_own_name_is_refused(
    tmp_path: Path,
) -> None:
    atk = Attacker.against(tmp_path, job(privacy={"aggregation": "masked"}))
    _swap(atk, "a", "a", Signer.generate(), tmp_path)
    assert atk.handshake("a").refused is None
    head = {"cohort": ["a", "b", "c"], "length": 8}
    reply = atk.send("a", "query.secagg", step="moments.secagg-advertise", meta={"secagg": head})
    assert reply.refused == "CiphertextError" and "advert" not in reply.meta


def test_a_key_dealt_by_a_substituted_peer_is_refused(tmp_path: Path) -> None:
    """Attack: the spec names a as the dealer; the coordinator swaps b's pinned key at c
    for its own, deals its own CKKS key "as b" and sends it to c with the moments request:
    c would encrypt its moments under a key the coordinator holds."""
    spec = job(privacy={"encryption": "ckks", "aggregation": "ckks", "key_dealer": "a"})
    atk = Attacker.against(tmp_path, spec)
    mallory = Signer.generate()
    _swap(atk, "c", "b", mallory, tmp_path)
    offer = atk.handshake("c").meta["he_offer"]
    reply = _moments_under_a_key_dealt_by_b(atk, offer, mallory)  # the coordinator's key
    assert reply.ciphertext is None and reply.refused == "CiphertextError"


def test_a_spec_without_a_named_dealer_pins_the_first_participant(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack (audit of 2026-12-07): a spec that left ``key_dealer`` empty let the
    coordinator run the key ceremony at any partner it chose (a colluder, or one dealer
    per group of partners), and every node took the key from any pinned peer. The spec
    now resolves the dealer at validation (the first participant by name) and pins it in
    its digest; b is asked to deal, and refuses; b deals anyway, as a colluder would,
    with its own audit key, and c refuses b's key."""
    spec = job(participants=["c", "b", "a"], privacy={"encryption": "ckks", "aggregation": "ckks"})
    assert spec.privacy.key_dealer == "a"
    atk = Attacker.against(tmp_path, spec)
    offers = {n: atk.handshake(n).meta["he_offer"] for n in ("a", "b", "c")}
    asked = atk.send("b", "query.he_keygen", step="he-keygen", meta={"offers": offers})
    assert asked.refused == "ProtocolError" and "sealed" not in asked.meta
    b_signer = Signer.load(atk.configs["b"]["audit-key"])
    reply = _moments_under_a_key_dealt_by_b(atk, offers["c"], b_signer)
    assert reply.ciphertext is None and reply.refused == "CiphertextError"
    assert "the job key was dealt by 'b', the job names 'a'" in caplog.text
