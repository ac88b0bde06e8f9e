"""The trust policy: one parser for every audit command, empty policies refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcollab.common.errors import ComplianceError
from fedcollab.common.keys import Signer, format_verifier_key, public_key_to_pem
from fedcollab.compliance.bundle_entries import time_key
from fedcollab.compliance.trust import TrustPolicy, parse_trust_options


def _pub(tmp_path: Path, name: str) -> tuple[Path, bytes]:
    key = Signer.generate().public_key
    path = tmp_path / f"{name}.pub"
    path.write_text(format_verifier_key(name, key) + "\n")
    return path, key


def test_empty_policy_is_invalid() -> None:
    with pytest.raises(ComplianceError, match="empty trust policy"):
        TrustPolicy.from_keys({})
    with pytest.raises(ComplianceError, match="empty trust policy"):
        parse_trust_options([])


def test_trust_items_peers_and_required(tmp_path: Path) -> None:
    coord, ckey = _pub(tmp_path, "coordinator")
    a_path, akey = _pub(tmp_path, "acme")
    peers = tmp_path / "peers.json"
    peers.write_text(json.dumps({"acme": a_path.read_text().strip()}))
    policy = parse_trust_options([f"coordinator={coord}"], peers=peers, require_cosigners=["acme"])
    assert dict(policy.keys) == {"coordinator": ckey, "acme": akey}
    assert policy.registered == ("acme",) and policy.required_cosigners == ("acme",)
    with pytest.raises(TypeError):
        policy.keys["x"] = b"0" * 32  # type: ignore[index]
    assert policy.without_requirements().required_cosigners == ()


def test_pem_keys_and_refusals(tmp_path: Path) -> None:
    key = Signer.generate().public_key
    pem = tmp_path / "zen.pem"
    pem.write_text(public_key_to_pem(key))
    assert parse_trust_options([f"zen={pem}"]).keys["zen"] == key
    acme, _ = _pub(tmp_path, "acme")
    with pytest.raises(ComplianceError, match="holds the key of 'acme', not of 'zen'"):
        parse_trust_options([f"zen={acme}"])  # a key cannot be re-labelled
    with pytest.raises(ComplianceError, match="expected NAME=PATH"):
        parse_trust_options(["acme"])
    with pytest.raises(ComplianceError, match="cannot read"):
        parse_trust_options([f"acme={tmp_path / 'missing.pub'}"])
    with pytest.raises(ComplianceError, match="required but its key is not pinned"):
        parse_trust_options([f"acme={acme}"], require_cosigners=["zen"])
    bad = tmp_path / "peers.json"
    bad.write_text(json.dumps({"zen": acme.read_text().strip()}))
    with pytest.raises(ComplianceError, match="entry 'zen' holds the key of 'acme'"):
        parse_trust_options(None, peers=bad)


def test_time_key_orders_fractions() -> None:
    assert time_key("2026-01-01T00:00:00Z") < time_key("2026-01-01T00:00:00.000001Z")
    assert time_key("2026-01-01T00:00:00.5Z") == time_key("2026-01-01T00:00:00.500000Z")
    assert time_key("2026-01-01T00:00:00.9Z") < time_key("2026-01-01T00:00:01Z")
