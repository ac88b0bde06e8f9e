"""The in-memory federation the library ships (federation/inmemory.py): partners set
up as `fedcollab run` sets them up (federation/simulation.py), their real ClientApp
code behind an in-process Grid."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fedcollab.common.jobspec import JobSpec
from fedcollab.coordinator.job import run_job
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.federation.inmemory import InMemoryGrid, in_memory_federation, task_identity
from fedcollab.federation.simulation import simulated_partners
from tests.support.partners import SCHEMA, make_partner

torch.set_num_threads(1)


def _spec(n: int) -> JobSpec:
    return JobSpec.model_validate(
        {"name": "inmem", "task": "purchase_prediction", "purpose": "purchase-prediction",
         "schema": SCHEMA, "participants": [f"p{i}" for i in range(n)], "min_partners": n,
         "rounds": 2},
        strict=False,
    )  # fmt: skip


def test_partners_are_set_up_as_fedcollab_run_sets_them_up(tmp_path: Path) -> None:
    sources = [make_partner(tmp_path / "data", f"p{i}", seed=i, n=60) for i in range(2)]
    spec = _spec(2)
    grid, audit, policy = in_memory_federation(spec, sources, tmp_path)
    root = tmp_path / "audit"
    assert json.loads(grid.overrides["sim-partners"]) == simulated_partners(spec, sources, root)
    assert [n.name for n in grid.get_nodes()] == ["p0", "p1"]
    assert set(audit.partner_keys) == {"p0", "p1"}
    for s in sources:  # each partner's own key, trail folder and signed grant
        for name in ("audit.key", "audit.pub", "grant.json"):
            assert (root / "partners" / s.partner / name).is_file(), name
    assert policy is not None


def test_a_job_runs_on_it_and_each_exchange_is_recorded(tmp_path: Path) -> None:
    sources = [make_partner(tmp_path / "data", f"p{i}", seed=i, n=120) for i in range(2)]
    spec = _spec(2)
    grid, audit, policy = in_memory_federation(spec, sources, tmp_path)
    with task_identity():
        metrics = run_job(grid, spec, JobOutputs(tmp_path / "out"), mode="simulation",  # type: ignore[arg-type]
                          audit_config=audit, policy=policy)  # fmt: skip
    assert metrics["rounds_run"] == 2 and metrics["final"]["test"]["n"] > 0
    assert grid.pushes and all(len(push) >= 1 for push in grid.pushes)
    # Every reply was handed back once: nothing is left to pull, an unknown id yields none.
    assert grid.pull_messages(["m0", "nope"]) == []
    assert isinstance(grid, InMemoryGrid)
