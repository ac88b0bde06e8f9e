"""When the gateway wakes the ServerApp (coordinator.fleet_uploads), on real Flower
protobufs: at the push that completes a reply; at once whenever it cannot tell."""

from __future__ import annotations

from flwr.proto.fleet_pb2 import PushMessagesResponse
from flwr.proto.message_pb2 import PushObjectRequest

from fedcollab.coordinator.fleet_uploads import Uploads

MESSAGES, OBJECT = "/v1/fleet/push-messages", "/v1/fleet/push-object"


def _asked(session: str, *ids: str) -> bytes:
    return PushMessagesResponse(session_id=session, objects_to_push=list(ids)).SerializeToString()


def _obj(session: str, object_id: str) -> bytes:
    return PushObjectRequest(
        session_id=session, object_id=object_id, object_content=b"c"
    ).SerializeToString()


def test_a_reply_is_whole_at_its_last_object_in_any_order() -> None:
    up = Uploads()
    assert not up.complete(MESSAGES, b"", _asked("s1", "a", "b", "c"))
    assert not up.complete(OBJECT, _obj("s1", "c"), b"")
    assert not up.complete(OBJECT, _obj("s1", "a"), b"")
    assert not up.complete(OBJECT, _obj("s1", "a"), b"")  # a retried object
    assert up.complete(OBJECT, _obj("s1", "b"), b"")
    assert len(up) == 0  # nothing kept once a reply is whole


def test_two_sessions_are_tracked_apart() -> None:
    up = Uploads()
    assert not up.complete(MESSAGES, b"", _asked("s1", "a"))
    assert not up.complete(MESSAGES, b"", _asked("s2", "a", "b"))
    assert up.complete(OBJECT, _obj("s1", "a"), b"")
    assert not up.complete(OBJECT, _obj("s2", "a"), b"")
    assert up.complete(OBJECT, _obj("s2", "b"), b"")


def test_whenever_it_cannot_tell_it_wakes_at_once() -> None:
    up = Uploads()
    assert up.complete(MESSAGES, b"", _asked("s1"))  # nothing left to push
    assert up.complete(MESSAGES, b"", _asked("", "a"))  # no session to follow
    assert up.complete(MESSAGES, b"", b"\xff\xff not protobuf")
    assert up.complete(OBJECT, b"\xff\xff not protobuf", b"")
    assert up.complete(OBJECT, _obj("never-announced", "a"), b"")
    assert up.complete("/v1/fleet/heartbeat", b"", b"")
    assert len(up) == 0


def test_it_remembers_a_bounded_number_of_sessions() -> None:
    """A node opening sessions it never finishes cannot grow the gateway's memory: the
    oldest is forgotten, and its objects then wake at once."""
    up = Uploads(max_sessions=2)
    for s in ("s1", "s2", "s3"):
        assert not up.complete(MESSAGES, b"", _asked(s, "a", "b"))
    assert len(up) == 2
    assert up.complete(OBJECT, _obj("s1", "a"), b"")  # forgotten: wake at once
    assert not up.complete(OBJECT, _obj("s3", "a"), b"")
