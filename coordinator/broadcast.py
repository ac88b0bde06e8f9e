"""Send one request to many partners and consume replies as they arrive.

Flower's ``Grid.send_and_receive`` returns only when every reply is in; the
coordinator instead pulls replies in a loop and hands each one to a callback
straight away, so aggregation is streaming (no partner's contribution waits
in memory for the others) and a partner that never answers is counted as
dropped once the round's deadline passes.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedcollab.common import batch
from fedcollab.common.batch import BatchItem
from fedcollab.common.errors import CiphertextError, FedcollabError, ProtocolError
from fedcollab.common.serde import Payload, decode
from fedcollab.coordinator.fleet_notice import FALLBACK_S, from_env

__all__ = ["LIVENESS_S", "Outcome", "Request", "broadcast", "exchange", "record_messages"]

log = logging.getLogger(__name__)

#: Where every message through the coordinator is written (tests only; None: nowhere).
_RECORD_DIR: Path | None = None
_RECORD_SEQ = itertools.count()


def record_messages(directory: Path | None) -> None:
    """Write every request and reply this process relays under ``directory``: the
    bytes the coordinator sees (every record entry: the JSON meta and the raw bytes of
    the vector, ciphertext and parts), so a test can search them for plaintext data.
    Run config ``record-messages``; off by default."""
    global _RECORD_DIR
    _RECORD_DIR = directory
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)


def _record(direction: str, group: str, node: int, content: RecordDict) -> None:
    if _RECORD_DIR is None:
        return
    chunks: list[bytes] = []
    for name, record in content.items():
        chunks.append(name.encode())
        # fedcollab sends ConfigRecords only (common.serde, common.batch); a peer's record
        # of another type is refused when decoded, and only its name is written here.
        if isinstance(record, ConfigRecord):
            for key, value in record.items():
                chunks.append(key.encode())
                if isinstance(value, bytes):
                    chunks.append(value)
                else:
                    chunks.append((value if isinstance(value, str) else str(value)).encode())
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in group)
    path = _RECORD_DIR / f"{next(_RECORD_SEQ):06d}-{direction}-{safe}-{node}.bin"
    path.write_bytes(b"\n".join(chunks))


#: Wait between two pulls of the replies still missing when no reply notice is
#: available (the simulation engine; a deployed coordinator's gateway bumps one when a
#: partner pushes, coordinator.fleet_notice, and then this waits on it, pulling at
#: least every FALLBACK_S). A pull that finds nothing is one query on the
#: coordinator's own SuperLink.
_POLL_S = 0.05
#: The SuperLink can list a reply before all of its objects are uploaded; Flower then
#: waits ``PULL_INITIAL_BACKOFF`` (1 s), doubling, before pulling them again. Here the
#: first retry comes after this long (doubling to ``_OBJECT_BACKOFF_CAP_S``). The
#: gateway wakes this process when a reply is whole (coordinator.fleet_uploads), so a
#: retry is for the replies of other partners still uploading when it pulls: a few
#: milliseconds away, mostly.
_OBJECT_BACKOFF_S = 0.01
_OBJECT_BACKOFF_CAP_S = 2.0
#: A reply whose objects never complete (its partner died while uploading it) held
#: Flower's pull for minutes (500 tries, up to ``PULL_MAX_TIME``, 2 h), and every other
#: reply of the step waited behind it until their messages expired: a partner killed
#: mid-upload cost the job its whole quorum. Each pull of objects is now bounded by the
#: time left to the earliest pending deadline, and never less than this.
_OBJECT_FLOOR_S = 5.0
#: A message lives this much longer in the SuperLink than its request's deadline. The
#: last pull starts after the deadline (a slow pull, above) and must still find the
#: replies that arrived in time: Flower answers a pull for an expired message with an
#: error (code 3) even when its reply is stored.
TTL_GRACE_S = 30.0
#: While replies are missing, how often the coordinator asks its SuperLink which nodes
#: are online. A node that took a message and then died (killed, its machine gone) is
#: offline once it missed Flower's heartbeat window (2 x 30 s), but Flower answers a
#: message its node already pulled only at the message's TTL (code 3): the demo's key
#: dealer, killed after it had taken round 3's decryption request, held that step for
#: the request's whole 180 s deadline. Now it is a dropout once its node is offline.
LIVENESS_S = 5.0


class _ObjectPull:
    """Flower's ``pull_objects`` with a short first retry and, while :func:`exchange`
    pulls, a bound on its time (``max_time``); otherwise Flower's own arguments."""

    def __init__(self, pull: Callable[..., dict[str, bytes]]) -> None:
        self.pull = pull
        self.max_time: float | None = None

    def __call__(self, *args: object, **kwargs: object) -> dict[str, bytes]:
        kwargs.setdefault("initial_backoff", _OBJECT_BACKOFF_S)
        kwargs.setdefault("backoff_cap", _OBJECT_BACKOFF_CAP_S)
        if self.max_time is not None:
            kwargs["max_time"] = self.max_time
        return self.pull(*args, **kwargs)


def _object_pull(grid: Grid) -> _ObjectPull | None:
    """Wrap Flower's ``pull_objects`` in this process, once (see :class:`_ObjectPull`).

    Flower's HTTP grid (the ServerApp's) looks ``pull_objects`` up in its module at
    call time; a grid without it (the simulation's in-memory grid) is left alone."""
    import sys

    module = sys.modules.get(type(grid).__module__)
    current = getattr(module, "pull_objects", None)
    if module is None or current is None:
        return None
    if isinstance(current, _ObjectPull):
        return current
    wrapped = _ObjectPull(current)
    module.pull_objects = wrapped  # type: ignore[attr-defined]
    return wrapped


@dataclass
class Outcome:
    """Who answered a request and who did not (node id -> reason)."""

    replied: list[int] = field(default_factory=list)
    dropped: dict[int, str] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """One request to some nodes, for :func:`exchange` (see :func:`broadcast`)."""

    node_ids: Sequence[int]
    message_type: str
    content_for: Callable[[int], RecordDict]
    on_reply: Callable[[int, Payload], None]
    group_id: str
    timeout_s: float
    expect_length: int | None = None


def broadcast(
    grid: Grid,
    *,
    node_ids: Iterable[int],
    message_type: str,
    content_for: Callable[[int], RecordDict],
    on_reply: Callable[[int, Payload], None],
    group_id: str,
    timeout_s: float,
    expect_length: int | None = None,
) -> Outcome:
    """Send ``content_for(node)`` to every node; call ``on_reply`` per valid reply.

    A reply that is an error, a refusal, or malformed does not reach
    ``on_reply``; the node is reported in ``dropped`` or ``refused``.
    """
    request = Request(
        list(node_ids), message_type, content_for, on_reply, group_id, timeout_s, expect_length
    )
    return exchange(grid, [request])[0]


def exchange(grid: Grid, requests: Sequence[Request]) -> list[Outcome]:
    """Send several requests at once and collect all their replies: one message exchange
    on the critical path instead of one per request (e.g. a ``ckks+masked`` aggregate's
    decryption and its survivors' signatures, which need nothing from each other).

    Each request keeps its own deadline (``timeout_s`` from now) and its own outcome, in
    the order given. A node in several requests gets them in one ``query.batch`` message
    (:mod:`common.batch`) and answers them one by one in one ClientApp call: one trip
    through the Fleet stack per partner, not one per request.
    """
    objects = _object_pull(grid)
    per_node: dict[int, list[int]] = {}
    for i, req in enumerate(requests):
        for node in req.node_ids:
            per_node.setdefault(node, []).append(i)
    sent: list[tuple[list[int], int, Message]] = []
    for node, indices in per_node.items():
        for chunk in _chunks(indices):
            sent.append((chunk, node, _message(requests, chunk, node)))
    for _, node, message in sent:
        _record("out", message.metadata.group_id, node, message.content)
    outbox, inbox = from_env("outbox"), from_env("inbox")
    ids = list(grid.push_messages([message for _, _, message in sent]))
    if outbox is not None:
        outbox.bump()  # the gateway forwards the partners' held pulls now
    outcomes = [Outcome() for _ in requests]
    if len(ids) != len(sent):
        # Flower delivered none of them (e.g. a message too large): every node drops out.
        for indices, node, _ in sent:
            for i in indices:
                outcomes[i].dropped[node] = "the coordinator could not deliver the request"
        return outcomes
    # message id -> (the requests it carries, those still within their deadline, node)
    pending: dict[str, tuple[list[int], list[int], int]] = {}
    for msg_id, (indices, node, _) in zip(ids, sent, strict=True):
        if msg_id:
            pending[msg_id] = (indices, list(indices), node)
        else:
            for i in indices:
                outcomes[i].dropped[node] = "the coordinator could not deliver the request"
    start = time.monotonic()
    deadlines = [start + req.timeout_s for req in requests]

    def earliest() -> float:
        return min(deadlines[i] for _, live, _ in pending.values() for i in live)

    checked = start
    while pending:
        # A request's last pull always starts after its deadline: one pull can take long
        # (Flower retries a reply whose content the SuperLink could not store), and
        # replies that arrived meanwhile are replies, not dropouts.
        pulled_at = time.monotonic()
        online: set[int] | None = None  # sampled before the pull: a reply still counts
        if pulled_at - checked >= LIVENESS_S:
            checked, online = pulled_at, _online(grid)
        seen = inbox.token() if inbox is not None else None
        if objects is not None:
            objects.max_time = max(_OBJECT_FLOOR_S, earliest() - pulled_at)
        try:
            replies = list(grid.pull_messages(list(pending)))
        finally:
            if objects is not None:
                objects.max_time = None
        for reply in replies:
            msg_id = reply.metadata.reply_to_message_id
            if msg_id not in pending:
                continue
            carried, live, node = pending.pop(msg_id)
            if not reply.has_error():
                _record("in", reply.metadata.group_id, node, reply.content)
            _handle_reply(reply, node, carried, live, requests, outcomes)
        for msg_id, (_, live, node) in list(pending.items()):
            for i in [i for i in live if pulled_at >= deadlines[i]]:
                live.remove(i)
                outcomes[i].dropped[node] = f"no reply within {requests[i].timeout_s:g} s"
            if online is not None and node not in online:
                for i in live:
                    outcomes[i].dropped[node] = "its node went offline before it replied"
                live.clear()
            if not live:
                del pending[msg_id]
        if not pending:
            break
        left = max(0.0, earliest() - time.monotonic())
        if inbox is None:
            time.sleep(min(_POLL_S, left))
        else:
            inbox.wait(seen, min(FALLBACK_S, left))
    return outcomes


def _online(grid: Grid) -> set[int] | None:
    """The ids of the nodes the SuperLink counts online (heartbeats within Flower's
    window); None if this grid cannot say (a test's stand-in) or the query failed."""
    get_nodes = getattr(grid, "get_nodes", None)
    if not callable(get_nodes):
        return None
    try:
        return {int(node.node_id) for node in get_nodes()}
    except Exception:  # a liveness hint only: the deadlines still apply
        log.warning("could not list the online nodes", exc_info=True)
        return None


def _chunks(indices: list[int]) -> list[list[int]]:
    """A node's requests in batches of at most ``batch.MAX_ITEMS``."""
    return [indices[k : k + batch.MAX_ITEMS] for k in range(0, len(indices), batch.MAX_ITEMS)]


def _message(requests: Sequence[Request], indices: list[int], node: int) -> Message:
    """One message to ``node`` for the requests ``indices``: the request itself when
    alone, else a ``query.batch`` of them living as long as the longest."""
    if len(indices) == 1:
        req = requests[indices[0]]
        content, message_type, group_id = req.content_for(node), req.message_type, req.group_id
    else:
        items = [
            BatchItem(requests[i].message_type, requests[i].group_id, requests[i].content_for(node))
            for i in indices
        ]
        content, message_type = batch.pack(items), batch.ACTION
        group_id = "+".join(dict.fromkeys(requests[i].group_id for i in indices))
    return Message(
        content=content,
        dst_node_id=node,
        message_type=message_type,
        group_id=group_id,
        ttl=max(requests[i].timeout_s for i in indices) + TTL_GRACE_S,
    )


def _handle_reply(
    reply: Message,
    node: int,
    carried: list[int],
    live: list[int],
    requests: Sequence[Request],
    outcomes: list[Outcome],
) -> None:
    """Hand ``reply`` to the requests its message ``carried`` that are still ``live``
    (within their deadline). A batch is read as what was sent, whatever the reply says
    it is; a reply that cannot be read drops every live request in it, never the job."""
    if reply.has_error():
        # Flower's error text can quote a partner's exception (paths, values): never
        # copy it into outputs or the audit log, only its code.
        for i in live:
            outcomes[i].dropped[node] = f"error reply (code {reply.error.code})"
        return
    if len(carried) == 1:
        contents = [reply.content]
    else:
        try:
            refused = decode(reply.content).refused if "meta" in reply.content else None
            if refused is not None:
                for i in live:
                    outcomes[i].refused[node] = f"refused by the partner ({refused[:64]})"
                return
            contents = batch.unpack_replies(reply.content, len(carried))
        except ProtocolError as exc:
            for i in live:
                outcomes[i].dropped[node] = f"malformed reply: {exc.message}"
            return
        except FedcollabError:
            raise  # the job's own decision (e.g. a refusal that must stop it)
        except Exception as exc:  # anything else a peer's bytes cause: drop the peer
            for i in live:
                outcomes[i].dropped[node] = f"malformed reply ({type(exc).__name__})"
            return
    for i, content in zip(carried, contents, strict=True):
        if i in live:
            req = requests[i]
            _handle(content, node, outcomes[i], req.on_reply, req.expect_length)


def _handle(
    content: RecordDict,
    node: int,
    outcome: Outcome,
    on_reply: Callable[[int, Payload], None],
    expect_length: int | None,
) -> None:
    try:
        payload = decode(content, expect_length=None)
        if payload.refused:
            outcome.refused[node] = f"refused by the partner ({payload.refused[:64]})"
            return
        payload = decode(content, expect_length=expect_length)
        on_reply(node, payload)
    except CiphertextError as exc:
        outcome.dropped[node] = f"ciphertext refused: {exc.message}"
        return
    except ProtocolError as exc:
        outcome.dropped[node] = f"malformed reply: {exc.message}"
        return
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        outcome.dropped[node] = f"malformed reply ({type(exc).__name__})"
        return
    except FedcollabError:
        raise  # the job's own decision (e.g. a refusal that must stop it)
    except Exception as exc:  # anything else a peer's bytes cause: drop the peer
        outcome.dropped[node] = f"malformed reply ({type(exc).__name__})"
        return
    outcome.replied.append(node)
