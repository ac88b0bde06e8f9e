"""The demo's console set-up: no default account, random passwords, a file only the owner reads."""

from __future__ import annotations

import stat
from pathlib import Path

from fastapi.testclient import TestClient

from fedcollab.coordinator.console.app import create_app
from fedcollab.coordinator.console.auth import UserStore
from fedcollab.coordinator.console.settings import ConsoleConfig, ConsolePaths
from fedcollab.coordinator.workspace import Workspace
from fedcollab.demo.console_accounts import setup_console
from fedcollab.privacy.budget_ledger import BudgetLedger


def _accounts(creds: Path) -> dict[str, tuple[str, str]]:
    rows = [ln.split("\t") for ln in creds.read_text().splitlines() if not ln.startswith("#")]
    return {name: (role, password) for name, role, password in rows}


def test_demo_console_accounts_log_in_and_rerun_rotates(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws", name="demo", partners=("region-1", "region-2"))
    ledgers = {p: tmp_path / f"{p}.db" for p in ("region-1", "region-2")}
    for ledger in ledgers.values():
        BudgetLedger.open(ledger).close()
    jobs = tmp_path / "results"
    jobs.mkdir()
    creds = setup_console(
        ws, jobs_dir=jobs, ledgers=ledgers, partner_user="region-1", out=tmp_path / "console"
    )
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    accounts = _accounts(creds)
    assert {n: r for n, (r, _) in accounts.items()} == {
        "operator": "operator",
        "compliance": "compliance",
        "region-1": "partner",
    }
    passwords = [p for _, p in accounts.values()]
    assert len(set(passwords)) == 3 and all(len(p) >= 12 for p in passwords)
    config = ConsoleConfig.load(ws.root, probe_superlink=False)
    assert config.ledgers == {p: ledger.resolve() for p, ledger in ledgers.items()}
    assert config.jobs_dirs == (jobs.resolve(),)
    with TestClient(create_app(config)) as client:
        page = client.get("/login")
        nonce = page.text.split('name="nonce" value="')[1].split('"')[0]
        ok = client.post(
            "/login",
            data={"username": "operator", "password": accounts["operator"][1], "nonce": nonce},
            follow_redirects=False,
        )
        assert ok.status_code == 303 and ok.headers["location"] != "/login"
        assert client.get("/api/jobs").status_code == 200
    # A second demo run keeps the console and replaces every password.
    again = _accounts(
        setup_console(
            ws, jobs_dir=jobs, ledgers=ledgers, partner_user="region-1", out=tmp_path / "console"
        )
    )
    assert all(again[n][1] != accounts[n][1] for n in accounts)
    assert len(UserStore(ConsolePaths.of(ws).users).users()) == 3
