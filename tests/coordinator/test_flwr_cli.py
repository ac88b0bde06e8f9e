"""The flwr CLI adapter: Flower's own JSON in, typed replies or a FederationError out.

The inputs are produced by Flower's own formatting functions (not hand-written JSON),
so a Flower upgrade that changes a reply's shape fails here. The last test runs the
real ``flwr`` command against a port where no SuperLink listens.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import socket
import sys
from pathlib import Path

import pytest
from flwr.cli.run_utils import RunRow
from flwr.supercore.logger import print_json_error

from fedcollab.common.errors import FederationError
from fedcollab.coordinator import flwr_cli
from fedcollab.coordinator.flwr_cli import NodeList, RunList, RunStarted
from fedcollab.coordinator.superlink import write_flwr_config
from fedcollab.coordinator.workspace import Workspace

# The modules, not the typer commands of the same name that flwr.cli re-exports.
flwr_ls = importlib.import_module("flwr.cli.ls")
flwr_supernode_ls = importlib.import_module("flwr.cli.supernode.ls")


def test_supernode_ls_rows_validate_into_nodes() -> None:
    rows = [
        (11, "region-1", "online", "t0", "t1", "", "", 3.0),
        (12, "region-2", "offline", "t0", "t1", "t2", "", 0.0),
        (13, "region-3", "deleted", "t0", "", "", "t3", 0.0),
    ]
    reply = NodeList.model_validate_json(flwr_supernode_ls._to_json(rows, verbose=False))
    assert reply.success
    assert [(n.node_id, n.status, n.online) for n in reply.nodes] == [
        (11, "online", True),
        (12, "offline", False),
    ]


def test_flwr_list_rows_validate_into_runs() -> None:
    fields = {f.name: f.type for f in dataclasses.fields(RunRow)}
    values = {n: (0 if kind in (int, float, "int", "float") else "") for n, kind in fields.items()}
    row = RunRow(**{**values, "run_id": 42, "status_text": "finished:completed", "fab_id": "a/b"})
    reply = RunList.model_validate_json(flwr_ls._to_json([row]))
    assert [(r.run_id, r.status) for r in reply.runs] == [(42, "finished:completed")]


def test_flwr_error_json_keeps_flowers_message(capsys: pytest.CaptureFixture[str]) -> None:
    print_json_error("", RuntimeError("the run config is not valid"))
    reply = RunStarted.model_validate_json(capsys.readouterr().out)
    assert not reply.success and reply.run_id is None
    assert reply.error_message is not None and "run config is not valid" in reply.error_message


def test_real_flwr_without_a_superlink_raises_a_federation_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = str(Path(sys.executable).parent)  # the venv's flwr, as `make test` puts on PATH
    monkeypatch.setenv("PATH", bin_dir + os.pathsep + os.environ.get("PATH", ""))
    ws = Workspace.create(tmp_path / "ws", name="brands", partners=("acme",))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write_flwr_config(ws, port)
    with pytest.raises(FederationError) as info:
        flwr_cli.list_nodes(ws, timeout=120)
    assert "listing the partner nodes" in str(info.value)
    assert "fedcollab coordinator start" in info.value.hint
    with pytest.raises(FederationError) as started:
        flwr_cli.start_run(ws, tmp_path, tmp_path / "run-config.toml", job="purchase", timeout=120)
    assert "starting job 'purchase'" in str(started.value)
