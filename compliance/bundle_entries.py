"""Verification of ``entries.jsonl``, in parallel processes, and the tree of its leaves.

Each line must be exactly ``{"event":<E>,"index":<i>}`` + newline in RFC 8785
form, with ``i`` its 0-based position, ``E`` a canonical, well-formed event
envelope, and the envelope's signature valid under the actor's listed key.  A
block of lines yields the concatenated RFC 9162 leaf hashes of its events (the
leaf is the event's canonical bytes, exactly as the log hashed them), which
:class:`LeafTree` folds into the roots the checkpoints are compared with.

Notes
-----
* Canonical form has a fast path: the event is parsed with floats and
  ``NaN``/``Infinity`` refused, re-serialised with the C ``json`` encoder
  (sorted keys, no spaces, no ASCII escaping) and compared byte for byte.  For
  JSON without floats, without integers beyond 15 digits and without
  characters from U+E000 up (UTF-8 lead bytes 0xEE-0xF4, the only ones whose
  code-point order differs from RFC 8785's UTF-16 key order), that
  serialisation *is* RFC 8785's: same string escapes, same integers, same key
  order.  Anything else, and any mismatch, goes to the reference ``rfc8785``
  implementation, which decides and names the failure.
* The envelope's shape is checked by hand (exact key set, exact types, the
  patterns of :class:`compliance.events.EventEnvelope` with ASCII digits),
  not by pydantic, which cost more per line than the canonical check; a test
  holds the two checks to the same verdicts.  Workers do not import pydantic.
* The signed payload (envelope without ``sig``) is cut out of the canonical
  bytes instead of being re-serialised: in RFC 8785 form the members are
  sorted, so ``"sig"`` is followed only by ``"time"`` and ``"type"``, whose
  patterns need no JSON escaping.
* Blocks travel to the workers as one ``bytes`` object each, not as parsed
  values; at most ``2 * workers`` blocks are in flight, bounding memory for
  large bundles; ``spawn`` processes avoid forking a parent that runs threads.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import json
import multiprocessing
import os
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedcollab.common.errors import AuditVerificationError, ComplianceError

__all__ = [
    "BlockResult",
    "LeafTree",
    "check_envelope",
    "default_workers",
    "time_key",
    "verify_block",
    "verify_blocks",
]

_PREFIX = b'{"event":'
_IN_PROCESS_BELOW = 2
_HASH_SIZE = 32

# The patterns of compliance.events.EventEnvelope (kept in step by a test), with
# ASCII digits: importing the pydantic model would slow every worker's start.
_ENVELOPE_KEYS = frozenset({"actor", "body", "sig", "time", "type"})
_NAME = re.compile(r"[^\s+\u2014]{1,128}")
_TYPE = re.compile(r"[a-z][a-z0-9_.-]{0,127}")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?Z")
_SIG_CHARS = 88

_HIGH_BYTES = re.compile(rb"[\xee-\xff]")
_SAFE_INT_DIGITS = 15  # every integer of up to 15 digits is below 2**53


class _NotFast(Exception):
    """The fast canonical check does not apply (a float, a long integer, a constant)."""


def _refuse(_: str) -> Any:
    raise _NotFast


def _short_int(text: str) -> int:
    if len(text) > _SAFE_INT_DIGITS:
        raise _NotFast
    return int(text)


_DECODER = json.JSONDecoder(parse_float=_refuse, parse_int=_short_int, parse_constant=_refuse)
_ENCODER = json.JSONEncoder(
    ensure_ascii=False,
    check_circular=False,
    allow_nan=False,
    sort_keys=True,
    separators=(",", ":"),
)


def _fail(line_no: int, msg: str) -> AuditVerificationError:
    return AuditVerificationError(f"entries.jsonl line {line_no}: {msg}")


def _line_form_problem(line: bytes, idx: int) -> str:
    """What is wrong with a line that is not ``{"event":...,"index":idx}`` byte for byte."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:
        return f"not valid JSON ({exc})"
    if type(obj) is not dict:
        return 'not a JSON object (expected {"event":...,"index":...})'
    if obj.keys() != {"event", "index"}:
        return f'members are {sorted(obj.keys())}, expected exactly ["event", "index"]'
    actual = obj["index"]
    if type(actual) is not int:
        return f"index is {actual!r}, not an integer"
    if actual != idx:
        return f"index is {actual}, expected {idx} (entries deleted, inserted or reordered)"
    expected = '{"event":<event>,"index":' + str(idx) + "}"
    return (
        "the line is valid JSON with the right index but not in canonical form "
        f"(expected exactly {expected} with no spaces, members in that order; the line "
        "was rewritten, e.g. re-serialised or pretty-printed)"
    )


def _canonical_value(data: bytes, line_no: int) -> Any:
    """The parsed event if ``data`` is in RFC 8785 form; raise otherwise."""
    if data.isascii() or _HIGH_BYTES.search(data) is None:
        try:
            obj = _DECODER.decode(data.decode("utf-8"))
            if _ENCODER.encode(obj).encode("utf-8") == data:
                return obj
        except (_NotFast, ValueError, RecursionError):
            pass  # the reference implementation below decides
    try:
        obj = json.loads(data)
        canonical = rfc8785.dumps(obj)
    except (ValueError, RecursionError, rfc8785.CanonicalizationError) as exc:
        raise _fail(line_no, f"event is not valid JSON: {exc}") from exc
    if canonical != data:
        raise _fail(line_no, "event is not in RFC 8785 canonical form")
    return obj


def check_envelope(obj: object) -> str | None:
    """``None`` if ``obj`` is a well-formed event envelope, else what is wrong with it."""
    if type(obj) is not dict:
        return "event: not a JSON object"
    if obj.keys() != _ENVELOPE_KEYS:
        missing = sorted(_ENVELOPE_KEYS - obj.keys())
        extra = sorted(obj.keys() - _ENVELOPE_KEYS)
        return f"event: missing {missing}" if missing else f"event: unexpected {extra}"
    for name, pattern in (("actor", _NAME), ("type", _TYPE), ("time", _TIME)):
        value = obj[name]
        if type(value) is not str or pattern.fullmatch(value) is None:
            return f"{name}: not a string matching {pattern.pattern!r}"
    if type(obj["body"]) is not dict:
        return "body: not a JSON object"
    sig = obj["sig"]
    if type(sig) is not str or len(sig) != _SIG_CHARS:
        return f"sig: not a string of {_SIG_CHARS} characters"
    return None


def time_key(stamp: str) -> str:
    """A sort key of an RFC 3339 ``...Z`` time as events carry it (fraction padded to ns)."""
    return stamp[:19] + stamp[20:-1].ljust(9, "0")


BlockResult = tuple[bytes, dict[str, int], str, str]


def verify_block(start: int, block: bytes, keys: Mapping[str, bytes]) -> BlockResult:
    """Verify the lines of ``block``, the first being entry ``start``.

    Returns the concatenated leaf hashes, the number of events per actor and the
    first and last event time (as :func:`time_key`); event times must not run
    backwards.  Every line must end with a newline: a block without a final
    newline is a truncated file.
    """
    lines = block.split(b"\n")
    last = lines.pop()
    if last:
        raise _fail(start + len(lines) + 1, "truncated line (no final newline)")
    loaded: dict[str, Ed25519PublicKey] = {}
    leaves: list[bytes] = []
    actors: dict[str, int] = {}
    first_time = last_time = ""
    sha256 = hashlib.sha256
    for idx, line in enumerate(lines, start):
        no = idx + 1
        suffix = b',"index":%d}' % idx
        if not line.startswith(_PREFIX) or not line.endswith(suffix):
            raise _fail(no, _line_form_problem(line, idx))
        data = line[len(_PREFIX) : -len(suffix)]
        env = _canonical_value(data, no)
        problem = check_envelope(env)
        if problem is not None:
            raise _fail(no, f"malformed event: {problem}")
        actor: str = env["actor"]
        sig: str = env["sig"]
        try:
            signature = base64.b64decode(sig, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _fail(no, f"signature by {actor!r} does not verify") from exc
        # sig is now plain base64 and time/type match escape-free patterns, so
        # their JSON encodings are the raw strings in quotes.
        sig_part = b',"sig":"' + sig.encode() + b'"'
        rest = b',"time":"' + env["time"].encode() + b'","type":"' + env["type"].encode() + b'"}'
        if not data.endswith(sig_part + rest):
            raise _fail(no, "event members are not in canonical order")
        payload = data[: len(data) - len(sig_part) - len(rest)] + rest
        key = loaded.get(actor)
        if key is None:
            raw = keys.get(actor)
            if raw is None:
                raise _fail(no, f"no public key for actor {actor!r}")
            key = loaded[actor] = Ed25519PublicKey.from_public_bytes(raw)
        try:
            key.verify(signature, payload)
        except (InvalidSignature, ValueError) as exc:
            raise _fail(no, f"signature by {actor!r} does not verify") from exc
        stamp = time_key(env["time"])
        if stamp < last_time:
            raise _fail(
                no,
                f"event time {env['time']} is earlier than the previous event's (line {no - 1}): "
                "a back-dated or reordered event",
            )
        first_time = first_time or stamp
        last_time = stamp
        leaves.append(sha256(b"\x00" + data).digest())
        actors[actor] = actors.get(actor, 0) + 1
    return b"".join(leaves), actors, first_time, last_time


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


def verify_blocks(
    blocks: Iterable[tuple[int, bytes]],
    keys: Mapping[str, bytes],
    *,
    workers: int | None = None,
) -> Iterator[BlockResult]:
    """Verify ``(first index, block)`` pairs; yields each block's result in order.

    With fewer than two workers, or a single block, everything runs in this
    process.
    """
    n_workers = default_workers() if workers is None else workers
    it = iter(blocks)
    first = next(it, None)
    if first is None:
        return
    second = next(it, None)
    if n_workers < _IN_PROCESS_BELOW or second is None:
        for start, block in (first, *(b for b in (second,) if b is not None)):
            yield verify_block(start, block, keys)
        for start, block in it:
            yield verify_block(start, block, keys)
        return
    ctx = multiprocessing.get_context("spawn")
    key_map = dict(keys)
    try:
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
            pending: deque[Future[BlockResult]] = deque()
            try:
                for start, block in (first, second):
                    pending.append(pool.submit(verify_block, start, block, key_map))
                for start, block in it:
                    pending.append(pool.submit(verify_block, start, block, key_map))
                    while len(pending) >= 2 * n_workers:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for fut in pending:  # a failure ends the run: drop the queued work
                    fut.cancel()
    except BrokenProcessPool as exc:
        raise ComplianceError(
            "a verification worker process died; the bundle was not verified",
            hint="retry with one worker (--workers 1), which verifies in this process",
        ) from exc


class LeafTree:
    """RFC 9162 roots of a growing sequence of leaf hashes, at chosen sizes.

    Leaves are folded as the largest aligned perfect subtrees that fit, each
    hashed level by level over a list (one ``hashlib`` call per node, no
    per-leaf bookkeeping), then merged into the frontier of perfect subtrees
    covering ``[0, size)``.

    >>> tree = LeafTree(wanted=[3])
    >>> [size for size, _ in tree.extend(b"\\x00" * 32 * 4)]
    [3]
    """

    def __init__(self, wanted: Iterable[int]) -> None:
        self._wanted = sorted(set(wanted))
        self._frontier: list[tuple[int, bytes]] = []  # (level, hash), levels decreasing
        self.size = 0

    def extend(self, leaves: bytes) -> list[tuple[int, bytes]]:
        """Append concatenated 32-byte leaf hashes; return ``(size, root)`` per wanted size."""
        hashes = [leaves[i : i + _HASH_SIZE] for i in range(0, len(leaves), _HASH_SIZE)]
        base = self.size
        lo = bisect.bisect_right(self._wanted, base)
        hi = bisect.bisect_right(self._wanted, base + len(hashes))
        roots: list[tuple[int, bytes]] = []
        for stop in self._wanted[lo:hi]:
            self._push(hashes[self.size - base : stop - base], pos=self.size)
            self.size = stop
            roots.append((stop, self.root()))
        self._push(hashes[self.size - base :], pos=self.size)
        self.size = base + len(hashes)
        return roots

    def _push(self, hashes: list[bytes], *, pos: int) -> None:
        done = 0
        while done < len(hashes):
            # the largest power of two that is aligned at pos and fits
            level = (len(hashes) - done).bit_length() - 1
            if pos:
                level = min(level, (pos & -pos).bit_length() - 1)
            width = 1 << level
            h = _perfect_root(hashes[done : done + width])
            while self._frontier and self._frontier[-1][0] == level:
                h = _node(self._frontier.pop()[1], h)
                level += 1
            self._frontier.append((level, h))
            pos += width
            done += width

    def root(self) -> bytes:
        """The root of the leaves so far (RFC 9162 ``MTH``)."""
        if not self._frontier:
            return hashlib.sha256(b"").digest()
        root = self._frontier[-1][1]
        for _, h in reversed(self._frontier[:-1]):
            root = _node(h, root)
        return root


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _perfect_root(hashes: list[bytes]) -> bytes:
    """Root of a perfect tree (``len(hashes)`` a power of two), level by level."""
    sha256 = hashlib.sha256
    level = hashes
    while len(level) > 1:
        level = [
            sha256(b"\x01" + left + right).digest()
            for left, right in zip(level[0::2], level[1::2], strict=True)
        ]
    return level[0]
