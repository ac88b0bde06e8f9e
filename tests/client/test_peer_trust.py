"""A node's own confirmation of the peer keys it pins (client.peer_trust), real key files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcollab.client.peer_trust import confirm_peers, fingerprint
from fedcollab.common.errors import CiphertextError, PolicyRefusal
from fedcollab.common.keys import Signer, format_verifier_key, key_id
from fedcollab.compliance.trail import create_party_key
from fedcollab.privacy.key_transport import PeerKeys


def _federation(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    keys = {}
    for name in ("acme", "brand-b", "brand-c"):
        key, _pub = create_party_key(tmp_path / name, name)
        keys[name] = format_verifier_key(name, Signer.load(key).public_key)
    peers = tmp_path / "peers.json"
    peers.write_text(json.dumps(keys))
    return peers, keys, tmp_path / "acme" / "audit.key"


def test_a_first_start_shows_key_ids_and_needs_the_fingerprint(tmp_path: Path) -> None:
    peers, _, key = _federation(tmp_path)
    kept = tmp_path / "acme" / "peers.confirmed"
    fp = fingerprint(PeerKeys.from_json(peers.read_text()))
    with pytest.raises(PolicyRefusal, match="not confirmed") as err:
        confirm_peers(peers, partner="acme", audit_key=key, confirm=None, kept=kept)
    assert fp in err.value.message and fp in err.value.hint
    ids = PeerKeys.from_json(peers.read_text()).keys
    for name, public in ids.items():
        assert key_id(name, public).hex() in err.value.message
    with pytest.raises(PolicyRefusal):
        confirm_peers(peers, partner="acme", audit_key=key, confirm="00" * 32, kept=kept)
    assert not kept.exists()
    ok = confirm_peers(peers, partner="acme", audit_key=key, confirm=fp, kept=kept)
    assert ok.newly_confirmed and kept.read_text().strip() == fp
    assert kept.stat().st_mode & 0o777 == 0o600
    again = confirm_peers(peers, partner="acme", audit_key=key, confirm=None, kept=kept)
    assert not again.newly_confirmed and again.fingerprint == fp


def test_a_changed_peer_list_needs_a_new_confirmation(tmp_path: Path) -> None:
    """Attack: after the partner confirmed, the operator swaps brand-b's key."""
    peers, keys, key = _federation(tmp_path)
    kept = tmp_path / "acme" / "peers.confirmed"
    fp = fingerprint(PeerKeys.from_json(peers.read_text()))
    confirm_peers(peers, partner="acme", audit_key=key, confirm=fp, kept=kept)
    keys["brand-b"] = format_verifier_key("brand-b", Signer.generate().public_key)
    peers.write_text(json.dumps(keys))
    with pytest.raises(PolicyRefusal, match="changed"):
        confirm_peers(peers, partner="acme", audit_key=key, confirm=None, kept=kept)
    with pytest.raises(PolicyRefusal):  # the old fingerprint does not confirm the new list
        confirm_peers(peers, partner="acme", audit_key=key, confirm=fp, kept=kept)


@pytest.mark.parametrize("own", ["swapped", "missing"])
def test_a_peer_list_without_this_node_s_own_key_is_refused(tmp_path: Path, own: str) -> None:
    peers, keys, key = _federation(tmp_path)
    if own == "swapped":
        keys["acme"] = format_verifier_key("acme", Signer.generate().public_key)
    else:
        del keys["acme"]
    peers.write_text(json.dumps(keys))
    fp = fingerprint(PeerKeys.from_json(peers.read_text()))
    with pytest.raises(CiphertextError, match="own name"):
        confirm_peers(peers, partner="acme", audit_key=key, confirm=fp,
                      kept=tmp_path / "kept")  # fmt: skip


def test_requests_refuse_a_peer_list_changed_after_the_confirmation(tmp_path: Path) -> None:
    """Attack (audit of 2026-12-07): the list is confirmed at node start, then brand-b's
    entry is swapped in the file every request reads. Before, the requests trusted the
    swapped key (a coordinator-dealt job key "from brand-b" was accepted)."""
    from fedcollab.client.he_keys import load_peer_keys

    peers, keys, key = _federation(tmp_path)
    kept = tmp_path / "acme" / "peers.confirmed"
    fp = fingerprint(PeerKeys.from_json(peers.read_text()))
    confirm_peers(peers, partner="acme", audit_key=key, confirm=fp, kept=kept)
    config = {"partner": "acme", "audit-key": str(key), "peer-keys": str(peers)}
    assert set(load_peer_keys(config).keys) == set(keys)  # the confirmed list is used
    keys["brand-b"] = format_verifier_key("brand-b", Signer.generate().public_key)
    peers.write_text(json.dumps(keys))
    with pytest.raises(CiphertextError, match="not the list this node's partner confirmed"):
        load_peer_keys(config)
