"""Audit bundles: export, offline verification, and one refusal per kind of tampering."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from common.errors import AuditVerificationError, ComplianceError
from compliance.bundle import export_bundle, verify_bundle
from compliance.checkpoint import cosign
from compliance.events import make_event
from compliance.keys import Signer, format_verifier_key
from compliance.log import AuditLog

ORIGIN = "fedcollab.test/audit"
ACTORS = ["partner-1", "partner-2", "partner-3"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A log of 60 events by 3 actors, checkpoints at 20, 40, 60 cosigned by partner-2."""
    root = tmp_path_factory.mktemp("bundle")
    log_key = Signer.generate()
    actors = {name: Signer.generate() for name in ACTORS}
    with AuditLog.open(root / "audit.db", origin=ORIGIN, signer=log_key) as log:
        for batch in range(3):
            events = [
                make_event(actors[ACTORS[i % 3]], ACTORS[i % 3], "test.event", {"i": i})
                for i in range(batch * 20, batch * 20 + 20)
            ]
            log.append_many(events)
            cp = log.checkpoint()
            log.add_cosignature(
                cosign(cp, actors["partner-2"], "partner-2"),
                name="partner-2",
                public_key=actors["partner-2"].public_key,
            )
        export_bundle(
            log,
            root / "bundle",
            public_keys={n: s.public_key for n, s in actors.items()},
        )
    return {
        "bundle": root / "bundle",
        "log_key": log_key,
        "actors": actors,
        "db": root / "audit.db",
    }


@pytest.fixture
def bundle(world: dict[str, object], tmp_path: Path) -> Path:
    src = world["bundle"]
    assert isinstance(src, Path)
    return Path(shutil.copytree(src, tmp_path / "b"))


def refresh_manifest(bundle: Path) -> None:
    """What a careful forger does after editing: make the manifest match again."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"] = {
        p.relative_to(bundle).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(bundle.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def lines(bundle: Path) -> list[bytes]:
    return (bundle / "entries.jsonl").read_bytes().splitlines(keepends=True)


def write_lines(bundle: Path, new: list[bytes]) -> None:
    (bundle / "entries.jsonl").write_bytes(b"".join(new))


def test_untouched_bundle_verifies(bundle: Path, world: dict[str, object]) -> None:
    report = verify_bundle(bundle)
    assert report.size == 60 and report.origin == ORIGIN
    assert [s for s, _ in report.checkpoints] == [20, 40, 60]
    assert all(signers == (ORIGIN, "partner-2") for _, signers in report.checkpoints)
    assert dict(report.actors) == {a: 20 for a in ACTORS}
    log_key = world["log_key"]
    assert isinstance(log_key, Signer)
    verify_bundle(bundle, trusted_keys={ORIGIN: log_key.public_key})
    assert sorted(p.name for p in (bundle / "proofs").iterdir()) == [
        "consistency-20-40.json",
        "consistency-40-60.json",
    ]


def test_parallel_verification_matches(bundle: Path) -> None:
    assert verify_bundle(bundle, workers=2, chunk_lines=7) == verify_bundle(bundle, workers=1)


def _edit_entry(b: Path) -> None:
    ls = lines(b)
    ls[16] = ls[16].replace(b'"i":16', b'"i":17')
    write_lines(b, ls)


def _delete_entry(b: Path) -> None:
    ls = lines(b)
    del ls[9]
    write_lines(b, ls)


def _reorder(b: Path) -> None:
    ls = lines(b)
    ls[4], ls[5] = ls[5], ls[4]
    write_lines(b, ls)


def _truncate_lines(b: Path) -> None:
    write_lines(b, lines(b)[:-3])


def _truncate_bytes(b: Path) -> None:
    data = (b / "entries.jsonl").read_bytes()
    (b / "entries.jsonl").write_bytes(data[:-40])


def _replay(b: Path) -> None:
    # A genuine, validly signed event replayed in place of another one.
    ls = lines(b)
    ls[6] = ls[3].replace(b'"index":3}', b'"index":6}')
    write_lines(b, ls)


def _forge(b: Path) -> None:
    attacker = Signer.generate()
    ev = make_event(attacker, "partner-1", "test.event", {"i": 60})
    data = json.dumps(ev, sort_keys=True, separators=(",", ":")).encode()
    write_lines(b, [*lines(b), b'{"event":' + data + b',"index":60}\n'])


def _not_canonical(b: Path) -> None:
    ls = lines(b)
    ls[2] = ls[2].replace(b'{"event":{"actor":', b'{"event":{ "actor":')
    write_lines(b, ls)


def _swap_checkpoint_signature(b: Path) -> None:
    one = (b / "checkpoints" / "000001.note").read_text().split("\n")
    two = (b / "checkpoints" / "000002.note").read_text().split("\n")
    two[4] = one[4]  # the log's signature line
    (b / "checkpoints" / "000002.note").write_text("\n".join(two))


def _swap_cosignature(b: Path) -> None:
    one = (b / "checkpoints" / "000001.note").read_text().split("\n")
    three = (b / "checkpoints" / "000003.note").read_text().split("\n")
    three[5] = one[5]  # partner-2's cosignature line
    (b / "checkpoints" / "000003.note").write_text("\n".join(three))


def _replace_actor_key(b: Path) -> None:
    (b / "keys" / "partner-1.pub").write_text(
        format_verifier_key("partner-1", Signer.generate().public_key) + "\n"
    )


def _replace_log_key(b: Path) -> None:
    (b / "keys" / "fedcollab.test_audit.pub").write_text(
        format_verifier_key(ORIGIN, Signer.generate().public_key) + "\n"
    )


def _edit_checkpoint_root(b: Path) -> None:
    p = b / "checkpoints" / "000002.note"
    text = p.read_text().split("\n")
    text[2] = "A" * 43 + "="
    p.write_text("\n".join(text))


def _drop_proof(b: Path) -> None:
    (b / "proofs" / "consistency-20-40.json").unlink()


def _drop_checkpoint(b: Path) -> None:
    (b / "checkpoints" / "000003.note").unlink()


def _extra_file(b: Path) -> None:
    (b / "keys" / "notes.txt").write_text("hello")


Tamper = Callable[[Path], None]

CASES: list[tuple[str, Tamper, str, str]] = [
    # name, tamper, message with a refreshed manifest, message without
    (
        "edit",
        _edit_entry,
        r"entries.jsonl line 17: signature by 'partner-2' does not verify",
        "manifest: entries.jsonl hash mismatch",
    ),
    ("delete", _delete_entry, r"entries.jsonl line 10: index is 10, expected 9", "entries.jsonl"),
    ("reorder", _reorder, r"entries.jsonl line 5: index is 5, expected 4", "entries.jsonl"),
    (
        "truncate-lines",
        _truncate_lines,
        r"entries.jsonl has 57 entries but checkpoint 3 has size 60",
        "entries.jsonl",
    ),
    ("truncate-bytes", _truncate_bytes, r"entries.jsonl line 60: truncated line", "entries.jsonl"),
    ("replay", _replay, r"checkpoint 1 \(size 20\): root does not match entries", "entries.jsonl"),
    (
        "forge",
        _forge,
        r"entries.jsonl line 61: signature by 'partner-1' does not verify",
        "entries.jsonl",
    ),
    ("non-canonical", _not_canonical, r"entries.jsonl line 3: .*canonical form", "entries.jsonl"),
    (
        "swap-signature",
        _swap_checkpoint_signature,
        r"checkpoint 2 \(size 40\): log signature by 'fedcollab.test/audit' does not verify",
        "checkpoints/000002.note hash mismatch",
    ),
    (
        "swap-cosignature",
        _swap_cosignature,
        r"checkpoint 3 \(size 60\): cosignature by 'partner-2' does not verify",
        "checkpoints/000003.note hash mismatch",
    ),
    (
        "replace-actor-key",
        _replace_actor_key,
        r"entries.jsonl line 1: signature by 'partner-1' does not verify",
        "manifest: keys/partner-1.pub hash mismatch",
    ),
    (
        "replace-log-key",
        _replace_log_key,
        r"checkpoint 1 \(size 20\): log signature by 'fedcollab.test/audit' has a wrong key id",
        "keys/fedcollab.test_audit.pub hash mismatch",
    ),
    (
        "checkpoint-root",
        _edit_checkpoint_root,
        r"checkpoint 2 \(size 40\): log signature .* does not verify",
        "checkpoints/000002.note",
    ),
    ("drop-proof", _drop_proof, r"proofs/consistency-20-40.json: missing", "listed but missing"),
    (
        "drop-checkpoint",
        _drop_checkpoint,
        r"proofs/consistency-40-60.json: unexpected file",
        "listed but missing",
    ),
    (
        "extra-file",
        _extra_file,
        r"keys/notes.txt: unexpected file",
        "keys/notes.txt: unexpected file",
    ),
]


@pytest.mark.parametrize(
    ("tamper", "message"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_tampering_is_detected_with_specific_message(
    bundle: Path, tamper: Tamper, message: str
) -> None:
    tamper(bundle)
    refresh_manifest(bundle)
    with pytest.raises(AuditVerificationError, match=message):
        verify_bundle(bundle)


@pytest.mark.parametrize(
    ("tamper", "message"), [(c[1], c[3]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_manifest_catches_tampering(bundle: Path, tamper: Tamper, message: str) -> None:
    tamper(bundle)
    with pytest.raises(AuditVerificationError, match=f"manifest: .*{message}|{message}"):
        verify_bundle(bundle)


def test_consistency_proof_tampering(bundle: Path) -> None:
    p = bundle / "proofs" / "consistency-40-60.json"
    doc = json.loads(p.read_text())
    doc["proof"][0] = "B" * 43 + "="
    p.write_text(json.dumps(doc))
    refresh_manifest(bundle)
    with pytest.raises(AuditVerificationError, match="checkpoint 3 does not extend checkpoint 2"):
        verify_bundle(bundle)


def test_pinned_log_key_defeats_a_full_forgery(bundle: Path, world: dict[str, object]) -> None:
    """An attacker who re-signs everything with a key of their own is stopped by pinning."""
    log_key = world["log_key"]
    actors = world["actors"]
    assert isinstance(log_key, Signer) and isinstance(actors, dict)
    forged_db = bundle.parent / "forged.db"
    forger = Signer.generate()
    with AuditLog.open(forged_db, origin=ORIGIN, signer=forger) as log:
        for line in lines(bundle)[:30]:
            log.append(json.loads(line)["event"])
        export_bundle(
            log, bundle.parent / "forged", public_keys={n: s.public_key for n, s in actors.items()}
        )
    verify_bundle(bundle.parent / "forged")  # self-consistent...
    with pytest.raises(
        AuditVerificationError, match=r"not the trusted key of 'fedcollab\.test/audit'"
    ):
        verify_bundle(bundle.parent / "forged", trusted_keys={ORIGIN: log_key.public_key})


def test_export_refuses_misuse(world: dict[str, object], tmp_path: Path) -> None:
    log_key = world["log_key"]
    db = world["db"]
    assert isinstance(log_key, Signer) and isinstance(db, Path)
    with AuditLog.open(db, origin=ORIGIN, signer=log_key) as log:
        with pytest.raises(ComplianceError, match="no public key for actors"):
            export_bundle(log, tmp_path / "x", public_keys={})
        with pytest.raises(ComplianceError, match="not empty"):
            export_bundle(log, world["bundle"], public_keys={})  # type: ignore[arg-type]
        with pytest.raises(ComplianceError, match="not the log's key"):
            export_bundle(log, tmp_path / "y", public_keys={ORIGIN: Signer.generate().public_key})


def test_empty_log_bundle(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path / "e.db", origin=ORIGIN, signer=Signer.generate()) as log:
        export_bundle(log, tmp_path / "b", public_keys={})
    report = verify_bundle(tmp_path / "b")
    assert report.size == 0 and report.checkpoints == ((0, (ORIGIN,)),)


def test_cli_export_and_verify(world: dict[str, object], tmp_path: Path) -> None:
    from cli.audit import app

    log_key, actors, db = world["log_key"], world["actors"], world["db"]
    assert isinstance(log_key, Signer) and isinstance(actors, dict) and isinstance(db, Path)
    key_path = tmp_path / "log.pem"
    key_path.write_bytes(
        log_key._key.private_bytes(  # test-only: put the fixture's key on disk
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    for name, signer in actors.items():
        (keys_dir / f"{name}.pub").write_text(format_verifier_key(name, signer.public_key))
    runner = CliRunner()
    out = tmp_path / "exported"
    res = runner.invoke(
        app,
        [
            "export",
            "--log",
            str(db),
            "--key",
            str(key_path),
            "--out",
            str(out),
            "--keys",
            str(keys_dir),
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app, ["verify", str(out), "--trust", f"{ORIGIN}={out}/keys/fedcollab.test_audit.pub"]
    )
    assert res.exit_code == 0, res.output
    assert "verified" in res.output
    _edit_entry(out)
    res = runner.invoke(app, ["verify", str(out)])
    assert isinstance(res.exception, AuditVerificationError)
    assert res.exception.exit_code == 31
