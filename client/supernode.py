"""Start a partner's node: validate local data, then run a Flower SuperNode.

The data file is loaded and validated against its schema *before* the
SuperNode starts, so a partner with a broken file never connects to the
coordinator: nothing reaches the network. The SuperNode authenticates with
the partner's node key and verifies the coordinator's TLS certificate
against the federation CA.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fedcollab.client.node_settings import NodeSettings
from fedcollab.client.partner_data import PartnerSource
from fedcollab.client.run_contract import DEFAULT_MAX_RUNS_PER_DAY
from fedcollab.client.runtime_folder import NodeState, prepare_state
from fedcollab.common.dataset import Dataset, load_dataset
from fedcollab.common.errors import FederationError, WorkspaceError
from fedcollab.common.schema import load_schema

__all__ = [
    "NodeConfig",
    "explain_exit",
    "is_refusal",
    "node_command",
    "start_supernode",
    "validate_partner_data",
]

#: What flower-supernode prints when the coordinator does not know its key.
_NOT_REGISTERED = "Failed to activate SuperNode"


@dataclass(frozen=True)
class NodeConfig:
    """Everything a partner's node needs; no field is ever sent to the coordinator."""

    source: PartnerSource
    superlink: str
    ca_cert: Path
    node_key: Path
    port: int
    #: This partner's audit trail (None: the node keeps none and cannot cosign).
    audit_db: Path | None = None
    audit_key: Path | None = None
    #: The coordinator's audit verifier key, pinned, to check what it asks to cosign.
    coordinator_key: Path | None = None
    #: This partner's signed dataset grant (without one the node refuses every job).
    grant: Path | None = None
    #: The partners' audit keys, pinned (encrypted jobs' key ceremony checks them).
    peer_keys: Path | None = None
    #: The privacy-budget ledger (None: budget.db beside the audit log).
    budget_db: Path | None = None
    #: Vertical jobs: show this partner's per-feature explanation to the others
    #: (default: only its party-level importance leaves the node).
    share_explanations: bool = False
    #: Vertical joint inference at the label holder: ids to score, one per line
    #: (default: every row of its data).
    vertical_queries: Path | None = None
    #: Serve only differentially private jobs (client.admission.check_dp_policy);
    #: None: only on a dataset with a privacy-budget cap.
    dp_only: bool | None = None
    #: Runs accepted in any 24 hours (client.run_contract).
    max_runs_per_day: int = DEFAULT_MAX_RUNS_PER_DAY
    #: Vertical label holder: serve plaintext jobs (testing only; client.vertical).
    allow_plaintext_vertical: bool = False
    allow_unverified_centroids: bool = False
    #: Vertical label holder: the label-DP epsilon of its residuals per job (None: the
    #: default of client.vertical_training).
    label_epsilon: float | None = None
    #: How this node splits its rows (a partner's constant: client.run_contract).
    split_validation: float = 0.1
    split_test: float = 0.2
    split_seed: int = 0
    #: Give up connecting to the coordinator after this long.
    connect_timeout_s: float = 300.0
    #: The node's private runtime folder (settings, runtime TLS, executor secret);
    #: default: ``runtime/`` beside the node key.
    state_dir: Path | None = None

    @property
    def runtime_dir(self) -> Path:
        return self.state_dir or self.node_key.parent / "runtime"


def validate_partner_data(source: PartnerSource) -> Dataset:
    """Load and validate the partner's file (raises DataValidationError/SchemaError)."""
    return load_dataset(source.data, load_schema(source.schema))


def node_settings(cfg: NodeConfig) -> dict[str, str]:
    """What the ClientApp sees as its node config (kept in the 0600 settings file),
    validated by :class:`client.node_settings.NodeSettings` (SchemaError)."""
    src = cfg.source
    items: dict[str, object] = {"partner": src.partner, "data": src.data, "schema": src.schema}
    if cfg.audit_db is not None and cfg.audit_key is not None:
        items.update({"audit-db": cfg.audit_db, "audit-key": cfg.audit_key})
    if cfg.coordinator_key is not None:
        items["coordinator-key"] = cfg.coordinator_key
    if cfg.grant is not None:
        items["grant"] = cfg.grant
    if cfg.peer_keys is not None:
        items["peer-keys"] = cfg.peer_keys
    if cfg.budget_db is not None:
        items["budget-db"] = cfg.budget_db
    if cfg.share_explanations:
        items["share-explanations"] = "true"
    if cfg.vertical_queries is not None:
        items["vertical-queries"] = cfg.vertical_queries
    if cfg.allow_plaintext_vertical:
        items["allow-plaintext-vertical"] = "true"
    if cfg.allow_unverified_centroids:
        items["allow-unverified-centroids"] = "true"
    if cfg.label_epsilon is not None:
        items["label-epsilon"] = repr(cfg.label_epsilon)
    items.update(
        {
            "dp-only": {None: "auto", True: "true", False: "false"}[cfg.dp_only],
            "max-runs-per-day": str(cfg.max_runs_per_day),
            "split-validation": repr(cfg.split_validation),
            "split-test": repr(cfg.split_test),
            "split-seed": str(cfg.split_seed),
        }
    )
    # The same strict model the ClientApp checks every request with (client.node_settings):
    # a malformed setting (a split fraction out of range, ...) stops `node start` here.
    return NodeSettings.parse(
        {k: str(v.resolve() if isinstance(v, Path) else v) for k, v in items.items()}
    ).as_config()


def node_command(cfg: NodeConfig) -> list[str]:
    """Prepare the node's runtime folder; the argv that runs the node (no secret paths)."""
    for path, what in ((cfg.ca_cert, "federation CA certificate"), (cfg.node_key, "node key")):
        if not path.exists():
            raise WorkspaceError(
                f"{what} {path} does not exist",
                hint="the operator sends ca.crt; create the node key with `fedcollab node keygen`",
            )
    _check_port_free(cfg.port)
    # Flower's flower-supernode, with a pull interval that follows the job
    # (client/fleet_poll.py: Flower waits a fixed 3 s between empty pulls).
    supernode = [
        sys.executable, "-m", "fedcollab.client.fleet_poll",
        "--superlink", cfg.superlink,
        "--root-certificates", str(cfg.ca_cert.resolve()),
        "--auth-supernode-private-key", str(cfg.node_key.resolve()),
        "--max-retries", "20",
        "--max-wait-time", str(cfg.connect_timeout_s),
    ]  # fmt: skip
    state: NodeState = prepare_state(
        cfg.runtime_dir,
        node_config=node_settings(cfg),
        supernode=supernode,
        runtime_port=cfg.port,
    )
    return [sys.executable, "-m", "fedcollab.client.node_runtime", "--state-dir", str(state.root)]


def _check_port_free(port: int) -> None:
    """Refuse a runtime port something on this host already listens on (another node):
    the SuperNode would fail to bind it, or this node's executor reach the other's."""
    with socket.socket() as sock:
        # As the servers bind it: a port left in TIME_WAIT by this node's last run is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise FederationError(
                f"port {port} on 127.0.0.1, this node's local runtime API, is in use "
                f"({exc.strerror}): another node on this host?",
                hint="pass --port with a free port (each node on one host needs its own)",
            ) from exc


def start_supernode(cfg: NodeConfig, *, log: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
    """Validate the data, then start the SuperNode in the background."""
    validate_partner_data(cfg.source)
    return subprocess.Popen(
        node_command(cfg),
        stdout=log if log is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def is_refusal(log_line: str) -> bool:
    """Whether a SuperNode log line says the coordinator refused this node's key."""
    return _NOT_REGISTERED in log_line


def explain_exit(returncode: int, log_text: str) -> FederationError:
    """Turn a SuperNode's exit into a typed error that says what to do."""
    if _NOT_REGISTERED in log_text:
        return FederationError(
            "the coordinator refused this node: its key is not registered",
            hint="send node.pub to the operator; they run `fedcollab federation register`",
        )
    if "address already in use" in log_text.lower():
        return FederationError(
            f"the SuperNode exited with code {returncode}: its local port is in use",
            hint="pass --port with a free port (each node on one host needs its own)",
        )
    return FederationError(
        f"the SuperNode exited with code {returncode}",
        hint="check the coordinator address, the CA certificate and the node log",
    )
