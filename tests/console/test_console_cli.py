"""``fedcollab console``: init, users from stdin, ledgers, and refusals at start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedcollab.cli.console import app, check_bind
from fedcollab.common.errors import ConsoleError
from fedcollab.coordinator.console.auth import UserStore
from fedcollab.coordinator.workspace import Workspace

runner = CliRunner()


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    ws = Workspace.create(tmp_path / "ws", name="fed", partners=("acme",))
    (ws.root / "coordinator" / "registered_nodes.json").write_text(json.dumps({"acme": 1}))
    assert runner.invoke(app, ["init", "-w", str(ws.root)]).exit_code == 0
    return ws


def test_init_creates_private_files(ws: Workspace) -> None:
    console = ws.root / "console"
    assert (console / "session.key").stat().st_mode & 0o777 == 0o600
    assert len((console / "session.key").read_bytes()) == 32
    assert (console / "audit.key").stat().st_mode & 0o777 == 0o600
    assert (console / "audit.pub").read_text().startswith("console+")
    again = runner.invoke(app, ["init", "-w", str(ws.root)])
    assert isinstance(again.exception, ConsoleError)


def test_user_add_from_stdin(ws: Workspace) -> None:
    args = ["user", "add", "olga", "--role", "operator", "--password-stdin", "-w", str(ws.root)]
    result = runner.invoke(app, args, input="a long enough passphrase\n")
    assert result.exit_code == 0, result.output
    user = UserStore(ws.root / "console" / "users.json").authenticate(
        "olga", "a long enough passphrase"
    )
    assert user is not None and user.password_hash.startswith("$argon2id$")
    assert "a long enough passphrase" not in (ws.root / "console" / "users.json").read_text()
    listing = runner.invoke(app, ["user", "list", "-w", str(ws.root)])
    assert "olga\toperator" in listing.output and "argon2" not in listing.output


def test_user_add_refusals(ws: Workspace) -> None:
    base = ["user", "add", "pat", "--password-stdin", "-w", str(ws.root)]
    short = runner.invoke(app, [*base, "--role", "operator"], input="short\n")
    assert isinstance(short.exception, ConsoleError)
    unknown = runner.invoke(app, [*base, "--role", "partner", "--partner", "zenith"],
                            input="a long enough passphrase\n")  # fmt: skip
    assert isinstance(unknown.exception, ConsoleError)
    missing = runner.invoke(app, [*base, "--role", "partner"], input="a long enough passphrase\n")
    assert isinstance(missing.exception, ConsoleError)
    ok = runner.invoke(app, [*base, "--role", "partner", "--partner", "acme"],
                       input="a long enough passphrase\n")  # fmt: skip
    assert ok.exit_code == 0, ok.output


def test_start_refuses_without_users(ws: Workspace) -> None:
    result = runner.invoke(app, ["start", "-w", str(ws.root)])
    assert isinstance(result.exception, ConsoleError)
    assert "no default account" in result.exception.message
    assert result.exception.exit_code == 40


def test_non_loopback_without_tls_is_refused(ws: Workspace) -> None:
    with pytest.raises(ConsoleError, match="without TLS"):
        check_bind("0.0.0.0", None, None)
    with pytest.raises(ConsoleError, match="without TLS"):
        check_bind("192.168.1.10", None, None)
    with pytest.raises(ConsoleError, match="both"):
        check_bind("127.0.0.1", ws.server_cert, None)
    assert check_bind("127.0.0.1", None, None) is False
    assert check_bind("::1", None, None) is False
    assert check_bind("0.0.0.0", ws.server_cert, ws.server_key) is True
    result = runner.invoke(app, ["start", "-w", str(ws.root), "--host", "0.0.0.0"])
    assert isinstance(result.exception, ConsoleError)


def test_ledger_add(ws: Workspace, tmp_path: Path) -> None:
    missing = runner.invoke(app, ["ledger", "add", "acme", str(tmp_path / "no.db"), "-w",
                                  str(ws.root)])  # fmt: skip
    assert isinstance(missing.exception, ConsoleError)
    ledger = tmp_path / "budget.db"
    ledger.write_bytes(b"")
    result = runner.invoke(app, ["ledger", "add", "acme", str(ledger), "-w", str(ws.root)])
    assert result.exit_code == 0
    config = json.loads((ws.root / "console" / "config.json").read_text())
    assert config["ledgers"] == {"acme": str(ledger.resolve())}
