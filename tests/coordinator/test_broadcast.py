"""The coordinator's fan-out loop: who counts as a reply and who as a dropout."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, RecordDict
from flwr.common.constant import ErrorCode

from fedcollab.common import batch
from fedcollab.common.serde import Payload, encode
from fedcollab.coordinator.broadcast import broadcast, exchange
from fedcollab.federation.inmemory import task_identity
from tests.support import uploading_grid
from tests.support.scripted_grid import ScriptedGrid
from tests.support.uploading_grid import UploadingGrid


class _SlowFirstPullGrid:
    """A grid whose first pull is slow (Flower retrying a reply it could not store)
    and returns nothing; every partner's reply arrives while that pull runs."""

    def __init__(self, slow_s: float) -> None:
        self.slow_s = slow_s
        self.pulls = 0
        self._sent: dict[str, Message] = {}
        self._arrived = threading.Event()

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for i, msg in enumerate(messages):
            msg_id = f"m{i}"
            msg.metadata.__dict__["_message_id"] = msg_id
            self._sent[msg_id] = msg
            ids.append(msg_id)
        return ids

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        self.pulls += 1
        wanted = list(ids)
        if self.pulls == 1:
            # The replies land while this pull is still busy; it started before them.
            self._arrived.wait(self.slow_s)
            return []
        return [
            Message(encode({"ok": True}), reply_to=self._sent[i]) for i in wanted if i in self._sent
        ]


def test_replies_that_arrive_during_a_slow_pull_past_the_deadline_are_not_dropouts() -> None:
    grid = _SlowFirstPullGrid(slow_s=0.5)
    got: dict[int, Payload] = {}
    with task_identity():
        outcome = broadcast(
            grid,  # type: ignore[arg-type]
            node_ids=[1, 2, 3],
            message_type="query",
            content_for=lambda node: encode({"node": node}),
            on_reply=lambda node, payload: got.__setitem__(node, payload),
            group_id="round-1",
            timeout_s=0.1,
        )
    # The first pull ended after the deadline; the loop still pulled once more.
    assert grid.pulls == 2
    assert sorted(outcome.replied) == [1, 2, 3]
    assert outcome.dropped == {}
    assert set(got) == {1, 2, 3}


def test_a_partner_that_never_answers_is_dropped_after_the_deadline() -> None:
    class _Silent(_SlowFirstPullGrid):
        def pull_messages(self, ids: Iterable[str]) -> list[Message]:
            self.pulls += 1
            return []

    grid = _Silent(slow_s=0.0)
    with task_identity():
        outcome = broadcast(
            grid,  # type: ignore[arg-type]
            node_ids=[7],
            message_type="query",
            content_for=lambda node: RecordDict(),
            on_reply=lambda node, payload: None,
            group_id="round-1",
            timeout_s=0.3,
        )
    assert outcome.dropped == {7: "no reply within 0.3 s"}
    assert outcome.replied == []
    assert grid.pulls >= 2


def test_reply_objects_not_yet_uploaded_are_retried_soon() -> None:
    """The SuperLink lists a reply as soon as the partner registered it, before its
    objects are uploaded: the ServerApp's grid retries them after _OBJECT_BACKOFF_S
    instead of Flower's 1 s (the same tries and bound otherwise), patched once."""
    from flwr.superlink.grid import http_grid

    from fedcollab.coordinator import broadcast as module

    original = http_grid.pull_objects
    grid = object.__new__(http_grid.HttpGrid)  # no connection: only its module matters
    seen: dict[str, object] = {}
    try:
        first = module._object_pull(grid)
        assert first is not None and module._object_pull(grid) is first
        assert first.pull is original
        first.pull = lambda *a, **kw: seen.update(kw) or {}  # what Flower would be given
        http_grid.pull_objects([], pull_object_fn=lambda _o: b"")
        assert seen["initial_backoff"] == module._OBJECT_BACKOFF_S <= 0.1
        assert "max_time" not in seen  # outside an exchange: Flower's own bound
    finally:
        http_grid.pull_objects = original  # type: ignore[attr-defined]
    # A grid from elsewhere (the simulation's in-memory grid) is left alone.
    assert module._object_pull(_SlowFirstPullGrid(0.0)) is None  # type: ignore[arg-type]


def test_a_partner_dying_mid_upload_does_not_cost_the_others_their_replies() -> None:
    """Seen in CI: a partner killed while uploading its reply held the coordinator's pull
    on that reply's objects for minutes; the other partners' messages expired meanwhile
    and all three partners counted as dropped (the job lost its quorum). Now the wait for
    objects ends with the step's deadline (at least _OBJECT_FLOOR_S), and messages outlive
    the deadline by TTL_GRACE_S so the replies that arrived in time are still pulled."""
    from fedcollab.coordinator import broadcast as module

    grid = UploadingGrid(dead=1, replies_after_s=0.3, gives_up_s=60.0)
    try:
        with task_identity():
            start = time.monotonic()
            outcome = broadcast(
                grid,  # type: ignore[arg-type]
                node_ids=[1, 2, 3],
                message_type="query",
                content_for=lambda node: encode({"node": node}),
                on_reply=lambda node, payload: None,
                group_id="round-2",
                timeout_s=1.0,
            )
            took = time.monotonic() - start
    finally:
        uploading_grid.pull_objects = uploading_grid.flower_pull_objects
    assert sorted(outcome.replied) == [2, 3]
    assert list(outcome.dropped) == [1] and "code 3" in outcome.dropped[1]
    assert took < module._OBJECT_FLOOR_S + 20  # not the SuperLink's 60 s
    assert all(m.metadata.ttl == 1.0 + module.TTL_GRACE_S for m, _ in grid.sent.values())


def _request(nodes: list[int], step: str, got: dict[str, list[int]], timeout_s: float = 5.0) -> Any:
    from fedcollab.coordinator.broadcast import Request

    return Request(
        nodes,
        "query.moments",
        lambda node: encode({"step": step, "node": node}),
        lambda node, payload: got.setdefault(step, []).append(node),
        step,
        timeout_s,
    )


def test_requests_for_one_node_travel_in_one_batch_message() -> None:
    """Two requests in one exchange: node 1 is in both and gets one ``query.batch``
    message, answered per request; node 2 is in one and gets it alone."""
    seen: list[tuple[int, str, str]] = []

    def answer(node: int, msg: Message) -> RecordDict:
        seen.append((node, msg.metadata.message_type, msg.metadata.group_id))
        return encode({"ok": True})

    grid = ScriptedGrid(answer)
    got: dict[str, list[int]] = {}
    with task_identity():
        outcomes = exchange(grid, [_request([1, 2], "a", got), _request([1], "b", got)])  # type: ignore[arg-type]
    assert [sorted(o.replied) for o in outcomes] == [[1, 2], [1]]
    assert sorted(got["a"]) == [1, 2] and got["b"] == [1]
    assert len(grid.sent) == 2  # one message per node
    kinds = {m.metadata.dst_node_id: m.metadata.message_type for m in grid.sent}
    assert kinds == {1: batch.ACTION, 2: "query.moments"}
    assert grid.pushes == [["a", "b", "a"]]  # node 1's batch (a, b), node 2's a
    assert sorted(seen) == [(1, "query.moments", "a"), (1, "query.moments", "b"),
                            (2, "query.moments", "a")]  # fmt: skip


def test_a_batch_reply_that_is_an_error_or_malformed_drops_every_request_in_it() -> None:
    class _Broken(ScriptedGrid):
        def push_messages(self, messages: Iterable[Message]) -> list[str]:
            ids = super().push_messages(messages)
            # node 1 answers its batch with one reply too few; node 2 with an error
            first, second = ids
            self._replies[first] = Message(
                batch._join([encode({"ok": True})], 2), reply_to=self.sent[0]
            )
            self._replies[second] = Message(
                Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason="boom"),
                reply_to=self.sent[1],
            )
            return ids

    grid = _Broken(lambda node, msg: encode({"ok": True}))
    got: dict[str, list[int]] = {}
    with task_identity():
        outcomes = exchange(  # type: ignore[arg-type]
            grid, [_request([1, 2], "a", got), _request([1, 2], "b", got)]
        )
    assert got == {}
    for outcome in outcomes:
        assert outcome.replied == []
        assert outcome.dropped[1].startswith("malformed reply: a batch reply must hold 2")
        assert outcome.dropped[2] == f"error reply (code {ErrorCode.CLIENT_APP_RAISED_EXCEPTION})"


def test_each_request_in_a_batch_keeps_its_own_deadline() -> None:
    """Node 1 never answers its batch: the short request is dropped at its deadline,
    the long one at its own, later."""
    grid = ScriptedGrid(lambda node, msg: None)
    got: dict[str, list[int]] = {}
    start = time.monotonic()
    with task_identity():
        outcomes = exchange(  # type: ignore[arg-type]
            grid, [_request([1], "short", got, 0.1), _request([1], "long", got, 0.4)]
        )
    assert time.monotonic() - start >= 0.4
    assert outcomes[0].dropped == {1: "no reply within 0.1 s"}
    assert outcomes[1].dropped == {1: "no reply within 0.4 s"}
    assert grid.sent[0].metadata.ttl >= 0.4  # the batch lives as long as its longest


class _Tampering(ScriptedGrid):
    """Node 1 (malicious) rewrites its batch reply with ``tamper``; node 2 answers."""

    def __init__(self, tamper: Any) -> None:
        super().__init__(lambda node, msg: encode({"ok": True}))
        self.tamper = tamper

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = super().push_messages(messages)
        for msg_id, msg in zip(ids, self.sent[-len(ids) :], strict=True):
            if msg.metadata.dst_node_id == 1:
                self.tamper(self._replies[msg_id].content)
        return ids


def _unicode_index(content: RecordDict) -> None:
    content["batch"]["²/meta/json"] = "{}"  # a digit to str.isdigit, not to int()


def _leading_zero(content: RecordDict) -> None:
    content["batch"]["00/meta/json"] = "{}"  # would name reply 0 a second time


def _unlisted_index(content: RecordDict) -> None:
    content["batch"]["7/meta/json"] = "{}"  # a reply to no request of this message


def _record_beside_the_batch(content: RecordDict) -> None:
    content["0/meta"] = ConfigRecord({"json": "{}"})  # the former layout


def _deep_json(content: RecordDict) -> None:
    content["batch"] = ConfigRecord({"json": "[" * 200_000})


def _bad_vector(content: RecordDict) -> None:
    for key in list(content):  # one body instead of the batch, read for a refusal first
        del content[key]
    content["meta"] = ConfigRecord({"json": "{}", "vector": "ab"})  # a str, not bytes


@pytest.mark.parametrize(
    "tamper",
    [_unicode_index, _leading_zero, _unlisted_index, _record_beside_the_batch, _deep_json,
     _bad_vector],
)  # fmt: skip
def test_a_malicious_batch_reply_drops_its_partner_not_the_job(tamper: Any) -> None:
    """Red team: each of these replies escaped ``exchange`` (ValueError, RecursionError)
    and failed the job, the honest partner's replies lost with it."""
    got: dict[str, list[int]] = {}
    grid = _Tampering(tamper)
    with task_identity():
        outcomes = exchange(  # type: ignore[arg-type]
            grid, [_request([1, 2], "a", got), _request([1, 2], "b", got)]
        )
    assert got == {"a": [2], "b": [2]}
    for outcome in outcomes:
        assert outcome.replied == [2]
        assert outcome.dropped[1].startswith("malformed reply: "), outcome.dropped


class _Late(ScriptedGrid):
    """An honest node whose well-formed batch reply arrives ``delay_s`` after the push."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(lambda node, msg: encode({"ok": True}))
        self.delay_s = delay_s
        self.pushed = 0.0

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        self.pushed = time.monotonic()
        return super().push_messages(messages)

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        if time.monotonic() - self.pushed < self.delay_s:
            return []
        return super().pull_messages(ids)


def test_a_batch_reply_after_one_deadline_still_serves_the_other_request() -> None:
    """Red team: the reply was read against the requests still waiting (one), not the
    two it carried, and the honest partner was dropped as "malformed" for the long one."""
    got: dict[str, list[int]] = {}
    grid = _Late(0.3)
    with task_identity():
        short, long = exchange(  # type: ignore[arg-type]
            grid, [_request([1], "sign", got, 0.1), _request([1], "decrypt", got, 5.0)]
        )
    assert short.dropped == {1: "no reply within 0.1 s"} and short.replied == []
    assert long.replied == [1] and long.dropped == {}
    assert got == {"decrypt": [1]}


def test_a_single_reply_nested_deeper_than_the_parser_drops_its_partner() -> None:
    """Red team: ``serde.decode`` let json's RecursionError escape, failing the job."""

    def answer(node: int, msg: Message) -> RecordDict:
        if node == 1:
            return RecordDict({"meta": ConfigRecord({"json": "[" * 3000})})
        return encode({"ok": True})

    got: dict[str, list[int]] = {}
    with task_identity():
        outcome = exchange(ScriptedGrid(answer), [_request([1, 2], "a", got)])[0]  # type: ignore[arg-type]
    assert outcome.replied == [2] and got == {"a": [2]}
    assert outcome.dropped[1].startswith("malformed reply: malformed message: no valid 'meta'")


def _npy_header_declaring(n: int) -> bytes:
    buf = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": (n,)}
    np.lib.format.write_array_header_1_0(buf, header)  # type: ignore[no-untyped-call]
    return buf.getvalue()


def _body(**entries: Any) -> RecordDict:
    return RecordDict({"meta": ConfigRecord({"json": "{}", **entries})})


#: Reply bodies a peer can send that ``serde.decode`` must refuse with ProtocolError. The
#: former layout's arrays (``.npy`` bytes np.load could not read: EOFError, BadZipFile,
#: MemoryError for a header declaring 256 TiB) once escaped ``exchange``; the body is now
#: one ConfigRecord of bytes, and a body in the former layout is refused unread.
_BAD_BODIES: dict[str, Any] = {
    "vector-partial-float": lambda: _body(vector=b"\x00" * 12),
    "vector-not-bytes": lambda: _body(vector=[1.0, 2.0]),
    "vector-nan": lambda: _body(vector=np.array([1.0, np.nan]).tobytes()),
    "cipher-not-bytes": lambda: _body(cipher=7),
    "part-not-bytes": lambda: _body(**{"part:set": "text"}),
    "part-empty-name": lambda: _body(**{"part:": b"x"}),
    "unknown-entry": lambda: _body(extra=b"x"),
    "json-bytes": lambda: RecordDict({"meta": ConfigRecord({"json": b"{}"})}),
    "meta-not-config": lambda: RecordDict({"meta": ArrayRecord()}),
    "former-layout-huge-array": lambda: RecordDict(
        {
            "meta": ConfigRecord({"json": "{}"}),
            "vector": ArrayRecord(
                {"v": Array("float64", (2,), "numpy.ndarray", _npy_header_declaring(2**45))}
            ),
        }
    ),
}


@pytest.mark.parametrize("kind", list(_BAD_BODIES))
@pytest.mark.parametrize("where", ["single", "batch-top", "batch-item"])
def test_a_malformed_reply_body_drops_its_partner_not_the_job(kind: str, where: str) -> None:
    """Red team (second pass): malformed array bytes raised EOFError, BadZipFile or
    MemoryError out of ``exchange`` (``serde.decode`` -> ``Array.numpy`` -> ``np.load``),
    failing the job; the single-reply case predates batching. Every malformed body of the
    one-record layout must be a ProtocolError ("malformed reply: ..."), the peer dropped."""
    bad = _BAD_BODIES[kind]()
    # The batch is one record (common.batch): a reply record of another type cannot ride
    # inside it; sent beside it (the former "<i>/<name>" layout) it spoils the whole reply.
    packable = all(isinstance(record, ConfigRecord) for record in bad.values())

    def tamper(content: RecordDict) -> None:
        for key in list(content):
            del content[key]
        if where == "batch-top":
            content.update(bad)
        elif packable:  # one request's reply inside the batch
            content.update(batch.pack_replies([bad, encode({"ok": True})]))
        else:
            content.update(batch.pack_replies([encode({"ok": True}), encode({"ok": True})]))
            content.update({f"0/{name}": record for name, record in bad.items()})

    got: dict[str, list[int]] = {}
    with task_identity():
        if where == "single":
            grid = ScriptedGrid(lambda node, msg: bad if node == 1 else encode({"ok": True}))
            outcomes = exchange(grid, [_request([1, 2], "a", got)])  # type: ignore[arg-type]
        else:
            grid = _Tampering(tamper)
            outcomes = exchange(  # type: ignore[arg-type]
                grid, [_request([1, 2], "a", got), _request([1, 2], "b", got)]
            )
    # The bad body spoils what it sits in: the whole reply, or request a's answer only.
    spoiled = outcomes[:1] if where == "batch-item" and packable else outcomes
    for outcome in spoiled:
        assert outcome.replied == [2], outcome
        # "malformed reply: <ProtocolError>", not "malformed reply (<other exception>)"
        assert outcome.dropped[1].startswith("malformed reply: "), outcome.dropped
    if where == "batch-item" and packable:
        assert sorted(outcomes[1].replied) == [1, 2]


class _DeadNode(_SlowFirstPullGrid):
    """Node 7 took its message and died: no reply ever, and the SuperLink lists it
    offline once its heartbeats stopped; node 8 replies, then goes offline too."""

    def __init__(self) -> None:
        super().__init__(slow_s=0.0)
        self.listed = 0

    def get_nodes(self) -> list[Any]:
        self.listed += 1
        return []  # neither is online any more

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        self.pulls += 1
        return [
            Message(encode({"ok": True}), reply_to=self._sent[i])
            for i in ids
            if self._sent[i].metadata.dst_node_id == 8
        ]


def test_a_partner_whose_node_went_offline_is_dropped_before_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: a node killed after it took its message held the step for the whole
    deadline (the demo's key dealer: 180 s), Flower answering only at the TTL."""
    from fedcollab.coordinator import broadcast as module

    monkeypatch.setattr(module, "LIVENESS_S", 0.05)
    grid = _DeadNode()
    t0 = time.monotonic()
    with task_identity():
        outcome = broadcast(
            grid,  # type: ignore[arg-type]
            node_ids=[7, 8],
            message_type="query",
            content_for=lambda node: RecordDict(),
            on_reply=lambda node, payload: None,
            group_id="round-3",
            timeout_s=60.0,
        )
    assert time.monotonic() - t0 < 30.0  # not the 60 s deadline
    assert outcome.dropped == {7: "its node went offline before it replied"}
    assert outcome.replied == [8]  # its reply counts although its node is offline now
    assert grid.listed >= 1
