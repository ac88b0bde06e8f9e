"""A whole federation on one machine: coordinator and partner nodes as processes.

Used by ``fedcollab demo`` and the integration tests. Every part is the real
one: a workspace with its own CA, a SuperLink with TLS and node
authentication, each partner's key registered, and one SuperNode process per
partner on loopback. Logs go to ``<root>/logs/``.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from fedcollab.client.partner_data import PartnerSource
from fedcollab.client.supernode import NodeConfig, start_supernode
from fedcollab.common.errors import FederationError
from fedcollab.common.schema import load_schema
from fedcollab.compliance.registry import load_registry
from fedcollab.coordinator.flwr_cli import TIMEOUT_S, list_nodes
from fedcollab.coordinator.local_grants import EXAMPLE_REGISTRY, demo_grant
from fedcollab.coordinator.policy_gate import add_grant, registry_path
from fedcollab.coordinator.superlink import (
    register_node,
    registered_nodes,
    start_superlink,
)
from fedcollab.coordinator.workspace import Workspace
from fedcollab.privacy.budget_ledger import BudgetLedger

__all__ = ["LocalFederation", "free_port_block"]


class LocalFederation:
    """Context manager that starts and stops a loopback federation."""

    def __init__(
        self,
        root: Path,
        partners: Sequence[PartnerSource],
        *,
        port: int = 9092,
        node_port_base: int = 9200,
        name: str = "demo",
        registry: Path | None = EXAMPLE_REGISTRY,
        purposes: Sequence[str] = ("purchase-prediction", "user-segmentation"),
        granting: Sequence[str] | None = None,
        budget_cap: float | None = None,
        purposes_for: Mapping[str, Sequence[str]] | None = None,
        share_explanations: Sequence[str] = (),
        allow_plaintext_vertical: Sequence[str] = (),
        label_epsilon: float | None = None,
        allow_unverified_centroids: Sequence[str] = (),
    ) -> None:
        """``granting``: partners that sign a grant for ``purposes`` (default: all);
        ``purposes_for``: other purposes for named partners (e.g. vertical parties);
        ``share_explanations``: partners that let others see their feature explanations.
        ``allow_plaintext_vertical``: label holders that serve plaintext vertical jobs
        (testing and the encrypted-vs-plaintext benchmark only).
        ``allow_unverified_centroids``: partners that serve segmentation jobs without DP
        in plaintext aggregation (client/centroid_chain.py; the demo's --no-encryption).
        ``label_epsilon``: the label holders' label-DP epsilon (None: their default).
        ``budget_cap``: every partner's privacy-budget cap (epsilon) on its dataset, as
        `fedcollab budget set` would set it (None: no cap, DP jobs are refused)."""
        self.root = root
        self.partners = list(partners)
        self.port = port
        self.node_port_base = node_port_base
        self.name = name
        self.registry = registry
        self.purposes = tuple(purposes)
        self.granting = set(granting) if granting is not None else {p.partner for p in partners}
        self.budget_cap = budget_cap
        self.purposes_for = dict(purposes_for or {})
        self.share_explanations = set(share_explanations)
        self.allow_plaintext_vertical = set(allow_plaintext_vertical)
        self.allow_unverified_centroids = set(allow_unverified_centroids)
        self.label_epsilon = label_epsilon
        self.logs = root / "logs"
        self.workspace: Workspace | None = None
        self.superlink: subprocess.Popen[bytes] | None = None
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def ws(self) -> Workspace:
        assert self.workspace is not None, "federation not started"
        return self.workspace

    def start(self) -> LocalFederation:
        self.logs.mkdir(parents=True, exist_ok=True)
        ws_dir = self.root / "workspace"
        if (ws_dir / "federation.json").exists():
            self.workspace = Workspace.open(ws_dir)
        else:
            self.workspace = Workspace.create(
                ws_dir,
                name=self.name,
                port=self.port,
                partners=tuple(p.partner for p in self.partners),
            )
        self.superlink = start_superlink(self.ws, log=(self.logs / "coordinator.log").open("ab"))
        if self.registry is not None:
            shutil.copyfile(self.registry, registry_path(self.ws))
        for src in self.partners:
            node_dir = self.ws.node_dir(src.partner)
            register_node(
                self.ws, src.partner, node_dir / "node.pub", audit_key=node_dir / "audit.pub"
            )
            if self.registry is not None and src.partner in self.granting:
                demo_grant(
                    partner=src.partner,
                    dataset=load_schema(src.schema).dataset,
                    audit_key=node_dir / "audit.key",
                    registry=load_registry(self.registry),
                    purposes=tuple(self.purposes_for.get(src.partner, self.purposes)),
                    out=node_dir / "grant.json",
                )
                add_grant(self.ws, node_dir / "grant.json")
            if self.budget_cap is not None:
                with BudgetLedger.open(self.budget_db(src.partner)) as ledger:
                    ledger.set_cap(
                        load_schema(src.schema).dataset, epsilon_cap=self.budget_cap, delta=1e-5
                    )
        for i, src in enumerate(self.partners):
            self.start_node(src, index=i)
        return self

    def start_node(self, src: PartnerSource, *, index: int) -> subprocess.Popen[bytes]:
        cfg = NodeConfig(
            source=src,
            superlink=self.ws.federation.address,
            ca_cert=self.ws.ca_cert,
            node_key=self.ws.node_dir(src.partner) / "node.key",
            port=self.node_port_base + index,
            audit_db=self.ws.node_dir(src.partner) / "audit.db",
            audit_key=self.ws.node_dir(src.partner) / "audit.key",
            coordinator_key=self.ws.audit_pub,
            grant=self.ws.node_dir(src.partner) / "grant.json",
            peer_keys=self.ws.root / "peers.json",
            share_explanations=src.partner in self.share_explanations,
            # The demo's partners run its jobs without DP on their capped datasets too:
            # their explicit choice (their DP job is the one the ledgers charge).
            dp_only=False,
            allow_plaintext_vertical=src.partner in self.allow_plaintext_vertical,
            allow_unverified_centroids=src.partner in self.allow_unverified_centroids,
            label_epsilon=self.label_epsilon,
        )
        proc = start_supernode(cfg, log=(self.logs / f"{src.partner}.log").open("ab"))
        self.nodes[src.partner] = proc
        return proc

    def kill_node(self, partner: str) -> None:
        """SIGKILL a partner's node and every process it started (its ClientApps)."""
        proc = self.nodes[partner]
        _kill_group(proc, signal.SIGKILL)

    def restart_node(self, partner: str) -> subprocess.Popen[bytes]:
        """Stop a partner's node (SIGTERM) and start it again with the same files."""
        proc = self.nodes[partner]
        _kill_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            proc.wait(timeout=5)
        index = [p.partner for p in self.partners].index(partner)
        return self.start_node(self.partners[index], index=index)

    def wait_online(
        self, partners: Sequence[str] | None = None, *, timeout_s: float = 300.0
    ) -> None:
        """Wait until the SuperLink reports these partners' nodes online (default: all).

        A job discovers the partners online when it starts; tests and demos that need
        every partner in a job wait for this first.
        """
        ids = registered_nodes(self.ws)
        names = list(partners or [s.partner for s in self.partners])
        wanted = {str(ids[p]): p for p in names}
        deadline = time.monotonic() + timeout_s
        last_error = ""
        while True:
            for name in names:
                proc = self.nodes.get(name)
                if proc is not None and proc.poll() is not None:
                    raise FederationError(
                        f"the node of {name} exited with code {proc.returncode} before it "
                        f"came online\n{_log_tail(self.logs / f'{name}.log')}",
                        hint=f"see {self.logs / f'{name}.log'}",
                    )
            if self.superlink is not None and self.superlink.poll() is not None:
                raise FederationError(
                    f"the coordinator exited with code {self.superlink.returncode}\n"
                    f"{_log_tail(self.logs / 'coordinator.log')}",
                    hint=f"see {self.logs / 'coordinator.log'}",
                )
            left = deadline - time.monotonic()
            try:
                # Never past the wait's own deadline; `flwr`'s own bound (300 s,
                # coordinator/flwr_cli.py: its start-up took over 60 s at load 46) otherwise.
                listed = list_nodes(self.ws, timeout=max(min(left, TIMEOUT_S), 1.0))
                online = {str(n.node_id) for n in listed if n.online}
                last_error = ""
            except FederationError as exc:  # the SuperLink is still starting: ask again
                online = set()
                last_error = exc.message
            if set(wanted) <= online:
                return
            if time.monotonic() >= deadline:
                offline = sorted(p for node_id, p in wanted.items() if node_id not in online)
                tails = "\n".join(
                    _log_tail(self.logs / f"{name}.log") for name in [*offline, "coordinator"]
                )
                raise FederationError(
                    f"{len(offline)} partner node(s) not online after {timeout_s:g} s "
                    f"({', '.join(offline)})"
                    + (f"; the last node listing failed: {last_error}" if last_error else "")
                    + f"\n{tails}",
                    hint=f"see the node logs in {self.logs}",
                )
            time.sleep(1.0)

    def budget_db(self, partner: str) -> Path:
        """The partner node's privacy-budget ledger (``fedcollab budget``)."""
        return self.ws.node_dir(partner) / "budget.db"

    def stop(self) -> None:
        for proc in self.nodes.values():
            _kill_group(proc, signal.SIGTERM)
        if self.superlink is not None:
            _kill_group(self.superlink, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in [*self.nodes.values(), *([self.superlink] if self.superlink else [])]:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _kill_group(proc, signal.SIGKILL)
                proc.wait(timeout=5)

    def __enter__(self) -> LocalFederation:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def free_port_block(n: int = 1) -> int:
    """A base port such that ``base .. base + n - 1`` are free on loopback now, below
    Linux's ephemeral range (32768 up), for a federation's public port or its nodes'
    runtime APIs (base + partner index): a taken port stops that process at start."""
    for _ in range(200):
        base = random.randrange(20000, 32768 - n, 10)
        try:
            for port in range(base, base + n):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise FederationError(
        f"no block of {n} free loopback ports found in 20000-32767",
        hint="stop other federations or services on this machine",
    )


def _log_tail(path: Path, *, lines: int = 25) -> str:
    """The last lines of a log, headed by its name (for an error a test or CI prints)."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as exc:
        return f"--- {path.name}: unreadable ({exc.strerror})"
    return "\n".join([f"--- last lines of {path.name}:", *text])


def _kill_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
