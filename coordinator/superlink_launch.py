"""``flower-superlink`` with Flower's in-memory state and a journal of its registered nodes.

    python -m fedcollab.coordinator.superlink_launch --node-journal PATH <flower-superlink options>

The journal is :mod:`coordinator.node_journal`; here, the state that writes and replays it.

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

With ``--fleet-gateway HOST:PORT`` (always, from :func:`coordinator.superlink.superlink_command`)
Flower's ``uvicorn.run`` of the SuperLink's app is replaced by :func:`serve`: the
same app on Flower's loopback address, and on the federation's public address the
Fleet-only gateway of :mod:`fedcollab.coordinator.fleet_gateway`, which hands each
Fleet request to that app in this process. If Flower's module no longer calls
``uvicorn.run``, the launcher stops (exit 2) rather than serve no gateway.

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

import asyncio
import functools
import importlib
import logging
import os
import sys
import threading
import types
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvicorn
from flwr.common.constant import Status
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=no-name-in-module
from flwr.server.superlink.linkstate import linkstate_factory
from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NodeStatus
from flwr.supercore.object_store import ObjectStore
from flwr.supercore.object_store.in_memory_object_store import InMemoryObjectStore
from flwr.superlink.federation import FederationManager

from fedcollab.common.errors import FedcollabError, WorkspaceError
from fedcollab.common.third_party_noise import plain_flower_logs
from fedcollab.coordinator.fleet_gateway import ASGIApp, make_gateway
from fedcollab.coordinator.fleet_guard import public_server
from fedcollab.coordinator.node_journal import NodeJournal, NodeRecord
from fedcollab.coordinator.serverappio_fast import serverappio_app

__all__ = [
    "IN_MEMORY",
    "UNKNOWN_RUN_MESSAGE",
    "JournaledLinkState",
    "install",
    "main",
]

#: Flower's name for its in-memory state (``--database``).
IN_MEMORY = FLWR_IN_MEMORY_DB_NAME
#: What the Fleet API says about a run this SuperLink does not know (HTTP 403).
UNKNOWN_RUN_MESSAGE = "Run is finished. (unknown to this SuperLink: the coordinator restarted)"


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
    usage = "usage: superlink_launch --node-journal PATH [--fleet-gateway HOST:PORT] <options>"
    if len(args) < 2 or args[0] != "--node-journal":
        print(usage, file=sys.stderr)
        return 2
    journal = NodeJournal(Path(args[1]))
    rest = args[2:]
    public: tuple[str, int] | None = None
    if rest[:1] == ["--fleet-gateway"]:
        host, _, port = (rest[1] if len(rest) > 1 else "").rpartition(":")
        if not host or not port.isdigit():
            print(usage, file=sys.stderr)
            return 2
        public, rest = (host.strip("[]"), int(port)), rest[2:]
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
    # fedcollab's own lines (the gateway's refusals) with a time and a level, on stderr
    # beside Flower's: a bare line could pass for anything.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    ours = logging.getLogger("fedcollab")
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    if public is not None and not _serve_gateway_too(public):
        print(
            "fedcollab: flwr.superlink.cli.flower_superlink has changed; the coordinator "
            "cannot serve its Fleet gateway",
            file=sys.stderr,
        )
        return 2
    plain_flower_logs()
    sys.argv = ["flower-superlink", *rest]
    try:
        flower_superlink()
    except KeyboardInterrupt:  # Ctrl-C: uvicorn shut down first, then re-raised it
        return 130
    return 0


def serve(app: ASGIApp, public: tuple[str, int], notices: Path | None, **loopback: Any) -> None:
    """Serve the SuperLink's ``app`` on its loopback address (``loopback``: the keyword
    arguments Flower gives ``uvicorn.run``) and, once that is up, the Fleet gateway on
    the ``public`` (host, port), same certificate, same event loop (blocks).

    Flower's lifespan (its SuperExec, which starts the ServerApps) belongs to the
    loopback server (the ServerApp's calls: coordinator/serverappio_fast.py); the
    public port opens only after it started, so a TLS handshake there means the whole
    coordinator is up. When either server stops, so does the other."""
    for option in ("reload", "workers"):
        loopback.pop(option, None)
    inner = uvicorn.Server(uvicorn.Config(app=serverappio_app(app), **loopback))

    def lifespan_state() -> Mapping[str, Any]:
        lifespan = getattr(inner, "lifespan", None)
        return dict(getattr(lifespan, "state", None) or {})

    # The public port's limits (coordinator.fleet_guard): the loopback APIs keep their
    # descriptors whatever strangers hold open there.
    outer, listeners = public_server(
        uvicorn.Config(
            app=make_gateway(app, notices, state=lifespan_state),
            host=public[0],
            port=public[1],
            ws="none",
            ssl_certfile=loopback.get("ssl_certfile"),
            ssl_keyfile=loopback.get("ssl_keyfile"),
            lifespan="on",
            access_log=False,
            log_config=None,  # the loopback server's configuration stands
            log_level=None,
        )
    )

    async def both() -> None:
        first = asyncio.create_task(inner.serve())
        while not inner.started and not first.done():
            await asyncio.sleep(0.05)  # uvicorn offers a flag, not an event
        if first.done():
            await first
            return
        second = asyncio.create_task(outer.serve(listeners))
        await asyncio.wait({first, second}, return_when=asyncio.FIRST_COMPLETED)
        inner.should_exit = outer.should_exit = True
        for task in (second, first):
            await task

    asyncio.run(both())


def _serve_gateway_too(public: tuple[str, int]) -> bool:
    """Have Flower's ``uvicorn.run`` of the SuperLink's app serve the Fleet gateway on
    ``public`` as well (:func:`fedcollab.coordinator.fleet_gateway.serve`); False, and
    nothing changed, if Flower's module no longer calls ``uvicorn.run``."""
    from fedcollab.coordinator.fleet_notice import NOTICE_ENV

    # The package re-exports the entry point under the module's name: import the module.
    module = importlib.import_module("flwr.superlink.cli.flower_superlink")
    original = getattr(module, "uvicorn", None)
    if original is None or not callable(getattr(original, "run", None)):
        return False
    raw = os.environ.get(NOTICE_ENV, "")
    notices = Path(raw) if raw else None

    def run(app: Any, **loopback: Any) -> None:
        serve(app, public, notices, **loopback)

    module.uvicorn = types.SimpleNamespace(run=run)  # type: ignore[attr-defined]
    return True


if __name__ == "__main__":
    raise SystemExit(main())
