"""Run a coroutine to its end on a thread of its own.

Earlier tests in the same process (Playwright's sync API) may leave an event loop
running on the main thread, where ``asyncio.run`` then refuses to start (fresh-clone
CI of 07b82e3: the fast-call tests passed alone and failed in the full suite)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["run"]


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)`` on a fresh thread, its result or its exception."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
