"""Audit bundles: export, offline verification, and one refusal per kind of tampering."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from fedcollab.common.errors import AuditVerificationError, ComplianceError
from fedcollab.common.keys import Signer, format_verifier_key
from fedcollab.compliance import merkle
from fedcollab.compliance.bundle import _actor_of, export_bundle, verify_bundle
from fedcollab.compliance.bundle_entries import _canonical_value, check_envelope
from fedcollab.compliance.checkpoint import cosign
from fedcollab.compliance.events import EventEnvelope, make_event
from fedcollab.compliance.log import AuditLog
from fedcollab.compliance.trust import TrustPolicy

ORIGIN = "fedcollab.test/audit"
ACTORS = ["partner-1", "partner-2", "partner-3"]
_PINS: dict[str, bytes] = {}


def pins() -> TrustPolicy:
    """The keys an officer collected from each party of the ``world`` log."""
    return TrustPolicy.from_keys(_PINS)


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
    _PINS.update({ORIGIN: log_key.public_key, **{n: s.public_key for n, s in actors.items()}})
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
    report = verify_bundle(bundle, pins())
    assert report.size == 60 and report.origin == ORIGIN
    assert [c.size for c in report.checkpoints] == [20, 40, 60]
    assert all(c.cosignatures == (("partner-2", "verified"),) for c in report.checkpoints)
    assert dict(report.actors) == {a: 20 for a in ACTORS}
    assert len(list(report.events())) == 60
    log_key = world["log_key"]
    assert isinstance(log_key, Signer)
    only_log = verify_bundle(bundle, TrustPolicy.from_keys({ORIGIN: log_key.public_key}))
    assert only_log.checkpoints[-1].cosignatures == (("partner-2", "unverified key"),)
    assert only_log.checkpoints[-1].cosigned_by() == ()
    assert sorted(p.name for p in (bundle / "proofs").iterdir()) == [
        "consistency-20-40.json",
        "consistency-40-60.json",
    ]


def test_parallel_verification_matches(bundle: Path) -> None:
    two = verify_bundle(bundle, pins(), workers=2, chunk_lines=7)
    one = verify_bundle(bundle, pins(), workers=1)
    assert two == one and list(two.raw_entries()) == list(one.raw_entries())


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


def _reserialised(b: Path) -> None:
    ls = lines(b)
    ls[2] = json.dumps(json.loads(ls[2])).encode() + b"\n"  # ", " and ": " separators
    write_lines(b, ls)


def _index_first(b: Path) -> None:
    ls = lines(b)
    obj = json.loads(ls[2])
    ls[2] = json.dumps({"index": obj["index"], "event": obj["event"]}, separators=(",", ":"))
    ls[2] = ls[2].encode() + b"\n"
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
    # An older event replayed later runs time backwards: caught before the root is.
    ("replay", _replay, r"line 7: event time .* earlier than the previous", "entries.jsonl"),
    (
        "forge",
        _forge,
        r"entries.jsonl line 61: signature by 'partner-1' does not verify",
        "entries.jsonl",
    ),
    ("non-canonical", _not_canonical, r"entries.jsonl line 3: .*canonical form", "entries.jsonl"),
    # A line merely rewritten (same event, same index) is named as such, not as a deletion.
    (
        "re-serialised",
        _reserialised,
        r"entries.jsonl line 3: the line is valid JSON with the right index but not in "
        r"canonical form",
        "entries.jsonl",
    ),
    (
        "index-first",
        _index_first,
        r"entries.jsonl line 3: the line is valid JSON with the right index but not in "
        r"canonical form",
        "entries.jsonl",
    ),
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
        r"keys/partner-1.pub: not the pinned key of 'partner-1'",
        "manifest: keys/partner-1.pub hash mismatch",
    ),
    (
        "replace-log-key",
        _replace_log_key,
        r"keys/fedcollab.test_audit.pub: not the pinned key of 'fedcollab.test/audit'",
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
        verify_bundle(bundle, pins())


@pytest.mark.parametrize(
    ("tamper", "message"), [(c[1], c[3]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_manifest_catches_tampering(bundle: Path, tamper: Tamper, message: str) -> None:
    tamper(bundle)
    with pytest.raises(AuditVerificationError, match=f"manifest: .*{message}|{message}"):
        verify_bundle(bundle, pins())


def test_consistency_proof_tampering(bundle: Path) -> None:
    p = bundle / "proofs" / "consistency-40-60.json"
    doc = json.loads(p.read_text())
    doc["proof"][0] = "B" * 43 + "="
    p.write_text(json.dumps(doc))
    refresh_manifest(bundle)
    with pytest.raises(AuditVerificationError, match="checkpoint 3 does not extend checkpoint 2"):
        verify_bundle(bundle, pins())


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
    forged_pins = TrustPolicy.from_keys({**_PINS, ORIGIN: forger.public_key})
    verify_bundle(bundle.parent / "forged", forged_pins)  # self-consistent...
    with pytest.raises(
        AuditVerificationError, match=r"not the pinned key of 'fedcollab\.test/audit'"
    ):
        verify_bundle(bundle.parent / "forged", pins())


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
    key = Signer.generate()
    with AuditLog.open(tmp_path / "e.db", origin=ORIGIN, signer=key) as log:
        export_bundle(log, tmp_path / "b", public_keys={})
    report = verify_bundle(tmp_path / "b", TrustPolicy.from_keys({ORIGIN: key.public_key}))
    assert report.size == 0 and [(c.size, c.cosignatures) for c in report.checkpoints] == [(0, ())]


def test_cli_export_and_verify(world: dict[str, object], tmp_path: Path) -> None:
    from fedcollab.cli.audit import app

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
    # A --keys folder that does not exist was taken as an empty one (new-user review).
    typo = ["export", "--log", str(db), "--key", str(key_path), "--out", str(tmp_path / "x")]
    res = runner.invoke(app, [*typo, "--keys", str(tmp_path / "no-such-folder")])
    assert res.exit_code == 2 and "Invalid value for --keys" in res.output
    assert not (tmp_path / "x").exists()
    res = runner.invoke(
        app, ["verify", str(out), "--trust", f"{ORIGIN}={out}/keys/fedcollab.test_audit.pub"]
    )
    assert res.exit_code == 0, res.output
    assert "verified" in res.output
    res = runner.invoke(app, ["verify", str(out)])  # nothing pinned: refused
    assert isinstance(res.exception, ComplianceError)
    assert "empty trust policy" in str(res.exception)
    other = tmp_path / "other.pub"
    other.write_text(format_verifier_key("partner-1", actors["partner-1"].public_key))
    res = runner.invoke(app, ["verify", str(out), "--trust", f"partner-1={other}"])
    assert isinstance(res.exception, AuditVerificationError)  # the log's own key not pinned
    assert "is not pinned" in str(res.exception)
    trust = ["--trust", f"{ORIGIN}={out}/keys/fedcollab.test_audit.pub"]
    res = runner.invoke(app, ["verify", str(out), *trust, "--require-cosigners", "partner-2"])
    assert isinstance(res.exception, ComplianceError)  # required but not pinned
    assert "not pinned" in str(res.exception)
    _edit_entry(out)
    res = runner.invoke(app, ["verify", str(out), *trust])
    assert isinstance(res.exception, AuditVerificationError)
    assert res.exception.exit_code == 31


def test_parallel_verification_reports_the_same_failure(bundle: Path) -> None:
    _edit_entry(bundle)
    refresh_manifest(bundle)
    with pytest.raises(AuditVerificationError, match="line 17: signature by 'partner-2'"):
        verify_bundle(bundle, pins(), workers=2, chunk_lines=5)


# --- the fast paths of verification agree with the reference checks -------------------

_TRICKY = [
    "a",
    "Z",
    "\ue000",
    "\uffff",
    "\U0001f600",
    "\x00",
    "\x1f",
    '"',
    "\\",
    "\u2028",
    "\xe9",
    "\x7f",
]
_chars = st.sampled_from(_TRICKY) | st.characters(exclude_categories=("Cs",))
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(_chars, max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(_chars, max_size=3), inner, max_size=4)
    ),
    max_leaves=12,
)


def _is_canonical(data: bytes) -> bool:
    try:
        return bool(rfc8785.dumps(json.loads(data)) == data)
    except (ValueError, rfc8785.CanonicalizationError):
        return False


def _accepted(data: bytes) -> bool:
    try:
        _canonical_value(data, 1)
    except AuditVerificationError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(_json)
def test_canonical_check_matches_rfc8785(value: object) -> None:
    """Whatever the serialiser, the fast check accepts exactly the RFC 8785 bytes."""
    candidates = [
        json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(),
        json.dumps(value, sort_keys=True, separators=(",", ":")).encode(),
        json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode(),
    ]
    with contextlib.suppress(rfc8785.CanonicalizationError):  # e.g. integers beyond 2**53
        candidates.append(rfc8785.dumps(value))
    for data in candidates:
        assert _accepted(data) == _is_canonical(data), data


@pytest.mark.parametrize(
    ("data", "ok"),
    [
        (b'{"\xf0\x9f\x98\x80":1,"\xee\x80\x80":2}', True),  # UTF-16 order: U+1F600 first
        (b'{"\xee\x80\x80":2,"\xf0\x9f\x98\x80":1}', False),  # code-point order
        (b'{"n":9007199254740991}', True),
        (b'{"n":9007199254740992}', False),  # beyond 2**53 - 1: refused by RFC 8785
        (b'{"x":1}', True),
        (b'{"x":1.0}', False),
        (b'{"x":1.5}', True),
        (b'{"x":NaN}', False),
        (b'{"x":-0}', False),
        (b'{"x":"\\u00e9"}', False),
        (b'{"x":"\xc3\xa9"}', True),
        (b'{"x":"\\u001f"}', True),
        (b'{"x":"\\u001F"}', False),
        (b'{"x":"\\/"}', False),
        (b'{"x":"\\ud800"}', False),
        (b'{"x":1} ', False),
        (b'{"x":1,"x":1}', False),
    ],
)
def test_canonical_check_edge_cases(data: bytes, ok: bool) -> None:
    assert _is_canonical(data) == ok
    assert _accepted(data) == ok


def _envelope(**changes: object) -> dict[str, object]:
    env: dict[str, object] = {
        "actor": "partner-1",
        "type": "test.event",
        "time": "2025-01-31T12:00:00.000000Z",
        "body": {"i": 1},
        "sig": "A" * 86 + "==",
    }
    env.update(changes)
    return {k: v for k, v in env.items() if v is not _DROP}


_DROP = object()


@pytest.mark.parametrize(
    "env",
    [
        _envelope(),
        _envelope(time="2025-01-31T12:00:00Z"),
        _envelope(body={}),
        _envelope(actor="x" * 128),
        _envelope(actor="x" * 129),
        _envelope(actor=""),
        _envelope(actor="partner 1"),
        _envelope(actor="a+b"),
        _envelope(actor="a\u2014b"),
        _envelope(actor=1),
        _envelope(type="Test.event"),
        _envelope(type="t" * 129),
        _envelope(time="2025-01-31T12:00:00.000000Z\n"),
        _envelope(time="2025-01-31 12:00:00Z"),
        _envelope(time="2025-01-31T12:00:00.0000000000Z"),
        _envelope(body=[1]),
        _envelope(body=None),
        _envelope(sig="A" * 87),
        _envelope(sig=None),
        _envelope(sig=_DROP),
        {**_envelope(), "extra": 1},
        [],
    ],
)
def test_envelope_check_matches_the_pydantic_model(env: object) -> None:
    try:
        EventEnvelope.model_validate(env)
        model_ok = True
    except ValidationError:
        model_ok = False
    assert (check_envelope(env) is None) == model_ok


def test_envelope_check_is_stricter_on_digits_and_separators() -> None:
    """Where pydantic's regex engine is laxer, the bundle check follows make_event."""
    assert check_envelope(_envelope(time="\u0662025-01-31T12:00:00Z")) is not None
    assert check_envelope(_envelope(actor="a\x1cb")) is not None


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=300),
    data=st.data(),
)
def test_leaf_tree_matches_mth(n: int, data: st.DataObject) -> None:
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n)]
    wanted = data.draw(st.sets(st.integers(min_value=1, max_value=max(1, n)), max_size=6))
    cuts = sorted(data.draw(st.sets(st.integers(min_value=0, max_value=n), max_size=8)))
    tree = merkle.LeafTree(wanted=wanted)
    seen: list[tuple[int, bytes]] = []
    for lo, hi in zip([0, *cuts], [*cuts, n], strict=True):
        seen += tree.extend(b"".join(leaves[lo:hi]))
    assert tree.size == n and tree.root() == merkle.mth(leaves)
    assert seen == [(s, merkle.mth(leaves[:s])) for s in sorted(wanted) if s <= n]


def test_float_and_unicode_events_verify(tmp_path: Path) -> None:
    """Events that take the reference (slow) canonical path still verify end to end."""
    actor = Signer.generate()
    key = Signer.generate()
    with AuditLog.open(tmp_path / "u.db", origin=ORIGIN, signer=key) as log:
        log.append_many(
            [
                make_event(actor, "partner-1", "test.event", {"x": 1.0, "y": 0.1}),
                make_event(actor, "partner-1", "test.event", {"\U0001f600": 1, "\ue000": 2}),
                make_event(actor, "partner-1", "test.event", {"n": 2**53 - 1, "s": "\x00\u2028"}),
            ]
        )
        log.checkpoint()
        export_bundle(log, tmp_path / "b", public_keys={"partner-1": actor.public_key})
    policy = TrustPolicy.from_keys({ORIGIN: key.public_key, "partner-1": actor.public_key})
    assert verify_bundle(tmp_path / "b", policy).size == 3


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda ev: {k: v for k, v in ev.items() if k != "sig"}, r"missing \['sig'\]"),
        (lambda ev: {**ev, "extra": 1}, r"unexpected \['extra'\]"),
        (lambda ev: {**ev, "body": [1]}, "body: not a JSON object"),
        (lambda ev: {**ev, "time": "yesterday"}, "time: not a string matching"),
        (
            lambda ev: {**ev, "sig": ("B" if ev["sig"][0] == "A" else "A") + ev["sig"][1:]},
            "signature by 'partner-1' does not verify",
        ),
        (lambda ev: {**ev, "sig": "!" * 88}, "signature by 'partner-1' does not verify"),
    ],
)
def test_malformed_envelopes_are_refused(
    bundle: Path, edit: Callable[[dict[str, object]], dict[str, object]], message: str
) -> None:
    ls = lines(bundle)
    event = json.loads(ls[0])["event"]
    ls[0] = b'{"event":' + rfc8785.dumps(edit(event)) + b',"index":0}\n'
    write_lines(bundle, ls)
    refresh_manifest(bundle)
    with pytest.raises(AuditVerificationError, match=f"entries.jsonl line 1: .*{message}"):
        verify_bundle(bundle, pins())


@pytest.mark.parametrize(
    ("data", "actor"),
    [
        (b'{"actor":"p-1","body":{}}', "p-1"),
        (b'{"actor":"a\\"b","body":{}}', 'a"b'),
        (b'{"a":1,"actor":"q"}', "q"),
        (b'{"actor":5}', 5),
        (b"[1]", None),
    ],
)
def test_export_reads_the_actor_of_any_entry(data: bytes, actor: object) -> None:
    assert _actor_of(data) == actor


def test_verify_refuses_a_useless_chunk_size(bundle: Path) -> None:
    with pytest.raises(ComplianceError, match="chunk_lines"):
        verify_bundle(bundle, pins(), chunk_lines=0)
