"""Flower's ``ConfigRecord`` deflated once per content, not at every object-id lookup.

Flower (1.41) names a message's objects by the SHA-256 of their deflated bytes
(``InflatableObject.object_id``) and, for a ``ConfigRecord``, deflates again at every
lookup: a ``ConfigRecord`` is always "dirty" (``is_dirty`` is never cleared), and
``no_object_id_recompute`` only spares lookups inside one push. Pushing one message
looks its records up several times outside that context (``HttpGrid.push_messages``
and ``run_clientapp.push_message`` take ``message.object_id`` first, then push inside
the context, where the record is deflated again for the tree and for the push). Every
fedcollab message body is one ``ConfigRecord`` (:mod:`common.serde`), and a
``ckks+masked`` body then carried a 3.3 MB ciphertext (1.6 MB since it is seeded
and complex-packed, privacy/ckks_wire.py): py-spy put about a third of the
ServerApp's and of a partner executor's busy time in ``ConfigRecord.deflate``
(``experiments/bench_he_deployment.py``), where the previous ``ArrayRecord`` layout's
``Array`` objects keep their id.

:func:`install` wraps ``ConfigRecord.deflate`` so a record whose values are all
immutable (``bytes``, ``str``, ``int``, ``float``, ``bool``) keeps its last deflated
bytes, reused while it holds exactly the same keys, in the same order, bound to the
same value objects (the memo holds those objects, so none can be freed and its
address reused while the memo lives). Any change to the record, and any record with a
list value (lists can change in place), deflates afresh with Flower's code. The bytes
are the same either way, so peers see no difference.

The record's object id is memoised with it: Flower's ``object_id`` hashes the deflated
bytes again at every lookup (3.3 MB of SHA-256 each time, about 5 ms on this machine,
several lookups per message per process); with the memo it is hashed once per content.
A record the memo does not hold (a list value) takes Flower's own property.
"""

from __future__ import annotations

from typing import Any, cast

__all__ = ["install"]

_IMMUTABLE = (bytes, str, int, float, bool)
_MEMO = "_fedcollab_deflated"


def install() -> bool:
    """Wrap ``flwr.app.ConfigRecord.deflate`` (idempotent); False if Flower changed."""
    try:
        from flwr.app import ConfigRecord
    except ImportError:
        return False
    flower = getattr(ConfigRecord, "deflate", None)
    if not callable(flower):
        return False
    if getattr(flower, "_fedcollab_memo", False):
        return True

    def current(self: Any) -> list[Any] | None:
        """The memo [items, deflated, id or None] if it holds this record's content."""
        items = tuple(self.items())
        if not all(type(value) in _IMMUTABLE for _, value in items):
            self.__dict__.pop(_MEMO, None)
            return None
        memo = self.__dict__.get(_MEMO)
        if (
            memo is not None
            and len(memo[0]) == len(items)
            and all(
                key == old_key and value is old_value
                for (key, value), (old_key, old_value) in zip(items, memo[0], strict=True)
            )
        ):
            return memo  # type: ignore[no-any-return]
        return None

    def deflate(self: Any) -> bytes:
        memo = current(self)
        if memo is not None:
            return bytes(memo[1])
        out = bytes(flower(self))
        items = tuple(self.items())
        if all(type(value) in _IMMUTABLE for _, value in items):
            self.__dict__[_MEMO] = [items, out, None]
        return out

    flower_id = cast(property, ConfigRecord.object_id)  # InflatableObject's property

    def object_id(self: Any) -> str:
        # Flower's id is the SHA-256 of the deflated bytes, recomputed at every lookup
        # for a ConfigRecord (always "dirty"): 3.3 MB hashed again each time.
        deflate(self)
        memo = current(self)
        if memo is None:
            return str(flower_id.__get__(self))
        if memo[2] is None:
            from flwr.supercore.inflatable.inflatable_object import get_object_id

            memo[2] = get_object_id(memo[1])
        self.__dict__["_object_id"] = memo[2]
        return str(memo[2])

    deflate._fedcollab_memo = True  # type: ignore[attr-defined]
    deflate.__doc__ = flower.__doc__
    ConfigRecord.deflate = deflate  # type: ignore[method-assign]
    ConfigRecord.object_id = property(object_id, doc=flower_id.__doc__)  # type: ignore[method-assign,assignment]
    return True
