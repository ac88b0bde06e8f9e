"""coordinator.submit.submit_job refuses a spec its coordinator would refuse, before a run.

A spec changed in Python without validation (``JobSpec.model_copy(update=...)``) once
reached the SuperLink: its ServerApp refused the spec before it had an output folder to
write to, so nothing said why and a follower waited for its whole time-out."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedcollab.common.errors import JobSpecError
from fedcollab.coordinator.submit import submit_job
from fedcollab.coordinator.workspace import Workspace
from tests.support.adversarial import job


def test_an_invalid_spec_is_refused_before_anything_is_written_or_started(
    tmp_path: Path,
) -> None:
    ws = Workspace.create(tmp_path / "ws", name="brands", partners=("a", "b"))
    spec = job().model_copy(update={"name": "tr-ckks+masked"})  # "+": not a job name
    out = tmp_path / "out"
    with pytest.raises(JobSpecError, match=r"'tr-ckks\+masked' is invalid: name"):
        submit_job(ws, spec, out)
    assert not out.exists()
    assert not (ws.root / "jobs" / "index.jsonl").exists()


def test_a_valid_spec_passes_the_wire_check() -> None:
    job().check_wire()
    job().model_copy(update={"name": "renamed-2"}).check_wire()
