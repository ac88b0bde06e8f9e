"""A party's own log (every event signed with the log key, as a Trail writes it).

Its events are authenticated by the log's signed checkpoints over the recomputed
Merkle root, not one signature at a time (docs/compliance.md, "How entries are
authenticated").  Every tampering must still be refused with a message naming
what changed, and the result must be the one of verifying every signature.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import rfc8785
from typer.testing import CliRunner

from fedcollab.common.errors import AuditVerificationError, ComplianceError
from fedcollab.common.keys import Signer, format_verifier_key
from fedcollab.compliance.bundle import export_bundle, verify_bundle
from fedcollab.compliance.checkpoint import cosign
from fedcollab.compliance.events import make_event
from fedcollab.compliance.log import AuditLog
from fedcollab.compliance.trust import TrustPolicy

ORIGIN = "acme"
PARTNER = "zen"
_TIME = datetime(2026, 1, 1, tzinfo=UTC)
_KEYS: dict[str, Signer] = {}


def _log(root: Path, key: Signer, edit: Callable[[int, dict[str, object]], None] | None) -> Path:
    """60 events of ``ORIGIN``'s own (one time for all), checkpoints at 20, 40, 60 cosigned by
    ``PARTNER``; ``edit(i, body)`` changes event i's body before it is signed."""
    with AuditLog.open(root / "audit.db", origin=ORIGIN, signer=key) as log:
        for batch in range(3):
            events = []
            for i in range(batch * 20, batch * 20 + 20):
                body: dict[str, object] = {"i": i}
                if edit is not None:
                    edit(i, body)
                events.append(make_event(key, ORIGIN, "test.event", body, time=_TIME))
            log.append_many(events)
            log.add_cosignature(
                cosign(log.checkpoint(), _KEYS[PARTNER], PARTNER),
                name=PARTNER,
                public_key=_KEYS[PARTNER].public_key,
            )
        export_bundle(log, root / "bundle", public_keys={})
    return root / "bundle"


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _KEYS.update({ORIGIN: Signer.generate(), PARTNER: Signer.generate()})
    return _log(tmp_path_factory.mktemp("own"), _KEYS[ORIGIN], None)


def pins() -> TrustPolicy:
    return TrustPolicy.from_keys({n: k.public_key for n, k in _KEYS.items()})


@pytest.fixture
def bundle(original: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(original, tmp_path / "b"))


def refresh_manifest(bundle: Path) -> None:
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


def _with_event(line: bytes, change: Callable[[dict[str, object]], None]) -> bytes:
    obj = json.loads(line)
    change(obj["event"])
    return b'{"event":' + rfc8785.dumps(obj["event"]) + b',"index":%d}\n' % obj["index"]


def test_own_events_are_authenticated_by_the_checkpoints(bundle: Path) -> None:
    fast = verify_bundle(bundle, pins())
    assert fast.checkpoint_authenticated == (ORIGIN,)
    every = verify_bundle(bundle, pins(), event_signatures="all")
    assert every.checkpoint_authenticated == ()
    assert (fast.size, fast.root_hex, fast.actors) == (60, every.root_hex, ((ORIGIN, 60),))
    assert list(fast.raw_entries()) == list(every.raw_entries())
    assert [c.cosigned_by() for c in fast.checkpoints] == [(PARTNER,)] * 3


def test_a_partners_events_in_the_log_are_still_verified_one_by_one(tmp_path: Path) -> None:
    key, partner = Signer.generate(), Signer.generate()
    with AuditLog.open(tmp_path / "m.db", origin=ORIGIN, signer=key) as log:
        log.append(make_event(key, ORIGIN, "test.event", {"i": 0}, time=_TIME))
        log.append(make_event(partner, PARTNER, "test.event", {"i": 1}, time=_TIME))
        export_bundle(log, tmp_path / "b", public_keys={PARTNER: partner.public_key})
    policy = TrustPolicy.from_keys({ORIGIN: key.public_key, PARTNER: partner.public_key})
    assert verify_bundle(tmp_path / "b", policy).checkpoint_authenticated == (ORIGIN,)
    ls = lines(tmp_path / "b")
    ls[1] = _with_event(ls[1], lambda ev: ev.__setitem__("body", {"i": 2}))
    write_lines(tmp_path / "b", ls)
    refresh_manifest(tmp_path / "b")
    # Caught at the line, before any root: the log's checkpoint cannot vouch for zen.
    with pytest.raises(AuditVerificationError, match=r"^entries.jsonl line 2: signature by 'zen'"):
        verify_bundle(tmp_path / "b", policy)


def _edit(b: Path) -> None:
    ls = lines(b)
    ls[16] = ls[16].replace(b'"i":16', b'"i":17')
    write_lines(b, ls)


def _edit_in_last_range(b: Path) -> None:
    ls = lines(b)
    ls[44] = ls[44].replace(b'"i":44', b'"i":1044')
    write_lines(b, ls)


def _other_signature(b: Path) -> None:
    def swap(ev: dict[str, object]) -> None:
        raw = bytearray(base64.b64decode(str(ev["sig"])))
        raw[0] ^= 1
        ev["sig"] = base64.b64encode(bytes(raw)).decode()

    ls = lines(b)
    ls[0] = _with_event(ls[0], swap)
    write_lines(b, ls)


def _replay(b: Path) -> None:
    # A genuine event of the log (same time as all), replayed in place of another.
    ls = lines(b)
    ls[6] = ls[3].replace(b'"index":3}', b'"index":6}')
    write_lines(b, ls)


def _forge_tail(b: Path) -> None:
    ev = make_event(Signer.generate(), ORIGIN, "test.event", {"i": 60}, time=_TIME)
    write_lines(b, [*lines(b), b'{"event":' + rfc8785.dumps(ev) + b',"index":60}\n'])


def _sig_not_base64(b: Path) -> None:
    ls = lines(b)
    ls[0] = _with_event(ls[0], lambda ev: ev.__setitem__("sig", "!" * 88))
    write_lines(b, ls)


def _back_dated(b: Path) -> None:
    ls = lines(b)
    ls[30] = _with_event(ls[30], lambda ev: ev.__setitem__("time", "2025-12-31T23:59:59Z"))
    write_lines(b, ls)


def _respelled_number(b: Path) -> None:
    ls = lines(b)
    ls[16] = ls[16].replace(b'"i":16', b'"i":16.0')
    write_lines(b, ls)


def _duplicate(b: Path) -> None:
    ls = lines(b)
    ls.insert(10, ls[9])
    write_lines(b, ls)


CASES: list[tuple[str, Callable[[Path], None], str]] = [
    (
        "edit",
        _edit,
        r"^entries.jsonl line 17: signature by 'acme' does not verify \(the entry differs from "
        r"what the log signed in checkpoint 1 \(size 20\): root does not match entries\)",
    ),
    (
        "edit-after-two-good-checkpoints",
        _edit_in_last_range,
        r"^entries.jsonl line 45: signature by 'acme' does not verify .*checkpoint 3 \(size 60\)",
    ),
    (
        "other-signature",
        _other_signature,
        r"^entries.jsonl line 1: signature by 'acme' does not verify \(the entry differs",
    ),
    (
        "replay",
        _replay,
        r"^checkpoint 1 \(size 20\): root does not match entries: an entry in lines 1-20 "
        r"differs from what the log signed, yet every event signature there verifies",
    ),
    (
        "forge-tail",
        _forge_tail,
        r"^entries.jsonl line 61: beyond the latest checkpoint .* not covered by any signed",
    ),
    (
        "sig-not-base64",
        _sig_not_base64,
        r"^entries.jsonl line 1: signature by 'acme' is not base64",
    ),
    ("back-dated", _back_dated, r"^entries.jsonl line 31: event time .* earlier than the previous"),
    ("respelled-number", _respelled_number, r"^entries.jsonl line 17: .*canonical form"),
    ("duplicate", _duplicate, r"^entries.jsonl line 11: index is 9, expected 10"),
]


@pytest.mark.parametrize(("tamper", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize(("workers", "chunk"), [(1, 8192), (2, 7)], ids=["in-process", "2-workers"])
def test_tampering_is_named(
    bundle: Path, tamper: Callable[[Path], None], message: str, workers: int, chunk: int
) -> None:
    tamper(bundle)
    refresh_manifest(bundle)
    with pytest.raises(AuditVerificationError, match=message):
        verify_bundle(bundle, pins(), workers=workers, chunk_lines=chunk)


@pytest.mark.parametrize(("tamper", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_verifying_every_signature_refuses_the_same_bundles(
    bundle: Path, tamper: Callable[[Path], None], message: str
) -> None:
    tamper(bundle)
    refresh_manifest(bundle)
    with pytest.raises(AuditVerificationError):
        verify_bundle(bundle, pins(), event_signatures="all")


def test_the_log_key_holder_rewrites_alike_in_both_modes(original: Path, tmp_path: Path) -> None:
    """What per-event signatures add against the log's key holder: nothing.  It re-signs
    an edited event as easily as the checkpoints; what stops it is the partner's
    cosignature (crossref compares the root zen cosigned, tests/adversarial)."""
    forged = _log(
        tmp_path, _KEYS[ORIGIN], lambda i, body: body.update({"i": 1017} if i == 17 else {})
    )
    fast = verify_bundle(forged, pins())
    every = verify_bundle(forged, pins(), event_signatures="all")
    assert fast.root_hex == every.root_hex
    assert '"i":1017' in b"".join(fast.raw_entries()).decode()


def test_a_foreign_log_key_is_refused(bundle: Path, tmp_path: Path) -> None:
    """Whoever lacks the log key cannot make a checkpoint vouch for anything."""
    forged = _log(tmp_path, Signer.generate(), None)
    with pytest.raises(AuditVerificationError, match=r"keys/acme.pub: not the pinned key"):
        verify_bundle(forged, pins())


def test_refuses_an_unknown_mode(bundle: Path) -> None:
    with pytest.raises(ComplianceError, match="event_signatures"):
        verify_bundle(bundle, pins(), event_signatures="some")  # type: ignore[arg-type]


def test_cli_verifies_every_signature_on_request(bundle: Path, tmp_path: Path) -> None:
    from fedcollab.cli.audit import app

    pub = tmp_path / "acme.pub"
    pub.write_text(format_verifier_key(ORIGIN, _KEYS[ORIGIN].public_key) + "\n")
    runner = CliRunner()
    res = runner.invoke(app, ["verify", str(bundle), "--trust", f"{ORIGIN}={pub}"])
    assert res.exit_code == 0, res.output
    assert "60 (via checkpoints)" in res.output
    res = runner.invoke(
        app, ["verify", str(bundle), "--trust", f"{ORIGIN}={pub}", "--all-event-signatures"]
    )
    assert res.exit_code == 0, res.output
    assert "via checkpoints" not in res.output
    _edit(bundle)
    refresh_manifest(bundle)
    res = runner.invoke(app, ["verify", str(bundle), "--trust", f"{ORIGIN}={pub}"])
    assert isinstance(res.exception, AuditVerificationError)
    assert res.exception.exit_code == 31
    assert "line 17: signature by 'acme' does not verify" in str(res.exception)
