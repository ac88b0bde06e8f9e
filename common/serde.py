"""All (de)serialisation between protocol values and Flower messages.

Protocol code handles numpy vectors and plain dicts; this module alone turns
them into Flower ``RecordDict`` content and back, so neither the coordinator's
job drivers nor the partner's handlers touch Flower records directly.

Wire layout of every fedcollab message::

    content["meta"]   ConfigRecord {"json": <canonical JSON object>}
    content["vector"] ArrayRecord  {"v": float64 vector}          (optional)
    content["cipher"] ArrayRecord  {"c": uint8 bytes}             (optional: a CKKS
                                   ciphertext, :mod:`privacy.ckks`, instead of a vector)
    content["parts"]  ArrayRecord  {name: uint8 bytes}            (optional: named opaque
                                   blobs, e.g. vertical jobs' sealed envelopes)

A partner that refuses a request replies with ``meta = {"refused": <error
class>, "reason": <text>}`` and no vector: a refusal never carries data.

Typed access: :meth:`Payload.as_` checks the meta against a strict pydantic model (the
partner's request models are in :mod:`common.messages`) once per message and model,
raising ProtocolError when it does not fit; ``meta`` stays the meta as received, which
the request digests cover. The coordinator reads the partners' replies the same way
(:mod:`common.messages.replies`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict
from pydantic import BaseModel, ValidationError

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

M = TypeVar("M", bound=BaseModel)
#: What a request that does not fit its model is told (a reply model says its own).
_REQUEST_HINT = (
    "the coordinator runs another fedcollab version, or the request was altered on the way; refused"
)
#: Validation errors named in a ProtocolError (the rest are counted).
_SHOWN_ERRORS = 5


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
    records: dict[str, Any] = {
        "meta": ConfigRecord({"json": json.dumps(dict(meta), sort_keys=True, allow_nan=False)})
    }
    if vector is not None:
        vec = np.ascontiguousarray(vector, dtype=np.float64).reshape(-1)
        records["vector"] = ArrayRecord({"v": Array(vec)})
    if ciphertext is not None:
        records["cipher"] = ArrayRecord({"c": Array(np.frombuffer(ciphertext, dtype=np.uint8))})
    if parts:
        records["parts"] = ArrayRecord(
            {name: Array(np.frombuffer(blob, dtype=np.uint8)) for name, blob in parts.items()}
        )
    return RecordDict(records)


def refusal(error: Exception, *, reason: str) -> RecordDict:
    """A refusal reply: the error class name and a reason that holds no data values."""
    return encode({"refused": type(error).__name__, "reason": reason})


def decode(content: RecordDict, *, expect_length: int | None = None) -> Payload:
    try:
        meta_record = content["meta"]
        assert isinstance(meta_record, ConfigRecord)
        meta = json.loads(str(meta_record["json"]))
        if not isinstance(meta, dict):
            raise TypeError("meta is not a JSON object")
    except (KeyError, AssertionError, TypeError, ValueError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the parser's stack (a hostile peer).
        raise ProtocolError(
            f"malformed message: no valid 'meta' record ({exc})",
            hint="peer runs an incompatible fedcollab version",
        ) from exc
    vector = None
    if "vector" in content:
        record = content["vector"]
        if not isinstance(record, ArrayRecord) or "v" not in record:
            raise ProtocolError("malformed message: bad 'vector' record")
        vector = np.asarray(_numpy(record["v"], "vector"), dtype=np.float64).reshape(-1)
        if expect_length is not None and vector.shape[0] != expect_length:
            raise ProtocolError(
                f"vector has {vector.shape[0]} values, expected {expect_length}",
                hint="peer runs an incompatible fedcollab version or another job's model",
            )
        if not np.all(np.isfinite(vector)):
            raise ProtocolError("vector holds NaN or infinite values")
    ciphertext = None
    if "cipher" in content:
        record = content["cipher"]
        if not isinstance(record, ArrayRecord) or "c" not in record:
            raise ProtocolError("malformed message: bad 'cipher' record")
        raw = _numpy(record["c"], "cipher")
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ProtocolError("malformed message: 'cipher' is not a byte string")
        ciphertext = raw.tobytes()
    parts: dict[str, bytes] = {}
    if "parts" in content:
        record = content["parts"]
        if not isinstance(record, ArrayRecord):
            raise ProtocolError("malformed message: bad 'parts' record")
        for name in record:
            raw = _numpy(record[name], f"part {name!r}")
            if raw.dtype != np.uint8 or raw.ndim != 1:
                raise ProtocolError(f"malformed message: part {name!r} is not a byte string")
            parts[str(name)] = raw.tobytes()
    if vector is None and expect_length is not None and ciphertext is None:
        raise ProtocolError("message carries no vector where one was expected")
    return Payload(meta=meta, vector=vector, ciphertext=ciphertext, parts=parts)


def _numpy(array: Array, what: str) -> np.ndarray:
    """``array`` as numpy, or ProtocolError: its bytes come from the peer. The ``.npy``
    header is read first and the declared size checked against the bytes sent, so a
    header declaring 2**45 values allocates nothing; a zip, an object dtype, empty or
    truncated bytes are refused instead of raising EOFError, BadZipFile or MemoryError
    out of the caller (a red team's finding: one partner's reply failed the job)."""
    try:
        data = bytes(array.data)
        buf = io.BytesIO(data)
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(buf)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(buf)
        else:
            raise ValueError(f"npy format version {version}")
        if dtype.hasobject:
            raise ValueError("object dtype")
        if int(np.prod(shape, dtype=object)) * dtype.itemsize != len(data) - buf.tell():
            raise ValueError("declared size does not match the bytes sent")
        value = array.numpy()
    except Exception as exc:  # any malformed array: the peer's bytes, not our bug
        raise ProtocolError(
            f"malformed message: {what} is not a valid array ({type(exc).__name__})",
            hint="peer runs an incompatible fedcollab version",
        ) from exc
    return value


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
