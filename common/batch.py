"""Several requests to one partner in one Flower message, and their replies in one.

Every message a partner handles costs a trip through the coordinator's SuperLink, the
Fleet gateway, the partner's SuperNode and its executor (about 0.3 s on a loaded
2-core machine, docs/secure_aggregation.md), whatever it carries. Where the
coordinator has several independent requests for the same partner at once (a masked
step's signature request beside the next step's key advertisement, a decryption
beside the survivors' signatures), :func:`coordinator.broadcast.exchange` packs them
into one ``query.batch`` message, and the partner answers them one by one, each
exactly as if it had come alone (:func:`client.client_app._serve_batch`): its own
admission, request plan, budget charge and trail records. The envelope carries no
authority: it names each request's action and step, and the partner checks them as
it would check a message's type and group.

Wire layout: one record, so that a batch moves as few Flower objects as a single
request (a message, its ``RecordDict`` and one ``ConfigRecord``; every object is an
HTTPS call at each hop, and a record per request made a batch of two 5 objects)::

    content["batch"]   ConfigRecord {
        "json":                  [{"action": ..., "step": ...}, ...],
        "<i>/<name>/<key>":      entry <key> of request i's record <name>
                                 (common.serde's layout: one record, "meta")
    }

and the reply ``content["batch"] = {"json": <count>, "<i>/<name>/<key>": ...}`` with
the reply to request i, in order. Only ``ConfigRecord`` contents can ride in a batch
(every fedcollab body is one, :mod:`common.serde`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.app.metadata import validate_message_type

from fedcollab.common.errors import ProtocolError

__all__ = [
    "ACTION",
    "MAX_ITEMS",
    "BatchItem",
    "pack",
    "pack_replies",
    "steps",
    "unpack",
    "unpack_replies",
]

#: The message type of a batch (Flower's "<category>.<action>").
ACTION = "query.batch"
#: At most this many requests ride in one batch: the coordinator never needs more
#: (a decryption, a signature request and the next step's advertisement), and a
#: partner answers a batch in one ClientApp call, so a longer one would only hold it.
MAX_ITEMS = 4
#: The envelope's own JSON (the actions and steps of at most MAX_ITEMS requests) is
#: short; a longer one is refused before it is parsed.
_MAX_HEAD_CHARS = 4096
_HINT = "the coordinator runs another fedcollab version, or the message was altered; refused"


@dataclass(frozen=True)
class BatchItem:
    """One request of a batch: its action (message type), step (group) and content."""

    action: str
    step: str
    content: RecordDict


def pack(items: Sequence[BatchItem]) -> RecordDict:
    """One message's content for ``items`` (2 to :data:`MAX_ITEMS` requests)."""
    if not 2 <= len(items) <= MAX_ITEMS:
        raise ValueError(f"a batch holds 2 to {MAX_ITEMS} requests, not {len(items)}")
    heads = [{"action": item.action, "step": item.step} for item in items]
    return _join([item.content for item in items], heads)


def pack_replies(replies: Sequence[RecordDict]) -> RecordDict:
    """The reply to a batch: each request's reply, in the batch's order."""
    return _join(replies, len(replies))


def unpack(content: RecordDict) -> list[BatchItem]:
    """The requests of a batch, checked: 2 to :data:`MAX_ITEMS` of them, each with a valid
    message type other than a batch and a step name, and no record outside them."""
    heads, parts = _split(content)
    if not isinstance(heads, list) or not 2 <= len(heads) <= MAX_ITEMS:
        raise ProtocolError(f"a batch must list 2 to {MAX_ITEMS} requests", hint=_HINT)
    items: list[BatchItem] = []
    for i, head in enumerate(heads):
        if not isinstance(head, dict) or set(head) != {"action", "step"}:
            raise ProtocolError(f"batch entry {i} is not {{action, step}}", hint=_HINT)
        action, step = head["action"], head["step"]
        if not isinstance(action, str) or not validate_message_type(action) or action == ACTION:
            raise ProtocolError(f"batch entry {i} names no valid action", hint=_HINT)
        if not isinstance(step, str) or not step or len(step) > 200:
            raise ProtocolError(f"batch entry {i} names no valid step", hint=_HINT)
        if i not in parts:
            raise ProtocolError(f"batch entry {i} carries no records", hint=_HINT)
        items.append(BatchItem(action, step, parts.pop(i)))
    if parts:
        raise ProtocolError("a batch carries records of no listed request", hint=_HINT)
    return items


def unpack_replies(content: RecordDict, count: int) -> list[RecordDict]:
    """The ``count`` replies of a batch reply, in order (ProtocolError if it holds
    another number of replies or records of none)."""
    declared, parts = _split(content)
    if declared != count or set(parts) != set(range(count)):
        raise ProtocolError(f"a batch reply must hold {count} replies", hint=_HINT)
    return [parts.get(i, RecordDict()) for i in range(count)]


def steps(message: Message) -> list[str]:
    """The steps (group ids) of the requests ``message`` carries: its own, or each of
    its batch's (for logs and tests that follow a job's exchanges)."""
    if message.metadata.message_type != ACTION:
        return [message.metadata.group_id]
    return [item.step for item in unpack(message.content)]


def _join(contents: Sequence[RecordDict], head: object) -> RecordDict:
    entries: dict[str, Any] = {"json": json.dumps(head)}
    for i, content in enumerate(contents):
        for name, record in content.items():
            if not isinstance(record, ConfigRecord) or not name or "/" in name:
                raise ValueError(f"a batch carries ConfigRecords named without '/', not {name!r}")
            for key, value in record.items():
                entries[f"{i}/{name}/{key}"] = value
    return RecordDict({"batch": ConfigRecord(entries)})


def _split(content: RecordDict) -> tuple[object, dict[int, RecordDict]]:
    try:
        if set(content) != {"batch"}:
            raise ValueError("a batch is one record, 'batch'")
        record = content["batch"]
        if not isinstance(record, ConfigRecord):
            raise TypeError("the batch record is not a ConfigRecord")
        raw = record["json"]
        if not isinstance(raw, str):  # not turned into text first: it may be large
            raise TypeError("the batch envelope is not text")
        if len(raw) > _MAX_HEAD_CHARS:
            raise ValueError(f"the batch record holds more than {_MAX_HEAD_CHARS} characters")
        head = json.loads(raw)
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise ProtocolError(
            f"malformed batch: no valid 'batch' record ({exc})", hint=_HINT
        ) from exc
    parts: dict[int, dict[str, dict[str, Any]]] = {}
    for key, value in record.items():
        if key == "json":
            continue
        index, sep, rest = key.partition("/")
        name, sep2, entry = rest.partition("/")
        # ASCII digits in canonical form only: "²" is a digit to str.isdigit but not to
        # int(), and "00" would name request 0 a second time.
        canonical = index.isascii() and index.isdigit() and index == str(int(index))
        if not (sep and sep2 and canonical) or len(index) > 2 or not name or not entry:
            raise ProtocolError(f"malformed batch: entry {key[:40]!r}", hint=_HINT)
        parts.setdefault(int(index), {}).setdefault(name, {})[entry] = value
    return head, {
        i: RecordDict({name: ConfigRecord(entries) for name, entries in records.items()})
        for i, records in parts.items()
    }
