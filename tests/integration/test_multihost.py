"""Several hosts on one machine: coordinator and partners in their own network namespaces.

Each party runs the commands an operator or a partner would run on its own
machine (``fedcollab coordinator start``, ``federation register``, ``node
start``, ``job submit``), each on its own host (:mod:`tests.support.netns`):
its own address on a rate-bounded link, names resolved per host, the
coordinator's TLS certificate checked against the coordinator's host name.
The SuperLink and its Control API stay on the coordinator's loopback; only the
Fleet gateway listens on its address.

Part of ``make test``; alone with ``make multihost``. Needs root (``ip netns``); skipped, with the
reason, where namespaces cannot be created.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fedcollab.client.partner_data import PartnerSource
from fedcollab.client.peer_trust import fingerprint
from fedcollab.common.dataset import file_sha256
from fedcollab.common.schema import load_schema
from fedcollab.compliance.registry import load_registry
from fedcollab.compliance.trail import load_verifier_key
from fedcollab.coordinator.local_grants import EXAMPLE_REGISTRY, demo_grant
from fedcollab.coordinator.policy_gate import add_grant, registry_path
from fedcollab.coordinator.superlink import flwr_env, registered_nodes
from fedcollab.coordinator.workspace import Workspace
from fedcollab.demo.checks import export_and_verify
from fedcollab.privacy.key_transport import PeerKeys
from tests.support.integration import BIN, make_partners, write_job
from tests.support.netns import Network, netns_unavailable

# The first test also pays for the module's set-up (5 namespaces, 4 parties): 513 s
# for the module under a CPU hog at load average ~18, close to the suite's 600 s.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

PORT = 9092  # every host has its own ports: the documented defaults are free
NODE_PORT = 9094
PROBE = str(Path(__file__).with_name("tls_probe.py"))


@dataclass(frozen=True)
class Deployment:
    net: Network
    ws: Workspace
    partners: list[PartnerSource]
    logs: Path
    #: Each long-running party's process (``ip netns exec`` execs: the party's own pid).
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def coordinator(self) -> str:
        return self.net.hosts["coordinator"].fqdn


def _fedcollab(*args: str) -> list[str]:
    return [str(BIN / "fedcollab"), *args]


def _log_tail(path: Path, limit: int = 4000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-limit:]


def _fail_if_exited(dep: Deployment) -> None:
    """A party that exited (a typed refusal, a crash) fails the test at once, with its log."""
    for name, proc in dep.procs.items():
        code = proc.poll()
        if code is not None:
            pytest.fail(
                f"{name} exited with code {code} before the federation was up:\n"
                + _log_tail(dep.logs / f"{name}.log")
            )


def _wait_online(dep: Deployment, timeout_s: float) -> None:
    """Until the coordinator lists every partner's node online (its own state, polled),
    or a party's process exits (then at once, with its log)."""
    wanted = {str(i) for i in registered_nodes(dep.ws).values()}
    deadline = time.monotonic() + timeout_s
    online: set[str] = set()
    while time.monotonic() < deadline:
        _fail_if_exited(dep)
        proc = dep.net.run(
            "coordinator",
            [str(BIN / "flwr"), "supernode", "ls", dep.ws.federation.name, "--format", "json"],
            timeout=120,
            env=flwr_env(dep.ws),
        )
        try:
            nodes = json.loads(proc.stdout).get("nodes", [])
        except ValueError:
            nodes = []
        online = {str(n.get("node-id")) for n in nodes if n.get("status") == "online"}
        if wanted <= online:
            return
        # Each `flwr` call costs a second or more of imports: that is the poll interval.
    _fail_if_exited(dep)
    pytest.fail(f"nodes {sorted(wanted - online)} not online after {timeout_s:g} s: see {dep.logs}")


def _confirm_peer_list(ws: Workspace, names: list[str]) -> str:
    """What each partner does before its first start (issue 14's trust anchors): compare
    every entry of the coordinator's ``peers.json`` with that partner's own ``audit.pub``
    (out of band: here the partners' own files), then confirm the list's fingerprint."""
    peers = PeerKeys.from_json((ws.root / "peers.json").read_text())
    own = {n: load_verifier_key(ws.node_dir(n) / "audit.pub")[1] for n in names}
    assert dict(peers.keys) == own, "peers.json does not hold each partner's own audit key"
    return fingerprint(peers)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, tool_path: None) -> Iterator[Deployment]:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(f"several hosts need network namespaces: {reason}")
    root = tmp_path_factory.mktemp("multihost")
    partners = make_partners(root, 3)
    names = [p.partner for p in partners]
    net = Network(["coordinator", *names])
    logs = root / "logs"
    logs.mkdir()
    try:
        net.up()
        coordinator = net.hosts["coordinator"]
        ws = Workspace.create(
            root / "workspace", name="multihost", host=coordinator.fqdn, port=PORT,
            partners=tuple(names),
        )  # fmt: skip
        shutil.copyfile(EXAMPLE_REGISTRY, registry_path(ws))
        dep = Deployment(net=net, ws=ws, partners=partners, logs=logs)
        dep.procs["coordinator"] = net.start(
            "coordinator",
            _fedcollab("coordinator", "start", "-w", str(ws.root)),
            log=(logs / "coordinator.log").open("ab"),
        )
        # The gateway opens its address only once the SuperLink serves: a verified
        # handshake from a partner's host means the coordinator is up.
        probe = net.run(
            names[0],
            [sys.executable, PROBE, dep.coordinator, str(PORT), str(ws.ca_cert),
             dep.coordinator, "180"],
            timeout=240,
        )  # fmt: skip
        _fail_if_exited(dep)
        assert probe.returncode == 0, f"{probe.stdout}\n{_log_tail(logs / 'coordinator.log')}"
        for src in partners:
            node_dir = ws.node_dir(src.partner)
            reg = net.run(
                "coordinator",
                _fedcollab("federation", "register", src.partner, str(node_dir / "node.pub"),
                           "--audit-key", str(node_dir / "audit.pub"), "-w", str(ws.root)),
                timeout=180,
            )  # fmt: skip
            assert reg.returncode == 0, reg.stdout + reg.stderr
            demo_grant(
                partner=src.partner,
                dataset=load_schema(src.schema).dataset,
                audit_key=node_dir / "audit.key",
                registry=load_registry(EXAMPLE_REGISTRY),
                purposes=["purchase-prediction"],
                out=node_dir / "grant.json",
            )
            add_grant(ws, node_dir / "grant.json")
        confirm = _confirm_peer_list(ws, names)
        for src in partners:
            node_dir = ws.node_dir(src.partner)
            dep.procs[src.partner] = net.start(
                src.partner,
                _fedcollab(
                    "node", "start", "--partner", src.partner, "--data", str(src.data),
                    "--schema", str(src.schema), "--ca", str(ws.ca_cert),
                    "--key", str(node_dir / "node.key"),
                    "--superlink", f"{dep.coordinator}:{PORT}", "--port", str(NODE_PORT),
                    "--audit-key", str(node_dir / "audit.key"),
                    "--coordinator-key", str(ws.audit_pub), "--grant", str(node_dir / "grant.json"),
                    "--peer-keys", str(ws.root / "peers.json"), "--confirm-peers", confirm,
                ),
                log=(logs / f"{src.partner}.log").open("ab"),
            )  # fmt: skip
        _wait_online(dep, timeout_s=600)
        yield dep
    finally:
        net.close()


def test_job_runs_across_hosts(deployment: Deployment, tmp_path: Path) -> None:
    dep = deployment
    # Nodes keep polling while the counters are read (one `ip` call per host), so the
    # coordinator is read first before the job and last after it: every byte a partner
    # sent inside its own window then falls inside the coordinator's window.
    names = sorted(p.partner for p in dep.partners)
    order = ["coordinator", *names]
    before = {name: dep.net.hosts[name].counters() for name in order}
    job = write_job(tmp_path / "job.toml", dep.partners[0].schema, round_timeout_s=300.0,
                    startup_timeout_s=300.0)  # fmt: skip
    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = dep.net.run(
        "coordinator",
        _fedcollab("job", "submit", str(job), "-w", str(dep.ws.root), "--out", str(out)),
        timeout=1800,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"multi-host job: {elapsed:.1f} s")  # shown with -s; the report quotes it
    assert json.loads((out / "result.json").read_text())["status"] == "completed"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rounds_run"] == 2
    assert 0.5 < metrics["final"]["test"]["auc"] <= 1.0
    card = json.loads((out / "model_card.json").read_text())
    by_name = {p["name"]: p for p in card["partners"]}
    assert sorted(by_name) == names
    for src in dep.partners:
        assert by_name[src.partner]["dataset_hash"] == file_sha256(src.data)
    assert json.loads((out / "audit.json").read_text())["cosigned_by"] == names
    audit = export_and_verify(dep.ws, names, tmp_path / "bundles")
    assert set(audit["cosigners"]) == set(names) and audit["unverified_cosigners"] == []
    # The job's messages went over the hosts' links: every partner sent and received
    # (model updates, cosignatures), and the coordinator took in at least their sum.
    after = {name: dep.net.hosts[name].counters() for name in reversed(order)}
    sent = {n: after[n][1] - before[n][1] for n in names}
    received = {n: after[n][0] - before[n][0] for n in names}
    assert all(v > 10_000 for v in sent.values()), sent
    assert all(v > 10_000 for v in received.values()), received
    coordinator_in = after["coordinator"][0] - before["coordinator"][0]
    assert coordinator_in >= sum(sent.values()), (coordinator_in, sent)


def test_partner_host_checks_the_coordinator_name(deployment: Deployment) -> None:
    """The certificate names the coordinator's host; an address it does not name is refused."""
    dep = deployment
    coordinator = dep.net.hosts["coordinator"]
    partner = dep.partners[0].partner

    def probe(host: str, port: int, name: str) -> subprocess.CompletedProcess[str]:
        return dep.net.run(
            partner,
            [sys.executable, PROBE, host, str(port), str(dep.ws.ca_cert), name, "5"],
            timeout=60,
        )

    ok = probe(coordinator.fqdn, PORT, coordinator.fqdn)
    assert ok.returncode == 0, ok.stdout
    wrong = probe(coordinator.address, PORT, coordinator.address)
    assert wrong.returncode == 2 and "mismatch" in wrong.stdout, wrong.stdout


def test_control_api_is_not_reachable_from_a_partner_host(deployment: Deployment) -> None:
    """The SuperLink (Fleet + Control API) listens on the coordinator's loopback only."""
    dep = deployment
    config = tomllib.loads((dep.ws.flwr_home / "config.toml").read_text())
    address = config["superlink"][dep.ws.federation.name]["address"]
    host, port = address.rsplit(":", 1)
    assert host == "127.0.0.1"
    coordinator = dep.net.hosts["coordinator"]
    partner = dep.partners[0].partner
    reached = dep.net.run(
        partner,
        [sys.executable, PROBE, coordinator.fqdn, port, str(dep.ws.ca_cert), coordinator.fqdn, "3"],
        timeout=60,
    )
    assert reached.returncode == 3, reached.stdout  # refused: nothing listens there
    # ... while on the coordinator's own host it serves.
    local = dep.net.run(
        "coordinator",
        [sys.executable, PROBE, "127.0.0.1", port, str(dep.ws.ca_cert), "127.0.0.1", "30"],
        timeout=60,
    )
    assert local.returncode == 0, local.stdout
