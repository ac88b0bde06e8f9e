"""What a job's secure-aggregation sessions are, as both sides derive them.

The Flower action of the stages (``query.secagg``), the stages themselves, the
fixed-point budget of the masked words and :func:`session_config`, the session of
one aggregate step derived from the job spec and the request's cohort and length
with the checks the partner makes (cohort within the job, at least ``max(2,
min_partners)`` partners, threshold ``max(minimum_threshold(n), min_partners)``).
The partner node (:mod:`client.secagg_node`) and the coordinator
(:mod:`coordinator.roster`) import them from here, so the coordinator needs no
partner code (issue 17's layer contract).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedcollab.common.errors import ProtocolError
from fedcollab.common.jobspec import JobSpec
from fedcollab.privacy.fixed_point import FixedPointCodec
from fedcollab.privacy.secagg_session import SecAggConfig, SecAggRefusal, minimum_threshold

__all__ = ["ACTION", "CODEC", "MAX_COHORT", "STAGES", "session_config", "stage_steps"]

ACTION = "query.secagg"
#: The stages served by ``query.secagg`` (the masked input rides on the step's own action).
STAGES = ("advertise", "share", "sign", "unmask")
#: 20 fraction bits (the CKKS path's rounding grid, 2^-20) and |value| <= 2^36 per
#: partner: 127 partners sum without wrapping 2^63 (privacy.fixed_point, Notes).
CODEC = FixedPointCodec(frac_bits=20, max_abs_value=2.0**36, max_partners=127)
MAX_COHORT = CODEC.max_partners


def stage_steps(aggregates: frozenset[str]) -> frozenset[str]:
    """The ``query.secagg`` steps a masked job plans: four stages per aggregate step."""
    return frozenset(f"{a}.secagg-{s}" for a in aggregates for s in STAGES)


def session_config(spec: JobSpec, *, run: str, step: str, me: str, meta: Any) -> SecAggConfig:
    """The session of ``step``, from the request's cohort and length, checked here."""
    if not isinstance(meta, Mapping):
        raise ProtocolError(
            "a masked job's request carries no 'secagg' parameters",
            hint="refusing to reply without masks; the coordinator runs another version?",
        )
    try:
        cohort = tuple(sorted({str(c) for c in meta["cohort"]}))
        length = int(meta["length"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"malformed 'secagg' parameters ({exc!r})") from exc
    least = max(2, spec.min_partners)
    if me not in cohort:
        raise SecAggRefusal("the session's cohort leaves out this partner")
    if spec.participants and not set(cohort) <= set(spec.participants):
        raise SecAggRefusal(
            f"the cohort names partners outside the job: "
            f"{sorted(set(cohort) - set(spec.participants))}"
        )
    if not least <= len(cohort) <= MAX_COHORT:
        raise SecAggRefusal(
            f"a cohort of {len(cohort)} partners (this job needs {least}..{MAX_COHORT})",
            hint="a sum over fewer partners than min_partners is refused",
        )
    return SecAggConfig(
        run=run,
        step=0,
        purpose=f"fedcollab/{spec.digest()}/{step}",
        cohort=cohort,
        # The DP noise floor: fewer than min_partners survivors are never unmasked.
        threshold=max(minimum_threshold(len(cohort)), least),
        length=length,
        codec=CODEC,
    )
