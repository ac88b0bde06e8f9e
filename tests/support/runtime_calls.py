"""One HTTP request through an ASGI app, as uvicorn would hand it over: the runtime-API
tests' way to ask Flower's app and fedcollab's fast app the same thing."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from flwr.supercore.constant import TASK_TOKEN_HEADER

from tests.support.event_loop import run

#: (status, Content-Type, body)
Reply = tuple[int, str, bytes]


def call(
    app: Any,
    path: str,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    scheme: str = "https",
    port: int = 9094,
) -> Reply:
    """``app``'s answer to ``POST path`` with ``body`` and ``headers``."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": scheme, "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", port), "state": {},
    }  # fmt: skip
    out: dict[str, Any] = {"body": b""}

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(event: MutableMapping[str, Any]) -> None:
        if event["type"] == "http.response.start":
            out["status"] = event["status"]
            out["headers"] = event["headers"]
        else:
            out["body"] += event.get("body", b"")

    run(app(scope, receive, send))
    media = next((v.decode() for k, v in out["headers"] if k.lower() == b"content-type"), "")
    return out["status"], media, out["body"]


def headers(
    token: str | None, *, media: bytes = b"application/protobuf"
) -> list[tuple[bytes, bytes]]:
    """A runtime call's headers: its content type and, if given, its task token."""
    h = [(b"content-type", media)]
    if token is not None:
        h.append((TASK_TOKEN_HEADER.encode(), token.encode()))
    return h
