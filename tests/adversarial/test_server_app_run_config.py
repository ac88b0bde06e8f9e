"""A run that reaches the SuperLink around `fedcollab job submit` cannot switch off the
policy gate and the audit trail by what its run config says (issue 13, point 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.app import Context, RecordDict

from fedcollab.common.errors import JobSpecError, PolicyRefusal
from fedcollab.coordinator.server_app import app, make_server_app
from fedcollab.federation.inmemory import InMemoryGrid
from tests.support.adversarial import job


def _context(run_config: dict[str, str]) -> Context:
    return Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)


@pytest.mark.parametrize("mode", ["deployment", "simulation"])
def test_a_run_without_policy_is_refused_whatever_its_mode(tmp_path: Path, mode: str) -> None:
    """Attack: `flwr run` with mode = "simulation" in the run config; the old ServerApp
    skipped its refusal for any mode other than "deployment"."""
    cfg = {"job": job().to_json(), "output-dir": str(tmp_path / "out"), "mode": mode}
    grid = InMemoryGrid({}, [])
    with pytest.raises(PolicyRefusal):
        app._main(grid, _context(cfg))  # type: ignore[misc]
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written


def test_unknown_run_config_keys_are_refused(tmp_path: Path) -> None:
    cfg = {"job": job().to_json(), "output-dir": str(tmp_path), "policy-off": "true"}
    with pytest.raises(JobSpecError, match="policy-off"):
        make_server_app()._main(InMemoryGrid({}, []), _context(cfg))  # type: ignore[misc]
