"""Run an HTTP middleware layer only on the requests it acts on (pure ASGI).

Flower 1.41 serves its SuperLink and each SuperNode's runtime API with FastAPI apps
whose middleware are Starlette ``BaseHTTPMiddleware`` layers. Each such layer costs,
per request and even when its ``dispatch`` only calls ``call_next``, a task group, a
memory object stream and a streaming response wrapper
(``starlette/middleware/base.py``); on 2 cores with 9 partners those layers were most
of the SuperLink's CPU in a deployed round (:mod:`fedcollab.coordinator.superlink_middleware`).

:class:`Gated` wraps such a layer in a pure ASGI middleware (the form the ASGI
specification [1] and Starlette's documentation recommend on a hot path): HTTP
requests its predicate rejects go straight to the next app, every other request (and
every non-HTTP scope, e.g. lifespan) through the layer unchanged. It is correct only
for a layer whose ``dispatch`` does nothing but ``call_next`` on the rejected
requests; each use names the layer's code that shows it.

[1] ASGI 3.0 specification, https://asgi.readthedocs.io/en/latest/specs/main.html
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

__all__ = ["Gated", "Predicate", "Scope", "gate", "path_under", "tracing_enabled"]

Scope = MutableMapping[str, Any]
Predicate = Callable[[Scope], bool]


def path_under(prefix: str) -> Predicate:
    """Requests whose path starts with ``prefix``. A request with a ``root_path`` is
    always accepted: its full path cannot be told from ``path`` alone."""

    def applies(scope: Scope) -> bool:
        if scope.get("root_path", ""):
            return True
        return str(scope.get("path", "")).startswith(prefix)

    return applies


def tracing_enabled(scope: Scope) -> bool:
    """Flower's ``RuntimeTracingMiddleware`` does anything only with
    ``FLWR_TRACING_ENABLED=1`` (``flwr/supercore/routers/runtime/tracing.py``: read per
    request after ``call_next``; read here per request before it, same value)."""
    return os.getenv("FLWR_TRACING_ENABLED") == "1"


class Gated:
    """``layer`` (built on the next app as Starlette would build it) for the HTTP
    requests ``applies`` accepts; the next app directly for the others."""

    def __init__(
        self,
        app: Callable[..., Any],
        *,
        layer: Callable[..., Any],
        applies: Predicate,
        layer_args: tuple[Any, ...] = (),
        layer_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.applies = applies
        self.layer = layer(app, *layer_args, **dict(layer_kwargs or {}))

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and not self.applies(scope):
            await self.app(scope, receive, send)
        else:
            await self.layer(scope, receive, send)


def gate(middleware: list[Any], gates: Mapping[type, Predicate]) -> list[Any]:
    """``middleware`` (Starlette ``Middleware`` entries, outermost first) with each layer
    of a class in ``gates`` wrapped in :class:`Gated`; order and the rest unchanged."""
    from starlette.middleware import Middleware

    out: list[Any] = []
    for entry in middleware:
        cls = getattr(entry, "cls", None)
        applies = gates.get(cls) if isinstance(cls, type) else None
        if applies is None:
            out.append(entry)
            continue
        out.append(
            Middleware(
                Gated,
                layer=entry.cls,
                applies=applies,
                layer_args=tuple(entry.args),
                layer_kwargs=dict(entry.kwargs),
            )
        )
    return out
