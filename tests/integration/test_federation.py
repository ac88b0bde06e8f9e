"""A real federation on loopback: SuperLink + SuperNodes over TLS with node auth."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedcollab.common.dataset import file_sha256
from fedcollab.common.errors import FederationError
from fedcollab.common.jobspec import load_job_spec
from fedcollab.common.keys import Signer
from fedcollab.compliance.log import AuditLog
from fedcollab.compliance.trail import create_party_key
from fedcollab.coordinator.local_grants import demo_grant, example_registry
from fedcollab.coordinator.submit import follow, submit_job
from fedcollab.coordinator.superlink import flwr_env
from fedcollab.coordinator.workspace import generate_node_key
from fedcollab.demo.checks import export_and_verify
from fedcollab.federation.local_federation import LocalFederation
from tests.support.integration import (
    BIN,
    card_run,
    free_port,
    make_partners,
    node_port_base,
    write_job,
)

# A job here may follow for up to 900 s (a loaded machine: at load 25-44 the
# killed-partner job outlived pytest's default 600 s); the test's own waits are the bound.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory, tool_path: None
) -> Iterator[LocalFederation]:
    root = tmp_path_factory.mktemp("fed")
    partners = make_partners(root, 3)
    with LocalFederation(
        root / "federation", partners, port=free_port(), node_port_base=node_port_base()
    ) as fed:
        fed.wait_online()
        yield fed


def test_job_completes_over_tls(federation: LocalFederation, tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.toml", federation.partners[0].schema)
    out = tmp_path / "out"
    proc = subprocess.run(
        [str(BIN / "fedcollab"), "job", "submit", str(job), "-w", str(federation.ws.root),
         "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=flwr_env(federation.ws), check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((out / "result.json").read_text())["status"] == "completed"
    card = json.loads((out / "model_card.json").read_text())
    assert card["job"]["mode"] == "deployment"
    by_name = {p["name"]: p for p in card["partners"]}
    assert sorted(by_name) == sorted(p.partner for p in federation.partners)
    for src in federation.partners:
        assert by_name[src.partner]["dataset_hash"] == file_sha256(src.data)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rounds_run"] == 2
    assert 0.5 < metrics["final"]["test"]["auc"] <= 1.0
    assert (out / "model.pt").stat().st_size > 0
    # Every partner cosigned; every party's trail verifies; the logs agree.
    cosign = json.loads((out / "audit.json").read_text())
    assert cosign["cosigned_by"] == sorted(p.partner for p in federation.partners)
    names = [p.partner for p in federation.partners]
    audit = export_and_verify(federation.ws, names, tmp_path / "bundles")
    assert set(audit["cosigners"]) == set(names) and audit["unverified_cosigners"] == []
    assert all(n >= 3 for n in audit["matched"].values())  # moments + 2 rounds + evaluation
    types = [e["event"]["type"] for e in _entries(tmp_path / "bundles" / "coordinator")]
    assert types[:2] == ["job.submitted", "job.started"]
    assert {"job.participants", "round.aggregated", "model.released", "job.completed"} <= set(types)


def test_encrypted_job_coordinator_sees_only_ciphertexts(
    federation: LocalFederation, tmp_path: Path
) -> None:
    job = write_job(
        tmp_path / "job.toml", federation.partners[0].schema, encrypted=True,
        dealer=min(p.partner for p in federation.partners),
    )  # fmt: skip
    out = tmp_path / "out"
    end = submit_and_follow(federation, job, out)
    assert end["status"] == "completed", end
    names = sorted(p.partner for p in federation.partners)
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.5 < metrics["final"]["test"]["auc"] <= 1.0
    card = json.loads((out / "model_card.json").read_text())
    assert "CKKS" in card["protections"]["aggregation"]
    assert all(p["n_rows"] is None for p in card["partners"])  # row counts stay at partners
    audit = export_and_verify(federation.ws, names, tmp_path / "bundles")
    assert set(audit["cosigners"]) == set(names)
    events = [e["event"] for e in _entries(tmp_path / "bundles" / "coordinator")]
    run = [e for e in events if e["body"].get("run") == card_run(events, out)]
    keys = [e for e in run if e["type"] == "he.keys"]
    assert len(keys) == 1 and keys[0]["body"]["recipients"] == names
    dealer = keys[0]["body"]["dealer"]
    steps = {e["body"]["step"]: e["body"] for e in run if e["type"] == "round.aggregated"}
    # moments, 2 rounds, final evaluation: each summed as ciphertexts of masked words
    # ("ckks+masked", the default), each decrypted by the dealer (the only holder of the
    # key besides the contributors) exactly once, then unmasked by the coordinator.
    for step in ("moments", "round-1", "round-2", "final-evaluation"):
        assert steps[step]["protection"] == "ckks+masked-sum"
        assert sorted(steps[step]["partners"]) == names
        assert steps[f"{step}.decrypt"]["protection"] == "ckks-decrypted"
        assert steps[f"{step}.decrypt"]["partners"] == [dealer]
    unmasked = {e["body"]["step"] for e in run if e["type"] == "secagg.unmasked"}
    assert {"moments", "round-1", "round-2", "final-evaluation"} <= unmasked
    # Nobody dropped, so no survivor set was signed: the next step's keys ride with this
    # step's request (advertised) and its unmasking (shared), and a partner's requests of
    # one exchange arrive in one query.batch message (common/batch).
    logs = "".join((federation.logs / f"{n}.log").read_text(errors="replace") for n in names)
    assert "served query.batch round-1+round-2.secagg-advertise" in logs
    assert "served query.batch round-2.secagg-unmask+final-evaluation.secagg-share" in logs
    assert all(e["body"].get("consistency") == "no-dropout" for e in run
               if e["type"] == "secagg.unmasked")  # fmt: skip
    # Log files, not terminals: Flower's lines carry a time and no ANSI colour codes.
    coordinator_log = (federation.logs / "coordinator.log").read_text(errors="replace")
    coloured = [line for line in coordinator_log.splitlines() if "\x1b[" in line]
    assert "\x1b[" not in logs
    assert all("Starting Flower SuperExec" in line for line in coloured), coloured[:3]
    assert re.search(r"^INFO \d{4}-\d\d-\d\d [\d:,.]+\s*:\s+Starting Flower SuperNode", logs, re.M)
    # The partners erased the job's keys; the coordinator never had a key file.
    for name in names:
        assert not list((federation.ws.node_dir(name) / "he").glob("*/ckks.key"))
    assert not [p for p in federation.ws.root.rglob("ckks.key")]
    assert not [p for p in out.rglob("*.key")]


def submit_and_follow(fed: LocalFederation, job: Path, out: Path) -> dict[str, Any]:
    fed.wait_online()
    submit_job(fed.ws, load_job_spec(job), out)
    return follow(out, on_event=lambda _ev: None, timeout_s=900)


def _entries(bundle: Path) -> list[dict[str, Any]]:
    lines = (bundle / "entries.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line]


def test_submission_without_registered_purpose_is_refused_and_logged(
    federation: LocalFederation, tmp_path: Path
) -> None:
    job = write_job(
        tmp_path / "job.toml", federation.partners[0].schema, purpose="resale-of-customer-data"
    )
    proc = subprocess.run(
        [str(BIN / "fedcollab"), "job", "submit", str(job), "-w", str(federation.ws.root),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env=flwr_env(federation.ws), check=False,
    )  # fmt: skip
    assert proc.returncode == 32, proc.stdout + proc.stderr
    assert "PolicyRefusal" in proc.stderr and "not registered" in proc.stderr
    assert not (tmp_path / "out" / "progress.jsonl").exists()  # nothing ran
    with AuditLog.open(
        federation.ws.audit_db, origin="coordinator", signer=Signer.load(federation.ws.audit_key)
    ) as log:
        last = json.loads(next(iter(log.entries(log.size - 1, log.size))))
    assert last["type"] == "job.refused"
    assert last["body"]["purpose"] == "resale-of-customer-data"


def test_unregistered_node_is_refused(federation: LocalFederation, tmp_path: Path) -> None:
    key, _pub = generate_node_key(tmp_path / "intruder")
    audit_key, _ = create_party_key(tmp_path / "intruder", "intruder")
    src = federation.partners[0]
    grant = tmp_path / "intruder" / "grant.json"
    demo_grant(
        partner="intruder",
        dataset=src.partner,
        audit_key=audit_key,
        registry=example_registry(),
        purposes=["purchase-prediction"],
        out=grant,
    )
    proc = subprocess.run(
        [str(BIN / "fedcollab"), "node", "start", "--partner", "intruder",
         "--data", str(src.data), "--schema", str(src.schema),
         "--ca", str(federation.ws.ca_cert), "--key", str(key),
         "--grant", str(grant), "--audit-key", str(audit_key),
         "--superlink", federation.ws.federation.address, "--port", str(free_port()),
         "--connect-timeout", "20"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 14, proc.stdout + proc.stderr
    assert "not registered" in proc.stderr
    listing = subprocess.run(
        [str(BIN / "flwr"), "supernode", "ls", federation.ws.federation.name, "--format", "json"],
        capture_output=True, text=True, timeout=60, env=flwr_env(federation.ws), check=True,
    )  # fmt: skip
    nodes = json.loads(listing.stdout)["nodes"]
    assert len(nodes) == len(federation.partners)


@pytest.fixture(scope="module")
def five_partners(
    tmp_path_factory: pytest.TempPathFactory, tool_path: None
) -> Iterator[LocalFederation]:
    """One federation for the drop-out tests: each kills a different partner and the
    next test that needs every partner starts the killed ones again (:func:`revive`)."""
    root = tmp_path_factory.mktemp("fed-dropout")
    partners = make_partners(root, 5)
    with LocalFederation(
        root / "federation", partners, port=free_port(), node_port_base=node_port_base()
    ) as fed:
        yield fed


def revive(fed: LocalFederation, names: list[str]) -> None:
    """Start again those of ``names`` whose node an earlier test killed (in file order,
    none is), then wait until all of ``names`` are online."""
    for name in names:
        if fed.nodes[name].poll() is not None:
            fed.restart_node(name)
    fed.wait_online(names)


def test_killed_partner_does_not_stop_the_job(
    five_partners: LocalFederation, tmp_path: Path
) -> None:
    """Also: a partner whose own grant no longer covers the purpose refuses the job
    even though the coordinator's copy of its older grant accepted it."""
    fed = five_partners
    partners = fed.partners
    # Encrypted, and the victim is the partner that dealt the key and decrypts the
    # aggregates: another key holder takes over decryption. Killed once round 2 is in,
    # so round 3 loses it and round 4 runs entirely without it.
    rounds = 4
    job = write_job(
        tmp_path / "job.toml", partners[0].schema, rounds=rounds, round_timeout_s=120.0,
        encrypted=True, dealer=partners[0].partner,
    )  # fmt: skip
    victim = partners[0].partner
    withdrawn = partners[4].partner
    out = tmp_path / "out"
    node_dir = fed.ws.node_dir(withdrawn)
    demo_grant(
        partner=withdrawn,
        dataset=withdrawn,
        audit_key=node_dir / "audit.key",
        registry=example_registry(),
        purposes=["payment-risk-scoring"],
        out=node_dir / "grant.json",
    )
    revive(fed, [p.partner for p in partners])  # the victim must be in the job
    submit_job(fed.ws, load_job_spec(job), out)
    killed = False

    def on_event(ev: dict[str, Any]) -> None:
        nonlocal killed
        if ev.get("event") == "round" and ev.get("round") == 2 and not killed:
            fed.kill_node(victim)
            killed = True

    t0 = time.monotonic()
    end = follow(out, on_event=on_event, timeout_s=900)
    assert killed, f"job ended before round 2 ({time.monotonic() - t0:.0f} s)"
    assert end["status"] == "completed", end
    metrics = json.loads((out / "metrics.json").read_text())
    assert [d["partner"] for d in metrics["dropouts"]] == [victim]
    assert metrics["rounds_run"] == rounds
    assert victim not in metrics["history"][-1]["partners"]
    card = json.loads((out / "model_card.json").read_text())
    assert victim not in card["completed_by"]
    assert victim in [p["name"] for p in card["partners"]]
    assert withdrawn not in [p["name"] for p in card["partners"]]
    refused = {r["partner"]: r["reason"] for r in metrics["refused"]}
    assert "PolicyRefusal" in refused[withdrawn]
    with AuditLog.open(
        node_dir / "audit.db", origin=withdrawn, signer=Signer.load(node_dir / "audit.key")
    ) as log:
        own = [json.loads(e) for e in log.entries()]
    assert [e["type"] for e in own] == ["request.received", "request.refused"]
    assert own[1]["body"]["error"] == "PolicyRefusal"
    # The aggregate of every round is over exactly the partners that sent; after the
    # dealer dropped, another key holder decrypted.
    with AuditLog.open(
        fed.ws.audit_db, origin="coordinator", signer=Signer.load(fed.ws.audit_key)
    ) as log:
        coordinator = [json.loads(e) for e in log.entries()]
    run = card_run(coordinator, out)  # the module's other jobs share this log
    steps = {
        e["body"]["step"]: e["body"]
        for e in coordinator
        if e["type"] == "round.aggregated" and e["body"].get("run") == run
    }
    assert steps["round-1"]["partners"] == sorted(p.partner for p in partners[:4])
    assert steps["round-1.decrypt"]["partners"] == [victim]
    assert victim not in steps[f"round-{rounds}"]["partners"]
    assert steps[f"round-{rounds}.decrypt"]["partners"] != [victim]


def test_job_stops_below_min_partners(five_partners: LocalFederation, tmp_path: Path) -> None:
    fed = five_partners
    # Three partners that the other drop-out test neither kills nor withdraws.
    names = [p.partner for p in fed.partners[1:4]]
    victim = names[0]
    job = write_job(
        tmp_path / "job.toml", fed.partners[1].schema, rounds=5, round_timeout_s=120.0,
        participants=names,
    )  # fmt: skip
    out = tmp_path / "out"
    revive(fed, names)
    submit_job(fed.ws, load_job_spec(job), out)
    killed = False

    def on_event(ev: dict[str, Any]) -> None:
        nonlocal killed
        if ev.get("event") == "round" and ev.get("round") == 1 and not killed:
            fed.kill_node(victim)
            killed = True

    end = follow(out, on_event=on_event, timeout_s=900)
    assert killed, "job ended before round 1"
    assert end["status"] == "failed"
    assert end["error"] == "NotEnoughPartnersError"
    result = json.loads((out / "result.json").read_text())
    assert [d["partner"] for d in result["dropouts"]] == [victim], result["dropouts"]
    # A node that is down is reported at once, with its log, instead of after the
    # wait's 300 s as "not online" (a hung or dead node was indistinguishable in CI).
    with pytest.raises(FederationError, match=f"the node of {victim} exited with code -9"):
        fed.wait_online([victim])
