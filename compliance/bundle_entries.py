"""Verification of ``entries.jsonl``, in parallel processes, and the tree of its leaves.

Each line must be exactly ``{"event":<E>,"index":<i>}`` + newline in RFC 8785
form, with ``i`` its 0-based position, ``E`` a canonical, well-formed event
envelope, and the envelope's signature valid under the actor's listed key.  A
block of lines yields the concatenated RFC 9162 leaf hashes of its events (the
leaf is the event's canonical bytes, exactly as the log hashed them), which
:class:`compliance.merkle.LeafTree` folds into the roots the checkpoints are compared with.

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
import hashlib
import json
import multiprocessing
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedcollab.common.errors import AuditVerificationError, ComplianceError
from fedcollab.common.keys import KEY_NAME_PATTERN, KEY_NAME_RULE

__all__ = [
    "BlockResult",
    "check_envelope",
    "default_workers",
    "time_key",
    "verify_block",
    "verify_blocks",
]

_PREFIX = b'{"event":'
_IN_PROCESS_BELOW = 2

# The patterns of compliance.events.EventEnvelope (kept in step by a test), with
# ASCII digits: importing the pydantic model would slow every worker's start.
_ENVELOPE_KEYS = frozenset({"actor", "body", "sig", "time", "type"})
_NAME = re.compile(KEY_NAME_PATTERN)  # ASCII only: no look-alike of a pinned name
_TYPE = re.compile(r"[a-z][a-z0-9_.-]{0,127}")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?Z")
# The three patterns at once over "actor\ntype\ntime" (none of them matches a newline).
_NAME_TYPE_TIME = re.compile(f"(?:{_NAME.pattern})\n(?:{_TYPE.pattern})\n(?:{_TIME.pattern})")
_SIG_CHARS = 88
_SIG_FORM = re.compile(r"[A-Za-z0-9+/]{86}==")  # base64 of exactly 64 bytes

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


def _c_encoder() -> Callable[[Any], str]:
    """``_ENCODER.encode`` without its per-call set-up: the C encoder built once.

    ``JSONEncoder.encode`` builds a new C encoder on every call, which cost as
    much as the encoding itself; interpreters without the C accelerator (or with
    another signature) use ``_ENCODER.encode``.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is not None:
        try:
            enc = make(
                None, _ENCODER.default, json.encoder.encode_basestring,
                None, ":", ",", True, False, False,
            )  # fmt: skip
            if "".join(enc({"b": [1, "\u00e9"], "a": None}, 0)) == '{"a":null,"b":[1,"\u00e9"]}':
                return lambda obj: "".join(enc(obj, 0))
        except TypeError:
            pass
    return _ENCODER.encode


_ENCODE = _c_encoder()
# The decoder's own scanner (what JSONDecoder.decode calls), without decode()'s wrapper.
_SCAN: Callable[[str, int], tuple[Any, int]] = getattr(_DECODER, "scan_once")  # noqa: B009


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
            text = data.decode("utf-8")
            obj, end = _SCAN(text, 0)
            # Equal strings have equal UTF-8 encodings: the text came from valid UTF-8.
            if end == len(text) and _ENCODE(obj) == text:
                return obj
        except (_NotFast, ValueError, RecursionError, StopIteration):
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
    if (  # the common case in one regex call; any doubt goes through the checks below
        obj.keys() == _ENVELOPE_KEYS
        and type(actor := obj["actor"]) is str
        and type(etype := obj["type"]) is str
        and type(etime := obj["time"]) is str
        and _NAME_TYPE_TIME.fullmatch(f"{actor}\n{etype}\n{etime}") is not None
        and type(obj["body"]) is dict
        and type(sig := obj["sig"]) is str
        and len(sig) == _SIG_CHARS
    ):
        return None
    if obj.keys() != _ENVELOPE_KEYS:
        missing = sorted(_ENVELOPE_KEYS - obj.keys())
        extra = sorted(obj.keys() - _ENVELOPE_KEYS)
        return f"event: missing {missing}" if missing else f"event: unexpected {extra}"
    actor = obj["actor"]
    if type(actor) is str and _NAME.fullmatch(actor) is None:
        return f"actor {actor!r} is not a valid party name (a name is {KEY_NAME_RULE})"
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


def verify_block(
    start: int,
    block: bytes,
    keys: Mapping[str, bytes],
    covered: frozenset[str] = frozenset(),
) -> BlockResult:
    """Verify the lines of ``block``, the first being entry ``start``.

    Returns the concatenated leaf hashes, the number of events per actor and the
    first and last event time (as :func:`time_key`); event times must not run
    backwards.  Every line must end with a newline: a block without a final
    newline is a truncated file.

    The Ed25519 signature of an event by an actor in ``covered`` is only checked
    for form (base64 of 64 bytes), not verified: the caller authenticates those
    events through the log's signed checkpoints over the leaf hashes returned
    here (``covered`` holds the actors whose key *is* the log's key).
    """
    lines = block.split(b"\n")
    last = lines.pop()
    if last:
        raise _fail(start + len(lines) + 1, "truncated line (no final newline)")
    loaded: dict[str, Ed25519PublicKey] = {}
    leaves: list[bytes] = []
    actors: dict[str, int] = {}
    first_raw = last_raw = ""
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
        stamp: str = env["time"]
        if actor in covered:
            # Authenticated through the checkpoints (the caller checks the roots).
            if _SIG_FORM.fullmatch(sig) is None:
                raise _fail(no, f"signature by {actor!r} is not base64 of 64 bytes")
        else:
            try:
                signature = base64.b64decode(sig, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise _fail(no, f"signature by {actor!r} does not verify") from exc
            # sig is now plain base64 and time/type match escape-free patterns, so
            # their JSON encodings are the raw strings in quotes.
            sig_part = b',"sig":"' + sig.encode() + b'"'
            rest = b',"time":"' + stamp.encode() + b'","type":"' + env["type"].encode() + b'"}'
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
        # Times of one length have fractions of one length: compared as strings they
        # order as their time_key does, which is needed only across lengths.
        if last_raw and (
            stamp < last_raw
            if len(stamp) == len(last_raw)
            else time_key(stamp) < time_key(last_raw)
        ):
            raise _fail(
                no,
                f"event time {stamp} is earlier than the previous event's (line {no - 1}): "
                "a back-dated or reordered event",
            )
        first_raw = first_raw or stamp
        last_raw = stamp
        leaves.append(sha256(b"\x00" + data).digest())
        actors[actor] = actors.get(actor, 0) + 1
    first_time = time_key(first_raw) if first_raw else ""
    last_time = time_key(last_raw) if last_raw else ""
    return b"".join(leaves), actors, first_time, last_time


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


def verify_blocks(
    blocks: Iterable[tuple[int, bytes]],
    keys: Mapping[str, bytes],
    *,
    covered: frozenset[str] = frozenset(),
    workers: int | None = None,
) -> Iterator[BlockResult]:
    """Verify ``(first index, block)`` pairs; yields each block's result in order.

    ``covered`` as in :func:`verify_block`.  With fewer than two workers, or a
    single block, everything runs in this process.
    """
    n_workers = default_workers() if workers is None else workers
    it = iter(blocks)
    first = next(it, None)
    if first is None:
        return
    second = next(it, None)
    if n_workers < _IN_PROCESS_BELOW or second is None:
        for start, block in (first, *(b for b in (second,) if b is not None)):
            yield verify_block(start, block, keys, covered)
        for start, block in it:
            yield verify_block(start, block, keys, covered)
        return
    ctx = multiprocessing.get_context("spawn")
    key_map = dict(keys)
    try:
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
            pending: deque[Future[BlockResult]] = deque()
            try:
                for start, block in (first, second):
                    pending.append(pool.submit(verify_block, start, block, key_map, covered))
                for start, block in it:
                    pending.append(pool.submit(verify_block, start, block, key_map, covered))
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
