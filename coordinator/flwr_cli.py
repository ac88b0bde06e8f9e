"""The one adapter for Flower's ``flwr`` command line: typed replies, typed errors.

The coordinator drives its SuperLink's Control API through ``flwr`` (register a
partner's node key, start a job's run, a run's status, the nodes online), always with
``--format json`` and the workspace's own ``FLWR_HOME``. This module runs those
commands and validates their JSON once, into the models below; callers never see a
dict. The shapes are Flower 1.41's (``flwr/cli/supernode/ls.py`` ``_to_json``,
``flwr/cli/ls.py`` ``_to_json``, ``flwr/cli/run/run.py``, ``flwr/cli/supernode/
register.py``; errors from ``flwr.supercore.logger.print_json_error``:
``{"success": false, "error-message": ...}``); ``tests/coordinator/test_flwr_cli.py``
builds its inputs with those same Flower functions, so a Flower upgrade that changes
them fails there, not in a job.

Every failure (``flwr`` missing, a timeout, a non-zero exit, ``"success": false``, a
reply that does not validate) is a :class:`~fedcollab.common.errors.FederationError`
naming the command, Flower's own message and what to check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedcollab.common.errors import FederationError
from fedcollab.coordinator.workspace import Workspace

__all__ = [
    "FlwrReply",
    "NodeInfo",
    "NodeList",
    "NodeRegistered",
    "RunInfo",
    "RunList",
    "RunStarted",
    "flwr_env",
    "list_nodes",
    "register_supernode",
    "run_info",
    "start_run",
    "tool",
]

_COORDINATOR_HINT = "is the coordinator running (`fedcollab coordinator start`)?"
#: A bound on a hung command, not its pace: `flwr`'s own start-up took over 60 s at a
#: load average of 46 while 20 partner nodes started (experiments.scale_deployment).
TIMEOUT_S = 300.0


def tool(name: str) -> str:
    """Absolute path of a Flower executable on PATH (``flwr``, ``flower-superlink``, ...)."""
    path = shutil.which(name)
    if path is None:
        raise FederationError(
            f"{name!r} is not on PATH",
            hint="activate the project's virtualenv (.venv/bin) or run through `make`",
        )
    return path


def flwr_env(ws: Workspace) -> dict[str, str]:
    """Environment for Flower CLI calls: the workspace's own FLWR_HOME."""
    return {**os.environ, "FLWR_HOME": str(ws.flwr_home.resolve())}


class FlwrReply(BaseModel):
    """Fields every ``flwr ... --format json`` reply has (others are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    success: bool = False
    error_message: str | None = Field(default=None, alias="error-message")


class NodeInfo(BaseModel):
    """One row of ``flwr supernode ls``."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    node_id: int = Field(alias="node-id")
    status: str
    owner_name: str | None = Field(default=None, alias="owner-name")

    @property
    def online(self) -> bool:
        return self.status == "online"


class NodeList(FlwrReply):
    nodes: list[NodeInfo] = []


class NodeRegistered(FlwrReply):
    node_id: int | None = Field(default=None, alias="node-id")


class RunInfo(BaseModel):
    """One row of ``flwr list``: ``status`` is e.g. ``running`` or ``finished:completed``."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    run_id: int = Field(alias="run-id")
    status: str
    status_details: str | None = Field(default=None, alias="status-details")


class RunList(FlwrReply):
    runs: list[RunInfo] = []


class RunStarted(FlwrReply):
    run_id: int | None = Field(default=None, alias="run-id")


_R = TypeVar("_R", bound=FlwrReply)


def _call(
    ws: Workspace, args: Sequence[str], reply: type[_R], *, what: str, hint: str, timeout: float
) -> _R:
    command = [tool("flwr"), *args, "--format", "json"]
    try:
        proc = subprocess.run(
            command, env=flwr_env(ws), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise FederationError(
            f"{what}: `flwr {' '.join(args[:2])}` did not answer within {timeout:g} s", hint=hint
        ) from exc
    try:
        parsed = reply.model_validate_json(proc.stdout)
    except ValidationError as exc:
        detail = proc.stdout.strip() or proc.stderr.strip() or f"exit code {proc.returncode}"
        raise FederationError(
            f"{what}: flwr's reply was not understood: {detail}", hint=hint
        ) from exc
    if proc.returncode != 0 or not parsed.success:
        detail = (parsed.error_message or proc.stderr or "").strip() or (
            f"exit code {proc.returncode}"
        )
        raise FederationError(f"{what} failed: {detail}", hint=hint)
    return parsed


def register_supernode(
    ws: Workspace, public_key: Path, *, name: str, timeout: float = TIMEOUT_S
) -> int:
    """``flwr supernode register``: the node id the SuperLink gave the public key."""
    what = f"registering {name!r}"
    reply = _call(
        ws,
        ["supernode", "register", str(public_key.resolve()), ws.federation.name, "--name", name],
        NodeRegistered,
        what=what,
        hint=f"{_COORDINATOR_HINT} Is the key an OpenSSH ECDSA public key from "
        "`fedcollab node keygen`?",
        timeout=timeout,
    )
    if reply.node_id is None:
        raise FederationError(f"{what}: flwr reported success without a node id", hint="a bug")
    return reply.node_id


def start_run(
    ws: Workspace, app_dir: Path, run_config: Path, *, job: str, timeout: float = TIMEOUT_S
) -> int:
    """``flwr run APP FEDERATION --run-config FILE`` for job ``job``: the new run's id."""
    what = f"starting job {job!r}"
    reply = _call(
        ws,
        ["run", str(app_dir), ws.federation.name, "--run-config", str(run_config)],
        RunStarted,
        what=what,
        hint=_COORDINATOR_HINT,
        timeout=timeout,
    )
    if reply.run_id is None:
        raise FederationError(f"{what}: no run was started", hint=_COORDINATOR_HINT)
    return reply.run_id


def run_info(ws: Workspace, run_id: int, *, timeout: float = TIMEOUT_S) -> RunInfo | None:
    """``flwr list --run-id``: the run's row, or None when the SuperLink has no such run."""
    reply = _call(
        ws,
        ["list", ws.federation.name, "--run-id", str(run_id)],
        RunList,
        what=f"asking the status of run {run_id}",
        hint=_COORDINATOR_HINT,
        timeout=timeout,
    )
    return next((r for r in reply.runs if r.run_id == run_id), None)


def list_nodes(ws: Workspace, *, timeout: float = TIMEOUT_S) -> list[NodeInfo]:
    """``flwr supernode ls``: the federation's registered nodes and their status."""
    return _call(
        ws,
        ["supernode", "ls", ws.federation.name],
        NodeList,
        what="listing the partner nodes",
        hint=_COORDINATOR_HINT,
        timeout=timeout,
    ).nodes
