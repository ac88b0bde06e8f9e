"""Run one job with the real coordinator over an in-memory Grid of real partner apps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedcollab.common.jobspec import JobSpec
from fedcollab.coordinator.job import run_job
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.federation.inmemory import task_identity


def run_in_memory(grid: Any, spec: JobSpec, out: Path, audit: Any, policy: Any) -> dict[str, Any]:
    """``coordinator.job.run_job`` on ``grid`` (from ``federation.inmemory.
    in_memory_federation``, maybe altered by the test), its outputs in ``out``: the
    job's metrics."""
    with task_identity():
        return run_job(
            grid, spec, JobOutputs(out), mode="simulation", audit_config=audit, policy=policy
        )
