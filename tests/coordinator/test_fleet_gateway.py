"""The coordinator's public gateway forwards the Fleet API and nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from fedcollab.coordinator.fleet_gateway import is_forwarded, make_gateway
from fedcollab.coordinator.workspace import Workspace


@pytest.mark.parametrize(
    ("method", "path", "forwarded"),
    [
        ("POST", "/v1/fleet/pull-messages", True),
        ("POST", "/v1/fleet/activate-node", True),
        ("POST", "/v1/control/start-run", False),
        ("POST", "/v1/control/list-runs", False),
        ("POST", "/v1/runtime/acquire-task", False),
        ("GET", "/v1/fleet/pull-messages", False),
        ("POST", "/v1/fleet/../control/start-run", False),
        ("GET", "/docs", False),
        ("POST", "/v1/fleetx/start-run", False),
    ],
)
def test_only_fleet_posts_are_forwarded(method: str, path: str, forwarded: bool) -> None:
    assert is_forwarded(method, path) is forwarded


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run the ASGI call on its own thread's event loop: earlier tests in the same
    process (Playwright's sync API) may leave a loop running on this thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coro).result()


def test_control_request_gets_403_without_reaching_the_superlink(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws", name="gw")
    # The upstream is a closed port: a forwarded request would answer 502, not 403.
    app = make_gateway("https://127.0.0.1:9", ws.ca_cert)
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(event: MutableMapping[str, Any]) -> None:
        sent.append(event)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/control/start-run",
        "headers": [],
        "client": ("203.0.113.7", 5000),
    }
    _run(app(scope, receive, send))
    assert sent[0]["status"] == 403
    assert b"only the Fleet API" in sent[1]["body"]
    sent.clear()
    _run(app({**scope, "path": "/v1/fleet/pull-messages"}, receive, send))
    assert sent[0]["status"] == 502
