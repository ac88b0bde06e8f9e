"""The coordinator's Flower ServerApp (Message API).

Run config keys (set by ``fedcollab job submit`` and ``fedcollab run``):

- ``job``: the job spec as canonical JSON (:meth:`common.jobspec.JobSpec.to_json`)
- ``output-dir``: where the job's outputs go (:mod:`coordinator.outputs`)
- ``mode``: ``deployment`` or ``simulation`` (recorded in the model card)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.errors import JobSpecError
from common.jobspec import JobSpec
from coordinator.job import run_job
from coordinator.outputs import JobOutputs

__all__ = ["app", "make_server_app"]


def make_server_app(overrides: Mapping[str, str] | None = None) -> ServerApp:
    """A ServerApp; ``overrides`` add run-config keys (used by the simulation runner)."""
    fixed = dict(overrides or {})
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = {**context.run_config, **fixed}
        out = str(cfg.get("output-dir", ""))
        if not out:
            raise JobSpecError("run config has no output-dir", hint="submit jobs with fedcollab")
        spec = JobSpec.from_json(str(cfg.get("job", "")))
        run_job(grid, spec, JobOutputs(Path(out)), mode=str(cfg.get("mode", "deployment")))

    return server_app


#: The ServerApp the SuperLink runs (pyproject ``[tool.flwr.app.components]``).
app = make_server_app()
