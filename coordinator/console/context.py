"""The console's per-process state and the page renderer shared by the route modules."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from fedcollab.compliance.trail import Trail
from fedcollab.coordinator.console.audit_view import AuditBrowser
from fedcollab.coordinator.console.auth import LoginGuard, Principal, SessionCodec, UserStore
from fedcollab.coordinator.console.jobs import JobCatalog
from fedcollab.coordinator.console.permissions import Permission, has
from fedcollab.coordinator.console.settings import ConsoleConfig
from fedcollab.coordinator.console.sources import NodeStatus
from fedcollab.coordinator.workspace import Workspace

__all__ = ["ConsoleState", "render", "state_of"]

_TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class ConsoleState:
    config: ConsoleConfig
    ws: Workspace
    users: UserStore
    guard: LoginGuard
    codec: SessionCodec
    catalog: JobCatalog
    nodes: NodeStatus
    audit: AuditBrowser
    trail: Trail | None = None
    submissions: dict[str, threading.Thread] = field(default_factory=dict)

    def record(self, type: str, principal: str | None, **body: Any) -> int:
        """Append one signed event to the console's own audit log (durable on return)."""
        if self.trail is None:
            raise RuntimeError("the console's audit log is not open (app not started)")
        return self.trail.record(type, {"user": principal, **body})


def state_of(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=True,  # every template is HTML; never mark data safe
    )
)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or isinstance(value, jinja2.Undefined):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


templates.env.filters["fmt"] = _fmt


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, *, status: int = 200
) -> HTMLResponse:
    principal: Principal | None = getattr(request.state, "principal", None)
    nav = {p.value: principal is not None and has(principal, p) for p in Permission}
    base = {"principal": principal, "nav": nav, "csrf": principal.csrf if principal else ""}
    return templates.TemplateResponse(
        request, name, {**base, **(context or {})}, status_code=status
    )
