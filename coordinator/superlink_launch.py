"""``flower-superlink`` with Flower's in-memory state and a journal of its registered nodes.

    python -m fedcollab.coordinator.superlink_launch --node-journal PATH <flower-superlink options>

Long module: one concept, the SuperLink process fedcollab runs: the journal's format
(:class:`NodeRecord`, :class:`NodeJournal`, the one-time import of a legacy SQLite
state), the state that writes and replays it, and the launcher that installs both;
the journal's reader and writer must not drift apart, so they stay together.

The SuperLink keeps its state in memory (``--database :flwr-in-memory:``: Flower's
``InMemoryLinkState`` and ``InMemoryObjectStore``). With Flower's SQLite state
(``SqlLinkState`` / ``SqlObjectStore``) a deployed federation of 9 partners spent
about 0.75 of a core in the SuperLink, mostly in SQLAlchemy/SQLite, and a deployed
round took 29.7 s instead of 14.1 s (``experiments/bench_deployment.py``).

What must outlive a coordinator restart is the node registrations
(``--enable-supernode-auth``): a partner's SuperNode that kept running authenticates
every Fleet call with its key and its node id, and Flower checks
``get_node_id_by_public_key(key) == node_id``. So every node created or deleted
through the Control API (``fedcollab federation register`` -> ``flwr supernode
register``) is written to :class:`NodeJournal` (JSON, tmp + fsync + rename, 0600)
before the API answers, and a new SuperLink replays the journal into its fresh state
with the same node ids before it serves; a node's next heartbeat marks it online
again (``acknowledge_node_heartbeat``). A journal that cannot be read stops the start
(:class:`~fedcollab.common.errors.WorkspaceError`), and so does a Flower whose
in-memory state lacks what the replay relies on: registrations are never dropped
silently. A workspace from before the journal (``superlink.db`` beside it, no
journal) has its nodes imported from that file once.

Runs do not survive a restart (:mod:`fedcollab.coordinator.recovery` closes them).
A node that was mid-task when the coordinator died later sends its reply, or asks
for objects, of a run the new SuperLink never heard of; Flower's Fleet handlers
would fail that with a ``KeyError`` (HTTP 500, which the node retries for minutes,
``client/fleet_poll.py``). :func:`install` answers such a run as finished instead
(HTTP 403 "Run is finished."), as a SQLite SuperLink did for the run it had marked
failed; the node then drops the message (``client/run_ended.py`` and Flower's own
handling of ``RunNotRunningException``).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from flwr.common.constant import Status
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=no-name-in-module
from flwr.server.superlink.linkstate import linkstate_factory
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NodeStatus
from flwr.supercore.object_store import ObjectStore
from flwr.supercore.object_store.in_memory_object_store import InMemoryObjectStore
from flwr.supercore.utils import int64_to_uint64
from flwr.superlink.federation import FederationManager

from fedcollab.common.atomic import write_atomic
from fedcollab.common.errors import FedcollabError, WorkspaceError

__all__ = [
    "IN_MEMORY",
    "JOURNAL_VERSION",
    "LEGACY_DATABASE",
    "UNKNOWN_RUN_MESSAGE",
    "JournaledLinkState",
    "NodeJournal",
    "NodeRecord",
    "install",
    "main",
]

#: Flower's name for its in-memory state (``--database``).
IN_MEMORY = FLWR_IN_MEMORY_DB_NAME
JOURNAL_VERSION = 1
#: The SQLite state file of a workspace from before the journal, beside the journal.
LEGACY_DATABASE = "superlink.db"
#: What the Fleet API says about a run this SuperLink does not know (HTTP 403).
UNKNOWN_RUN_MESSAGE = "Run is finished. (unknown to this SuperLink: the coordinator restarted)"

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


def _node_info(record: NodeRecord) -> NodeInfo:
    info = NodeInfo(
        node_id=record.node_id,
        owner_aid=record.owner_aid,
        owner_name=record.owner_name,
        status=NodeStatus.UNREGISTERED if record.unregistered_at else NodeStatus.REGISTERED,
        registered_at=record.registered_at,
        heartbeat_interval=record.heartbeat_interval,
        public_key=record.public_key,
    )
    if record.name is not None:
        info.name = record.name
    if record.location is not None:
        info.location = record.location
    if record.unregistered_at:
        info.unregistered_at = record.unregistered_at
    return info


class JournaledLinkState(InMemoryLinkState):
    """Flower's in-memory state whose node registrations live on in a :class:`NodeJournal`.

    The constructor replays ``records`` (the journal's nodes, same ids, status
    registered or unregistered, offline until a heartbeat). ``create_node`` and
    ``delete_node`` write the journal under the state's lock before they return;
    if the write fails the change is undone in memory and the error propagates
    (the Control API call fails, the operator sees it)."""

    def __init__(
        self,
        federation_manager: FederationManager,
        object_store: ObjectStore,
        *,
        journal: NodeJournal,
        records: Mapping[int, NodeRecord],
    ) -> None:
        super().__init__(federation_manager, object_store)
        self._journal = journal
        self._records: dict[int, NodeRecord] = dict(records)
        with self.lock:
            for record in self._records.values():
                self.nodes[record.node_id] = _node_info(record)
                self.node_public_key_to_node_id[record.public_key] = record.node_id
                self.owner_to_node_ids.setdefault(record.owner_aid, set()).add(record.node_id)

    def create_node(
        self,
        owner_aid: str,
        owner_name: str,
        public_key: bytes,
        heartbeat_interval: float,
        *,
        location: str | None = None,
        name: str | None = None,
    ) -> int:
        with self.lock:
            node_id = super().create_node(
                owner_aid, owner_name, public_key, heartbeat_interval, location=location, name=name
            )
            if node_id == 0:  # Flower's "unexpected registration failure": nothing stored
                return node_id
            records = {**self._records, node_id: NodeRecord.of(self.nodes[node_id])}
            try:
                self._journal.write(records.values())
            except BaseException:
                del self.nodes[node_id]
                del self.node_public_key_to_node_id[public_key]
                self.owner_to_node_ids[owner_aid].discard(node_id)
                raise
            self._records = records
            return node_id

    def delete_node(self, owner_aid: str, node_id: int) -> None:
        with self.lock:
            before = NodeInfo()
            if (node := self.nodes.get(node_id)) is not None:
                before.CopyFrom(node)
            super().delete_node(owner_aid, node_id)  # ValueError: nothing changed
            after = self.nodes[node_id]
            old = self._records.get(node_id) or NodeRecord.of(before)
            records = {
                **self._records,
                node_id: replace(old, unregistered_at=after.unregistered_at),
            }
            try:
                self._journal.write(records.values())
            except BaseException:
                after.CopyFrom(before)
                raise
            self._records = records


def _state_factory(
    journal: NodeJournal, records: Mapping[int, NodeRecord]
) -> Callable[[FederationManager, ObjectStore], JournaledLinkState]:
    def make(
        federation_manager: FederationManager, object_store: ObjectStore
    ) -> JournaledLinkState:
        return JournaledLinkState(
            federation_manager, object_store, journal=journal, records=records
        )

    return make


def _unknown_runs_finished(check_abort: Callable[..., str | None]) -> Callable[..., str | None]:
    @functools.wraps(check_abort)
    def wrapped(run_id: int, abort_status_list: list[str], state: Any) -> str | None:
        if Status.FINISHED in abort_status_list and run_id not in state.get_run_status({run_id}):
            return UNKNOWN_RUN_MESSAGE
        return check_abort(run_id, abort_status_list, state)

    return wrapped


_install_lock = threading.Lock()


def _check_replay(records: Mapping[int, NodeRecord]) -> None:
    """Replay ``records`` into a throwaway state: every active key maps to its node id."""
    from flwr.superlink.federation import NoOpFederationManager

    try:
        probe = JournaledLinkState(
            NoOpFederationManager(),
            InMemoryObjectStore(),
            journal=NodeJournal(Path(os.devnull)),
            records=records,
        )
        for r in records.values():
            want = None if r.unregistered_at else r.node_id
            if probe.get_node_id_by_public_key(r.public_key) != want:
                raise ValueError(f"node {r.node_id} does not replay")
    except Exception as exc:
        raise WorkspaceError(
            f"cannot replay the registered nodes into Flower's in-memory SuperLink state "
            f"({type(exc).__name__}: {exc})",
            hint="install the Flower version fedcollab pins (pyproject.toml)",
        ) from exc


def install(journal: NodeJournal) -> dict[int, NodeRecord]:
    """Make Flower's in-memory state journaled and unknown runs finished; the replayed nodes.

    Raises :class:`WorkspaceError` for an unreadable journal, and for a Flower whose
    in-memory state no longer has what the replay relies on."""
    records = journal.load()
    if linkstate_factory.__dict__.get("InMemoryLinkState") is not InMemoryLinkState:
        raise WorkspaceError(
            "this Flower's SuperLink state factory is not the one fedcollab journals "
            "(flwr.server.superlink.linkstate changed): node registrations would not "
            "survive a coordinator restart",
            hint="install the Flower version fedcollab pins (pyproject.toml)",
        )
    _check_replay(records)
    from flwr.superlink.servicer.fleet import fleet_handlers

    with _install_lock:
        linkstate_factory.InMemoryLinkState = _state_factory(journal, records)  # type: ignore[attr-defined,assignment]
        check_abort = getattr(fleet_handlers, "check_abort", None)
        if callable(check_abort):
            fleet_handlers.check_abort = _unknown_runs_finished(check_abort)  # type: ignore[attr-defined]
        else:
            print(
                "fedcollab: flwr.superlink.servicer.fleet.fleet_handlers has changed; a run "
                "unknown to the SuperLink is answered as Flower does",
                file=sys.stderr,
            )
    return records


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] != "--node-journal":
        print(
            "usage: superlink_launch --node-journal PATH <flower-superlink options>",
            file=sys.stderr,
        )
        return 2
    journal = NodeJournal(Path(args[1]))
    rest = args[2:]
    if "--database" in rest and rest[rest.index("--database") + 1 :][:1] != [IN_MEMORY]:
        print(f"fedcollab: the SuperLink runs with --database {IN_MEMORY}", file=sys.stderr)
        return 2
    try:
        records = install(journal)
    except FedcollabError as exc:
        print(f"fedcollab: {exc.diagnostics()}", file=sys.stderr)
        return exc.exit_code
    print(
        f"fedcollab: {len(records)} registered node(s) replayed from {journal.path}",
        file=sys.stderr,
    )
    from flwr.superlink.cli import flower_superlink

    from fedcollab.coordinator import superlink_middleware

    superlink_middleware.install_or_say()  # each HTTP layer only where it acts
    sys.argv = ["flower-superlink", *rest]
    flower_superlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
