"""Self-contained audit bundles for compliance officers: export and offline verification.

Long module: export and offline verification of one bundle format; the two must change
together.

Layout of a bundle folder::

    entries.jsonl          one line per entry: {"event": <event>, "index": i}, RFC 8785
    checkpoints/NNNNNN.note  signed notes (log signature + cosignatures), by size
    proofs/consistency-M-N.json  RFC 9162 consistency proof between consecutive checkpoints
    keys/<name>.pub        signed-note verifier keys ("name+keyid+base64(0x01||key)")
    manifest.json          SHA-256 of every other file

:func:`verify_bundle` needs the folder and a :class:`~compliance.trust.TrustPolicy`
(keys pinned out of band): it checks that the folder holds only regular files and
folders (no symbolic link or special file anywhere below it) and exactly the files
the manifest lists, with their hashes, then every entry's canonical form,
index, actor signature and time order (event times never run backwards),
recomputes the RFC 9162 root at every checkpoint's size, the checkpoints'
signatures under the pinned log key, each cosignature under its pinned key, the
consistency proofs between checkpoints, and that every cosignature the log
recorded receiving (``checkpoint.cosignatures``) is still on its checkpoint.
Any failure raises :class:`~common.errors.AuditVerificationError` naming the
file, line or checkpoint.  It returns a :class:`VerifiedBundle` holding the
verified bytes, so callers never re-read the files.

Notes
-----
* The manifest is not signed: what makes a bundle authentic is the log's
  signature on the checkpoints under the *pinned* log key.  Keys shipped in
  ``keys/`` never make a signature count: a cosignature under a name that is
  not pinned is reported as "unverified key"; a shipped key that differs from
  the pinned one of the same name is refused.
* Actors' event keys that are not pinned are taken from the bundle and
  reported in ``unpinned_actors``: those events are vouched for by the log's
  signature, not by their actor.
* A symbolic link inside a bundle is refused, not followed: a link is not
  covered by the manifest, and whoever copies or zips the folder afterwards
  (the console's report zip) would copy what it points to, e.g. a ``keys/``
  link to the operator's private keys.  The folder named by the caller may
  itself be a link (the caller chose that path).
  :func:`compliance.bundle_files.copy_bundle` copies a bundle's regular files
  without following links; verify the copy, and what was verified is what was
  copied.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from fedcollab.common.errors import AuditVerificationError, ComplianceError
from fedcollab.common.keys import format_verifier_key, key_id, parse_verifier_key
from fedcollab.compliance import merkle
from fedcollab.compliance.bundle_entries import verify_blocks
from fedcollab.compliance.bundle_files import bundle_files
from fedcollab.compliance.checkpoint import (
    SignedCheckpoint,
    parse_signed_checkpoint,
    verify_checkpoint,
)
from fedcollab.compliance.events import canonical_json
from fedcollab.compliance.log import AuditLog
from fedcollab.compliance.trust import TrustPolicy

__all__ = [
    "BUNDLE_FORMAT",
    "CosignatureStatus",
    "EventSignatures",
    "VerifiedBundle",
    "VerifiedCheckpoint",
    "export_bundle",
    "verify_bundle",
]

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


CosignatureStatus = Literal["verified", "unverified key"]
#: Which event signatures :func:`verify_bundle` verifies one by one: "uncovered"
#: (default) those by actors other than the log itself, whose events the log's
#: checkpoint signatures cannot vouch for; "all" every one (the log's own too).
EventSignatures = Literal["uncovered", "all"]
_VERIFIED: CosignatureStatus = "verified"
_UNVERIFIED: CosignatureStatus = "unverified key"


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """One checkpoint of a verified bundle: the log signed it under its pinned key;
    each cosignature is "verified" (pinned key) or "unverified key" (never counted)."""

    size: int
    root: bytes
    cosignatures: tuple[tuple[str, CosignatureStatus], ...]
    note: SignedCheckpoint

    def cosigned_by(self) -> tuple[str, ...]:
        """Cosigners that count: those verified under a pinned key."""
        return tuple(n for n, st in self.cosignatures if st == "verified")


@dataclass(frozen=True)
class VerifiedBundle:
    """What :func:`verify_bundle` verified, with the verified content itself.

    ``events()`` parses the very bytes that were verified (kept in memory), so
    nobody re-reads the bundle's files after verification.
    """

    path: Path
    origin: str
    size: int
    root_hex: str
    checkpoints: tuple[VerifiedCheckpoint, ...]
    keys: tuple[tuple[str, str, bool], ...]  # (name, key id hex, pinned)
    actors: tuple[tuple[str, int], ...]  # (actor, number of events)
    unpinned_actors: tuple[str, ...]  # actors whose event key came from the bundle only
    #: Actors whose key is the log's own: their events are authenticated by the log's
    #: signed checkpoints over the Merkle root, their own signatures were not verified
    #: one by one (empty with ``event_signatures="all"``).
    checkpoint_authenticated: tuple[str, ...]
    manifest_sha256: str
    policy: TrustPolicy
    _blocks: tuple[bytes, ...] = field(repr=False, compare=False)

    def raw_entries(self) -> Iterator[bytes]:
        """The canonical bytes of every verified event, in log order."""
        for block in self._blocks:
            for line in block.split(b"\n")[:-1]:
                yield line[len(b'{"event":') : line.rindex(b',"index":')]

    def events(self) -> Iterator[dict[str, Any]]:
        """Every verified event, parsed, in log order."""
        for data in self.raw_entries():
            yield json.loads(data)

    def newest_cosigned(self) -> dict[str, tuple[VerifiedCheckpoint, CosignatureStatus]]:
        """Per cosigner name, the newest checkpoint carrying its line, and that line's status."""
        out: dict[str, tuple[VerifiedCheckpoint, CosignatureStatus]] = {}
        for cp in self.checkpoints:
            for name, status in cp.cosignatures:
                out[name] = (cp, status)
        return out


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _key_filename(name: str) -> str:
    return _SAFE.sub("_", name) + ".pub"


# --- export ---------------------------------------------------------------------------


# The actor of an entry line whose envelope starts with an escape-free "actor" (RFC 8785
# puts it first); _actor_of decides the others.
_FIRST_ACTOR = re.compile(rb'\n\{"event":\{"actor":"([^"\\\n]*)"')


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
    entries_hash = hashlib.sha256()
    with (out / "entries.jsonl").open("wb") as fh:
        idx = 0
        for datas in log.entry_chunks(0, size):
            blob = b"".join(
                [b'{"event":' + d + b',"index":%d}\n' % i for i, d in enumerate(datas, idx)]
            )
            fh.write(blob)
            entries_hash.update(blob)
            idx += len(datas)
            first_actors = _FIRST_ACTOR.findall(b"\n" + blob)
            if len(first_actors) == len(datas):  # every entry starts with a plain actor
                actors.update(a.decode() for a in set(first_actors))
                continue
            for data in datas:
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
        rel: entries_hash.hexdigest() if rel == "entries.jsonl" else _sha256_file(p)
        for p in sorted(out.rglob("*"))
        if p.is_file() and (rel := p.relative_to(out).as_posix()) != "manifest.json"
    }
    manifest = {"format": BUNDLE_FORMAT, "origin": log.origin, "size": size, "files": files}
    (out / "manifest.json").write_bytes(canonical_json(manifest))
    return latest


# --- verification ---------------------------------------------------------------------


def _read_manifest_bytes(root: Path) -> bytes:
    try:
        return (root / "manifest.json").read_bytes()
    except FileNotFoundError as exc:
        raise AuditVerificationError(f"{root}: manifest.json is missing") from exc
    except OSError as exc:
        raise AuditVerificationError(f"{root}: manifest.json cannot be read") from exc


def _check_manifest(root: Path, data: bytes, files: set[str]) -> _Manifest:
    """``files`` (from :func:`bundle_files`) must be exactly those the manifest lists,
    plus the top-level ``manifest.json`` itself (a ``manifest.json`` elsewhere is not)."""
    try:
        manifest = _Manifest.model_validate_json(data)
    except ValidationError as exc:
        raise AuditVerificationError(
            f"manifest.json is malformed: {exc.errors()[0]['msg']}"
        ) from exc
    present = files - {"manifest.json"}
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


def _load_checkpoints(root: Path, origin: str, policy: TrustPolicy) -> list[VerifiedCheckpoint]:
    """Parse and check every note: the log's signature under its pinned key, each
    cosignature under its *pinned* key ("unverified key" when its name is not pinned)."""
    paths = sorted((root / "checkpoints").glob("*.note"))
    if not paths:
        raise AuditVerificationError("checkpoints/: the bundle has no checkpoint")
    log_pub = policy.keys[origin]
    out: list[VerifiedCheckpoint] = []
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
        if out and signed.checkpoint.size <= out[-1].size:
            raise AuditVerificationError(f"{where}: sizes are not increasing")
        statuses: tuple[tuple[str, CosignatureStatus], ...] = tuple(
            (sig.name, _VERIFIED if sig.name in policy.keys else _UNVERIFIED)
            for sig in signed.signatures
            if sig.name != origin
        )
        counted = SignedCheckpoint(
            signed.checkpoint,
            tuple(sig for sig in signed.signatures if sig.name in policy.keys),
        )
        verify_checkpoint(
            counted,
            log_key=(origin, log_pub),
            cosigner_keys={k: v for k, v in policy.keys.items() if k != origin},
            where=where,
        )
        out.append(
            VerifiedCheckpoint(
                size=signed.checkpoint.size,
                root=signed.checkpoint.root,
                cosignatures=statuses,
                note=signed,
            )
        )
    return out


def _check_proofs(root: Path, verified: list[VerifiedCheckpoint]) -> None:
    cps = [c.note for c in verified]
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


_COSIGNATURES_EVENT = b'"type":"checkpoint.cosignatures"'


def _check_recorded_cosignatures(
    data: bytes, line_no: int, origin: str, by_size: Mapping[int, VerifiedCheckpoint]
) -> None:
    """The log's own ``checkpoint.cosignatures`` record must match the stored notes:
    a cosignature the log recorded receiving but whose line is gone was removed."""
    event = json.loads(data)
    if event.get("type") != "checkpoint.cosignatures" or event.get("actor") != origin:
        return
    body = event.get("body", {})
    cp = body.get("checkpoint", {}) if isinstance(body, dict) else {}
    names = body.get("cosigned_by", []) if isinstance(body, dict) else []
    if not isinstance(cp, dict) or not isinstance(names, list):
        raise AuditVerificationError(f"entries.jsonl line {line_no}: malformed cosignatures record")
    if cp.get("origin") != origin:
        return
    size = cp.get("size")
    note = by_size.get(size) if isinstance(size, int) else None
    for name in names:
        if note is None:
            raise AuditVerificationError(
                f"entries.jsonl line {line_no}: the log records cosignatures by {name!r} of "
                f"its checkpoint at size {size}, but the bundle has no checkpoint of that size "
                "(checkpoint removed)"
            )
        if name not in {n for n, _ in note.cosignatures}:
            raise AuditVerificationError(
                f"checkpoint at size {size}: no cosignature line by {name!r}, but the log "
                f"recorded receiving it (entries.jsonl line {line_no}, "
                "checkpoint.cosignatures): a cosignature was removed"
            )


def _lines_between(
    kept: list[bytes], chunk_lines: int, lo: int, hi: int
) -> Iterator[tuple[int, bytes]]:
    """``(first index, lines)`` blocks of entries ``[lo, hi)`` out of the blocks read so far
    (block ``j`` starts at entry ``j * chunk_lines``)."""
    for j in range(lo // chunk_lines, min(len(kept), -(-hi // chunk_lines))):
        start = j * chunk_lines
        lines = kept[j].split(b"\n")[:-1]
        a, b = max(lo, start) - start, min(hi, start + len(lines)) - start
        if a < b:
            yield start + a, b"".join(line + b"\n" for line in lines[a:b])


def _root_mismatch(
    number: int,
    size: int,
    matched: int,
    kept: list[bytes],
    chunk_lines: int,
    keys: Mapping[str, bytes],
    covered: frozenset[str],
    workers: int | None,
) -> AuditVerificationError:
    """The error for checkpoint ``number``'s root not matching entries ``[0, size)``.

    Entries ``[0, matched)`` matched an earlier checkpoint, so the change is in
    lines ``matched + 1 .. size``.  When signatures were skipped there (covered
    actors), they are verified now, which names the edited line if its
    signature no longer verifies.
    """
    where = f"checkpoint {number} (size {size}): root does not match entries"
    if covered:
        try:
            for _ in verify_blocks(
                _lines_between(kept, chunk_lines, matched, size), keys, workers=workers
            ):
                pass
        except AuditVerificationError as exc:
            return AuditVerificationError(
                f"{exc.message} (the entry differs from what the log signed in {where})"
            )
        return AuditVerificationError(
            f"{where}: an entry in lines {matched + 1}-{size} differs from what the log "
            "signed, yet every event signature there verifies: an event was replaced by "
            "another validly signed one (replayed, or re-signed by its actor's key holder)"
        )
    return AuditVerificationError(where)


def verify_bundle(
    path: Path | str,
    policy: TrustPolicy,
    *,
    workers: int | None = None,
    chunk_lines: int = 8192,
    event_signatures: EventSignatures = "uncovered",
) -> VerifiedBundle:
    """Verify a bundle offline under ``policy``; raise AuditVerificationError naming what failed.

    The log's own key must be pinned in ``policy``; a bundle key that differs
    from a pinned key of the same name is refused; cosignatures under names
    not pinned are reported as "unverified key" and never counted; every name
    in ``policy.required_cosigners`` must have cosigned a checkpoint under its
    pinned key.  ``workers`` is the number of processes (default: CPU count),
    each given ``chunk_lines`` entries at a time.

    Events by an actor whose key is the pinned log key are authenticated by the
    log's signed checkpoints over the recomputed Merkle root, not by verifying
    each event's own signature (the same key made both, see docs/compliance.md,
    "How entries are authenticated"); ``event_signatures="all"`` verifies every
    event's signature too.
    """
    if not isinstance(policy, TrustPolicy):
        raise ComplianceError(
            "verify_bundle needs a TrustPolicy", hint="build one with TrustPolicy.from_keys"
        )
    if chunk_lines < 1:
        raise ComplianceError(f"chunk_lines must be at least 1, not {chunk_lines}")
    if event_signatures not in ("uncovered", "all"):
        raise ComplianceError(
            f"event_signatures must be 'uncovered' or 'all', not {event_signatures!r}"
        )
    root = Path(path)
    files = bundle_files(root)  # before reading anything: no link is ever followed
    manifest_bytes = _read_manifest_bytes(root)
    manifest = _check_manifest(root, manifest_bytes, files)
    bundle_keys = _load_keys(root)
    origin = manifest.origin
    if origin not in policy.keys:
        raise AuditVerificationError(
            f"the key of log {origin!r} is not pinned: the bundle would only be consistent "
            "with the key it carries",
            hint=f"pass --trust {origin}=PATH/TO/{origin}.pub, obtained from {origin} directly",
        )
    for name, pub in sorted(bundle_keys.items()):
        pinned = policy.keys.get(name)
        if pinned is not None and pinned != pub:
            raise AuditVerificationError(
                f"keys/{_key_filename(name)}: not the pinned key of {name!r} "
                f"(bundle key id {key_id(name, pub).hex()}, pinned {key_id(name, pinned).hex()}): "
                f"signatures under that key are forged in the name of {name!r}",
                hint=f"the bundle's author made a key named {name!r}; {name!r}'s own log "
                "(fedcollab audit crossref) shows what it really signed",
            )
    keys = {**bundle_keys, **policy.keys}
    log_pub = policy.keys[origin]
    covered = frozenset(
        name for name, pub in keys.items() if event_signatures == "uncovered" and pub == log_pub
    )
    cps = _load_checkpoints(root, origin, policy)
    _check_proofs(root, cps)
    latest = cps[-1]
    if manifest.size != latest.size:
        raise AuditVerificationError(
            f"manifest: size {manifest.size} differs from the latest checkpoint ({latest.size})"
        )

    numbers = {c.size: i for i, c in enumerate(cps, start=1)}
    by_size = {c.size: c for c in cps}
    actors: dict[str, int] = {}
    if 0 in numbers and cps[0].root != merkle.EMPTY_ROOT:
        raise AuditVerificationError("checkpoint 1 (size 0): root is not the empty-tree root")
    if not (root / "entries.jsonl").is_file():
        raise AuditVerificationError("entries.jsonl is missing")
    tree = merkle.LeafTree(wanted=numbers)
    kept: list[bytes] = []
    block_iter = _read_blocks(root / "entries.jsonl", chunk_lines)

    def keep(blocks: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
        for start, block in blocks:
            kept.append(block)
            yield start, block

    entries_hash = hashlib.sha256()
    last_time, last_line = "", 0
    matched = 0  # size of the newest checkpoint whose root matched the entries
    for leaves, block_actors, first_time, block_last in verify_blocks(
        keep(block_iter), keys, covered=covered, workers=workers
    ):
        for name, n in block_actors.items():
            actors[name] = actors.get(name, 0) + n
        first_line = tree.size + 1
        if first_time and first_time < last_time:
            raise AuditVerificationError(
                f"entries.jsonl line {first_line}: event time is earlier than the previous "
                f"event's (line {last_line}): a back-dated or reordered event"
            )
        for size, computed in tree.extend(leaves):
            if computed != cps[numbers[size] - 1].root:
                raise _root_mismatch(
                    numbers[size], size, matched, kept, chunk_lines, keys, covered, workers
                )
            matched = size
        if block_last:
            last_time, last_line = block_last, tree.size
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
    for block in kept:
        entries_hash.update(block)
    if entries_hash.hexdigest() != manifest.files.get("entries.jsonl"):
        raise AuditVerificationError(
            "entries.jsonl changed while it was being verified",
            hint="copy the bundle to a folder nobody else writes to and try again",
        )
    line_no = 0
    for block in kept:
        if _COSIGNATURES_EVENT not in block:
            line_no += block.count(b"\n")
            continue
        for line in block.split(b"\n")[:-1]:
            line_no += 1
            if _COSIGNATURES_EVENT in line:
                data = line[len(b'{"event":') : line.rindex(b',"index":')]
                _check_recorded_cosignatures(data, line_no, origin, by_size)
    counted = {n for c in cps for n in c.cosigned_by()}
    # A required cosigner is pinned (TrustPolicy refuses otherwise) and a bundle key
    # under a pinned name that differs from the pin was refused above as forged, so a
    # required cosigner that is not counted has no cosignature at all.
    for name in policy.required_cosigners:
        if name not in counted:
            raise AuditVerificationError(
                f"required cosigner {name!r}: cosignature on no checkpoint of the bundle",
                hint=f"ask {name!r} whether it cosigned this log; check its own log with "
                "fedcollab audit crossref",
            )
    return VerifiedBundle(
        path=root,
        origin=origin,
        size=latest.size,
        root_hex=latest.root.hex(),
        checkpoints=tuple(cps),
        keys=tuple(
            (name, key_id(name, pub).hex(), name in policy.keys)
            for name, pub in sorted(keys.items())
            if name in bundle_keys or name == origin
        ),
        actors=tuple(sorted(actors.items())),
        unpinned_actors=tuple(sorted(a for a in actors if a not in policy.keys)),
        checkpoint_authenticated=tuple(sorted(a for a in actors if a in covered)),
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        policy=policy,
        _blocks=tuple(kept),
    )
