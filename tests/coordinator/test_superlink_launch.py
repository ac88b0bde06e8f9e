"""coordinator/superlink_launch.py: in-memory SuperLink state whose node registrations
are journaled (coordinator/node_journal.py: same ids after a restart, a corrupt or
unreadable journal stops the start) and whose unknown runs answer "finished"."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from flwr.proto.message_pb2 import PullObjectRequest  # pylint: disable=no-name-in-module
from flwr.server.superlink.linkstate import LinkStateFactory, linkstate_factory
from flwr.server.superlink.linkstate.sql_linkstate import SqlLinkState
from flwr.server.superlink.utils import check_abort
from flwr.supercore.constant import NodeStatus
from flwr.supercore.error import ApiErrorCode, FlowerError
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.object_store.in_memory_object_store import InMemoryObjectStore
from flwr.superlink.federation import NoOpFederationManager
from flwr.superlink.servicer.fleet import fleet_handlers

from fedcollab.common.errors import WorkspaceError
from fedcollab.coordinator import superlink_launch
from fedcollab.coordinator.node_journal import NodeJournal
from fedcollab.coordinator.superlink import (
    IN_MEMORY,
    check_node_journal,
    node_journal,
    superlink_command,
)
from fedcollab.coordinator.superlink_launch import (
    UNKNOWN_RUN_MESSAGE,
    JournaledLinkState,
    install,
    main,
)

KEY_A = b"\x04" + b"a" * 64
KEY_B = b"\x04" + b"b" * 64


def _state(journal: NodeJournal) -> JournaledLinkState:
    """A fresh SuperLink state, as a (re)started SuperLink builds it from the journal."""
    return JournaledLinkState(
        NoOpFederationManager(), InMemoryObjectStore(), journal=journal, records=journal.load()
    )


def test_registrations_are_journaled_and_replayed_with_the_same_ids(tmp_path: Path) -> None:
    journal = NodeJournal(tmp_path / "state" / "superlink_nodes.json")
    first = _state(journal)
    a = first.create_node("aid", "owner", KEY_A, 30.0, name="alice")
    b = first.create_node("aid", "owner", KEY_B, 30.0, name="bob", location="EU")
    assert stat.S_IMODE(journal.path.stat().st_mode) == 0o600
    entries = json.loads(journal.path.read_text())["nodes"]
    assert {e["node_id"] for e in entries} == {a, b}

    restarted = _state(journal)  # the coordinator restarted: a new in-memory state
    assert restarted.get_node_id_by_public_key(KEY_A) == a
    assert restarted.get_node_id_by_public_key(KEY_B) == b
    (info,) = restarted.get_node_info(node_ids=[b])
    assert (info.name, info.location, info.owner_aid) == ("bob", "EU", "aid")
    assert info.status == NodeStatus.REGISTERED  # offline until its next heartbeat...
    assert restarted.acknowledge_node_heartbeat(b, 30.0)  # ...which a running node sends
    assert restarted.get_node_info(node_ids=[b])[0].status == NodeStatus.ONLINE
    with pytest.raises(ValueError, match="already in use"):
        restarted.create_node("aid", "owner", KEY_A, 30.0)  # the key stays taken
    assert len(json.loads(journal.path.read_text())["nodes"]) == 2


def test_an_unregistered_node_stays_unregistered(tmp_path: Path) -> None:
    journal = NodeJournal(tmp_path / "nodes.json")
    state = _state(journal)
    a = state.create_node("aid", "owner", KEY_A, 30.0)
    b = state.create_node("aid", "owner", KEY_B, 30.0)
    with pytest.raises(ValueError):
        state.delete_node("someone-else", a)  # refused by Flower: journal unchanged
    state.delete_node("aid", a)

    restarted = _state(journal)
    assert restarted.get_node_id_by_public_key(KEY_A) is None
    assert restarted.get_node_id_by_public_key(KEY_B) == b
    assert not restarted.acknowledge_node_heartbeat(a, 30.0)
    with pytest.raises(ValueError):
        restarted.create_node("aid", "owner", KEY_A, 30.0)  # as Flower: key not reusable
    with pytest.raises(ValueError):
        restarted.delete_node("aid", a)


def test_a_failed_journal_write_undoes_the_registration(tmp_path: Path) -> None:
    journal = NodeJournal(tmp_path / "nodes.json")
    state = _state(journal)
    a = state.create_node("aid", "owner", KEY_A, 30.0)
    journal.path.unlink()
    journal.path.mkdir()  # the next write fails (os.replace onto a directory)
    with pytest.raises(OSError):
        state.create_node("aid", "owner", KEY_B, 30.0)
    assert state.get_node_id_by_public_key(KEY_B) is None
    assert [n.node_id for n in state.get_node_info()] == [a]
    with pytest.raises(OSError):
        state.delete_node("aid", a)
    assert state.get_node_id_by_public_key(KEY_A) == a  # the deletion was undone too


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{not json",
        '{"version": 1, "nodes": [{"node_id": 5}]}',
        '{"version": 2, "nodes": []}',
        '{"version": 1, "nodes": [{"node_id": 5, "owner_aid": "a", "owner_name": "o",'
        ' "public_key": "!!", "heartbeat_interval": 30, "registered_at": "t"}]}',
        '{"version": 1, "nodes": [{"node_id": 5, "owner_aid": "a", "owner_name": "o",'
        ' "public_key": "BA==", "heartbeat_interval": 30, "registered_at": "t"},'
        ' {"node_id": 5, "owner_aid": "a", "owner_name": "o",'
        ' "public_key": "BQ==", "heartbeat_interval": 30, "registered_at": "t"}]}',
    ],
)
def test_a_corrupt_journal_stops_the_start(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nodes.json"
    path.write_text(text)
    with pytest.raises(WorkspaceError, match="node journal") as err:
        NodeJournal(path).load()
    assert "register every partner" in err.value.hint
    assert main(["--node-journal", str(path), "--database", IN_MEMORY]) == 13
    assert "What to do:" in capsys.readouterr().err
    assert path.read_text() == text  # left as found


def test_an_unreadable_journal_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "nodes.json"
    path.mkdir()  # reading it fails with an OSError (as a permission error would)
    with pytest.raises(WorkspaceError, match="unreadable or corrupt"):
        NodeJournal(path).load()


def test_a_legacy_sqlite_state_is_imported_once(tmp_path: Path) -> None:
    """A workspace from before the journal: its nodes come from superlink.db, same ids."""
    db = tmp_path / "superlink.db"
    sql = SqlLinkState(str(db), NoOpFederationManager(), InMemoryObjectStore())
    sql.initialize()
    a = sql.create_node("aid", "owner", KEY_A, 30.0, name="alice")
    b = sql.create_node("aid", "owner", KEY_B, 30.0)
    sql.delete_node("aid", b)
    journal = NodeJournal(tmp_path / "superlink_nodes.json")
    state = _state(journal)
    assert journal.path.exists()
    assert state.get_node_id_by_public_key(KEY_A) == a
    assert state.get_node_id_by_public_key(KEY_B) is None
    assert state.get_node_info(node_ids=[a])[0].name == "alice"


def test_install_makes_flower_s_factory_build_the_journaled_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(linkstate_factory, "InMemoryLinkState", linkstate_factory.InMemoryLinkState)
    monkeypatch.setattr(fleet_handlers, "check_abort", fleet_handlers.check_abort)
    journal = NodeJournal(tmp_path / "nodes.json")
    a = _state(journal).create_node("aid", "owner", KEY_A, 30.0)
    assert set(install(journal)) == {a}
    factory = LinkStateFactory(IN_MEMORY, NoOpFederationManager(), ObjectStoreFactory(IN_MEMORY))
    state = factory.state()
    assert isinstance(state, JournaledLinkState)
    assert state.get_node_id_by_public_key(KEY_A) == a

    # A node's call about a run this SuperLink never heard of (it restarted): Flower
    # alone fails it with a KeyError (HTTP 500); now it is a finished run (HTTP 403).
    with pytest.raises(KeyError):
        check_abort(4242, ["finished"], state)
    assert fleet_handlers.check_abort(4242, ["finished"], state) == UNKNOWN_RUN_MESSAGE
    with pytest.raises(FlowerError) as err:  # e.g. a node's pull of the objects of a message
        fleet_handlers.pull_object(PullObjectRequest(run_id=4242, object_id="x"), state)
    assert err.value.code == ApiErrorCode.FLEET_RUN_STATUS_NOT_ALLOWED  # HTTP 403
    assert "Run is finished" in err.value.message


def test_the_launcher_refuses_a_database(tmp_path: Path) -> None:
    path = str(tmp_path / "nodes.json")
    assert main(["--database", IN_MEMORY]) == 2
    assert main(["--node-journal", path, "--database", str(tmp_path / "x.db")]) == 2


def test_the_coordinator_starts_the_superlink_through_the_launcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedcollab.coordinator.workspace import Workspace

    # Flower's tools beside this interpreter (as `make test` puts them on PATH).
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")

    ws = Workspace.create(tmp_path / "ws", name="launch")
    cmd = superlink_command(ws, internal_port=1, public=("fed.example", 9092))
    assert cmd[1:7] == [
        "-m",
        "fedcollab.coordinator.superlink_launch",
        "--node-journal",
        str(node_journal(ws).resolve()),
        "--fleet-gateway",
        "fed.example:9092",
    ]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"  # the SuperLink's own port: loopback
    assert cmd[cmd.index("--database") + 1] == IN_MEMORY == superlink_launch.IN_MEMORY
    check_node_journal(ws)  # nothing registered, no journal: fine


def test_a_journal_missing_a_registered_partner_stops_the_start(tmp_path: Path) -> None:
    from fedcollab.coordinator.workspace import Workspace

    ws = Workspace.create(tmp_path / "ws", name="launch")
    journal = NodeJournal(node_journal(ws))
    a = _state(journal).create_node("aid", "owner", KEY_A, 30.0)
    registry = ws.root / "coordinator" / "registered_nodes.json"
    registry.write_text(json.dumps({"alice": a}))
    check_node_journal(ws)
    registry.write_text(json.dumps({"alice": a, "bob": 77}))
    with pytest.raises(WorkspaceError, match="bob"):
        check_node_journal(ws)
    journal.path.unlink()
    with pytest.raises(WorkspaceError, match="alice, bob"):
        check_node_journal(ws)
