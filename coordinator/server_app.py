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

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedcollab.common.errors import JobSpecError, PolicyRefusal
from fedcollab.common.jobspec import JobSpec
from fedcollab.compliance.keys import parse_verifier_key
from fedcollab.coordinator.audit import AuditConfig
from fedcollab.coordinator.broadcast import record_messages
from fedcollab.coordinator.job import run_job
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.coordinator.policy_gate import PolicyBundle

__all__ = ["app", "make_server_app"]


def audit_config(cfg: Mapping[str, object]) -> AuditConfig | None:
    """The coordinator's audit settings from the run config (None: no trail)."""
    db, key = str(cfg.get("audit-db", "")), str(cfg.get("audit-key", ""))
    if not db or not key:
        return None
    keys = {
        name: parse_verifier_key(vkey)[1]
        for name, vkey in json.loads(str(cfg.get("partner-keys", "{}"))).items()
    }
    return AuditConfig(db=Path(db), key=Path(key), partner_keys=keys)


def policy_from(cfg: Mapping[str, object]) -> PolicyBundle | None:
    """The policy bundle (registry, grants) from the run config; None: not enforced."""
    text = str(cfg.get("policy", ""))
    if not text:
        return None
    config = audit_config(cfg)
    return PolicyBundle.from_json(
        text, config.partner_keys if config and config.partner_keys else {}
    )


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
        mode = str(cfg.get("mode", "deployment"))
        audit, policy = audit_config(cfg), policy_from(cfg)
        if mode == "deployment" and (audit is None or policy is None):
            # Fail closed: a run started around `fedcollab job submit` (e.g. a bare
            # `flwr run`) would otherwise skip the policy gate and the audit trail.
            raise PolicyRefusal(
                "this run has no audit trail or policy configuration; refusing to run it",
                hint="submit jobs with `fedcollab job submit`",
            )
        record_messages(
            Path(out) / "messages" if str(cfg.get("record-messages")) == "true" else None
        )
        run_job(
            grid,
            spec,
            JobOutputs(Path(out), trace=str(cfg.get("trace", "")) == "true"),
            mode=mode,
            audit_config=audit,
            policy=policy,
        )

    return server_app


#: The ServerApp the SuperLink runs (pyproject ``[tool.flwr.app.components]``).
app = make_server_app()
