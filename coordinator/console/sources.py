"""Read-only views of partners, grants and privacy-budget ledgers for the console.

Nothing here writes: a partner's ledger is opened with SQLite's ``mode=ro``
(:class:`privacy.budget_ledger.BudgetLedger` itself would create tables and
take the write lock), grants are read and their signatures checked, and node
status comes from ``flwr supernode ls`` (cached for a few seconds) or, when the
SuperLink does not answer, from the jobs' progress events.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fedcollab.common.errors import FedcollabError
from fedcollab.common.job_files import read_progress
from fedcollab.common.keys import parse_verifier_key
from fedcollab.compliance.grants import load_signed_grant, verify_grant
from fedcollab.coordinator.console.jobs import JobCatalog, job_participants
from fedcollab.coordinator.flwr_cli import list_nodes
from fedcollab.coordinator.policy_gate import grant_path
from fedcollab.coordinator.superlink import partner_audit_keys, registered_nodes
from fedcollab.coordinator.workspace import Workspace
from fedcollab.privacy.budget_ledger import SCHEMA_VERSION, BudgetLedger

__all__ = ["NodeStatus", "partner_grants", "partners", "read_ledger"]

_PROBE_TTL_S = 10.0


def read_ledger(partner: str, path: Path) -> dict[str, Any]:
    """A partner's budgets and charges, read without writing to the file."""
    out: dict[str, Any] = {"partner": partner, "datasets": [], "charges": [], "error": None}
    if not path.is_file():
        out["error"] = "ledger file not found"
        return out
    try:
        db = sqlite3.connect(
            f"file:{quote(str(path.resolve()))}?mode=ro",
            uri=True,
            isolation_level=None,
            timeout=5.0,
            check_same_thread=False,
        )
    except sqlite3.Error as exc:
        out["error"] = f"cannot open: {exc}"
        return out
    ledger = BudgetLedger(path, db)  # the constructor only wraps the read-only connection
    try:
        version = db.execute("SELECT version FROM schema_version").fetchall()
        if [tuple(r) for r in version] != [(SCHEMA_VERSION,)]:
            out["error"] = f"not a budget ledger of schema version {SCHEMA_VERSION}"
            return out
        out["datasets"] = [
            {
                "dataset": b.dataset,
                "cap_epsilon": b.cap_epsilon,
                "delta": b.delta,
                "spent_epsilon": b.spent_epsilon,
                "remaining_epsilon": b.remaining_epsilon,
                "charges": b.charges,
            }
            for b in ledger.datasets()
        ]
        out["charges"] = [
            {
                "dataset": c.dataset,
                "job": c.job,
                "run": c.run,
                "step": c.step,
                "epsilon_before": c.epsilon_before,
                "epsilon_after": c.epsilon_after,
                "recorded_at": c.recorded_at,
            }
            for c in ledger.charges()
        ]
    except (sqlite3.Error, FedcollabError) as exc:
        out["error"] = f"unreadable: {exc}"
    finally:
        ledger.close()
    return out


def partner_grants(ws: Workspace, partner: str) -> list[dict[str, Any]]:
    """The partner's signed grant(s) held by the coordinator, with their signature status."""
    path = grant_path(ws, partner)
    if not path.is_file():
        return []
    try:
        signed = load_signed_grant(path)
        keys = partner_audit_keys(ws)
        if partner not in keys:
            raise FedcollabError(f"no registered audit key for {partner!r}")
        verify_grant(signed, parse_verifier_key(keys[partner])[1])
        status = "valid signature"
    except FedcollabError as exc:
        return [{"dataset": None, "purposes": [], "status": f"FAILED: {exc.message}"}]
    g = signed.grant
    return [
        {
            "dataset": g.dataset,
            "dataset_hash": g.dataset_hash,
            "purposes": list(g.purposes),
            "valid_from": g.valid_from.isoformat(),
            "valid_until": g.valid_until.isoformat(),
            "consents": [
                {"purpose": c.purpose, "kind": str(c.kind), "subjects": c.subjects_covered}
                for c in g.consents
            ],
            "status": status,
        }
    ]


class NodeStatus:
    """Which registered nodes the SuperLink reports online (cached ``flwr supernode ls``)."""

    def __init__(self, ws: Workspace, *, enabled: bool) -> None:
        self.ws = ws
        self.enabled = enabled
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, str] | None] = (0.0, None)

    def online(self) -> dict[str, str] | None:
        """Node id -> status, or None if the SuperLink could not be asked."""
        if not self.enabled:
            return None
        with self._lock:
            at, value = self._cached
            if time.monotonic() - at < _PROBE_TTL_S:
                return value
            value = self._probe()
            self._cached = (time.monotonic(), value)
            return value

    def _probe(self) -> dict[str, str] | None:
        try:
            nodes = list_nodes(self.ws, timeout=15)
        except FedcollabError:
            return None
        return {str(n.node_id): n.status for n in nodes}


def partners(ws: Workspace, catalog: JobCatalog, nodes: NodeStatus) -> list[dict[str, Any]]:
    """Registered partners with status, last job and datasets seen in model cards."""
    ids = registered_nodes(ws)
    names = sorted(set(ids) | set(partner_audit_keys(ws)))
    online = nodes.online()
    last: dict[str, dict[str, Any]] = {}
    datasets: dict[str, set[str]] = {n: set() for n in names}
    for ref in reversed(catalog.refs()):  # oldest first, so the newest job wins
        events = read_progress(ref.dir)[0]
        for name in job_participants(ref, events) & set(names):
            state = "named"
            for ev in events:
                if ev.get("event") == "partners" and name in ev.get("partners", []):
                    state = "joined"
                if ev.get("event") == "dropout" and ev.get("partner") == name:
                    state = "dropped"
            last[name] = {"job": ref.id, "state": state}
        try:
            card = json.loads((ref.dir / "model_card.json").read_text(encoding="utf-8"))
            for p in card.get("partners", []):
                if p.get("name") in datasets and p.get("dataset_hash"):
                    datasets[p["name"]].add(str(p["dataset_hash"]))
        except (OSError, ValueError, AttributeError):
            pass
    rows = []
    for name in names:
        node_id = ids.get(name)
        if online is not None and node_id is not None:
            status = online.get(str(node_id)) or "offline"
            source = "superlink"
        else:
            status = "registered" if node_id is not None else "key only"
            source = "jobs"
        grants = partner_grants(ws, name)
        rows.append(
            {
                "partner": name,
                "node_id": node_id,
                "status": status,
                "status_source": source,
                "last_job": last.get(name),
                "dataset": grants[0]["dataset"] if grants else None,
                "dataset_hashes": sorted(datasets[name]),
                "grants": grants,
            }
        )
    return rows
