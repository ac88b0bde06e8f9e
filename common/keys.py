"""Ed25519 signing keys for the audit log, its actors and cosigners.

Private keys live in PKCS#8 PEM files readable by their owner only.  Public keys
are exchanged as 32 raw bytes (RFC 8032) or as a signed-note *verifier key*
(``name+hexkeyid+base64(0x01 || pubkey)``, the C2SP signed-note format).

Notes
-----
* Ed25519 (RFC 8032) is the algorithm the C2SP signed-note spec assigns the
  signature type byte 0x01; deterministic signatures need no RNG at signing time.
* The key id is ``SHA-256(name || 0x0A || 0x01 || pubkey)[:4]`` (C2SP
  signed-note): it binds the key *name* as well as the key, and is a hint for
  choosing a key, never a substitute for verifying the signature.
* Private key files are created with mode 0600 and refused on load when group
  or others can read them, as OpenSSH does: a readable key is a leaked key.
* Key names (party names, log origins, cosigners) are ASCII letters, digits,
  ``.``, ``_``, ``-`` and ``/`` (C2SP origins such as ``example.org/audit``),
  starting with a letter or digit, at most 128 characters
  (:data:`KEY_NAME_PATTERN`).  Any wider set lets a name *look* like another in
  a terminal or a report (Unicode TR 36, UTS 39 on confusables): ``region-1``
  followed by a zero-width space, a Cyrillic ``e`` (U+0435), a right-to-left
  override.  Every name in use already fits (partner names are
  ``[a-z0-9][a-z0-9_-]*``, see ``coordinator.workspace.check_name``); signing
  and verification both refuse any other.
"""

from __future__ import annotations

import base64
import hashlib
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedcollab.common.atomic import write_atomic
from fedcollab.common.errors import AuditVerificationError, ComplianceError

__all__ = [
    "ED25519_ALG",
    "KEY_NAME_PATTERN",
    "KEY_NAME_RULE",
    "Signer",
    "check_key_name",
    "format_verifier_key",
    "key_id",
    "parse_verifier_key",
    "public_key_from_pem",
    "public_key_to_pem",
    "verify_signature",
]

ED25519_ALG = 0x01
#: Every key, party and actor name (unanchored: ``fullmatch`` it, or add ``^...$``).
KEY_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}"
KEY_NAME_RULE = "1-128 ASCII letters, digits, '.', '_', '-' or '/', starting with a letter or digit"
_NAME_RE = re.compile(KEY_NAME_PATTERN)


def check_key_name(name: str) -> str:
    """Refuse any name outside :data:`KEY_NAME_PATTERN` (look-alikes, spaces, '+')."""
    if not _NAME_RE.fullmatch(name):
        raise ComplianceError(
            f"invalid key name {name!r}: a name is {KEY_NAME_RULE}",
            hint=f"use {KEY_NAME_RULE}, e.g. 'region-1'",
        )
    return name


def key_id(name: str, public_key: bytes) -> bytes:
    """C2SP signed-note key id: ``SHA-256(name || 0x0A || 0x01 || pubkey)[:4]``."""
    check_key_name(name)
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519_ALG]) + public_key).digest()[:4]


def _load_public(public_key: bytes) -> Ed25519PublicKey:
    if len(public_key) != 32:
        raise AuditVerificationError(f"public key is {len(public_key)} bytes, expected 32")
    return Ed25519PublicKey.from_public_bytes(public_key)


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """``True`` iff ``signature`` is a valid Ed25519 signature of ``message``."""
    try:
        _load_public(public_key).verify(signature, message)
    except (InvalidSignature, ValueError, AuditVerificationError):
        return False
    return True


def public_key_to_pem(public_key: bytes) -> str:
    pem = _load_public(public_key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


def public_key_from_pem(pem: str) -> bytes:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, Ed25519PublicKey):
        raise AuditVerificationError("public key is not an Ed25519 key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def format_verifier_key(name: str, public_key: bytes) -> str:
    """``name+<hex key id>+<base64(0x01 || pubkey)>`` (signed-note verifier key)."""
    kid = key_id(name, public_key).hex()
    return f"{name}+{kid}+{base64.b64encode(bytes([ED25519_ALG]) + public_key).decode()}"


def parse_verifier_key(text: str) -> tuple[str, bytes]:
    """Parse and check a verifier key; returns ``(name, raw public key)``."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise AuditVerificationError("verifier key must be 'name+keyid+key'")
    name, kid_hex, b64 = parts
    try:
        raw = base64.b64decode(b64, validate=True)
        kid = bytes.fromhex(kid_hex)
    except ValueError as exc:
        raise AuditVerificationError(f"verifier key for {name!r} is not encoded properly") from exc
    if len(raw) != 33 or raw[0] != ED25519_ALG:
        raise AuditVerificationError(f"verifier key for {name!r} is not an Ed25519 key")
    try:
        expected = key_id(name, raw[1:])
    except ComplianceError as exc:
        raise AuditVerificationError(
            f"verifier key has an invalid name {name!r} (a name is {KEY_NAME_RULE})"
        ) from exc
    if kid != expected:
        raise AuditVerificationError(f"verifier key for {name!r}: key id does not match the key")
    return name, raw[1:]


@dataclass(frozen=True, repr=False)
class Signer:
    """An Ed25519 private key.  ``repr`` never shows key material."""

    _key: Ed25519PrivateKey

    @classmethod
    def generate(cls, path: Path | str | None = None) -> Signer:
        """A fresh key; written to ``path`` (mode 0600, never overwritten) when given."""
        signer = cls(Ed25519PrivateKey.generate())
        if path is not None:
            pem = signer._key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            try:
                write_atomic(path, pem, private=True, exclusive=True)
            except FileExistsError as exc:
                raise ComplianceError(
                    f"key file {path} already exists", hint="choose another path"
                ) from exc
        return signer

    @classmethod
    def load(cls, path: Path | str) -> Signer:
        """Load a PEM private key, refusing files that others may read."""
        p = Path(path)
        try:
            mode = p.stat().st_mode
            data = p.read_bytes()
        except OSError as exc:
            raise ComplianceError(f"cannot read key file {p}: {exc.strerror}") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ComplianceError(
                f"key file {p} is accessible by group or others (mode {stat.S_IMODE(mode):o})",
                hint=f"run: chmod 600 {p}",
            )
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ComplianceError(f"key file {p} is not an unencrypted PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ComplianceError(f"key file {p} does not hold an Ed25519 key")
        return cls(key)

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> Signer:
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def key_id(self, name: str) -> bytes:
        return key_id(name, self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"Signer(public_key={base64.b64encode(self.public_key).decode()})"
