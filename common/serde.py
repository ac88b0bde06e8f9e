"""All (de)serialisation between protocol values and Flower messages.

Protocol code handles numpy vectors and plain dicts; this module alone turns
them into Flower ``RecordDict`` content and back, so neither the coordinator's
job drivers nor the partner's handlers touch Flower records directly.

Wire layout of every fedcollab message: one record, whatever it carries::

    content["meta"]  ConfigRecord {
        "json":        str    the canonical JSON object
        "vector":      bytes  float64 vector, raw little-endian     (optional)
        "cipher":      bytes  a CKKS ciphertext, :mod:`privacy.ckks`,
                              instead of a vector                   (optional)
        "part:<name>": bytes  the named opaque blob <name>, e.g. a
                              vertical job's sealed envelope        (optional)
    }

Why one record: Flower (1.41) sends a message as a tree of objects (the RecordDict,
each record, each Array of an ArrayRecord and each of its chunks), every one pushed
and pulled in its own HTTP request through the Fleet gateway and the SuperLink. The
former layout (an ArrayRecord each for the vector, the ciphertext and the parts) made
a message with a vector 5 objects, one with a vector, a ciphertext and two parts 13;
this one makes every message 2 (the RecordDict and this record). Measured with
``python -m experiments.bench_deployment --encryption none`` (9 partner nodes on 2
cores): a deployed plaintext round went from 0.97 s to 0.78 s, the per-request cost,
not the bytes, being what a round pays. A peer still sending the ArrayRecord layout runs an
incompatible fedcollab version, and :func:`decode` says so. Part names are prefixed,
so no part can stand for "json", "vector" or "cipher".

Every value :func:`decode` reads is the peer's: a missing or mistyped entry, an
unknown key or record, a vector of a partial float64, NaN or the wrong length raises
ProtocolError, never another exception (a red team's finding: one partner's malformed
array failed the whole job).

A partner that refuses a request replies with ``meta = {"refused": <error
class>, "reason": <text>}`` and no vector: a refusal never carries data.

Typed access: :meth:`Payload.as_` checks the meta against a strict pydantic model (the
partner's request models are in :mod:`common.messages`) once per message and model,
raising ProtocolError when it does not fit; ``meta`` stays the meta as received, which
the request digests cover. The coordinator reads the partners' replies the same way
(:mod:`common.messages.replies`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from flwr.app import ConfigRecord, ConfigRecordValues, RecordDict
from pydantic import BaseModel, ValidationError

from fedcollab.common import flower_records
from fedcollab.common.errors import ProtocolError

__all__ = [
    "Payload",
    "decode",
    "encode",
    "pack_blobs",
    "refusal",
    "unpack_blobs",
    "validate_meta",
]

#: Every fedcollab body is one ConfigRecord: deflate it once per content, not per lookup.
flower_records.install()

M = TypeVar("M", bound=BaseModel)
#: What a request that does not fit its model is told (a reply model says its own).
_REQUEST_HINT = (
    "the coordinator runs another fedcollab version, or the request was altered on the way; refused"
)
#: Validation errors named in a ProtocolError (the rest are counted).
_SHOWN_ERRORS = 5
#: The one record of a message, and its entries (module docstring).
_RECORD = "meta"
_JSON, _VECTOR, _CIPHER, _PART = "json", "vector", "cipher", "part:"
#: What a malformed message is told.
_WIRE_HINT = "peer runs an incompatible fedcollab version"
#: Record names and keys quoted in an error: at most this many, this long.
_SHOWN_NAMES, _NAME_CHARS = 5, 40


@dataclass(frozen=True)
class Payload:
    """A decoded message body: JSON metadata and an optional float64 vector."""

    meta: Mapping[str, Any]
    vector: np.ndarray | None = None
    ciphertext: bytes | None = None
    #: Named opaque blobs (sealed envelopes, ciphertexts) of a vertical job.
    parts: Mapping[str, bytes] = field(default_factory=dict)
    #: What :meth:`as_` validated, by model.
    _typed: dict[type[BaseModel], BaseModel] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def as_(self, model: type[M]) -> M:
        """The meta as ``model`` (strict; fields it does not name are left to ``meta``),
        or ProtocolError saying which fields do not fit. Validated once per message: a
        message already read as a subclass of ``model`` is returned as it is."""
        for known in self._typed.values():
            if isinstance(known, model):
                return known
        typed = validate_meta(self.meta, model)
        self._typed[model] = typed
        root = getattr(typed, "root", None)  # a RootModel's member (e.g. a vertical phase)
        if isinstance(root, BaseModel):
            self._typed[type(root)] = root
        return typed

    def part(self, name: str) -> bytes:
        """The blob ``name``, or ProtocolError when the message lacks it."""
        try:
            return self.parts[name]
        except KeyError:
            raise ProtocolError(
                f"message lacks the part {name!r}",
                hint="the peer runs another fedcollab version, or the relay dropped it",
            ) from None

    @property
    def array(self) -> np.ndarray:
        """The vector, or ProtocolError when the message carries none."""
        if self.vector is None:
            raise ProtocolError("message carries no vector where one was expected")
        return self.vector

    @property
    def refused(self) -> str | None:
        value = self.meta.get("refused")
        return str(value) if value is not None else None


def encode(
    meta: Mapping[str, Any],
    vector: np.ndarray | None = None,
    *,
    ciphertext: bytes | None = None,
    parts: Mapping[str, bytes] | None = None,
) -> RecordDict:
    entries: dict[str, ConfigRecordValues] = {
        _JSON: json.dumps(dict(meta), sort_keys=True, allow_nan=False)
    }
    if vector is not None:
        entries[_VECTOR] = np.ascontiguousarray(vector, dtype="<f8").tobytes()
    if ciphertext is not None:
        entries[_CIPHER] = bytes(ciphertext)
    for name, blob in (parts or {}).items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"a part needs a non-empty str name, not {name!r}")
        entries[_PART + name] = bytes(blob)
    return RecordDict({_RECORD: ConfigRecord(entries)})


def refusal(error: Exception, *, reason: str) -> RecordDict:
    """A refusal reply: the error class name and a reason that holds no data values."""
    return encode({"refused": type(error).__name__, "reason": reason})


def decode(content: RecordDict, *, expect_length: int | None = None) -> Payload:
    """The body :func:`encode` built, checked entry by entry (the peer's bytes: anything
    malformed raises ProtocolError)."""
    record = _the_record(content)
    meta = _meta(record)
    vector: np.ndarray | None = None
    ciphertext: bytes | None = None
    parts: dict[str, bytes] = {}
    for key, value in record.items():
        if key == _JSON:
            continue
        if key == _VECTOR:
            vector = _vector(_bytes(value, "'vector'"), expect_length)
        elif key == _CIPHER:
            ciphertext = _bytes(value, "'cipher'")
        elif key.startswith(_PART):
            name = key[len(_PART) :]
            if not name:
                raise ProtocolError("malformed message: a part has an empty name", hint=_WIRE_HINT)
            parts[name] = _bytes(value, f"part {_quote(name)}")
        else:
            raise ProtocolError(
                f"malformed message: unknown entry {_quote(key)} in the 'meta' record",
                hint=_WIRE_HINT,
            )
    if vector is None and expect_length is not None and ciphertext is None:
        raise ProtocolError("message carries no vector where one was expected")
    return Payload(meta=meta, vector=vector, ciphertext=ciphertext, parts=parts)


def _the_record(content: RecordDict) -> ConfigRecord:
    """The message's one ConfigRecord, or ProtocolError: missing, another type, or
    beside other records (the former ArrayRecord layout among them)."""
    others = [name for name in content if name != _RECORD]
    if others:
        shown = ", ".join(_quote(name) for name in others[:_SHOWN_NAMES])
        more = f" (and {len(others) - _SHOWN_NAMES} more)" if len(others) > _SHOWN_NAMES else ""
        raise ProtocolError(
            f"malformed message: records {shown}{more} beside 'meta' (fedcollab sends one "
            "'meta' record; an ArrayRecord 'vector', 'cipher' or 'parts' is the former layout)",
            hint=f"{_WIRE_HINT}: update both sides to the same release",
        )
    record = content.get(_RECORD)
    if not isinstance(record, ConfigRecord):
        what = "missing" if record is None else f"of type {type(record).__name__}"
        raise ProtocolError(
            f"malformed message: no valid 'meta' record (it is {what}, not a ConfigRecord)",
            hint=_WIRE_HINT,
        )
    return record


def _meta(record: ConfigRecord) -> dict[str, Any]:
    try:
        raw = record.get(_JSON)
        if not isinstance(raw, str):
            got = "missing" if raw is None else f"of type {type(raw).__name__}"
            raise TypeError(f"its 'json' entry is {got}, not a str")
        meta = json.loads(raw)
        if not isinstance(meta, dict):
            raise TypeError("meta is not a JSON object")
    except (TypeError, ValueError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the parser's stack (a hostile peer).
        raise ProtocolError(
            f"malformed message: no valid 'meta' record ({exc})", hint=_WIRE_HINT
        ) from exc
    return meta


def _bytes(value: object, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise ProtocolError(
            f"malformed message: {what} is of type {type(value).__name__}, not bytes",
            hint=_WIRE_HINT,
        )
    return value


def _vector(data: bytes, expect_length: int | None) -> np.ndarray:
    if len(data) % 8:
        raise ProtocolError(
            f"malformed message: 'vector' holds {len(data)} bytes, not whole float64 values",
            hint=_WIRE_HINT,
        )
    # A copy: writable, native float64, not a view of the message's bytes.
    vector = np.frombuffer(data, dtype="<f8").astype(np.float64)
    if expect_length is not None and vector.shape[0] != expect_length:
        raise ProtocolError(
            f"vector has {vector.shape[0]} values, expected {expect_length}",
            hint="peer runs an incompatible fedcollab version or another job's model",
        )
    if not np.all(np.isfinite(vector)):
        raise ProtocolError("vector holds NaN or infinite values")
    return vector


def _quote(name: object) -> str:
    """A peer's record name or key, short enough for an error message."""
    return repr(str(name)[:_NAME_CHARS])


def validate_meta(meta: Mapping[str, Any], model: type[M]) -> M:
    """``meta`` as ``model`` (strict), or ProtocolError naming the fields that do not fit,
    with the model's ``refusal_hint`` (a reply model's names the partner). For a meta
    whose Payload the caller does not hold; otherwise use :meth:`Payload.as_`."""
    try:
        return model.model_validate(dict(meta))
    except ValidationError as exc:
        raise ProtocolError(
            f"malformed {model.__name__}: {_describe(exc)}",
            hint=getattr(model, "refusal_hint", _REQUEST_HINT),
        ) from None


def _describe(exc: ValidationError) -> str:
    """Where and why a meta does not fit, without its values (they may be large)."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    shown = [f"{'.'.join(str(p) for p in e['loc']) or 'meta'}: {e['msg']}" for e in errors]
    more = len(shown) - _SHOWN_ERRORS
    return "; ".join(shown[:_SHOWN_ERRORS]) + (f" (and {more} more)" if more > 0 else "")


def pack_blobs(blobs: list[bytes]) -> bytes:
    """Several byte strings as one (4-byte big-endian length before each)."""
    return b"".join(len(b).to_bytes(4, "big") + b for b in blobs)


def unpack_blobs(raw: bytes, *, what: str) -> list[bytes]:
    """Inverse of :func:`pack_blobs`; ProtocolError when the framing is broken."""
    out: list[bytes] = []
    pos = 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise ProtocolError(f"{what}: truncated framing")
        size = int.from_bytes(raw[pos : pos + 4], "big")
        pos += 4
        if pos + size > len(raw):
            raise ProtocolError(f"{what}: truncated blob")
        out.append(raw[pos : pos + size])
        pos += size
    return out
