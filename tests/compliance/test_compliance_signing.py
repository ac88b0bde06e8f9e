"""Keys, signed-note checkpoints with cosignatures, and signed events."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fedcollab.common.errors import AuditVerificationError, ComplianceError
from fedcollab.common.keys import (
    Signer,
    format_verifier_key,
    key_id,
    parse_verifier_key,
    public_key_from_pem,
    public_key_to_pem,
    verify_signature,
)
from fedcollab.compliance.checkpoint import (
    Checkpoint,
    NoteSignature,
    SignedCheckpoint,
    cosign,
    parse_signed_checkpoint,
    sign_checkpoint,
    verify_checkpoint,
)
from fedcollab.compliance.events import make_event, salted_hash, signing_payload, verify_event
from fedcollab.compliance.merkle import EMPTY_ROOT

ORIGIN = "fedcollab.test/audit"

# Example from the signed-note spec / golang.org/x/mod/sumdb/note documentation.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    b"If you think cryptography is the answer to your problem,\n"
    b"then you don't know what your problem is.\n"
)
GO_SIG = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)


# --- keys -------------------------------------------------------------------------------


def test_signed_note_reference_key_id_and_signature() -> None:
    name, pub = parse_verifier_key(GO_VKEY)
    assert name == "PeterNeumann"
    assert key_id(name, pub).hex() == "c74f20a3"
    assert format_verifier_key(name, pub) == GO_VKEY
    blob = base64.b64decode(GO_SIG)
    assert blob[:4] == key_id(name, pub)
    assert verify_signature(pub, blob[4:], GO_TEXT)
    assert not verify_signature(pub, blob[4:], GO_TEXT + b"x")


def test_verifier_key_tampering_is_refused() -> None:
    for bad in [
        GO_VKEY.replace("PeterNeumann", "PeterNeuman"),  # name bound by the key id
        GO_VKEY.replace("c74f20a3", "c74f20a4"),
        GO_VKEY[:-2] + "XX",
        "PeterNeumann+c74f20a3",
    ]:
        with pytest.raises(AuditVerificationError):
            parse_verifier_key(bad)


def test_key_file_roundtrip_and_permissions(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    signer = Signer.generate(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert Signer.load(path).public_key == signer.public_key
    assert "PRIVATE" not in repr(signer)
    with pytest.raises(ComplianceError, match="already exists"):
        Signer.generate(path)
    os.chmod(path, 0o644)
    with pytest.raises(ComplianceError, match="group or others") as info:
        Signer.load(path)
    assert "chmod 600" in info.value.diagnostics()
    assert public_key_from_pem(public_key_to_pem(signer.public_key)) == signer.public_key


# --- checkpoints ------------------------------------------------------------------------


@pytest.fixture
def keys() -> tuple[Signer, Signer, Signer]:
    return Signer.generate(), Signer.generate(), Signer.generate()


def _cp(size: int = 7) -> Checkpoint:
    return Checkpoint(ORIGIN, size, bytes(range(32)))


def test_checkpoint_roundtrip_with_cosignature(keys: tuple[Signer, Signer, Signer]) -> None:
    log, partner, _ = keys
    signed = cosign(sign_checkpoint(_cp(), log, ORIGIN), partner, "partner-1")
    text = signed.encode()
    assert text.startswith(f"{ORIGIN}\n7\n{base64.b64encode(bytes(range(32))).decode()}\n\n")
    assert text.count("\u2014 ") == 2
    parsed = parse_signed_checkpoint(text)
    assert parsed == signed
    verify_checkpoint(
        parsed,
        log_key=(ORIGIN, log.public_key),
        cosigner_keys={"partner-1": partner.public_key},
        required_cosigners=("partner-1",),
    )


def test_checkpoint_tampering_is_refused(keys: tuple[Signer, Signer, Signer]) -> None:
    log, partner, other = keys
    signed = cosign(sign_checkpoint(_cp(), log, ORIGIN), partner, "partner-1")
    cos = {"partner-1": partner.public_key}
    lk = (ORIGIN, log.public_key)

    def refused(sc: SignedCheckpoint, match: str, **kw: object) -> None:
        with pytest.raises(AuditVerificationError, match=match):
            verify_checkpoint(sc, log_key=lk, cosigner_keys=cos, **kw)  # type: ignore[arg-type]

    log_sig, co_sig = signed.signatures
    refused(SignedCheckpoint(_cp(8), signed.signatures), "log signature .* does not verify")
    refused(
        SignedCheckpoint(Checkpoint(ORIGIN, 7, bytes(32)), signed.signatures), "does not verify"
    )
    refused(SignedCheckpoint(signed.checkpoint, (co_sig,)), "no signature by the log key")
    refused(SignedCheckpoint(signed.checkpoint, (log_sig, log_sig)), "duplicate")
    forged = NoteSignature("partner-1", co_sig.key_id, other.sign(_cp().body().encode()))
    refused(
        SignedCheckpoint(signed.checkpoint, (log_sig, forged)), "cosignature .* does not verify"
    )
    wrong_kid = NoteSignature("partner-1", b"\0\0\0\0", co_sig.signature)
    refused(SignedCheckpoint(signed.checkpoint, (log_sig, wrong_kid)), "wrong key id")
    stranger = cosign(sign_checkpoint(_cp(), log, ORIGIN), other, "stranger")
    refused(stranger, "unknown key 'stranger'")
    refused(
        sign_checkpoint(_cp(), log, ORIGIN),
        "missing cosignature",
        required_cosigners=("partner-1",),
    )
    # Swapped signature bytes between two checkpoints.
    other_cp = sign_checkpoint(_cp(9), log, ORIGIN)
    refused(SignedCheckpoint(signed.checkpoint, other_cp.signatures), "does not verify")


@pytest.mark.parametrize(
    "text",
    [
        "o\n1\nAAAA\n\n",
        "o\n01\n" + base64.b64encode(bytes(32)).decode() + "\n\n\u2014 o AAAA\n",
        "o\n1\n" + base64.b64encode(bytes(31)).decode() + "\n\n\u2014 o AAAA\n",
        "o\n1\n" + base64.b64encode(bytes(32)).decode() + "\nextra\n\n\u2014 o AAAA\n",
        "o\n1\n" + base64.b64encode(bytes(32)).decode() + "\n\n- o " + "A" * 92 + "\n",
        "o\n1\n" + base64.b64encode(bytes(32)).decode() + "\n\n\u2014 o " + "A" * 92,
        "",
    ],
)
def test_parse_is_strict(text: str) -> None:
    with pytest.raises(AuditVerificationError):
        parse_signed_checkpoint(text)


def test_empty_tree_checkpoint(keys: tuple[Signer, Signer, Signer]) -> None:
    signed = sign_checkpoint(Checkpoint(ORIGIN, 0, EMPTY_ROOT), keys[0], ORIGIN)
    verify_checkpoint(
        parse_signed_checkpoint(signed.encode()), log_key=(ORIGIN, keys[0].public_key)
    )


# --- events -----------------------------------------------------------------------------


def test_event_sign_verify_and_tamper(keys: tuple[Signer, Signer, Signer]) -> None:
    actor, other, _ = keys
    when = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
    ev = make_event(actor, "partner-1", "consent.granted", {"purpose": "p1", "n": 3}, time=when)
    assert ev["time"] == "2025-01-31T12:00:00.000000Z"
    verify_event(ev, actor.public_key)
    assert b'"sig"' not in signing_payload(ev)
    with pytest.raises(AuditVerificationError, match="signature by 'partner-1' does not verify"):
        verify_event(ev, other.public_key)
    for field, value in [
        ("body", {"purpose": "p2", "n": 3}),
        ("actor", "partner-2"),
        ("type", "consent.revoked"),
        ("time", "2025-01-31T12:00:01.000000Z"),
    ]:
        with pytest.raises(AuditVerificationError):
            verify_event({**ev, field: value}, actor.public_key)
    with pytest.raises(AuditVerificationError, match="malformed event"):
        verify_event({**ev, "extra": 1}, actor.public_key)
    with pytest.raises(AuditVerificationError, match="malformed event"):
        verify_event({**ev, "time": "2025-01-31 12:00:00"}, actor.public_key)
    with pytest.raises(ComplianceError):
        make_event(actor, "partner 1", "x", {})
    with pytest.raises(ComplianceError):
        make_event(actor, "p", "x", {}, time=datetime(2025, 1, 1))
    with pytest.raises(ComplianceError):
        make_event(actor, "p", "x", {"f": float("nan")})


def test_salted_hash() -> None:
    salt = b"s" * 16
    a = salted_hash("alice@example.com", salt)
    assert a.startswith("hmac-sha256:") and len(a) == 12 + 64
    assert a == salted_hash(b"alice@example.com", salt)
    assert a != salted_hash("alice@example.com", b"t" * 16)
    with pytest.raises(ComplianceError):
        salted_hash("x", b"short")
