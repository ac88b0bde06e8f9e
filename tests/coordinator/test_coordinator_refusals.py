"""A job whose partners all refused fails at once, with a hint that names real commands.

The job runs through the real coordinator (``coordinator.job.run_job``) and the
real partner ClientApp over an in-memory Grid: a DP job on partners that set no
privacy-budget cap is refused by each of them at the handshake. The start-up
timeout is a day, so a coordinator that waited it out would never finish (the
test's own timeout fails it); the Grid counts how often the coordinator polled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from fedcollab.common.errors import JobSpecError, NotEnoughPartnersError
from fedcollab.common.jobspec import MAX_TIMEOUT_S, JobSpec
from fedcollab.coordinator.job import run_job
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.coordinator.roster import refusal_hint
from fedcollab.federation.inmemory import InMemoryGrid, in_memory_federation, task_identity
from tests.support.cli import check
from tests.support.partners import SCHEMA, make_partner

torch.set_num_threads(1)


class CountingGrid(InMemoryGrid):
    polls = 0

    def get_nodes(self) -> list[Any]:
        self.polls += 1
        return super().get_nodes()


@pytest.mark.parametrize(
    ("participants", "mode"),
    [([], "simulation"), (["p0", "p1"], "simulation"), ([], "deployment")],
)
def test_every_partner_refusing_fails_fast(
    tmp_path: Path, participants: list[str], mode: str
) -> None:
    """Deployment without a participant list (new-user review, 2026-12-06): every
    registered partner refused, and the coordinator waited out its start-up time (2 min
    in that run) for nodes that could not come; the registered partners are all there
    are."""
    sources = [make_partner(tmp_path / "data", f"p{i}", seed=i, n=60) for i in range(2)]
    spec = JobSpec.model_validate(
        {"name": "dp", "task": "purchase_prediction", "purpose": "purchase-prediction",
         "schema": SCHEMA, "participants": participants, "min_partners": 2, "rounds": 2,
         "startup_timeout_s": MAX_TIMEOUT_S,
         "privacy": {"dp": "sample", "target_epsilon": 3.0,
                     "value_bounds": {"noise": [-5.0, 5.0], "signal": [-5.0, 5.0]}}},
        strict=False,
    )  # fmt: skip
    plain, audit, policy = in_memory_federation(spec, sources, tmp_path)
    grid = CountingGrid(plain.overrides, [s.partner for s in sources])
    with task_identity(), pytest.raises(NotEnoughPartnersError) as info:
        run_job(grid, spec, JobOutputs(tmp_path / "out"), mode=mode,  # type: ignore[arg-type]
                audit_config=audit, policy=policy)  # fmt: skip
    assert grid.polls <= 10
    err = info.value
    assert "refused: 2" in err.message and "PrivacyError" in err.message
    assert "`fedcollab budget set`" in err.hint and "`fedcollab run --budget-cap`" in err.hint
    assert "node start" not in err.hint


def test_refusal_hints_name_commands_that_exist() -> None:
    import re

    cases = [
        [{"partner": "a", "reason": "refused by the partner (BudgetExceededError)"}],
        [{"partner": "a", "reason": "PolicyRefusal: no grant for purpose x"}],
        [{"partner": "a", "reason": "refused by the partner (ProtocolError)"}],
        [{"partner": "", "reason": "no reply within 60 s"}],
        [],
    ]
    for refused in cases:
        hint = refusal_hint(refused)  # type: ignore[arg-type]
        for command in re.findall(r"`(fedcollab [^`]*)`", hint):
            check(command)
    assert "budget set" in refusal_hint(cases[0])  # type: ignore[arg-type]
    assert "grant sign" in refusal_hint(cases[1])  # type: ignore[arg-type]
    assert "node start" in refusal_hint([])
    assert "in time" in refusal_hint(cases[3])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bounds", "said"),
    [
        ({}, "numeric feature(s) ['noise', 'signal'] have no [privacy.value_bounds]"),
        (
            {"noise": [-5.0, 5.0], "Signal": [-5.0, 5.0]},
            "'Signal' is not a numeric feature of the schema (did you mean 'signal'?)",
        ),
    ],
    ids=["missing", "misspelled"],
)
def test_a_dp_job_without_its_value_bounds_fails_before_any_partner_is_asked(
    tmp_path: Path, bounds: dict[str, list[float]], said: str
) -> None:
    """New-user review (2026-12-06): such a job used to start, every partner charged its
    budget for the moments, then refused them (PrivacyError), and the job ended with
    "restart the dropped partners' nodes". Now it is a job-spec error (exit 12) before the
    coordinator contacts anyone; each partner refuses it at the handshake too, uncharged
    (tests/adversarial/test_dp_releases.py)."""
    sources = [make_partner(tmp_path / "data", f"p{i}", seed=i, n=60) for i in range(2)]
    spec = JobSpec.model_validate(
        {"name": "dp", "task": "purchase_prediction", "purpose": "purchase-prediction",
         "schema": SCHEMA, "min_partners": 2, "rounds": 2,
         "privacy": {"dp": "sample", "target_epsilon": 3.0, "value_bounds": bounds}},
        strict=False,
    )  # fmt: skip
    plain, audit, policy = in_memory_federation(spec, sources, tmp_path)
    grid = CountingGrid(plain.overrides, [s.partner for s in sources])
    with task_identity(), pytest.raises(JobSpecError) as info:
        run_job(grid, spec, JobOutputs(tmp_path / "out"), mode="simulation",  # type: ignore[arg-type]
                audit_config=audit, policy=policy)  # fmt: skip
    assert grid.polls == 0
    assert said in info.value.message and "[privacy.value_bounds]" in info.value.hint
    assert info.value.exit_code == 12
    no_dp = spec.model_copy(update={"privacy": spec.privacy.model_copy(update={"dp": "none"})})
    no_dp.check_value_bounds()  # bounds are neither used nor checked without DP
