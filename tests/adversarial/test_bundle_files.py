"""What a bundle folder may hold, and what names its events may carry.

Red team of 2026-12-06 (offline audit-bundle verifier):

* ``symlink``: a partner bundle whose ``keys/`` folder is a symbolic link to a folder
  holding a secret verified (the manifest check's ``rglob`` does not descend into a
  linked folder), and the console's report zip then copied the secret through the
  link. Now any link inside a bundle fails verification, and the console copies
  partners' bundles without following links before it verifies the copies.
* ``manifest.json``: any file *named* ``manifest.json`` was left out of the manifest
  check, so ``keys/manifest.json`` could be added unnoticed. Now only the top-level
  one is.
* ``look-alike``: the operator signed a ``privacy.spent`` under ``region-1`` + U+200B
  (zero-width space) with a key it shipped in the bundle, and the report's
  privacy-budget ledger showed a charge "recorded by region-1". Now key and party
  names are ASCII (``common.keys.KEY_NAME_PATTERN``), refused when signing and when
  verifying; and the report's ledger (``compliance.report_jobs.gather_jobs``, given
  the pinned names) takes no row from an actor whose key came with the bundle.

What the attacker still gets: an unpinned actor with a valid ASCII name (``regi0n-1``)
still verifies, listed under "actors not pinned"; its events are the log owner's word.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import pytest

import fedcollab.common.keys as keys_module
from fedcollab.common.errors import AuditVerificationError, ComplianceError
from fedcollab.common.keys import Signer, check_key_name
from fedcollab.compliance.bundle import export_bundle, verify_bundle
from fedcollab.compliance.bundle_files import copy_bundle
from fedcollab.compliance.checkpoint import parse_signed_checkpoint
from fedcollab.compliance.events import canonical_json, make_event
from fedcollab.compliance.report_jobs import gather_jobs
from fedcollab.compliance.trust import TrustPolicy
from fedcollab.coordinator.console.audit_view import AuditSource, report_zip
from tests.support.audit_world import COORDINATOR, DIGEST, JOB, PARTNERS, World
from tests.support.cli import run_cli

SECRET = "-----BEGIN PRIVATE KEY----- (the operator's CA key) -----END PRIVATE KEY-----\n"
LOOK = "region-1\u200b"  # renders exactly as "region-1"


def _cli_text(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr()
    return " ".join((err.out + err.err).split())


def _policy(world: World) -> TrustPolicy:
    return TrustPolicy.from_keys(
        {p.name: p.trail.signer.public_key for p in (world.coordinator, *world.partners.values())}
    )


def _honest(root: Path) -> tuple[World, dict[str, Path]]:
    world = World.create(root / "w")
    world.run_job("run-1")
    bundles = world.export(root / "bundles")
    world.close()
    return world, bundles


def _rewrite_manifest(bundle: Path, *, drop: str) -> None:
    """The (unsigned) manifest without the files under ``drop``, as the attacker writes it."""
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith(drop)}
    (bundle / "manifest.json").write_bytes(canonical_json(manifest))


def _link_keys_to_a_secret(bundle: Path, root: Path) -> None:
    """a5: ``keys/`` becomes a link to a folder holding a private key."""
    secret = root / "operator-secrets"
    secret.mkdir()
    (secret / "ca.key").write_text(SECRET, encoding="utf-8")
    shutil.rmtree(bundle / "keys")
    os.symlink(secret, bundle / "keys")
    _rewrite_manifest(bundle, drop="keys/")


def _link_entries_to_a_copy(bundle: Path, root: Path) -> None:
    """``entries.jsonl`` becomes a link to a byte-identical copy outside the bundle."""
    outside = root / "entries-elsewhere.jsonl"
    shutil.copy(bundle / "entries.jsonl", outside)
    (bundle / "entries.jsonl").unlink()
    os.symlink(outside, bundle / "entries.jsonl")


# --- 1. symbolic links -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_link", "named"),
    [(_link_keys_to_a_secret, "keys"), (_link_entries_to_a_copy, "entries.jsonl")],
    ids=["linked-folder", "linked-file"],
)
def test_a_symbolic_link_in_a_bundle_fails_verify(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    make_link: Callable[[Path, Path], None],
    named: str,
) -> None:
    world, bundles = _honest(tmp_path)
    bundle = bundles["region-1"]
    make_link(bundle, tmp_path)
    code = run_cli(monkeypatch, "audit", "verify", bundle, *world.trust_args(), "--workers", "1")
    text = _cli_text(capsys)
    assert code == 31, text
    assert f"{named}: a symbolic link inside the audit bundle" in text
    assert "fedcollab audit export" in text  # the hint: re-export, or copy with links resolved
    # Copied with links resolved (the hint), what the link pointed to is in plain sight:
    # the secret is an unexpected file; a byte-identical entries.jsonl verifies.
    resolved = Path(shutil.copytree(bundle, tmp_path / "resolved", symlinks=False))
    if named == "keys":
        with pytest.raises(AuditVerificationError, match=r"keys/ca\.key: unexpected file"):
            verify_bundle(resolved, _policy(world), workers=1)
    else:
        assert verify_bundle(resolved, _policy(world), workers=1).origin == "region-1"


def test_the_bundle_folder_itself_may_be_a_link(tmp_path: Path) -> None:
    """The folder the caller names is the caller's choice; only what is inside is checked."""
    world, bundles = _honest(tmp_path)
    os.symlink(bundles["region-2"], tmp_path / "latest")
    assert verify_bundle(tmp_path / "latest", _policy(world), workers=1).origin == "region-2"


def _coordinator_source(world: World) -> AuditSource:
    partner_keys = {n: p.trail.signer.public_key for n, p in world.partners.items()}
    coord = world.coordinator
    return AuditSource(
        name=COORDINATOR,
        db=world.root / COORDINATOR / "audit.db",
        key=coord.key,
        pub=coord.pub,
        actor_keys=lambda: partner_keys,
    )


def test_the_console_report_zip_never_copies_through_a_link(tmp_path: Path) -> None:
    world, bundles = _honest(tmp_path)
    policy = TrustPolicy.from_keys(_policy(world).keys, registered=PARTNERS)
    policy = policy.report_default(COORDINATOR)
    partners = {p: bundles[p] for p in PARTNERS}
    source = _coordinator_source(world)
    # Honest partner bundles: their verified copies travel in the zip.
    data, _ = report_zip(source, registry=None, jobs=[], policy=policy, partner_bundles=partners)
    with zipfile.ZipFile(BytesIO(data)) as zf:
        names = zf.namelist()
    assert any(n.endswith("/partner-bundles/region-1/keys/region-1.pub") for n in names)
    # region-1's keys/ is a link to the operator's secrets: refused, nothing zipped.
    _link_keys_to_a_secret(bundles["region-1"], tmp_path)
    with pytest.raises(AuditVerificationError, match="keys: a symbolic link inside") as exc:
        report_zip(source, registry=None, jobs=[], policy=policy, partner_bundles=partners)
    assert "PRIVATE KEY" not in exc.value.diagnostics()


def test_copy_bundle_copies_regular_files_and_refuses_links(tmp_path: Path) -> None:
    world, bundles = _honest(tmp_path)
    copy = copy_bundle(bundles["region-2"], tmp_path / "copy")
    assert verify_bundle(copy, _policy(world), workers=1).origin == "region-2"
    _link_keys_to_a_secret(bundles["region-1"], tmp_path)
    with pytest.raises(AuditVerificationError, match="keys: a symbolic link"):
        copy_bundle(bundles["region-1"], tmp_path / "copy-1")
    assert not (tmp_path / "copy-1").exists()  # refused before anything is copied


# --- 2. manifest.json below the top ------------------------------------------------------


@pytest.mark.parametrize("where", ["keys/manifest.json", "checkpoints/manifest.json"])
def test_an_unlisted_manifest_json_below_the_top_fails_verify(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    where: str,
) -> None:
    world, bundles = _honest(tmp_path)
    bundle = bundles[COORDINATOR]
    (bundle / where).write_text('{"note": "anything at all, not in the manifest"}')
    code = run_cli(monkeypatch, "audit", "verify", bundle, *world.trust_args(), "--workers", "1")
    text = _cli_text(capsys)
    assert code == 31, text
    assert f"{where}: unexpected file in an audit bundle" in text


# --- 3. look-alike actor names -----------------------------------------------------------


def _spent(actor: str, signer: Signer) -> dict[str, object]:
    body = {"job": JOB, "digest": DIGEST, "run": "run-1", "dataset": "sha256:" + "9" * 64,
            "mechanism": "gaussian", "epsilon": 0.5, "delta": 1e-6, "accountant": "rdp",
            "cumulative_epsilon": 0.5, "cap": 4.0}  # fmt: skip
    return make_event(signer, actor, "privacy.spent", body)


def _operator_charge(
    root: Path, monkeypatch: pytest.MonkeyPatch, actor: str, *, ship_key: bool = True
) -> tuple[World, dict[str, Path]]:
    """a4: the operator appends a privacy.spent under ``actor`` to its own log, the partners
    cosign a checkpoint covering it, and the coordinator's bundle ships ``actor``'s key.
    The operator's own tools need not apply the name rule (its old rule stands in here)."""
    world = World.create(root / "w")
    world.run_job("run-1")
    fake = Signer.generate()
    with monkeypatch.context() as m:
        m.setattr(keys_module, "_NAME_RE", re.compile(r"[^\s+\u2014]+"))
        world.coordinator.trail.log.append(_spent(actor, fake))
        world.run_job("run-2", steps=("round-1",))
        keys = {n: p.trail.signer.public_key for n, p in world.partners.items()}
        out = root / "bundles"
        export_bundle(world.coordinator.trail.log, out / COORDINATOR,
                      public_keys={**keys, actor: fake.public_key})  # fmt: skip
    for name, p in world.partners.items():
        export_bundle(p.trail.log, out / name, public_keys={})
    world.close()
    bundles = {n: out / n for n in (COORDINATOR, *PARTNERS)}
    if not ship_key:
        keyfile = next(p for p in (out / COORDINATOR / "keys").iterdir() if "region-1_" in p.name)
        keyfile.unlink()
        _rewrite_manifest(out / COORDINATOR, drop=f"keys/{keyfile.name}")
    return world, bundles


def test_a_lookalike_actor_fails_every_audit_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    world, bundles = _operator_charge(tmp_path, monkeypatch, LOOK)
    coord, trust = bundles[COORDINATOR], world.trust_args()
    partners = [a for p in PARTNERS for a in ("--partner", f"{p}={bundles[p]}")]
    ledgers = [a for p in PARTNERS for a in ("--ledger", bundles[p])]
    report = tmp_path / "report"
    for args in (
        ["audit", "verify", coord, *trust, *partners, "--workers", "1"],
        ["audit", "crossref", coord, *trust, *partners],
        ["audit", "report", coord, "--out", report, *trust, *ledgers],
    ):
        code = run_cli(monkeypatch, *args)
        text = _cli_text(capsys)
        assert code == 31, (args[1], text)
        assert "invalid name 'region-1\\u200b'" in text, (args[1], text)
    assert not (report / "report.html").exists()


def test_a_lookalike_actor_without_a_shipped_key_fails_on_its_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, bundles = _operator_charge(tmp_path, monkeypatch, LOOK, ship_key=False)
    with pytest.raises(AuditVerificationError) as exc:
        verify_bundle(bundles[COORDINATOR], _policy(world), workers=1)
    expected = (
        r"entries\.jsonl line \d+: malformed event: actor 'region-1\\u200b' is not a valid "
        r"party name \(a name is 1-128 ASCII letters"
    )
    assert re.search(expected, exc.value.message), exc.value.message


#: Zero-width space, Cyrillic e, fullwidth 1, right-to-left override, spaces, ...
BAD_NAMES = [LOOK, "r\u0435gion-1", "region-\uff11", "\u202eregion-1", "region-1 ", "region\u00a01"]
BAD_NAMES += ["", "-region", "a+b", "a\u2014b", "x" * 129]
#: The names in use: parties, the console, C2SP-style log origins of tests and benchmarks.
GOOD_NAMES = ["coordinator", "console", "region-1", "brand-a", "acme", "PeterNeumann", "node_7"]
GOOD_NAMES += ["fedcollab.test/audit", "bench.fedcollab/audit", "x" * 128]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_signing_and_pinning_refuse_a_name_outside_the_ascii_rule(name: str) -> None:
    signer = Signer.generate()
    with pytest.raises(ComplianceError, match=re.escape("letters, digits, '.', '_', '-' or '/'")):
        check_key_name(name)
    with pytest.raises(ComplianceError, match="invalid key name"):
        make_event(signer, name, "privacy.spent", {})
    with pytest.raises(ComplianceError, match="invalid key name"):
        TrustPolicy.from_keys({name: signer.public_key})
    note = "o\n1\n" + "A" * 43 + "=\n\n\u2014 " + name + " " + "A" * 92 + "\n"
    if name and " " not in name:  # else the line is malformed before its name is read
        with pytest.raises(AuditVerificationError, match="signature line 1: invalid key name"):
            parse_signed_checkpoint(note)


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_every_name_in_use_still_fits(name: str) -> None:
    assert check_key_name(name) == name
    assert make_event(Signer.generate(), name, "test.event", {})["actor"] == name


def test_an_unpinned_actor_still_verifies_but_makes_no_ledger_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ASCII look-alike (a zero for the o) passes the name rule: verify behaves as
    before (listed under "actors not pinned"); the ledger takes no row from it."""
    world, bundles = _operator_charge(tmp_path, monkeypatch, "regi0n-1")
    coord = bundles[COORDINATOR]
    code = run_cli(monkeypatch, "audit", "verify", coord, *world.trust_args(), "--workers", "1")
    text = _cli_text(capsys)
    assert code == 0, text
    assert re.search(r"actors not pinned\W+regi0n-1", text), text
    verified = verify_bundle(coord, _policy(world), workers=1)
    assert verified.unpinned_actors == ("regi0n-1",)
    events = list(verified.events())
    gathered = gather_jobs(events, purposes=None, pinned=verified.policy.keys)
    assert gathered.privacy == ()
    left_out = [(f.severity, f.message) for f in gathered.findings if "privacy" in f.message]
    assert left_out == [
        (
            "warning",
            f"privacy.spent by 'regi0n-1' at {_spent_time(events)} left out of the privacy-"
            "budget ledger: its key is not pinned (it came with the bundle): pin 'regi0n-1''s "
            "key to count it",
        )
    ]
    # Pinned, the same charge is a ledger row.
    pinned = gather_jobs(events, purposes=None, pinned=[*verified.policy.keys, "regi0n-1"])
    assert [(s.actor, s.epsilon) for s in pinned.privacy] == [("regi0n-1", "0.5")]


def _spent_time(events: list[dict[str, object]]) -> str:
    return next(str(e["time"]) for e in events if e["type"] == "privacy.spent").replace("T", " ")
