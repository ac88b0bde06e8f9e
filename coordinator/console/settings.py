"""The console's files in a workspace and the settings it starts with.

Layout (created by ``fedcollab console init``)::

    <ws>/console/session.key   32 random bytes signing session cookies (0600)
    <ws>/console/users.json    console users and their argon2id hashes (0600)
    <ws>/console/audit.db      the console's own audit log (every console action)
    <ws>/console/audit.key     its Ed25519 signing key (0600); audit.pub beside it
    <ws>/console/config.json   partners' budget ledgers and exported audit bundles
                               the console may read

Notes
-----
* The session secret is 32 random bytes (256 bits), the output size of the
  HMAC-SHA256 that signs cookies (RFC 2104 section 3: longer keys add nothing).
* The console never writes to a partner's ledger or to the coordinator's log:
  it reads them (SQLite ``mode=ro``) and keeps its own log.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcollab.common.atomic import write_atomic, write_json_atomic
from fedcollab.common.errors import ConsoleError
from fedcollab.compliance.trail import create_party_key
from fedcollab.coordinator.workspace import Workspace, check_name

__all__ = [
    "ConsoleConfig",
    "ConsolePaths",
    "add_jobs_dir",
    "add_ledger",
    "add_partner_bundle",
    "init_console",
    "is_loopback",
    "partner_bundles",
]

CONSOLE_ACTOR = "console"
_SECRET_BYTES = 32


@dataclass(frozen=True)
class ConsolePaths:
    root: Path

    @classmethod
    def of(cls, ws: Workspace) -> ConsolePaths:
        return cls(ws.root / "console")

    @property
    def secret(self) -> Path:
        return self.root / "session.key"

    @property
    def users(self) -> Path:
        return self.root / "users.json"

    @property
    def audit_db(self) -> Path:
        return self.root / "audit.db"

    @property
    def audit_key(self) -> Path:
        return self.root / "audit.key"

    @property
    def audit_pub(self) -> Path:
        return self.root / "audit.pub"

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    def require(self) -> None:
        for needed in (self.secret, self.audit_key, self.config):
            if not needed.exists():
                raise ConsoleError(
                    f"the console is not initialised ({needed} is missing)",
                    hint="run `fedcollab console init -w WORKSPACE` first",
                )


def _write_json(path: Path, obj: Any) -> None:
    write_json_atomic(path, obj)


def init_console(ws: Workspace) -> ConsolePaths:
    """Create ``<ws>/console``: session secret, audit key, empty config. Refuses to redo it."""
    paths = ConsolePaths.of(ws)
    if paths.secret.exists():
        raise ConsoleError(
            f"the console of {ws.root} is already initialised",
            hint="keep it: re-initialising would end every session and start a new audit log",
        )
    paths.root.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.root, 0o700)
    write_atomic(paths.secret, secrets.token_bytes(_SECRET_BYTES), private=True, exclusive=True)
    if not paths.audit_key.exists():
        create_party_key(paths.root, CONSOLE_ACTOR)
    if not paths.config.exists():
        _write_json(paths.config, {"version": 1, "ledgers": {}, "jobs_dirs": []})
    return paths


def _read_config(paths: ConsolePaths) -> dict[str, Any]:
    try:
        raw = json.loads(paths.config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConsoleError(f"{paths.config} is unreadable: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("version") != 1:
        raise ConsoleError(f"{paths.config} is not a console config (version 1)")
    return raw


def add_ledger(ws: Workspace, partner: str, ledger: Path) -> Path:
    """Let the console read ``partner``'s budget ledger at ``ledger``."""
    paths = ConsolePaths.of(ws)
    paths.require()
    check_name("partner", partner)
    if not ledger.is_file():
        raise ConsoleError(
            f"{ledger} is not a file",
            hint="pass the partner's budget ledger (budget.db), exported or shared by the partner",
        )
    raw = _read_config(paths)
    raw.setdefault("ledgers", {})[partner] = str(ledger.resolve())
    _write_json(paths.config, raw)
    return ledger.resolve()


def add_partner_bundle(ws: Workspace, partner: str, bundle: Path) -> Path:
    """Let the console's compliance report cross-check ``partner``'s exported audit bundle.

    The folder must be a bundle of ``partner``'s own log (``fedcollab audit export``
    on the partner's node): its manifest's origin must be ``partner``. It is only
    read, and verified under the partner's registered key whenever a report is made.
    """
    paths = ConsolePaths.of(ws)
    paths.require()
    check_name("partner", partner)
    manifest = bundle / "manifest.json"
    try:
        origin = json.loads(manifest.read_text(encoding="utf-8")).get("origin")
    except (OSError, ValueError, AttributeError) as exc:
        raise ConsoleError(
            f"{bundle} is not an audit bundle ({manifest} unreadable: {exc})",
            hint=f"pass the folder {partner!r} wrote with `fedcollab audit export`",
        ) from exc
    if origin != partner:
        raise ConsoleError(
            f"{bundle} is the bundle of {origin!r}, not of {partner!r}",
            hint=f"pass the folder {partner!r} wrote with `fedcollab audit export` of its own log",
        )
    raw = _read_config(paths)
    raw.setdefault("bundles", {})[partner] = str(bundle.resolve())
    _write_json(paths.config, raw)
    return bundle.resolve()


def partner_bundles(ws: Workspace) -> dict[str, Path]:
    """The partners' bundles registered with :func:`add_partner_bundle`, read now (a
    bundle registered while the console runs counts from the next report on)."""
    raw = _read_config(ConsolePaths.of(ws))
    return {str(k): Path(v) for k, v in dict(raw.get("bundles", {})).items()}


def add_jobs_dir(ws: Workspace, directory: Path) -> Path:
    """List every job output folder under ``directory`` (e.g. ``results/demo``) in the console."""
    paths = ConsolePaths.of(ws)
    paths.require()
    if not directory.is_dir():
        raise ConsoleError(f"{directory} is not a folder", hint="pass a folder of job outputs")
    raw = _read_config(paths)
    dirs = [str(d) for d in raw.get("jobs_dirs", [])]
    if str(directory.resolve()) not in dirs:
        dirs.append(str(directory.resolve()))
    raw["jobs_dirs"] = dirs
    _write_json(paths.config, raw)
    return directory.resolve()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ConsoleConfig:
    """What :func:`coordinator.console.app.create_app` needs.

    ``jobs_dirs``: extra folders whose subfolders holding ``progress.jsonl`` are
    jobs (e.g. ``results/demo``); ``tls``: served over HTTPS (cookies get
    ``Secure``); ``probe_superlink``: ask the SuperLink which nodes are online.
    """

    workspace: Path
    jobs_dirs: tuple[Path, ...] = ()
    tls: bool = False
    probe_superlink: bool = True
    ledgers: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        workspace: Path,
        *,
        jobs_dirs: tuple[Path, ...] = (),
        tls: bool = False,
        probe_superlink: bool = True,
    ) -> ConsoleConfig:
        ws = Workspace.open(workspace)
        paths = ConsolePaths.of(ws)
        paths.require()
        raw = _read_config(paths)
        ledgers = {str(k): Path(v) for k, v in dict(raw.get("ledgers", {})).items()}
        extra = tuple(Path(p) for p in raw.get("jobs_dirs", []))
        return cls(
            workspace=ws.root,
            jobs_dirs=tuple(dict.fromkeys((*extra, *jobs_dirs))),
            tls=tls,
            probe_superlink=probe_superlink,
            ledgers=ledgers,
        )

    @property
    def paths(self) -> ConsolePaths:
        return ConsolePaths(self.workspace / "console")
