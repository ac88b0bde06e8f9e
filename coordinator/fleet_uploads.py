"""When a partner's reply is whole: the Fleet gateway wakes the ServerApp then, not before.

A SuperNode sends a reply as ``push-messages`` (the message and its object tree) and then
one ``push-object`` per object the SuperLink said it still lacks (``objects_to_push`` of
the ``push-messages`` response, Flower 1.41). A ServerApp that pulls a reply before its
objects are stored gets ``ObjectUnavailableError`` and Flower retries after a backoff
(50 ms first, :mod:`coordinator.broadcast`). The gateway used to wake the ServerApp at
every push, so it pulled at the ``push-messages``: a trace of a masked job's ServerApp
found two such retries in the first pull of almost every exchange, about 60 ms each.

:class:`Uploads` tells the gateway when to wake it: at a ``push-messages`` the SuperLink
needs nothing more for, else at the ``push-object`` that stores the last object of that
push session. Liveness comes first: an answer it cannot parse, or an object of a session
it does not know, wakes the ServerApp at once (as every push did before); it remembers at
most :data:`MAX_SESSIONS` sessions, forgetting the oldest (whose last object then wakes
at once). What a partner sends decides nothing but *when* the ServerApp looks: a wake
too early costs a retry, a wake missed costs the ServerApp's fallback wait
(:data:`coordinator.fleet_notice.FALLBACK_S`), and the SuperLink, not this module,
decides what is stored.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["MAX_SESSIONS", "Uploads"]

#: Push sessions remembered at once (a node has one per reply in flight).
MAX_SESSIONS = 4096

_MESSAGES = "push-messages"
_OBJECT = "push-object"


class Uploads:
    """The objects each push session still has to send (see the module notes)."""

    def __init__(self, max_sessions: int = MAX_SESSIONS) -> None:
        self._left: OrderedDict[str, set[str]] = OrderedDict()
        self._max = max_sessions

    def __len__(self) -> int:
        return len(self._left)

    def complete(self, path: str, request: bytes, response: bytes) -> bool:
        """After a ``push-messages`` or ``push-object`` the SuperLink accepted (HTTP 200):
        whether a reply may be whole now, i.e. whether to wake the ServerApp."""
        if path.endswith(_MESSAGES):
            return self._pushed_messages(response)
        if path.endswith(_OBJECT):
            return self._pushed_object(request)
        return True

    def _pushed_messages(self, response: bytes) -> bool:
        from flwr.proto.fleet_pb2 import PushMessagesResponse

        parsed = PushMessagesResponse()
        try:
            parsed.ParseFromString(response)
        except Exception:
            return True
        left = set(parsed.objects_to_push)
        if not left or not parsed.session_id:
            return True
        self._left[parsed.session_id] = left
        self._left.move_to_end(parsed.session_id)
        while len(self._left) > self._max:
            self._left.popitem(last=False)
        return False

    def _pushed_object(self, request: bytes) -> bool:
        from flwr.proto.message_pb2 import PushObjectRequest

        parsed = PushObjectRequest()
        try:
            parsed.ParseFromString(request)
        except Exception:
            return True
        left = self._left.get(parsed.session_id)
        if left is None:
            return True
        left.discard(parsed.object_id)
        if left:
            return False
        del self._left[parsed.session_id]
        return True
