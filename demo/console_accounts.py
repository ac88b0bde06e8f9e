"""The demo's web console: users with random passwords, the partners' ledgers, the jobs.

There is no default account. The demo creates three users, each with a fresh random
password written only to ``<out>/console/credentials.txt`` (mode 0600):
``operator`` (platform operator), ``compliance`` (compliance officer) and
``region-1`` (the partner region-1, who sees only its own ledger and jobs).
``make console`` then serves the demo's workspace on http://127.0.0.1:8080/.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from fedcollab.coordinator.console.auth import Role, UserStore
from fedcollab.coordinator.console.settings import (
    ConsolePaths,
    add_jobs_dir,
    add_ledger,
    add_partner_bundle,
    init_console,
)
from fedcollab.coordinator.workspace import Workspace

__all__ = ["setup_console"]


def setup_console(
    ws: Workspace,
    *,
    jobs_dir: Path,
    ledgers: dict[str, Path],
    partner_user: str,
    out: Path,
    bundles: dict[str, Path] | None = None,
) -> Path:
    """Initialise the console of ``ws`` for the demo; returns the credentials file."""
    paths = ConsolePaths.of(ws)
    if not paths.secret.exists():
        init_console(ws)
    for partner, ledger in sorted(ledgers.items()):
        if ledger.is_file():
            add_ledger(ws, partner, ledger)
    for partner, bundle in sorted((bundles or {}).items()):
        add_partner_bundle(ws, partner, bundle)  # the report cross-checks their logs
    add_jobs_dir(ws, jobs_dir)
    store = UserStore(paths.users)
    accounts: list[tuple[str, Role, str | None]] = [
        ("operator", Role.OPERATOR, None),
        ("compliance", Role.COMPLIANCE, None),
        (partner_user, Role.PARTNER, partner_user),
    ]
    lines = [
        "# fedcollab demo console accounts: `make console`, then http://127.0.0.1:8080/",
        "# (fresh random passwords; there is no default account)",
    ]
    for name, role, of_partner in accounts:
        if store.get(name) is not None:
            store.remove(name)
        password = secrets.token_urlsafe(15)
        store.add(name, password, role=role, partner=of_partner)
        lines.append(f"{name}\t{role.value}\t{password}")
    out.mkdir(parents=True, exist_ok=True)
    creds = out / "credentials.txt"
    creds.unlink(missing_ok=True)
    fd = os.open(creds, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return creds
