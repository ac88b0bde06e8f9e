"""The coordinator's journal of registered partner nodes: its format, reader and writer.

The SuperLink keeps its state in memory (:mod:`coordinator.superlink_launch`); what
must outlive a coordinator restart is the node registrations, so a running
partner's SuperNode keeps authenticating with its key and node id. Every node the
Control API creates or deletes is written here (:class:`NodeJournal`: one JSON file,
version :data:`JOURNAL_VERSION`, tmp + fsync + rename, 0600) before the API answers,
and replayed into a new SuperLink's state before it serves. Reader and writer live
together so the format cannot drift between them. A journal that cannot be read is a
:class:`~fedcollab.common.errors.WorkspaceError` (the SuperLink does not start
without its nodes); a workspace from before the journal has its nodes imported once
from Flower's SQLite state (:data:`LEGACY_DATABASE`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=no-name-in-module
from flwr.supercore.utils import int64_to_uint64

from fedcollab.common.atomic import write_atomic
from fedcollab.common.errors import WorkspaceError

__all__ = ["JOURNAL_VERSION", "LEGACY_DATABASE", "NodeJournal", "NodeRecord"]

JOURNAL_VERSION = 1
#: The SQLite state file of a workspace from before the journal, beside the journal.
LEGACY_DATABASE = "superlink.db"

_HINT = (
    "restore {path} from a backup, or move it aside and register every partner's node "
    "key again (`fedcollab federation register`); the partners then restart their nodes"
)


@dataclass(frozen=True)
class NodeRecord:
    """One node as the Control API created it (and when it was unregistered, if so)."""

    node_id: int
    owner_aid: str
    owner_name: str
    public_key: bytes
    heartbeat_interval: float
    registered_at: str
    name: str | None = None
    location: str | None = None
    unregistered_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "owner_aid": self.owner_aid,
            "owner_name": self.owner_name,
            "public_key": base64.b64encode(self.public_key).decode("ascii"),
            "heartbeat_interval": self.heartbeat_interval,
            "registered_at": self.registered_at,
            "name": self.name,
            "location": self.location,
            "unregistered_at": self.unregistered_at,
        }

    @classmethod
    def from_json(cls, data: Any) -> NodeRecord:
        """Parse one entry; ``ValueError`` / ``TypeError`` / ``KeyError`` if malformed."""
        if not isinstance(data, dict):
            raise TypeError("a node entry is not an object")
        node_id = data["node_id"]
        if type(node_id) is not int or not 0 < node_id < 2**64:
            raise ValueError(f"bad node_id {node_id!r}")
        interval = data["heartbeat_interval"]
        if type(interval) not in (int, float):
            raise TypeError(f"bad heartbeat_interval {interval!r}")
        texts = {k: data[k] for k in ("owner_aid", "owner_name", "registered_at", "public_key")}
        optional = {k: data.get(k) for k in ("name", "location", "unregistered_at")}
        if not all(isinstance(v, str) for v in texts.values()) or not all(
            v is None or isinstance(v, str) for v in optional.values()
        ):
            raise TypeError("a text field is not a string")
        key = base64.b64decode(texts["public_key"], validate=True)
        if not key:
            raise ValueError("empty public_key")
        return cls(
            node_id=node_id,
            owner_aid=texts["owner_aid"],
            owner_name=texts["owner_name"],
            public_key=key,
            heartbeat_interval=float(interval),
            registered_at=texts["registered_at"],
            **optional,
        )

    @classmethod
    def of(cls, node: NodeInfo) -> NodeRecord:
        """The record of a node of Flower's in-memory state."""
        return cls(
            node_id=node.node_id,
            owner_aid=node.owner_aid,
            owner_name=node.owner_name,
            public_key=node.public_key,
            heartbeat_interval=node.heartbeat_interval,
            registered_at=node.registered_at,
            name=node.name if node.HasField("name") else None,
            location=node.location if node.HasField("location") else None,
            unregistered_at=node.unregistered_at or None,
        )


class NodeJournal:
    """The SuperLink's registered nodes, one JSON file rewritten atomically on each change."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[int, NodeRecord]:
        """The journal's nodes by id; a missing journal is empty unless a legacy
        ``superlink.db`` lies beside it, whose nodes are then imported (and written).

        Raises :class:`WorkspaceError` if the journal cannot be read or parsed."""
        if not self.path.exists():
            legacy = self.path.parent / LEGACY_DATABASE
            if not legacy.exists():
                return {}
            imported = _legacy_nodes(legacy)
            self.write(imported.values())
            return imported
        try:
            data = json.loads(self.path.read_bytes())
            if not isinstance(data, dict) or data.get("version") != JOURNAL_VERSION:
                raise ValueError(f"not a version-{JOURNAL_VERSION} node journal")
            entries = data["nodes"]
            if not isinstance(entries, list):
                raise TypeError("'nodes' is not a list")
            records = [NodeRecord.from_json(e) for e in entries]
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise WorkspaceError(
                f"the coordinator's node journal {self.path} is unreadable or corrupt "
                f"({type(exc).__name__}: {exc}); the SuperLink does not start without "
                "its registered nodes",
                hint=_HINT.format(path=self.path),
            ) from exc
        by_id = {r.node_id: r for r in records}
        if len(by_id) != len(records) or len({r.public_key for r in records}) != len(records):
            raise WorkspaceError(
                f"the coordinator's node journal {self.path} lists a node id or key twice",
                hint=_HINT.format(path=self.path),
            )
        return by_id

    def write(self, records: Iterable[NodeRecord]) -> None:
        """Replace the journal (tmp file, fsync, rename, fsync of the folder; mode 0600)."""
        body = {
            "version": JOURNAL_VERSION,
            "nodes": [r.to_json() for r in sorted(records, key=lambda r: r.node_id)],
        }
        data = (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, data, private=True)


def _legacy_nodes(db: Path) -> dict[int, NodeRecord]:
    """The nodes of Flower 1.41's SQLite state (``node`` table), read-only."""
    try:
        conn = sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True)
        with contextlib.closing(conn):
            rows = conn.execute(
                "SELECT node_id, owner_aid, owner_name, public_key, heartbeat_interval,"
                " registered_at, name, location, unregistered_at FROM node"
                " WHERE node_id IS NOT NULL AND public_key IS NOT NULL"
            ).fetchall()
    except sqlite3.Error as exc:
        raise WorkspaceError(
            f"cannot import the registered nodes of {db} ({exc})",
            hint=f"restore {db}, or move it aside and register every partner's node key again",
        ) from exc
    records = [
        NodeRecord(
            node_id=int64_to_uint64(row[0]),
            owner_aid=row[1] or "",
            owner_name=row[2] or "",
            public_key=bytes(row[3]),
            heartbeat_interval=float(row[4] or 0.0),
            registered_at=row[5] or "",
            name=row[6],
            location=row[7],
            unregistered_at=row[8] or None,
        )
        for row in rows
    ]
    return {r.node_id: r for r in records}
