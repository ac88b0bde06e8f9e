"""Fixtures for integration tests (real processes on loopback)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.support.integration import BIN


@pytest.fixture(scope="session")
def tool_path() -> Iterator[None]:
    """Flower's executables must be on PATH for the processes we start."""
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{BIN}{os.pathsep}{old}"
    if shutil.which("flower-superlink") is None:
        pytest.fail("flower-superlink not found: run the tests through `make test`")
    yield
    os.environ["PATH"] = old
