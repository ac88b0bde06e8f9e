"""Verification of ``entries.jsonl`` lines, in parallel processes.

Each line must be exactly ``{"event":<E>,"index":<i>}`` + newline in RFC 8785
form, with ``i`` its 0-based position, ``E`` a canonical, well-formed event
envelope, and the envelope's signature valid under the actor's listed key.  A
chunk yields the concatenated RFC 9162 leaf hashes of its events (the leaf
is the event's canonical bytes, exactly as the log hashed them).

Notes
-----
* The signed payload (envelope without ``sig``) is cut out of the canonical
  bytes instead of being re-serialised: in RFC 8785 form the members are
  sorted, so ``"sig"`` is followed only by ``"time"`` and ``"type"``, whose
  encodings are recomputed and must match byte for byte.  This halves the
  pure-Python canonicalisation cost; correctness rests on the canonical-form
  check done first.
* At most ``2 * workers`` chunks are in flight, bounding memory for large
  bundles; ``spawn`` processes avoid forking a parent that runs threads.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import multiprocessing
import os
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from common.errors import AuditVerificationError
from compliance.events import EventEnvelope

__all__ = ["verify_entry_chunks", "verify_lines"]

_PREFIX = b'{"event":'
_IN_PROCESS_BELOW = 2


def _fail(line_no: int, msg: str) -> AuditVerificationError:
    return AuditVerificationError(f"entries.jsonl line {line_no}: {msg}")


def _actual_index(line: bytes) -> object:
    try:
        return json.loads(line).get("index")
    except (ValueError, AttributeError):
        return None


def verify_lines(
    start: int, lines: list[bytes], keys: Mapping[str, bytes]
) -> tuple[bytes, dict[str, int]]:
    """Verify lines ``start .. start + len(lines) - 1``; return leaf hashes and actor counts."""
    loaded: dict[str, Ed25519PublicKey] = {}
    leaves = bytearray()
    actors: dict[str, int] = {}
    for offset, line in enumerate(lines):
        idx = start + offset
        no = idx + 1
        if not line.endswith(b"\n"):
            raise _fail(no, "truncated line (no final newline)")
        suffix = b',"index":' + str(idx).encode() + b"}\n"
        if not line.startswith(_PREFIX) or not line.endswith(suffix):
            actual = _actual_index(line)
            if isinstance(actual, int):
                raise _fail(
                    no,
                    f"index is {actual}, expected {idx} (entries deleted, inserted or reordered)",
                )
            raise _fail(no, 'not a {"event":...,"index":...} line in canonical form')
        data = line[len(_PREFIX) : -len(suffix)]
        try:
            obj: Any = json.loads(data)
            canonical = rfc8785.dumps(obj)
        except (ValueError, rfc8785.CanonicalizationError) as exc:
            raise _fail(no, f"event is not valid JSON: {exc}") from exc
        if canonical != data:
            raise _fail(no, "event is not in RFC 8785 canonical form")
        try:
            env = EventEnvelope.model_validate(obj)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "event"
            raise _fail(no, f"malformed event: {field}: {first['msg']}") from exc
        sig_part = b',"sig":' + rfc8785.dumps(env.sig)
        tail = (
            sig_part
            + b',"time":'
            + rfc8785.dumps(env.time)
            + b',"type":'
            + rfc8785.dumps(env.type)
            + b"}"
        )
        if not data.endswith(tail):
            raise _fail(no, "event members are not in canonical order")
        payload = data[: -len(tail)] + tail[len(sig_part) :]
        key = loaded.get(env.actor)
        if key is None:
            raw = keys.get(env.actor)
            if raw is None:
                raise _fail(no, f"no public key for actor {env.actor!r}")
            key = loaded[env.actor] = Ed25519PublicKey.from_public_bytes(raw)
        try:
            key.verify(base64.b64decode(env.sig, validate=True), payload)
        except (InvalidSignature, binascii.Error, ValueError) as exc:
            raise _fail(no, f"signature by {env.actor!r} does not verify") from exc
        leaves += hashlib.sha256(b"\x00" + data).digest()
        actors[env.actor] = actors.get(env.actor, 0) + 1
    return bytes(leaves), actors


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


def verify_entry_chunks(
    chunks: Iterable[list[bytes]], keys: Mapping[str, bytes], *, workers: int | None = None
) -> Iterator[tuple[bytes, dict[str, int]]]:
    """Verify chunks of lines in order; yields each chunk's result in order."""
    n_workers = default_workers() if workers is None else workers
    it = iter(chunks)
    first = next(it, None)
    if first is None:
        return
    second = next(it, None)
    if n_workers < _IN_PROCESS_BELOW or second is None:
        start = 0
        for chunk in (first, *(c for c in (second,) if c is not None)):
            yield verify_lines(start, chunk, keys)
            start += len(chunk)
        for chunk in it:
            yield verify_lines(start, chunk, keys)
            start += len(chunk)
        return
    ctx = multiprocessing.get_context("spawn")
    key_map = dict(keys)
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
        pending: deque[Future[tuple[bytes, dict[str, int]]]] = deque()
        start = 0

        def submit(chunk: list[bytes]) -> None:
            nonlocal start
            pending.append(pool.submit(verify_lines, start, chunk, key_map))
            start += len(chunk)

        submit(first)
        submit(second)
        for chunk in it:
            submit(chunk)
            while len(pending) >= 2 * n_workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
