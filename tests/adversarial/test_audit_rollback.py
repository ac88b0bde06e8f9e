"""Someone holding no key cuts a bundle back to one of its own earlier checkpoints.

Red team of 2026-12-06: drop the entries, checkpoint notes and proofs after checkpoint
K and rewrite the (unsigned) manifest. Every remaining checkpoint is genuine and covers
every remaining entry, so the bundle verifies on its own, with every key pinned and
every cosigner required; the report used to say "nothing truncated". What binds a
bundle's length is a head seen before: ``audit verify`` prints it as ``--expect-head
NAME=SIZE:ROOT`` and every ``audit`` command given it refuses a copy that does not
extend it (RFC 6962 section 5.3, RFC 9162 section 8.2: a monitor checks a log against
the tree heads it saw).

What the attacker still gets: against an officer who pins no head and gives no partner
bundle, the cut verifies (the report's limits say so).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
from pathlib import Path

import pytest

from fedcollab.compliance.events import canonical_json
from fedcollab.compliance.expected_head import ExpectedHead
from fedcollab.compliance.report_model import LIMITS
from tests.adversarial.test_audit_attacks import rewritten_history
from tests.support.audit_world import COORDINATOR, PARTNERS, World
from tests.support.cli import run_cli


def cut_back(src: Path, dst: Path, *, keep_checkpoints: int) -> int:
    """The bundle ``src`` cut back to its first ``keep_checkpoints`` checkpoints, with
    no key: later entries, notes and proofs dropped, the manifest rewritten."""
    shutil.copytree(src, dst)
    notes = sorted((dst / "checkpoints").glob("*.note"))
    size = int(notes[keep_checkpoints - 1].read_text(encoding="utf-8").split("\n")[1])
    for note in notes[keep_checkpoints:]:
        note.unlink()
    sizes = [int(n.read_text(encoding="utf-8").split("\n")[1]) for n in notes[:keep_checkpoints]]
    keep = {f"consistency-{a}-{b}.json" for a, b in itertools.pairwise(sizes)}
    for proof in (dst / "proofs").glob("*"):
        if proof.name not in keep:
            proof.unlink()
    lines = (dst / "entries.jsonl").read_bytes().split(b"\n")[:size]
    (dst / "entries.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    manifest = json.loads((dst / "manifest.json").read_text(encoding="utf-8"))
    manifest["size"] = size
    manifest["files"] = {
        p.relative_to(dst).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(dst.rglob("*"))
        if p.is_file() and p.relative_to(dst).as_posix() != "manifest.json"
    }
    (dst / "manifest.json").write_bytes(canonical_json(manifest))
    return size


def _world(tmp: Path) -> tuple[World, dict[str, Path]]:
    world = World.create(tmp / "w")
    world.run_job("run-1", steps=("round-1",))
    world.run_job("run-2")  # the run the attacker makes disappear
    bundles = world.export(tmp / "b")
    world.close()
    return world, bundles


def _verify_args(world: World, bundle: Path) -> list[str | Path]:
    required = [a for p in PARTNERS for a in ("--require-cosigners", p)]
    return ["audit", "verify", bundle, *world.trust_args(), *required, "--workers", "1"]


def _printed_head(out: str) -> str:
    m = re.search(r"--expect-head (\S+)", out)
    assert m is not None, out
    return m.group(1)


def test_the_cut_verifies_alone_and_is_refused_against_the_head_verify_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    world, bundles = _world(tmp_path)
    assert run_cli(monkeypatch, *_verify_args(world, bundles[COORDINATOR])) == 0
    head = _printed_head(capsys.readouterr().out)
    full = sum(1 for _ in (bundles[COORDINATOR] / "entries.jsonl").open())
    assert head.startswith(f"{COORDINATOR}={full}:")
    assert ExpectedHead.parse(head).size == full

    cut = tmp_path / "cut"
    kept = cut_back(bundles[COORDINATOR], cut, keep_checkpoints=1)
    assert kept < full
    assert "run-2" not in (cut / "entries.jsonl").read_text(encoding="utf-8")
    # The limit, as the report states it: alone, the cut verifies.
    assert run_cli(monkeypatch, *_verify_args(world, cut)) == 0
    assert any("cut back to one of its own earlier checkpoints" in text for text in LIMITS)
    capsys.readouterr()

    commands: dict[str, list[str | Path]] = {
        "verify": _verify_args(world, cut),
        "crossref": [
            "audit",
            "crossref",
            cut,
            *world.trust_args(),
            "--partner",
            f"region-1={bundles['region-1']}",
        ],
        "report": ["audit", "report", cut, "--out", tmp_path / "report", *world.trust_args()],
    }
    for name, args in commands.items():
        code = run_cli(monkeypatch, *args, "--expect-head", head)
        text = " ".join(capsys.readouterr().err.split())
        assert code == 31, (name, text)
        assert f"has {kept} entries, fewer than the {full} of the head pinned" in text, text
    assert not (tmp_path / "report" / "report.html").exists()  # nothing written


def test_a_rewritten_log_of_the_same_size_is_refused_against_the_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The log key's holder re-signs another history of the same length."""
    world = World.create(tmp_path / "w")
    world.run_job("run-1")
    bundles = world.export(tmp_path / "honest")
    assert run_cli(monkeypatch, *_verify_args(world, bundles[COORDINATOR])) == 0
    head = _printed_head(capsys.readouterr().out)
    forged = rewritten_history(world, tmp_path / "forge")[COORDINATOR]
    world.close()
    code = run_cli(monkeypatch, "audit", "verify", forged, *world.trust_args(),
                   "--expect-head", head)  # fmt: skip
    text = " ".join(capsys.readouterr().err.split())
    assert code == 31 and "history was rewritten" in text, text


def test_a_log_that_grew_since_the_head_still_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    world = World.create(tmp_path / "w")
    world.run_job("run-1", steps=("round-1",))
    first = world.export(tmp_path / "first")
    assert run_cli(monkeypatch, *_verify_args(world, first[COORDINATOR])) == 0
    head = _printed_head(capsys.readouterr().out)
    world.run_job("run-2")
    later = world.export(tmp_path / "later")
    world.close()
    args = _verify_args(world, later[COORDINATOR])
    assert run_cli(monkeypatch, *args, "--expect-head", head) == 0
    capsys.readouterr()
    # A head for a log of which no bundle is given (a misspelled name) protects nothing:
    # refused rather than ignored (red team of this fix).
    other = head.replace(f"{COORDINATOR}=", "coordinatr=", 1)
    assert run_cli(monkeypatch, *args, "--expect-head", other) == 31
    text = " ".join(capsys.readouterr().err.split())
    assert "names the log 'coordinatr', but no bundle of that log was given" in text, text


@pytest.mark.parametrize("bad", ["coordinator=12", "coordinator=0:" + "ab" * 32, "=3:" + "a" * 64])
def test_a_malformed_head_says_what_to_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    world, bundles = _world(tmp_path)
    code = run_cli(monkeypatch, *_verify_args(world, bundles[COORDINATOR]), "--expect-head", bad)
    text = " ".join(capsys.readouterr().err.split())
    assert code == 31 and "is not NAME=SIZE:ROOT" in text and "audit verify" in text, text
