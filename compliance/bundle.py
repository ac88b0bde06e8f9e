"""Self-contained audit bundles for compliance officers: export and offline verification.

Layout of a bundle folder::

    entries.jsonl          one line per entry: {"event": <event>, "index": i}, RFC 8785
    checkpoints/NNNNNN.note  signed notes (log signature + cosignatures), by size
    proofs/consistency-M-N.json  RFC 9162 consistency proof between consecutive checkpoints
    keys/<name>.pub        signed-note verifier keys ("name+keyid+base64(0x01||key)")
    manifest.json          SHA-256 of every other file

:func:`verify_bundle` needs nothing but the folder: it checks the manifest, every
entry's canonical form, index and actor signature, recomputes the RFC 9162 root
at every checkpoint's size, the checkpoints' signatures and cosignatures and the
consistency proofs between them.  Any failure raises
:class:`~common.errors.AuditVerificationError` naming the file, line or
checkpoint.

Notes
-----
* The manifest is not signed: what makes a bundle authentic is the log's
  signature on the checkpoints, and that is only as good as the log key.  An
  officer should pin the log key (``trusted_keys``) or compare the key ids in
  the report with ones obtained out of band.
* Entries are verified in blocks of 8,192 lines across processes (Ed25519
  verification dominates, 50-70 us per entry, so one core per worker); the
  parent only reads blocks and folds the returned leaf hashes into the tree.
  Small bundles are verified in process.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from fedcollab.common.errors import AuditVerificationError, ComplianceError
from fedcollab.compliance import merkle
from fedcollab.compliance.bundle_entries import LeafTree, verify_blocks
from fedcollab.compliance.checkpoint import (
    SignedCheckpoint,
    parse_signed_checkpoint,
    verify_checkpoint,
)
from fedcollab.compliance.events import canonical_json
from fedcollab.compliance.keys import format_verifier_key, key_id, parse_verifier_key
from fedcollab.compliance.log import AuditLog

__all__ = ["BUNDLE_FORMAT", "BundleReport", "export_bundle", "verify_bundle"]

BUNDLE_FORMAT = "fedcollab-audit-bundle/1"
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_LAYOUT = re.compile(
    r"entries\.jsonl|checkpoints/\d{6}\.note|proofs/consistency-\d+-\d+\.json"
    r"|keys/[A-Za-z0-9._-]+\.pub"
)


class _Manifest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    format: Literal["fedcollab-audit-bundle/1"]
    origin: str
    size: int
    files: dict[str, str]


class _ProofFile(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    size1: int
    size2: int
    proof: list[str]


@dataclass(frozen=True)
class BundleReport:
    """What a verified bundle attests."""

    origin: str
    size: int
    root_hex: str
    checkpoints: tuple[tuple[int, tuple[str, ...]], ...]  # (size, signer names)
    keys: tuple[tuple[str, str], ...]  # (name, key id hex)
    actors: tuple[tuple[str, int], ...]  # (actor, number of events)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _key_filename(name: str) -> str:
    return _SAFE.sub("_", name) + ".pub"


# --- export ---------------------------------------------------------------------------


def _actor_of(data: bytes) -> object:
    """The top-level ``"actor"`` of a canonical entry, without parsing all of it.

    In RFC 8785 form an envelope's ``"actor"`` is its first member; a value
    with escapes, or any other entry, is parsed in full.
    """
    if data.startswith(b'{"actor":"'):
        end = data.find(b'"', 10)
        if end > 0 and b"\\" not in data[10:end]:
            return data[10:end].decode()
    value = json.loads(data)
    return value.get("actor") if isinstance(value, dict) else None


def export_bundle(
    log: AuditLog, out_dir: Path | str, *, public_keys: Mapping[str, bytes]
) -> SignedCheckpoint:
    """Write a bundle of the whole log to a new folder; returns the checkpoint it ends at.

    ``public_keys`` maps actor (and cosigner) names to raw Ed25519 keys; the log
    key and stored cosigner keys are added automatically.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ComplianceError(f"bundle folder {out} is not empty", hint="choose a new folder")
    keys = {**log.cosigner_keys(), **public_keys}
    if keys.get(log.origin, log.public_key) != log.public_key:
        raise ComplianceError(f"public key given for {log.origin!r} is not the log's key")
    keys[log.origin] = log.public_key
    filenames: dict[str, str] = {}
    for name in keys:
        fn = _key_filename(name)
        if fn in filenames:
            raise ComplianceError(f"key names {name!r} and {filenames[fn]!r} collide on disk")
        filenames[fn] = name

    latest = log.checkpoint()
    size = latest.checkpoint.size
    for sub in ("checkpoints", "proofs", "keys"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    actors: set[str] = set()
    with (out / "entries.jsonl").open("wb") as fh:
        for idx, data in enumerate(log.entries(0, size)):
            fh.write(b'{"event":' + data + b',"index":' + str(idx).encode() + b"}\n")
            actor = _actor_of(data)
            if isinstance(actor, str):
                actors.add(actor)
    missing = sorted(actors - keys.keys())
    if missing:
        raise ComplianceError(
            f"no public key for actors {missing}", hint="pass their keys in public_keys"
        )

    cps = [c for c in log.checkpoints() if c.checkpoint.size <= size]
    for i, cp in enumerate(cps, start=1):
        (out / "checkpoints" / f"{i:06d}.note").write_text(cp.encode(), encoding="utf-8")
    for prev, cur in itertools.pairwise(cps):
        m, n = prev.checkpoint.size, cur.checkpoint.size
        if m == 0:
            continue
        proof = [base64.b64encode(p).decode() for p in log.consistency_proof(m, n)]
        doc = {"size1": m, "size2": n, "proof": proof}
        (out / "proofs" / f"consistency-{m}-{n}.json").write_bytes(canonical_json(doc))
    for fn, name in filenames.items():
        (out / "keys" / fn).write_text(format_verifier_key(name, keys[name]) + "\n")

    files = {
        p.relative_to(out).as_posix(): _sha256_file(p)
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    manifest = {"format": BUNDLE_FORMAT, "origin": log.origin, "size": size, "files": files}
    (out / "manifest.json").write_bytes(canonical_json(manifest))
    return latest


# --- verification ---------------------------------------------------------------------


def _check_manifest(root: Path) -> _Manifest:
    try:
        manifest = _Manifest.model_validate_json((root / "manifest.json").read_bytes())
    except FileNotFoundError as exc:
        raise AuditVerificationError(f"{root}: manifest.json is missing") from exc
    except ValidationError as exc:
        raise AuditVerificationError(
            f"manifest.json is malformed: {exc.errors()[0]['msg']}"
        ) from exc
    present = {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }
    for rel in sorted(present):
        if not _LAYOUT.fullmatch(rel):
            raise AuditVerificationError(f"{rel}: unexpected file in an audit bundle")
    for rel in sorted(present - manifest.files.keys()):
        raise AuditVerificationError(f"manifest: {rel} is not listed in the manifest")
    for rel in sorted(manifest.files.keys() - present):
        raise AuditVerificationError(f"manifest: {rel} is listed but missing")
    for rel in sorted(manifest.files):
        if _sha256_file(root / rel) != manifest.files[rel]:
            raise AuditVerificationError(f"manifest: {rel} hash mismatch")
    return manifest


def _load_keys(root: Path) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for path in sorted((root / "keys").glob("*.pub")):
        where = f"keys/{path.name}"
        try:
            name, pub = parse_verifier_key(path.read_text(encoding="utf-8"))
        except AuditVerificationError as exc:
            raise AuditVerificationError(f"{where}: {exc.message}") from exc
        if _key_filename(name) != path.name:
            raise AuditVerificationError(f"{where}: holds the key of {name!r}")
        keys[name] = pub
    return keys


def _load_checkpoints(root: Path, origin: str, keys: Mapping[str, bytes]) -> list[SignedCheckpoint]:
    paths = sorted((root / "checkpoints").glob("*.note"))
    if not paths:
        raise AuditVerificationError("checkpoints/: the bundle has no checkpoint")
    cosigners = {k: v for k, v in keys.items() if k != origin}
    out: list[SignedCheckpoint] = []
    for i, path in enumerate(paths, start=1):
        if path.name != f"{i:06d}.note":
            raise AuditVerificationError(f"checkpoints/{path.name}: expected {i:06d}.note")
        signed = parse_signed_checkpoint(
            path.read_text(encoding="utf-8"), where=f"checkpoint {i} ({path.name})"
        )
        where = f"checkpoint {i} (size {signed.checkpoint.size})"
        if signed.checkpoint.origin != origin:
            raise AuditVerificationError(
                f"{where}: origin {signed.checkpoint.origin!r} is not {origin!r}"
            )
        if out and signed.checkpoint.size <= out[-1].checkpoint.size:
            raise AuditVerificationError(f"{where}: sizes are not increasing")
        verify_checkpoint(
            signed, log_key=(origin, keys[origin]), cosigner_keys=cosigners, where=where
        )
        out.append(signed)
    return out


def _check_proofs(root: Path, cps: list[SignedCheckpoint]) -> None:
    expected: set[str] = set()
    for i, (prev, cur) in enumerate(itertools.pairwise(cps), start=2):
        m, n = prev.checkpoint.size, cur.checkpoint.size
        if m == 0:
            continue
        name = f"consistency-{m}-{n}.json"
        expected.add(name)
        where = f"proofs/{name}"
        try:
            doc = _ProofFile.model_validate_json((root / "proofs" / name).read_bytes())
            proof = [base64.b64decode(p, validate=True) for p in doc.proof]
        except FileNotFoundError as exc:
            raise AuditVerificationError(f"{where}: missing (checkpoint {i - 1} -> {i})") from exc
        except (ValidationError, binascii.Error) as exc:
            raise AuditVerificationError(f"{where}: malformed proof file") from exc
        if (doc.size1, doc.size2) != (m, n):
            raise AuditVerificationError(f"{where}: sizes do not match its name")
        try:
            merkle.verify_consistency(m, n, prev.checkpoint.root, cur.checkpoint.root, proof)
        except AuditVerificationError as exc:
            raise AuditVerificationError(
                f"{where}: checkpoint {i} does not extend checkpoint {i - 1}: {exc.message}"
            ) from exc
    for path in sorted((root / "proofs").glob("*")):
        if path.name not in expected:
            raise AuditVerificationError(f"proofs/{path.name}: unexpected file")


def _read_blocks(path: Path, lines_per_block: int) -> Iterator[tuple[int, bytes]]:
    """``(index of the first line, lines joined)`` of at most ``lines_per_block`` lines."""
    start = 0
    with path.open("rb") as fh:
        while lines := list(itertools.islice(fh, lines_per_block)):
            yield start, b"".join(lines)
            start += len(lines)


def verify_bundle(
    path: Path | str,
    *,
    trusted_keys: Mapping[str, bytes] | None = None,
    workers: int | None = None,
    chunk_lines: int = 8192,
) -> BundleReport:
    """Verify a bundle offline; raise AuditVerificationError naming what failed.

    ``trusted_keys`` (name -> raw key) pins keys obtained out of band, above all
    the log's; ``workers`` is the number of processes (default: CPU count), each
    given ``chunk_lines`` entries at a time.
    """
    if chunk_lines < 1:
        raise ComplianceError(f"chunk_lines must be at least 1, not {chunk_lines}")
    root = Path(path)
    manifest = _check_manifest(root)
    keys = _load_keys(root)
    origin = manifest.origin
    if origin not in keys:
        raise AuditVerificationError(f"keys/: no key for the log {origin!r}")
    for name, pub in (trusted_keys or {}).items():
        if keys.get(name) != pub:
            raise AuditVerificationError(
                f"keys/{_key_filename(name)}: not the trusted key of {name!r}"
            )
    cps = _load_checkpoints(root, origin, keys)
    _check_proofs(root, cps)
    latest = cps[-1].checkpoint
    if manifest.size != latest.size:
        raise AuditVerificationError(
            f"manifest: size {manifest.size} differs from the latest checkpoint ({latest.size})"
        )

    numbers = {c.checkpoint.size: i for i, c in enumerate(cps, start=1)}
    actors: dict[str, int] = {}
    if 0 in numbers and cps[0].checkpoint.root != merkle.EMPTY_ROOT:
        raise AuditVerificationError("checkpoint 1 (size 0): root is not the empty-tree root")
    if not (root / "entries.jsonl").is_file():
        raise AuditVerificationError("entries.jsonl is missing")
    tree = LeafTree(wanted=numbers)
    blocks = _read_blocks(root / "entries.jsonl", chunk_lines)
    for leaves, block_actors in verify_blocks(blocks, keys, workers=workers):
        for name, n in block_actors.items():
            actors[name] = actors.get(name, 0) + n
        for size, computed in tree.extend(leaves):
            cp = cps[numbers[size] - 1]
            if computed != cp.checkpoint.root:
                raise AuditVerificationError(
                    f"checkpoint {numbers[size]} (size {size}): root does not match entries"
                )
        if tree.size > latest.size:
            raise AuditVerificationError(
                f"entries.jsonl line {latest.size + 1}: beyond the latest checkpoint "
                f"(checkpoint {len(cps)}, size {latest.size}); entry not covered by any "
                "signed checkpoint"
            )
    if tree.size < latest.size:
        raise AuditVerificationError(
            f"entries.jsonl has {tree.size} entries but checkpoint {len(cps)} has size "
            f"{latest.size} (entries truncated or deleted)"
        )
    return BundleReport(
        origin=origin,
        size=latest.size,
        root_hex=latest.root.hex(),
        checkpoints=tuple((c.checkpoint.size, tuple(c.signer_names())) for c in cps),
        keys=tuple((name, key_id(name, pub).hex()) for name, pub in sorted(keys.items())),
        actors=tuple(sorted(actors.items())),
    )
