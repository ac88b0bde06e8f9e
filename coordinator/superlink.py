"""Start the coordinator (a Flower SuperLink) and register partner nodes.

The SuperLink always runs with TLS (the workspace's certificate) and with
SuperNode authentication: only nodes whose public key the operator has
registered (``fedcollab federation register``) can connect. Runtime
dependency installation is disabled: a job never installs packages on the
coordinator.

The SuperLink itself binds loopback only: Flower 1.41 serves its
unauthenticated Control API on the same port as the Fleet API, so the
federation's public address is served by :mod:`fedcollab.coordinator.fleet_gateway`,
which forwards the Fleet API alone. The workspace's ``flwr-home`` points the
operator's ``flwr`` CLI (and ``fedcollab job submit``) at the loopback port.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from fedcollab.common.errors import FederationError, WorkspaceError
from fedcollab.compliance.trail import load_verifier_key
from fedcollab.coordinator.flwr_cli import flwr_env, register_supernode
from fedcollab.coordinator.flwr_cli import tool as _tool
from fedcollab.coordinator.workspace import Workspace, check_name

#: Flower's in-memory SuperLink state (``--database``), as ``flwr.supercore.constant``
#: names it; the launcher refuses any other.
IN_MEMORY = ":flwr-in-memory:"

__all__ = [
    "check_node_journal",
    "coordinator_command",
    "flwr_env",
    "node_journal",
    "partner_audit_keys",
    "register_node",
    "registered_nodes",
    "start_superlink",
    "superlink_command",
    "wait_until_serving",
    "write_flwr_config",
    "write_peer_keys",
]


def write_flwr_config(ws: Workspace, control_port: int) -> None:
    """Point the workspace's Flower CLI config at the loopback SuperLink."""
    fed = ws.federation
    ws.flwr_home.mkdir(parents=True, exist_ok=True)
    path = ws.flwr_home / "config.toml"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        "[superlink]\n"
        f'default = "{fed.name}"\n\n'
        f"[superlink.{fed.name}]\n"
        f'address = "127.0.0.1:{control_port}"\n'
        f'root-certificates = "{ws.ca_cert.resolve()}"\n'
    )
    os.replace(tmp, path)


def superlink_command(ws: Workspace, *, internal_port: int, public: tuple[str, int]) -> list[str]:
    """``flower-superlink`` bound to loopback, serving its Fleet gateway on ``public``
    (host, port; :mod:`fedcollab.coordinator.fleet_gateway`): only the Fleet API is
    reachable from outside.

    Started through :mod:`fedcollab.coordinator.superlink_launch`: Flower's entry point
    with its in-memory state, whose node registrations the launcher journals to
    :func:`node_journal` and replays at start (same node ids), so running SuperNodes
    keep authenticating across a coordinator restart."""
    ws.state_dir.mkdir(parents=True, exist_ok=True)
    _tool("flower-superlink")  # the same installation must provide it
    return [
        sys.executable, "-m", "fedcollab.coordinator.superlink_launch",
        "--node-journal", str(node_journal(ws).resolve()),
        "--fleet-gateway", f"{public[0]}:{public[1]}",
        "--ssl-ca-certfile", str(ws.ca_cert.resolve()),
        "--ssl-certfile", str(ws.server_cert.resolve()),
        "--ssl-keyfile", str(ws.server_key.resolve()),
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
        "--host", "127.0.0.1",
        "--port", str(internal_port),
        "--database", IN_MEMORY,
    ]  # fmt: skip


def node_journal(ws: Workspace) -> Path:
    """The SuperLink's journal of registered nodes (:mod:`coordinator.node_journal`)."""
    return ws.state_dir / "superlink_nodes.json"


def check_node_journal(ws: Workspace) -> None:
    """Refuse to start a SuperLink whose journal misses a registered partner's node.

    Every node id in ``registered_nodes.json`` was journaled by the SuperLink before
    ``flwr supernode register`` answered, so a missing one means the journal was lost
    or replaced (:class:`WorkspaceError`); an unreadable journal raises the same."""
    from fedcollab.coordinator.node_journal import NodeJournal

    journal = NodeJournal(node_journal(ws))
    known = journal.load()
    missing = sorted(p for p, node_id in registered_nodes(ws).items() if node_id not in known)
    if missing:
        raise WorkspaceError(
            f"the coordinator's node journal {journal.path} lacks the registered node of "
            f"{', '.join(missing)}: their nodes could not authenticate",
            hint=f"restore {journal.path} from a backup, or remove these partners from "
            f"{_registry_path(ws)} and register their node keys again",
        )


def coordinator_command(ws: Workspace) -> list[str]:
    """The coordinator process: the Fleet gateway, which starts the SuperLink itself."""
    return [
        sys.executable, "-m", "fedcollab.coordinator.fleet_gateway",
        "--workspace", str(ws.root.resolve()),
    ]  # fmt: skip


def start_superlink(ws: Workspace, *, log: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
    """Start the coordinator (gateway + loopback SuperLink) and wait until it serves TLS.

    The public port is the SuperLink's (its gateway runs in it), not the supervisor's: a
    SuperLink whose supervisor is gone (killed; the SuperLink gets SIGTERM then, and may
    still be shutting down) is stopped here first, so the port check below and the wait
    for TLS never see that old process."""
    fed = ws.federation
    if _port_open(fed.host, fed.port):
        _stop_orphaned_runtime(ws)
    if _port_open(fed.host, fed.port):
        raise FederationError(
            f"port {fed.port} on {fed.host} is already in use",
            hint="stop the other coordinator, or create the workspace with another --port",
        )
    _tool("flower-superlink")
    proc = subprocess.Popen(
        coordinator_command(ws),
        env=flwr_env(ws),
        stdout=log if log is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until_serving(ws, timeout_s=90.0, proc=proc)
    except FederationError:
        proc.kill()
        raise
    return proc


def _stop_orphaned_runtime(ws: Workspace) -> None:
    """Stop this workspace's Flower processes if no coordinator of it runs (its lock is
    free): they are what a killed coordinator left. A live coordinator's are left alone."""
    from fedcollab.coordinator.recovery import hold_coordinator_lock, stop_leftover_runtime

    try:
        lock = hold_coordinator_lock(ws)
    except FederationError:
        return  # a coordinator of this workspace runs: the port check says so
    try:
        stop_leftover_runtime(ws.flwr_home)
    finally:
        os.close(lock)


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_until_serving(
    ws: Workspace, *, timeout_s: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until the SuperLink accepts a TLS connection verified by the workspace CA."""
    fed = ws.federation
    ctx = ssl.create_default_context(cafile=str(ws.ca_cert))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise FederationError(
                f"the SuperLink exited with code {proc.returncode} during start-up",
                hint="see the coordinator log",
            )
        try:
            with (
                socket.create_connection((fed.host, fed.port), timeout=1.0) as raw,
                ctx.wrap_socket(raw, server_hostname=fed.host),
            ):
                return
        except OSError:
            time.sleep(0.3)
    raise FederationError(
        f"the SuperLink at {fed.address} did not come up within {timeout_s:g} s",
        hint="check the coordinator log and that the port is free",
    )


def _registry_path(ws: Workspace) -> Path:
    return ws.root / "coordinator" / "registered_nodes.json"


def partner_audit_keys(ws: Workspace) -> dict[str, str]:
    """Registered partners' audit verifier keys (name -> C2SP vkey text)."""
    base = ws.root / "partners"
    if not base.is_dir():
        return {}
    return {
        d.name: (d / "audit.pub").read_text().strip()
        for d in sorted(base.iterdir())
        if (d / "audit.pub").exists()
    }


def write_peer_keys(ws: Workspace, out: Path | None = None) -> Path:
    """Write every registered partner's audit verifier key as one JSON file.

    Partners pin this file (``fedcollab node start --peer-keys``): the key
    ceremony of encrypted jobs checks every transport key and the dealer's
    signature against it. Partners should compare the key ids with their peers
    out of band, as they do for the coordinator's key.
    """
    path = out or ws.root / "peers.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(partner_audit_keys(ws), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def registered_nodes(ws: Workspace) -> dict[str, int]:
    """Partner name -> SuperNode id, as recorded at registration."""
    path = _registry_path(ws)
    if not path.exists():
        return {}
    data: dict[str, int] = json.loads(path.read_text())
    return data


def register_node(
    ws: Workspace, partner: str, public_key: Path, *, audit_key: Path | None = None
) -> int:
    """Register a partner's SuperNode public key with the running SuperLink.

    ``audit_key`` (the partner's ``audit.pub``) is kept in the workspace: the
    coordinator checks the partner's grants and cosignatures against it.
    """
    check_name("partner", partner)
    if not public_key.exists():
        raise WorkspaceError(
            f"public key {public_key} does not exist",
            hint="the partner creates it with `fedcollab node keygen` and sends node.pub",
        )
    if audit_key is not None:
        name, _ = load_verifier_key(audit_key)
        if name != partner:
            raise WorkspaceError(
                f"audit key {audit_key} belongs to {name!r}, not {partner!r}",
                hint="register each partner with its own audit.pub",
            )
    known = registered_nodes(ws)
    if partner in known:
        raise FederationError(
            f"partner {partner!r} is already registered (node {known[partner]})",
            hint="each partner registers one node key",
        )
    node_id = register_supernode(ws, public_key, name=partner)
    if audit_key is not None:
        dest = ws.partner_audit_pub(partner)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(audit_key.read_text())
        write_peer_keys(ws)
    known[partner] = node_id
    path = _registry_path(ws)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return node_id
