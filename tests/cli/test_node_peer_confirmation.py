"""`fedcollab node start --peer-keys` through the real CLI (issue 14: trust anchors).

Each start runs ``cli.app.main`` in this process with real key files (``fedcollab node
keygen``), a real signed grant (``fedcollab grant sign``) and valid data. The node is
given a CA certificate that does not exist: it is checked only when the node prepares
its process (``client.supernode.node_command``), after the peer list was confirmed, so
a start that gets past the confirmation ends there with a typed WorkspaceError (exit
13) and never launches a SuperNode. ``node_command`` is spied on (the real one runs)
and ``subprocess.Popen`` fails the test if called: a refused start never reaches
either.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fedcollab.client import supernode
from fedcollab.client.peer_trust import fingerprint
from fedcollab.common.errors import CiphertextError, PolicyRefusal, WorkspaceError
from fedcollab.common.keys import Signer, format_verifier_key, key_id, parse_verifier_key
from fedcollab.privacy.key_transport import PeerKeys
from tests.support.cli import run_cli
from tests.support.integration import write_synthetic

PARTNERS = ("acme", "brand-b", "brand-c")
ME = "acme"
#: The exit code of a start that passed the confirmation (the missing CA certificate).
PROCEEDED = WorkspaceError.exit_code
FINGERPRINT = re.compile(r"fingerprint ([0-9a-f]{64})")


@dataclass
class Node:
    """A partner's files and the CLI calls that start its node."""

    root: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]
    #: How many times the node went on to prepare its process (node_command).
    launches: list[object] = field(default_factory=list)

    @property
    def keys(self) -> Path:
        return self.root / ME

    @property
    def peers(self) -> Path:
        return self.root / "peers.json"

    @property
    def kept(self) -> Path:
        return self.keys / "peers.confirmed"

    def write_peers(self, entries: dict[str, str]) -> None:
        self.peers.write_text(json.dumps(entries), encoding="utf-8")

    def key_ids(self) -> dict[str, str]:
        """Each entry of the current peers.json: name -> its key id (hex), computed here."""
        entries = json.loads(self.peers.read_text(encoding="utf-8"))
        ids = {}
        for name, line in entries.items():
            parsed_name, public = parse_verifier_key(line)
            assert parsed_name == name
            ids[name] = key_id(name, public).hex()
        return ids

    def start(self, *extra: str) -> tuple[int, str, str]:
        """``fedcollab node start ... --peer-keys peers.json EXTRA``: exit code, out, err."""
        self.capsys.readouterr()
        code = run_cli(
            self.monkeypatch,
            "node", "start", "--partner", ME,
            "--data", self.root / "data" / "shop.csv",
            "--schema", self.root / "data" / "shop.schema.json",
            "--ca", self.root / "no-such-ca.crt",
            "--key", self.keys / "node.key",
            "--audit-key", self.keys / "audit.key",
            "--grant", self.root / "grant.json",
            "--superlink", "127.0.0.1:9", "--port", "0",
            "--peer-keys", self.peers, *extra,
        )  # fmt: skip
        out = self.capsys.readouterr()
        return code, out.out, out.err


def _spy(calls: list[object], real: Callable[..., list[str]]) -> Callable[..., list[str]]:
    def spy(cfg: object) -> list[str]:
        calls.append(cfg)
        return real(cfg)

    return spy


def _no_launch(*args: object, **kwargs: object) -> None:
    raise AssertionError(f"the node launched a process: {args}")


@pytest.fixture
def node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Node:
    n = Node(tmp_path, monkeypatch, capsys)
    entries = {}
    for name in PARTNERS:
        assert run_cli(monkeypatch, "node", "keygen", tmp_path / name, "--partner", name) == 0
        entries[name] = (tmp_path / name / "audit.pub").read_text(encoding="utf-8").strip()
    write_synthetic(tmp_path / "data", n_rows=60)
    until = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    signed = run_cli(monkeypatch, "grant", "sign", "--partner", ME, "--dataset", "shop",
                     "--purpose", "purchase-prediction", "--valid-until", until,
                     "--key", n.keys / "audit.key", "--out", tmp_path / "grant.json")  # fmt: skip
    assert signed == 0
    n.write_peers(entries)
    monkeypatch.setattr("fedcollab.cli.node.node_command", _spy(n.launches, supernode.node_command))
    monkeypatch.setattr(subprocess, "Popen", _no_launch)
    return n


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _fingerprint(text: str) -> str:
    found: set[str] = set(FINGERPRINT.findall(text))
    assert len(found) == 1, text
    return found.pop()


def _proceeded(code: int, err: str) -> None:
    """The start got past the confirmation and stopped at the missing CA certificate."""
    assert code == PROCEEDED, err
    assert "WorkspaceError" in err and "federation CA certificate" in err, err


def test_a_first_start_lists_every_key_id_and_stops(node: Node) -> None:
    before = _files(node.root)
    code, out, err = node.start()
    assert code == PolicyRefusal.exit_code, out + err
    assert "error (PolicyRefusal)" in err and "not confirmed these peer keys" in err, err
    ids = node.key_ids()
    assert len(set(ids.values())) == len(PARTNERS)
    for name, kid in ids.items():
        assert re.search(rf"^\s*{re.escape(name)}\s+key id {kid}\b", err, re.M), (name, err)
    fp = _fingerprint(err)
    assert fp == fingerprint(PeerKeys.from_json(node.peers.read_text(encoding="utf-8")))
    assert f"--confirm-peers {fp}" in err  # what to run once compared
    assert node.launches == [] and not node.kept.exists()
    assert _files(node.root) == before  # nothing written: no peers.confirmed, no node state


def test_a_wrong_fingerprint_is_refused_the_right_one_kept(node: Node) -> None:
    _code, _out, err = node.start()
    fp = _fingerprint(err)
    for wrong in ("0" * 64, fp[:-1] + ("0" if fp[-1] != "0" else "1"), fp[:32]):
        code, out, err = node.start("--confirm-peers", wrong)
        assert code == PolicyRefusal.exit_code, out + err
        assert node.launches == [] and not node.kept.exists()
    code, out, err = node.start("--confirm-peers", fp.upper())  # as copied, any case
    _proceeded(code, err)
    assert len(node.launches) == 1
    assert node.kept.read_text(encoding="utf-8") == fp + "\n"
    assert node.kept.stat().st_mode & 0o777 == 0o600
    assert f"fingerprint {fp}" in out
    for kid in node.key_ids().values():
        assert f"key id {kid}" in out  # the confirmed start shows the list it runs with
    # Kept: the next start with the same list needs no flag.
    code, out, err = node.start()
    _proceeded(code, err)
    assert len(node.launches) == 2 and node.kept.read_text(encoding="utf-8") == fp + "\n"


@pytest.mark.parametrize("own", ["swapped", "missing"])
def test_a_list_without_this_node_s_own_key_is_refused(node: Node, own: str) -> None:
    """Attack: the list pins another key under this node's name (or none): even its own
    fingerprint, given as confirmation, does not make the node use it."""
    entries = json.loads(node.peers.read_text(encoding="utf-8"))
    if own == "swapped":
        entries[ME] = format_verifier_key(ME, Signer.generate().public_key)
    else:
        del entries[ME]
    node.write_peers(entries)
    fp = fingerprint(PeerKeys.from_json(node.peers.read_text(encoding="utf-8")))
    before = _files(node.root)
    for extra in ((), ("--confirm-peers", fp)):
        code, out, err = node.start(*extra)
        assert code == CiphertextError.exit_code, out + err
        assert "error (CiphertextError)" in err and f"under this node's own name {ME!r}" in err
        assert node.launches == [] and _files(node.root) == before


def test_a_changed_list_is_refused_until_confirmed_again(node: Node) -> None:
    """Attack: after the partner confirmed, the operator swaps brand-b's key."""
    _code, _out, err = node.start()
    old = _fingerprint(err)
    code, _out, err = node.start("--confirm-peers", old)
    _proceeded(code, err)
    assert node.kept.read_text(encoding="utf-8") == old + "\n"
    entries = json.loads(node.peers.read_text(encoding="utf-8"))
    entries["brand-b"] = format_verifier_key("brand-b", Signer.generate().public_key)
    node.write_peers(entries)
    launched = len(node.launches)
    code, out, err = node.start()
    assert code == PolicyRefusal.exit_code, out + err
    assert "the peer list changed since you confirmed it" in err, err
    new = _fingerprint(err)
    assert new != old
    assert f"key id {node.key_ids()['brand-b']}" in err  # the new key's id, to compare
    code, out, err = node.start("--confirm-peers", old)  # the old confirmation is not one
    assert code == PolicyRefusal.exit_code, out + err
    assert len(node.launches) == launched
    assert node.kept.read_text(encoding="utf-8") == old + "\n"
    code, _out, err = node.start("--confirm-peers", new)
    _proceeded(code, err)
    assert node.kept.read_text(encoding="utf-8") == new + "\n"
