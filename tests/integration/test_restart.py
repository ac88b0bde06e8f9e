"""Restarts mid-job on a real federation: a partner's node.

The coordinator-restart test is not in this file yet: killing the coordinator's
process group left Flower's ``flwr-serverapp`` running on this machine (it ignored
SIGTERM), so the recovery's premise that no job of the previous coordinator still
runs (coordinator/recovery.py) does not always hold; see docs/deployment.md.

The coordinator cannot resume a job (its state lives in the ServerApp process,
which ends with it: :mod:`fedcollab.coordinator.recovery`); the job must fail
cleanly: one recorded failure in the audit log and in the output folder, every
log still verifying, each partner's ledger holding exactly the releases it
made, once, and refusing to charge a step again; the restarted coordinator then
runs the next job. A partner's node that restarts mid-job is dropped from the
job as a drop-out (the reply it owed is lost) and the job completes without it;
it is back online and the next job runs with it again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from experiments.demo import export_and_verify
from fedcollab.common.jobspec import load_job_spec
from fedcollab.compliance.keys import Signer
from fedcollab.compliance.log import AuditLog
from fedcollab.coordinator.local_federation import LocalFederation
from fedcollab.coordinator.submit import follow, submit_job
from tests.integration.support import free_port, make_partners
from tests.integration.test_federation import card_run, node_port_base, write_job

# Two DP jobs and a coordinator restart in one test: on a loaded 2-core machine
# (load average ~18) the first test alone took more than the suite's 600 s.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory, tool_path: None
) -> Iterator[LocalFederation]:
    root = tmp_path_factory.mktemp("fed-restart")
    partners = make_partners(root, 3)
    with LocalFederation(
        root / "federation", partners, port=free_port(), node_port_base=node_port_base(),
        budget_cap=100.0,
    ) as fed:  # fmt: skip
        yield fed


def _entries(db: Path, origin: str, key: Path) -> list[dict[str, Any]]:
    with AuditLog.open(db, origin=origin, signer=Signer.load(key)) as log:
        return [json.loads(e) for e in log.entries()]


def _dp_job(path: Path, schema: Path, name: str) -> Path:
    """DP-SGD, 3 rounds; healthy partners only, so a generous round timeout (a loaded
    machine must not turn a slow partner into a drop-out)."""
    path.write_text(
        f'name = "{name}"\ntask = "purchase_prediction"\npurpose = "purchase-prediction"\n'
        f'schema = "{schema}"\nmin_partners = 2\nrounds = 3\nround_timeout_s = 300.0\n'
        "startup_timeout_s = 300.0\n\n[evaluation]\nearly_stopping_patience = 0\n\n"
        '[privacy]\ndp = "sample"\ntarget_epsilon = 1.5\nsample_rate = 0.5\n'
    )
    return path


def test_partner_restart_mid_job_is_a_dropout(federation: LocalFederation, tmp_path: Path) -> None:
    fed = federation
    names = [p.partner for p in fed.partners]
    victim = names[1]
    fed.wait_online()
    # The restarted node's reply for the round in flight is lost: the coordinator counts
    # the node as a drop-out on the error reply, or at the latest after this timeout.
    job = write_job(tmp_path / "job.toml", fed.partners[0].schema, name="restart-node",
                    rounds=3, min_partners=2, round_timeout_s=90.0,
                    startup_timeout_s=300.0)  # fmt: skip
    out = tmp_path / "out"
    submit_job(fed.ws, load_job_spec(job), out)
    restarted = False

    def on_event(ev: dict[str, Any]) -> None:
        nonlocal restarted
        if ev.get("event") == "round" and ev.get("round") == 1 and not restarted:
            fed.restart_node(victim)
            restarted = True

    end = follow(out, on_event=on_event, timeout_s=1800)
    assert restarted, f"job ended before round 1: {end}"
    assert end["status"] == "completed", end
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rounds_run"] == 3
    assert [d["partner"] for d in metrics["dropouts"]] == [victim]
    assert victim not in metrics["history"][-1]["partners"]
    card = json.loads((out / "model_card.json").read_text())
    assert sorted(card["completed_by"]) == sorted(set(names) - {victim})
    # The coordinator asks only the partners still in the job at its end to cosign: the
    # drop-out is not asked (neither cosigned nor refused), so the coordinator's log holds
    # no cosignature of it yet. Every log (the drop-out's own too) verifies and the logs
    # cross-check, with the cosignatures of the partners that completed the job.
    survivors = sorted(set(names) - {victim})
    audit = json.loads((out / "audit.json").read_text())
    assert audit["cosigned_by"] == survivors and victim not in audit["cosign_refused"], audit
    coordinator = _entries(fed.ws.audit_db, "coordinator", fed.ws.audit_key)
    assert card_run(coordinator, out)
    first = export_and_verify(fed.ws, names, tmp_path / "bundles", required=survivors)
    assert first["cosigners"] == survivors, first
    # The restarted node is back online and rejoins: the next job needs all three
    # partners, completes, and the victim cosigns the coordinator's log again.
    fed.wait_online([victim], timeout_s=600)
    again = write_job(tmp_path / "again.toml", fed.partners[0].schema, name="after-restart",
                      rounds=1, min_partners=3, round_timeout_s=300.0,
                      startup_timeout_s=300.0)  # fmt: skip
    out2 = tmp_path / "out-again"
    submit_job(fed.ws, load_job_spec(again), out2)
    end2 = follow(out2, on_event=lambda _ev: None, timeout_s=1800)
    assert end2["status"] == "completed", end2
    card2 = json.loads((out2 / "model_card.json").read_text())
    assert sorted(card2["completed_by"]) == sorted(names)
    after = export_and_verify(fed.ws, names, tmp_path / "bundles-again")
    assert after["cosigners"] == sorted(names) and after["unverified_cosigners"] == [], after
