"""An outsider and a malicious coordinator against real SuperLink/SuperNode processes.

Attack (issue 13, point 1): Flower 1.41 serves its unauthenticated Control API
on the SuperLink's port. Holding only the public ``ca.crt`` and a fresh
``FLWR_HOME``, an outsider ran ``flwr run`` with its own app: the ServerApp
ran on the coordinator host, the ClientApp on the partner's node with the
partner's node config. ``flwr list`` and ``flwr supernode ls`` worked too.

Defence: the public address forwards only the Fleet API
(:mod:`fedcollab.coordinator.fleet_gateway`); partner nodes run only their
installed ClientApp and refuse, and log, any other app
(:mod:`fedcollab.client.node_runtime`); node settings are not on argv.

Every wait here is on an event (a process exit, a file, a trail entry).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fedcollab.compliance.trail import Trail
from fedcollab.coordinator.superlink import flwr_env
from fedcollab.federation.local_federation import LocalFederation
from tests.support.integration import BIN, free_port, make_partners

pytestmark = pytest.mark.integration

_APP = """
import json
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

MARKS = Path({marks!r})

server = ServerApp()
client = ClientApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    (MARKS / "server-ran").write_text("the outsider's ServerApp ran on the coordinator")
    nodes = list(grid.get_node_ids())
    msgs = [
        Message(RecordDict({{"q": ConfigRecord({{"x": 1}})}}), dst_node_id=n, message_type="query")
        for n in nodes
    ]
    replies = list(grid.send_and_receive(msgs, timeout=120))
    out = [{{"error": r.has_error(), "content": str(r.content) if r.has_content() else ""}}
           for r in replies]
    (MARKS / "replies.json").write_text(json.dumps(out))


@client.query()
def steal(msg: Message, context: Context) -> Message:
    stolen = json.dumps(dict(context.node_config))
    (MARKS / "client-ran").write_text(stolen)
    return Message(RecordDict({{"row": ConfigRecord({{"node_config": stolen}})}}), reply_to=msg)
"""

_PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "harmless-analytics"
version = "1.0.0"
dependencies = []

[tool.flwr.app]
publisher = "outsider"

[tool.flwr.app.components]
serverapp = "outsider_app:server"
clientapp = "outsider_app:client"

[tool.flwr.app.config]
"""


@pytest.fixture(scope="module")
def tool_path_module() -> Iterator[None]:
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{BIN}{os.pathsep}{old}"
    yield
    os.environ["PATH"] = old


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory, tool_path_module: None
) -> Iterator[LocalFederation]:
    root = tmp_path_factory.mktemp("fed-outsider")
    partners = make_partners(root, 1)
    base = free_port()
    with LocalFederation(
        root / "federation", partners, port=free_port(), node_port_base=base
    ) as fed:
        fed.wait_online()
        yield fed


@pytest.fixture(scope="module")
def foreign_app(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("outsider")
    marks = base / "marks"
    marks.mkdir()
    app = base / "app"
    app.mkdir()
    (app / "pyproject.toml").write_text(_PYPROJECT)
    (app / "outsider_app.py").write_text(_APP.format(marks=str(marks)))
    return app, marks


def _outsider_env(fed: LocalFederation, home: Path) -> dict[str, str]:
    """A fresh FLWR_HOME that knows only the public address and the public ca.crt."""
    home.mkdir(parents=True, exist_ok=True)
    ca = home / "ca.crt"
    ca.write_bytes(fed.ws.ca_cert.read_bytes())
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "target"\n\n[superlink.target]\n'
        f'address = "{fed.ws.federation.address}"\nroot-certificates = "{ca}"\n'
    )
    return {**os.environ, "FLWR_HOME": str(home)}


def _flwr(args: list[str], env: dict[str, str]) -> tuple[int, dict[str, object]]:
    proc = subprocess.run(
        [str(BIN / "flwr"), *args, "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        reply = json.loads(proc.stdout)
    except ValueError:
        reply = {}
    return proc.returncode, reply


def _wait_for(what: str, probe: Callable[[], bool], timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def _trail_events(fed: LocalFederation, partner: str) -> list[dict[str, object]]:
    node = fed.ws.node_dir(partner)
    if not (node / "audit.db").exists():
        return []
    with Trail.open(node / "audit.db", node / "audit.key", actor=partner) as trail:
        return [json.loads(raw) for raw in trail.log.entries()]


@pytest.mark.parametrize(
    "command",
    [["list", "target"], ["supernode", "ls", "target"]],
    ids=["flwr-list", "flwr-supernode-ls"],
)
def test_outsider_cannot_list_runs_or_nodes(
    federation: LocalFederation, tmp_path: Path, command: list[str]
) -> None:
    env = _outsider_env(federation, tmp_path / "home")
    code, reply = _flwr(command, env)
    assert reply.get("success") is not True, reply
    assert "nodes" not in reply and "runs" not in reply
    assert "only the Fleet API" in str(reply.get("error-message", "")), (code, reply)
    # The operator, on the coordinator host, still sees the node.
    code, reply = _flwr(["supernode", "ls", federation.ws.federation.name], flwr_env(federation.ws))
    assert reply.get("success") is True and reply.get("nodes"), reply


def test_outsider_run_is_refused_at_the_coordinator(
    federation: LocalFederation, foreign_app: tuple[Path, Path], tmp_path: Path
) -> None:
    app, marks = foreign_app
    env = _outsider_env(federation, tmp_path / "home")
    code, reply = _flwr(["run", str(app), "target"], env)
    assert reply.get("success") is not True and "run-id" not in reply, reply
    assert "only the Fleet API" in str(reply.get("error-message", "")), (code, reply)
    # Nothing was queued: the operator's own run list is empty.
    _, runs = _flwr(["list", federation.ws.federation.name], flwr_env(federation.ws))
    assert runs.get("success") is True and not runs.get("runs"), runs
    assert not (marks / "server-ran").exists()
    assert not (marks / "client-ran").exists()


def test_foreign_app_reaching_a_node_is_refused_and_logged(
    federation: LocalFederation, foreign_app: tuple[Path, Path]
) -> None:
    """A malicious coordinator (the operator's loopback Control API) runs a foreign app."""
    app, marks = foreign_app
    partner = federation.partners[0].partner
    code, reply = _flwr(["run", str(app), federation.ws.federation.name], flwr_env(federation.ws))
    assert reply.get("success") is True, (code, reply)
    # The ServerApp runs on the coordinator (the operator's choice) ...
    _wait_for("the foreign ServerApp", (marks / "server-ran").exists)
    # ... the partner's node decides: it refuses and logs (or, before the fix, ran it) ...
    _wait_for(
        "the partner's verdict",
        lambda: (
            (marks / "client-ran").exists()
            or any(e.get("type") == "run.refused" for e in _trail_events(federation, partner))
        ),
    )
    _wait_for("the ServerApp's replies", (marks / "replies.json").exists)
    # ... and the foreign ClientApp never ran at the partner.
    assert not (marks / "client-ran").exists(), (marks / "client-ran").read_text()
    replies = json.loads((marks / "replies.json").read_text())
    assert replies and all(r["error"] for r in replies), replies
    assert "node_config" not in json.dumps(replies)
    refused = [e for e in _trail_events(federation, partner) if e.get("type") == "run.refused"]
    body = refused[-1]["body"]
    assert isinstance(body, dict)
    assert body["app"] == "outsider/harmless-analytics" and body["reason"] and body["fab_hash"]


def _cmdlines_in_group(pgid: int) -> list[str]:
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.getpgid(int(pid)) != pgid:
                continue
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ProcessLookupError):
            continue
        out.append(raw.replace(b"\0", b" ").decode(errors="replace"))
    return out


def test_no_data_key_or_grant_path_on_any_command_line(federation: LocalFederation) -> None:
    src = federation.partners[0]
    node_dir = federation.ws.node_dir(src.partner)
    cmdlines = _cmdlines_in_group(federation.nodes[src.partner].pid)
    # The node: its executor with the SuperNode in one process (client/runtime_local.py).
    assert any("fedcollab.client.node_runtime" in c for c in cmdlines), cmdlines
    secrets = [
        str(src.data.resolve()),
        str(src.schema.resolve()),
        str((node_dir / "audit.key").resolve()),
        str((node_dir / "audit.db").resolve()),
        str((node_dir / "grant.json").resolve()),
        str((node_dir / "budget.db").resolve()),
        str(federation.ws.root.resolve() / "peers.json"),
        "--node-config",
        "--insecure",
    ]
    for line in cmdlines:
        for secret in secrets:
            assert secret not in line, (secret, line)
    settings = node_dir / "runtime" / "settings.json"
    assert settings.stat().st_mode & 0o077 == 0
    assert str(src.data.resolve()) in settings.read_text()
