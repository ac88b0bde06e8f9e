"""privacy.secagg_job: the session of one aggregate step, as both sides derive it, with
the partner's checks (cohort, size, threshold) made from the job spec."""

from __future__ import annotations

import pytest

from fedcollab.common.errors import ProtocolError
from fedcollab.privacy.secagg_job import CODEC, MAX_COHORT, session_config, stage_steps
from fedcollab.privacy.secagg_session import SecAggRefusal, minimum_threshold
from tests.support.adversarial import job


def test_a_session_binds_the_job_step_and_cohort() -> None:
    spec = job(privacy={"aggregation": "masked"}, min_partners=3)
    cfg = session_config(spec, run="r", step="moments", me="b",
                         meta={"cohort": ["c", "a", "b", "a"], "length": 7})  # fmt: skip
    assert cfg.cohort == ("a", "b", "c") and cfg.length == 7 and cfg.codec == CODEC
    assert cfg.purpose == f"fedcollab/{spec.digest()}/moments"
    assert cfg.threshold == max(minimum_threshold(3), 3)


def test_the_threshold_is_the_dp_floor_when_that_is_higher() -> None:
    """10 partners: 6 of 10 for SecAgg alone; min_partners = 8 raises it to 8."""
    names = [f"p{i}" for i in range(10)]
    spec = job(privacy={"aggregation": "masked"}, min_partners=8)
    cfg = session_config(spec, run="r", step="round-1", me="p0",
                         meta={"cohort": names, "length": 3})  # fmt: skip
    assert minimum_threshold(10) == 6 and cfg.threshold == 8


@pytest.mark.parametrize(
    ("cohort", "match"),
    [
        (["a", "c"], "leaves out"),
        (["a", "b"], "needs 3"),
        (["a", "b", "mallory"], "outside the job"),
    ],
)
def test_a_partner_refuses_cohorts_it_cannot_accept(cohort: list[str], match: str) -> None:
    spec = job(privacy={"aggregation": "masked"}, participants=["a", "b", "c"], min_partners=3)
    with pytest.raises(SecAggRefusal, match=match):
        session_config(spec, run="r", step="moments", me="b",
                       meta={"cohort": cohort, "length": 3})  # fmt: skip


def test_malformed_parameters_are_protocol_errors() -> None:
    spec = job(privacy={"aggregation": "masked"})
    for meta in (None, {"cohort": ["a"]}, {"cohort": ["a", "b"], "length": "x"}):
        with pytest.raises(ProtocolError):
            session_config(spec, run="r", step="moments", me="a", meta=meta)


def test_each_aggregate_plans_four_stages_and_cohorts_fit_the_codec() -> None:
    assert stage_steps(frozenset({"moments"})) == {
        "moments.secagg-advertise", "moments.secagg-share",
        "moments.secagg-sign", "moments.secagg-unmask",
    }  # fmt: skip
    assert MAX_COHORT == CODEC.max_partners == 127
