"""The coordinator's Flower ServerApp (Message API).

Run config keys (set by ``fedcollab job submit`` and ``fedcollab run``):

- ``job``: the job spec as canonical JSON (:meth:`common.jobspec.JobSpec.to_json`)
- ``output-dir``: where the job's outputs go (:mod:`coordinator.outputs`)
- ``mode``: ``deployment`` or ``simulation`` (recorded in the model card)
- ``audit-db``, ``audit-key``: the coordinator's audit log and signing key
- ``partner-keys``: JSON object, partner name -> audit verifier key (for cosignatures)
- ``policy``: registry and grants (:class:`coordinator.policy_gate.PolicyBundle`)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedcollab.common.errors import JobSpecError, PolicyRefusal
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.keys import parse_verifier_key
from fedcollab.common.third_party_noise import plain_flower_logs
from fedcollab.coordinator.audit import AuditConfig
from fedcollab.coordinator.broadcast import record_messages
from fedcollab.coordinator.job import run_job
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.coordinator.policy_gate import PolicyBundle

__all__ = ["RunConfig", "app", "make_server_app"]


class RunConfig(BaseModel):
    """The run config a ServerApp accepts (strict: an unknown key is refused).

    ``mode`` is recorded in the model card only; whether the policy gate and the
    audit trail may be skipped is never decided from it (see :func:`make_server_app`).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)

    job: str = Field(min_length=2)
    output_dir: str = Field(alias="output-dir", min_length=1)
    mode: Literal["deployment", "simulation"] = "deployment"
    audit_db: str = Field(alias="audit-db", default="")
    audit_key: str = Field(alias="audit-key", default="")
    partner_keys: str = Field(alias="partner-keys", default="{}")
    policy: str = ""
    record_messages: Literal["true", "false"] = Field(alias="record-messages", default="false")
    trace: Literal["true", "false"] = "false"
    #: Simulations only: the local partner files. Simulated nodes read them from their own
    #: ClientApp's overrides, never from this run config (client.partner_data).
    sim_partners: str = Field(alias="sim-partners", default="[]")

    @classmethod
    def parse(cls, cfg: Mapping[str, object]) -> RunConfig:
        try:
            return cls.model_validate({str(k): v for k, v in cfg.items()})
        except ValidationError as exc:
            raise JobSpecError(
                f"run config is invalid: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}",
                hint="submit jobs with `fedcollab job submit` (or `fedcollab run`)",
            ) from exc


def audit_config(cfg: RunConfig) -> AuditConfig | None:
    """The coordinator's audit settings from the run config (None: no trail)."""
    if not cfg.audit_db or not cfg.audit_key:
        return None
    try:
        raw = json.loads(cfg.partner_keys)
        keys = {str(name): parse_verifier_key(str(vkey))[1] for name, vkey in raw.items()}
    except (ValueError, AttributeError) as exc:
        raise JobSpecError(
            f"run config's partner-keys is not a JSON object of verifier keys ({exc})",
            hint="submit jobs with `fedcollab job submit`",
        ) from exc
    return AuditConfig(db=Path(cfg.audit_db), key=Path(cfg.audit_key), partner_keys=keys)


def policy_from(cfg: RunConfig) -> PolicyBundle | None:
    """The policy bundle (registry, grants) from the run config; None: not enforced."""
    if not cfg.policy:
        return None
    config = audit_config(cfg)
    return PolicyBundle.from_json(
        cfg.policy, config.partner_keys if config and config.partner_keys else {}
    )


def make_server_app(overrides: Mapping[str, str] | None = None) -> ServerApp:
    """A ServerApp; ``overrides`` add run-config keys (used by the simulation runner).

    Only an in-process override can make a run a simulation: a run submitted to a
    SuperLink (any ``flwr run``) is a deployment whatever its run config says, so it
    runs only with an audit trail and a policy.
    """
    fixed = dict(overrides or {})
    simulation = fixed.get("mode") == "simulation"
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = RunConfig.parse({**context.run_config, **fixed})
        spec = JobSpec.from_json(cfg.job)
        mode = "simulation" if simulation else "deployment"
        if not simulation:
            plain_flower_logs()  # the coordinator's log file: times, no colour codes
        audit, policy = audit_config(cfg), policy_from(cfg)
        if not simulation and (audit is None or policy is None):
            # Fail closed: a run started around `fedcollab job submit` (e.g. a bare
            # `flwr run`) would otherwise skip the policy gate and the audit trail.
            raise PolicyRefusal(
                "this run has no audit trail or policy configuration; refusing to run it",
                hint="submit jobs with `fedcollab job submit`",
            )
        record_messages(
            Path(cfg.output_dir) / "messages" if cfg.record_messages == "true" else None
        )
        run_job(
            grid,
            spec,
            JobOutputs(Path(cfg.output_dir), trace=cfg.trace == "true"),
            mode=mode,
            audit_config=audit,
            policy=policy,
        )

    return server_app


#: The ServerApp the SuperLink runs (pyproject ``[tool.flwr.app.components]``).
app = make_server_app()
