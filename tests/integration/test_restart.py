"""Restarts mid-job on a real federation: the coordinator, then a partner's node.

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

import contextlib
import json
import os
import re
import select
import signal
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedcollab.common.jobspec import load_job_spec
from fedcollab.common.keys import Signer
from fedcollab.common.schema import load_schema
from fedcollab.compliance.bundle import export_bundle, verify_bundle
from fedcollab.compliance.crossref import cross_check
from fedcollab.compliance.log import AuditLog
from fedcollab.compliance.trail import load_verifier_key
from fedcollab.compliance.trust import TrustPolicy
from fedcollab.coordinator.outputs import read_progress
from fedcollab.coordinator.recovery import INTERRUPTED_ERROR
from fedcollab.coordinator.submit import follow, submit_job
from fedcollab.coordinator.superlink import start_superlink
from fedcollab.demo.checks import export_and_verify
from fedcollab.federation.local_federation import LocalFederation
from fedcollab.privacy.budget_ledger import BudgetLedger
from tests.support.integration import card_run, free_port, make_partners, node_port_base, write_job

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
    machine must not turn a slow partner into a drop-out). The numeric columns' bounds
    are declared: partners refuse a DP job's moments without them."""
    path.write_text(
        f'name = "{name}"\ntask = "purchase_prediction"\npurpose = "purchase-prediction"\n'
        f'schema = "{schema}"\nmin_partners = 2\nrounds = 3\nround_timeout_s = 300.0\n'
        "startup_timeout_s = 300.0\n\n[evaluation]\nearly_stopping_patience = 0\n\n"
        '[privacy]\ndp = "sample"\ntarget_epsilon = 1.5\nsample_rate = 0.5\n\n'
        "[privacy.value_bounds]\nvisits = [0.0, 20.0]\nbasket_value = [0.0, 200.0]\n"
    )
    return path


def _runtime_processes(fed: LocalFederation) -> list[int]:
    """Flower's SuperExec and ServerApp of this coordinator: their own process group,
    found by the loopback runtime address they were given."""
    config = tomllib.loads((fed.ws.flwr_home / "config.toml").read_text())
    address = config["superlink"][fed.ws.federation.name]["address"].encode()
    pids = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and address in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
    return pids


def _wait_exited(pids: list[int], timeout_s: float) -> None:
    """Until every pid has exited: each is a pidfd that turns readable at its exit."""
    deadline = time.monotonic() + timeout_s
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0.0))
            assert ready, f"process {pid} of the killed coordinator outlived its restart"
        finally:
            os.close(fd)


def _restart_coordinator(fed: LocalFederation) -> None:
    """A crash: SIGKILL to the coordinator's process group, then the same start again.

    Flower's SuperExec and the job's ServerApp run in their own session and may outlive
    the crash (they only poll their parent); the new coordinator stops them before it
    serves (:func:`fedcollab.coordinator.recovery.stop_leftover_runtime`), so by the time
    it serves TLS every one of them has exited."""
    assert fed.superlink is not None
    runtime = _runtime_processes(fed)
    assert runtime, "no ServerApp is running: the job has not reached the coordinator"
    os.killpg(fed.superlink.pid, signal.SIGKILL)
    fed.superlink.wait(timeout=30)
    fed.superlink = start_superlink(fed.ws, log=(fed.logs / "coordinator.log").open("ab"))
    _wait_exited(runtime, timeout_s=30)


def test_coordinator_restart_fails_the_job_cleanly(
    federation: LocalFederation, tmp_path: Path
) -> None:
    fed = federation
    names = [p.partner for p in fed.partners]
    datasets = {p.partner: load_schema(p.schema).dataset for p in fed.partners}
    fed.wait_online()
    out = tmp_path / "cut"
    submit_job(fed.ws, load_job_spec(_dp_job(tmp_path / "a.toml", fed.partners[0].schema,
                                             "dp-cut")), out)  # fmt: skip
    restarted = False

    def on_event(ev: dict[str, Any]) -> None:
        nonlocal restarted
        if ev.get("event") == "round" and ev.get("round") == 1 and not restarted:
            _restart_coordinator(fed)
            restarted = True

    end = follow(out, on_event=on_event, timeout_s=1800)
    assert restarted, f"job ended before round 1: {end}"
    assert end["status"] == "failed" and end["error"] == INTERRUPTED_ERROR, end
    assert "coordinator stopped" in end["reason"]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "failed" and result["error"] == INTERRUPTED_ERROR
    events, _ = read_progress(out)
    assert [e["event"] for e in events].count("job_end") == 1

    # The coordinator's log: the cut run ends with exactly one recorded failure.
    coordinator = _entries(fed.ws.audit_db, "coordinator", fed.ws.audit_key)
    run = card_run_of(coordinator, "dp-cut")
    ends = [e["type"] for e in coordinator if e["body"].get("run") == run
            and e["type"] in ("job.completed", "job.failed")]  # fmt: skip
    assert ends == ["job.failed"]
    # Every party's log verifies with its key pinned and the logs agree (no cosignature
    # is required: the cut job never reached its cosigning step).
    _verify_uncosigned(fed, names, tmp_path / "bundles-cut")

    # Each partner charged what it released before the crash, once per step, and the
    # charges match its own audit trail; a re-asked step is not charged again.
    spent_before: dict[str, int] = {}
    for name in names:
        node = fed.ws.node_dir(name)
        trail = _entries(node / "audit.db", name, node / "audit.key")
        spent = [(e["body"]["run"], e["body"]["step"]) for e in trail
                 if e["type"] == "privacy.spent"]  # fmt: skip
        with BudgetLedger.open(fed.budget_db(name)) as ledger:
            charges = ledger.charges(datasets[name])
            assert [(c.run, c.step) for c in charges] == spent
            assert len(set(spent)) == len(spent) >= 1
            first = charges[0]
            again = ledger.charge(datasets[name], job=first.job, run=first.run,
                                  step=first.step, mechanism=first.mechanism)  # fmt: skip
            assert again.replay
            assert len(ledger.charges(datasets[name])) == len(charges)
        spent_before[name] = len(charges)

    # The restarted coordinator runs the next job; the partners charge only its steps.
    fed.wait_online()
    out2 = tmp_path / "after"
    submit_job(fed.ws, load_job_spec(_dp_job(tmp_path / "b.toml", fed.partners[0].schema,
                                             "dp-after")), out2)  # fmt: skip
    end2 = follow(out2, on_event=lambda _e: None, timeout_s=1800)
    assert end2["status"] == "completed", end2
    history = json.loads((out2 / "metrics.json").read_text())["history"]
    for name in names:
        # Under load a partner can miss the new job's start or a round (min_partners 2):
        # its ledger grows by exactly the rounds it contributed to, all of the new job.
        contributed = sum(name in h["partners"] for h in history)
        # A step a partner was computing when the coordinator died may still be charged
        # after the restart (found under load): count by job, and check again at the end
        # that the ledger is exactly the partner's trail, each (run, step) once.
        with BudgetLedger.open(fed.budget_db(name)) as ledger:
            charges = ledger.charges(datasets[name])
        # Besides its rounds, a DP job charges the moments and the final evaluation (a
        # partner that missed the job's start charged nothing of it).
        steps = [c.step for c in charges if c.job == "dp-after"]
        assert sum(st.startswith("round-") for st in steps) == contributed, steps
        assert {st for st in steps if not st.startswith("round-")} <= {
            "moments",
            "final-evaluation",
        }, steps
        node = fed.ws.node_dir(name)
        trail = _entries(node / "audit.db", name, node / "audit.key")
        spent = [(e["body"]["run"], e["body"]["step"]) for e in trail
                 if e["type"] == "privacy.spent"]  # fmt: skip
        assert [(c.run, c.step) for c in charges] == spent and len(set(spent)) == len(spent)
    assert max(len(h["partners"]) for h in history) >= 2
    # Every log verifies and the logs cross-check (the cut job's round in flight is
    # listed as cut short, not a finding). The partners that completed the next job
    # cosigned it; one that missed it (under load a node still reconnecting to the new
    # coordinator got "message unavailable" at the job's start) was never asked.
    completed = sorted(json.loads((out2 / "model_card.json").read_text())["completed_by"])
    audit = export_and_verify(fed.ws, names, tmp_path / "bundles-after", required=completed)
    assert set(completed) <= set(audit["cosigners"]) and len(completed) >= 2, audit


# Runs after the coordinator-restart test, on a federation a job was cut in: a node may
# still hold a reply to a message of the run the restart ended. Its reply to the next
# run's first message must still go out (client/fleet_poll.py pushes a reply Flower's
# loop left behind; before that fix, this order failed in the fresh-clone CI of 5b254de:
# the job below waited out its start-up without one partner). This test needs all three
# partners at both of its jobs' starts.
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
    if not metrics["dropouts"]:
        # Rejoined: the node stopped between two messages (SIGTERM, graceful) and its
        # restart, same node id, answered every later one (issue 18: "rejoins or is
        # dropped as a dropout"; seen in the fresh-clone CI of d7127b4, rounds ~1 s).
        assert all(victim in h["partners"] for h in metrics["history"]), metrics["history"]
        card = json.loads((out / "model_card.json").read_text())
        assert sorted(card["completed_by"]) == sorted(names)
        return
    assert [d["partner"] for d in metrics["dropouts"]] == [victim]
    # The node went down at whatever step was in flight when the test saw round 1's
    # event: round 2 or 3, or, on a fast machine whose rounds outran the restart (a
    # round takes ~1 s since the deployed transport got faster), the final evaluation.
    # From the step it was dropped at on, it takes part in nothing.
    step = str(metrics["dropouts"][0]["step"])
    cut = re.match(r"round-(\d+)", step)
    first_without = int(cut.group(1)) if cut else metrics["rounds_run"] + 1
    assert first_without >= 2, step  # restarted after round 1, not before
    for entry in metrics["history"]:
        assert (victim in entry["partners"]) == (entry["round"] < first_without), (step, entry)
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
    assert set(survivors) <= set(first["cosigners"]), first
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


def _verify_uncosigned(fed: LocalFederation, names: list[str], out: Path) -> None:
    keys = {p: load_verifier_key(fed.ws.node_dir(p) / "audit.pub")[1] for p in names}
    policy = TrustPolicy.from_keys({"coordinator": load_verifier_key(fed.ws.audit_pub)[1], **keys})
    with AuditLog.open(
        fed.ws.audit_db, origin="coordinator", signer=Signer.load(fed.ws.audit_key)
    ) as log:
        export_bundle(log, out / "coordinator", public_keys=keys)
    bundles = {}
    for p in names:
        node = fed.ws.node_dir(p)
        with AuditLog.open(
            node / "audit.db", origin=p, signer=Signer.load(node / "audit.key")
        ) as log:
            export_bundle(log, out / p, public_keys={})
        bundles[p] = verify_bundle(out / p, policy)
    cross_check(verify_bundle(out / "coordinator", policy), bundles).raise_on_findings()


def card_run_of(events: list[dict[str, Any]], job: str) -> str:
    runs = [e["body"]["run"] for e in events
            if e["type"] == "job.started" and e["body"].get("job") == job]  # fmt: skip
    assert len(runs) == 1, runs
    return str(runs[0])
