"""client.runtime_folder: the node's runtime folder is private, and refused when it is not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fedcollab.client.runtime_folder import NodeState, load_settings, prepare_state
from fedcollab.common.errors import WorkspaceError


def test_settings_are_private_and_refused_when_readable(tmp_path: Path) -> None:
    state = prepare_state(
        tmp_path / "runtime",
        node_config={"partner": "acme", "data": "/secret/acme.csv"},
        supernode=["flower-supernode", "--superlink", "x:1"],
        runtime_port=9094,
    )
    for path in (state.settings, state.secret, state.tls_key):
        assert path.stat().st_mode & 0o077 == 0, path
    assert (tmp_path / "runtime").stat().st_mode & 0o077 == 0
    settings = load_settings(state)
    assert settings["node_config"]["data"] == "/secret/acme.csv"
    argv = settings["supernode"]
    assert "--node-config" not in argv and "--insecure" not in argv
    assert "/secret/acme.csv" not in " ".join(argv)
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    os.chmod(state.settings, 0o644)
    with pytest.raises(WorkspaceError, match="readable by other users"):
        load_settings(NodeState(state.root))
