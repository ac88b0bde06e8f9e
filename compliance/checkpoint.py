"""Signed checkpoints of the audit log (C2SP ``tlog-checkpoint`` + ``signed-note``).

A checkpoint commits to the log's size and RFC 9162 root hash.  Its *body* is::

    <origin>\\n<size>\\n<base64(root)>\\n

and the signed note appends a blank line and one line per signature::

    \u2014 <key name> <base64(key id (4 bytes) || Ed25519 signature (64 bytes))>\\n

**Cosignatures.** A partner that has checked the log (e.g. verified a
consistency proof from the last checkpoint it saw) cosigns by adding its own
signed-note signature line: a plain Ed25519 signature by the cosigner's key name
over the *same note body*.  This is the signed-note form, not the timestamped
C2SP ``tlog-cosignature/v1`` (algorithm 0x04); a cosignature therefore says
"this party saw this checkpoint", without a time.

Notes
-----
* Key ids and the em dash prefix are those of the C2SP signed-note spec; the
  key id is only a hint, each signature is verified against the key of that
  name.
* Verification is fail-closed: the origin's signature is mandatory, and every
  other signature line must be from a known cosigner and verify; unknown or
  duplicate signers are refused (a compliance bundle has no reason to carry
  them).
* Sizes are decimal without leading zeros and roots exactly 32 bytes, so a body
  has one encoding and signatures cannot be replayed on a re-spelling.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass

from fedcollab.common.errors import AuditVerificationError, ComplianceError
from fedcollab.common.keys import Signer, check_key_name, key_id, verify_signature
from fedcollab.compliance.merkle import HASH_SIZE

__all__ = [
    "Checkpoint",
    "NoteSignature",
    "SignedCheckpoint",
    "cosign",
    "parse_signed_checkpoint",
    "sign_checkpoint",
    "verify_checkpoint",
]

_DASH = "\u2014"
_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,19}")
_MAX_NOTE = 1 << 16


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or self.origin != self.origin.strip():
            raise ComplianceError(f"invalid checkpoint origin {self.origin!r}")
        if self.size < 0 or len(self.root) != HASH_SIZE:
            raise ComplianceError("checkpoint needs a size >= 0 and a 32-byte root")

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        blob = base64.b64encode(self.key_id + self.signature).decode()
        return f"{_DASH} {self.name} {blob}\n"


@dataclass(frozen=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    signatures: tuple[NoteSignature, ...]

    def encode(self) -> str:
        """The signed note, as stored and exported."""
        return self.checkpoint.body() + "\n" + "".join(s.line() for s in self.signatures)

    def signer_names(self) -> list[str]:
        return [s.name for s in self.signatures]


def _signature(checkpoint: Checkpoint, signer: Signer, name: str) -> NoteSignature:
    check_key_name(name)
    return NoteSignature(name, signer.key_id(name), signer.sign(checkpoint.body().encode("utf-8")))


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer, name: str) -> SignedCheckpoint:
    """Sign a checkpoint as the log (``name`` is conventionally the origin)."""
    return SignedCheckpoint(checkpoint, (_signature(checkpoint, signer, name),))


def cosign(signed: SignedCheckpoint, signer: Signer, name: str) -> SignedCheckpoint:
    """Add a cosignature line by ``name`` over the same body."""
    if name in signed.signer_names():
        raise ComplianceError(f"checkpoint is already signed by {name!r}")
    sig = _signature(signed.checkpoint, signer, name)
    return SignedCheckpoint(signed.checkpoint, (*signed.signatures, sig))


def parse_signed_checkpoint(text: str, *, where: str = "checkpoint") -> SignedCheckpoint:
    """Strictly parse a signed note; any deviation raises AuditVerificationError."""

    def fail(msg: str) -> AuditVerificationError:
        return AuditVerificationError(f"{where}: {msg}")

    if len(text) > _MAX_NOTE:
        raise fail("note is too large")
    body, sep, sigs = text.partition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise fail("not a signed note (missing blank line or final newline)")
    lines = body.split("\n")
    if len(lines) != 3:
        raise fail(f"body has {len(lines)} lines, expected origin, size and root")
    origin, size_s, root_s = lines
    if not _SIZE_RE.fullmatch(size_s):
        raise fail(f"size {size_s!r} is not a canonical decimal")
    try:
        root = base64.b64decode(root_s, validate=True)
    except binascii.Error as exc:
        raise fail("root is not valid base64") from exc
    try:
        cp = Checkpoint(origin, int(size_s), root)
    except ComplianceError as exc:
        raise fail(exc.message) from exc
    if cp.body() != body + "\n":
        raise fail("body is not in canonical form")
    signatures: list[NoteSignature] = []
    for n, line in enumerate(sigs[:-1].split("\n"), start=1):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _DASH or not parts[1]:
            raise fail(f"signature line {n} is malformed")
        try:
            check_key_name(parts[1])
        except ComplianceError as exc:
            raise fail(f"signature line {n}: {exc.message}") from exc
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except binascii.Error as exc:
            raise fail(f"signature line {n} is not valid base64") from exc
        if len(blob) != 4 + 64:
            raise fail(f"signature line {n} is not an Ed25519 signature")
        signatures.append(NoteSignature(parts[1], blob[:4], blob[4:]))
    return SignedCheckpoint(cp, tuple(signatures))


def verify_checkpoint(
    signed: SignedCheckpoint,
    *,
    log_key: tuple[str, bytes],
    cosigner_keys: Mapping[str, bytes] | None = None,
    required_cosigners: tuple[str, ...] = (),
    where: str = "checkpoint",
) -> None:
    """Verify the log's signature and every cosignature; raise on any failure.

    ``log_key`` is ``(name, raw public key)`` of the log; ``cosigner_keys`` maps
    the names allowed to cosign to their keys; ``required_cosigners`` must all
    be present.
    """
    cosigners = dict(cosigner_keys or {})
    log_name, log_pub = log_key
    keys = {**cosigners, log_name: log_pub}
    message = signed.checkpoint.body().encode("utf-8")
    seen: set[str] = set()
    for s in signed.signatures:
        who = "log signature" if s.name == log_name else "cosignature"
        if s.name in seen:
            raise AuditVerificationError(f"{where}: duplicate signature by {s.name!r}")
        seen.add(s.name)
        pub = keys.get(s.name)
        if pub is None:
            raise AuditVerificationError(f"{where}: {who} by unknown key {s.name!r}")
        if s.key_id != key_id(s.name, pub):
            raise AuditVerificationError(f"{where}: {who} by {s.name!r} has a wrong key id")
        if not verify_signature(pub, s.signature, message):
            raise AuditVerificationError(f"{where}: {who} by {s.name!r} does not verify")
    if log_name not in seen:
        raise AuditVerificationError(f"{where}: no signature by the log key {log_name!r}")
    for name in required_cosigners:
        if name not in seen:
            raise AuditVerificationError(f"{where}: missing cosignature by {name!r}")
