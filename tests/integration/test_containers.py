"""deploy/: the coordinator and node images and the compose file, built and run with Podman.

Builds ``localhost/fedcollab-coordinator`` and ``localhost/fedcollab-node`` with
``deploy/build-images.sh`` (a Debian base from debootstrap, no registry; cached
layers make a rebuild take seconds when only the source changed), then runs
``deploy/compose.yaml`` (a coordinator and three partners, each in its own
container on one bridge network) the way docs/deployment.md tells an operator
to: ``federation init`` inside the coordinator's image, the coordinator up,
each partner's node key registered and its grant added, each partner's folder
filled (its keys, its data, the CA certificate, the pinned peer list), the
partners up, and an encrypted job submitted inside the coordinator's container.
Everything is torn down (``podman-compose down``) at the end.

Part of ``make test`` (which installs podman, runc, podman-compose and
debootstrap with ``make containers-tools``); skipped, with the reason, only where
those tools are absent or the user is not root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedcollab.client.peer_trust import fingerprint
from fedcollab.common.schema import load_schema
from fedcollab.compliance.registry import load_registry
from fedcollab.coordinator.local_grants import EXAMPLE_REGISTRY, demo_grant
from fedcollab.privacy.key_transport import PeerKeys
from tests.support.integration import REPO, make_partners, write_job

pytestmark = [pytest.mark.integration, pytest.mark.containers, pytest.mark.timeout(3600)]

DEPLOY = REPO / "deploy"
UID = 10001  # the images' fedcollab user (deploy/Containerfile.*)
PARTNERS = ("brand-1", "brand-2", "brand-3")  # the services of deploy/compose.yaml
PROBE = Path(__file__).with_name("tls_probe.py")


def _unavailable() -> str | None:
    missing = [
        t for t in ("podman", "podman-compose", "debootstrap", "runc") if not shutil.which(t)
    ]
    if missing:
        return f"{', '.join(missing)} not installed (`make containers-tools` installs them)"
    if os.geteuid() != 0:
        return "rootful Podman and debootstrap need root"
    return None


class Compose:
    """``podman-compose`` on deploy/compose.yaml under one project name, with its logs."""

    def __init__(self, root: Path, logs: Path) -> None:
        self.project = f"fctest{os.getpid()}"
        self.logs = logs
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(DEPLOY / "containers.conf"),
            "FEDCOLLAB_DEPLOY": str(root),
            "FEDCOLLAB_PEERS": "",
        }

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def compose(self, *args: str) -> None:
        cmd = ["podman-compose", "-f", str(DEPLOY / "compose.yaml"), "-p", self.project, *args]
        proc = self.run(*cmd)
        assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def exec(
        self, service: str, *args: str, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return self.run("podman", "exec", self.container(service), *args, timeout=timeout)

    def running(self, service: str) -> bool:
        proc = self.run("podman", "inspect", "-f", "{{.State.Running}}", self.container(service))
        return proc.stdout.strip() == "true"

    def log(self, service: str) -> str:
        proc = self.run("podman", "logs", self.container(service))
        return (proc.stdout + proc.stderr)[-4000:]

    def save_logs(self) -> None:
        for service in ("coordinator", *PARTNERS):
            (self.logs / f"{service}.log").write_text(self.log(service))


def _give(path: Path) -> None:
    """The containers run as uid 10001: it owns the folders mounted into them."""
    for p in [path, *path.rglob("*")]:
        os.chown(p, UID, UID)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> None:
    reason = _unavailable()
    if reason is not None:
        pytest.skip(f"containers need Podman: {reason}")
    log = tmp_path_factory.mktemp("images") / "build.log"
    with log.open("wb") as fh:
        code = subprocess.run(
            [str(DEPLOY / "build-images.sh")], stdout=fh, stderr=subprocess.STDOUT,
            timeout=3000, check=False,
        ).returncode  # fmt: skip
    assert code == 0, f"deploy/build-images.sh failed:\n{log.read_text()[-4000:]}"


@pytest.fixture
def compose(tmp_path: Path, images: None) -> Iterator[Compose]:
    logs = tmp_path / "logs"
    logs.mkdir()
    c = Compose(tmp_path / "deploy", logs)
    try:
        yield c
    finally:
        if (tmp_path / "deploy").exists():
            c.save_logs()
            c.run("podman-compose", "-f", str(DEPLOY / "compose.yaml"), "-p", c.project, "down")
            # podman-compose 1.0.3 leaves the project's network behind.
            c.run("podman", "network", "rm", "-f", f"{c.project}_default")
            left = c.run("podman", "ps", "-a", "-q", "--filter", f"name={c.project}_")
            assert left.stdout.strip() == "", f"containers left: {left.stdout}"


def test_compose_runs_an_encrypted_job(compose: Compose, tmp_path: Path) -> None:
    c = compose
    root = tmp_path / "deploy"
    ws = root / "coordinator"
    ws.mkdir(parents=True)
    _give(root)
    sources = {s.partner: s for s in make_partners(tmp_path / "data", len(PARTNERS))}
    assert sorted(sources) == sorted(PARTNERS)

    # The operator creates the workspace with the image's own fedcollab.
    init = c.run(
        "podman", "run", "--rm", "--entrypoint", "fedcollab", "-v", f"{ws}:/workspace",
        "localhost/fedcollab-coordinator:latest", "federation", "init", "/workspace",
        "--name", "containers", "--host", "coordinator",
        *(arg for p in PARTNERS for arg in ("--partner", p)),
    )  # fmt: skip
    assert init.returncode == 0, init.stdout + init.stderr
    shutil.copyfile(EXAMPLE_REGISTRY, ws / "registry.json")
    shutil.copyfile(PROBE, ws / "tls_probe.py")
    _give(ws)

    c.compose("up", "-d", "coordinator")
    # Its gateway answers TLS for the name "coordinator" on the container network once the
    # SuperLink behind it serves (the probe waits for that, up to 300 s).
    probe = c.exec(
        "coordinator", "python", "/workspace/tls_probe.py", "coordinator", "9092",
        "/workspace/ca/ca.crt", "coordinator", "300", timeout=400,
    )  # fmt: skip
    assert probe.returncode == 0, f"{probe.stdout}{probe.stderr}\n{c.log('coordinator')}"

    registry = load_registry(EXAMPLE_REGISTRY)
    for p in PARTNERS:
        reg = c.exec(
            "coordinator", "fedcollab", "federation", "register", p,
            f"/workspace/nodes/{p}/node.pub", "--audit-key", f"/workspace/nodes/{p}/audit.pub",
            "-w", "/workspace",
        )  # fmt: skip
        assert reg.returncode == 0, reg.stdout + reg.stderr
        # The partner signs its grant (here with the key the workspace made for it).
        kit = root / p
        kit.mkdir()
        demo_grant(
            partner=p, dataset=load_schema(sources[p].schema).dataset,
            audit_key=ws / "nodes" / p / "audit.key", registry=registry,
            purposes=["purchase-prediction"], out=kit / "grant.json",
        )  # fmt: skip
        shutil.copyfile(kit / "grant.json", ws / f"grant-{p}.json")
        _give(ws)
        added = c.exec("coordinator", "fedcollab", "federation", "grant",
                       f"/workspace/grant-{p}.json", "-w", "/workspace")  # fmt: skip
        assert added.returncode == 0, added.stdout + added.stderr

    peers = PeerKeys.from_json((ws / "peers.json").read_text())
    for p in PARTNERS:  # each partner compares the list with the keys it knows
        kit = root / p
        for name in ("node.key", "audit.key", "audit.pub"):  # mode kept: keys stay 0600
            shutil.copy2(ws / "nodes" / p / name, kit / name)
        shutil.copyfile(ws / "ca" / "ca.crt", kit / "ca.crt")
        shutil.copyfile(ws / "coordinator" / "audit.pub", kit / "coordinator-audit.pub")
        shutil.copyfile(ws / "peers.json", kit / "peers.json")
        shutil.copyfile(sources[p].data, kit / "data.csv")
        shutil.copyfile(sources[p].schema, kit / "schema.json")
    _give(root)
    c.env["FEDCOLLAB_PEERS"] = fingerprint(peers)
    c.compose("up", "-d")

    write_job(ws / "job.toml", Path("/workspace/schema.json"), encrypted=True,
              dealer=min(PARTNERS), round_timeout_s=300.0, startup_timeout_s=600.0)  # fmt: skip
    shutil.copyfile(sources[PARTNERS[0]].schema, ws / "schema.json")
    _give(ws)
    t0 = time.monotonic()
    submit = c.exec(
        "coordinator", "fedcollab", "job", "submit", "/workspace/job.toml", "-w", "/workspace",
        "--out", "/workspace/jobs/it", timeout=1800,
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    print(f"containers: encrypted job {elapsed:.1f} s")  # shown with -s
    if submit.returncode != 0:
        c.save_logs()
        pytest.fail(f"{submit.stdout}\n{submit.stderr}\nlogs in {c.logs}")
    out = ws / "jobs" / "it"
    assert json.loads((out / "result.json").read_text())["status"] == "completed"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rounds_run"] == 2
    assert 0.5 < metrics["final"]["test"]["auc"] <= 1.0
    assert json.loads((out / "audit.json").read_text())["cosigned_by"] == sorted(PARTNERS)
    # Every partner's own audit log, in its own container's folder, recorded the job.
    for p in PARTNERS:
        assert (root / p / "audit.db").stat().st_size > 0
        assert c.running(p), c.log(p)
