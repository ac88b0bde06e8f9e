"""The coordinator's fan-out loop: who counts as a reply and who as a dropout."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from flwr.app import Message, RecordDict

from fedcollab.common.serde import Payload, encode
from fedcollab.coordinator.broadcast import broadcast
from fedcollab.federation.inmemory import task_identity
from tests.support import uploading_grid
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
