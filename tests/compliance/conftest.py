"""Fixtures shared by the compliance tests."""

from pathlib import Path
from typing import Any

import pytest

from tests.compliance import runs_world
from tests.support.report_world import world  # noqa: F401  (the signed log of the report tests)


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One job spec run three times (refused, completed, completed) in real signed logs."""
    root: Path = tmp_path_factory.mktemp("runs")
    return runs_world.build(root)
