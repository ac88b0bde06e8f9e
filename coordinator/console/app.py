"""The web console: ``create_app(config)`` builds the FastAPI application.

Pages are rendered on the server (Jinja2, autoescaped); ``static/console.js``
only polls the JSON API to keep a job page live.  Every route except
``/login`` and ``/static`` needs a session: the middleware below turns an
anonymous request into a 303 to ``/login`` (pages) or a bare 401 (API and
downloads) before any route runs, and the routes check permissions with
:func:`coordinator.console.permissions.need`.

Notes
-----
* Headers on every response: ``Content-Security-Policy: default-src 'self';
  frame-ancestors 'none'; form-action 'self'; base-uri 'none'`` (no inline
  script or style anywhere), ``X-Frame-Options: DENY``,
  ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``, and
  ``Cache-Control: no-store`` on everything but static files.
* The session cookie is ``HttpOnly``, ``SameSite=Strict``, and over TLS
  ``Secure`` with the ``__Host-`` prefix (no Domain, Path=/: a sibling host
  cannot set or shadow it).  Every POST also carries the session's CSRF token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Form, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from fedcollab.common.errors import ConsoleError
from fedcollab.common.keys import parse_verifier_key
from fedcollab.compliance.trail import Trail, load_verifier_key
from fedcollab.coordinator.console import routes_audit, routes_jobs, routes_partners
from fedcollab.coordinator.console.audit_view import AuditBrowser, AuditSource
from fedcollab.coordinator.console.auth import LoginGuard, Principal, SessionCodec, UserStore
from fedcollab.coordinator.console.context import ConsoleState, render
from fedcollab.coordinator.console.jobs import JobCatalog
from fedcollab.coordinator.console.permissions import (
    Forbidden,
    NotAuthenticated,
    check_csrf,
    current_principal,
)
from fedcollab.coordinator.console.settings import CONSOLE_ACTOR, ConsoleConfig
from fedcollab.coordinator.console.sources import NodeStatus
from fedcollab.coordinator.superlink import partner_audit_keys
from fedcollab.coordinator.workspace import Workspace

__all__ = ["create_app"]

_STATIC = Path(__file__).parent / "static"
_PUBLIC = ("/login", "/static/", "/favicon.ico")
SignedIn = Annotated[Principal, Depends(current_principal)]
_CSP = "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"


def _wants_json(path: str) -> bool:
    """API routes and downloads answer 401/403 as JSON; pages redirect or render."""
    return path.startswith("/api/") or Path(path).suffix in (".zip", ".csv", ".json")


def _cookie(config: ConsoleConfig, name: str) -> str:
    return f"__Host-{name}" if config.tls else name


def _sources(ws: Workspace, config: ConsoleConfig, state: ConsoleState) -> list[AuditSource]:
    def partner_keys() -> dict[str, bytes]:
        return {n: parse_verifier_key(v)[1] for n, v in partner_audit_keys(ws).items()}

    def checkpoint_console() -> None:
        if state.trail is not None:
            state.trail.checkpoint()

    paths = config.paths
    return [
        AuditSource("coordinator", ws.audit_db, ws.audit_key, ws.audit_pub, partner_keys),
        AuditSource(
            "console", paths.audit_db, paths.audit_key, paths.audit_pub,
            before_export=checkpoint_console,
        ),
    ]  # fmt: skip


def create_app(config: ConsoleConfig, *, users: UserStore | None = None) -> FastAPI:
    """The console application for ``config`` (``users``: a store with a custom hasher)."""
    ws = Workspace.open(config.workspace)
    paths = config.paths
    paths.require()
    store = users or UserStore(paths.users)
    state = ConsoleState(
        config=config,
        ws=ws,
        users=store,
        guard=LoginGuard(),
        codec=SessionCodec(paths.secret.read_bytes()),
        catalog=JobCatalog(ws.root, (ws.root / "jobs", *config.jobs_dirs)),
        nodes=NodeStatus(ws, enabled=config.probe_superlink),
        audit=AuditBrowser([]),
    )
    state.audit = AuditBrowser(_sources(ws, config, state))
    session_cookie, login_cookie = _cookie(config, "fc_session"), _cookie(config, "fc_login")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        name, _ = load_verifier_key(paths.audit_pub)
        if name != CONSOLE_ACTOR:
            raise ConsoleError(f"{paths.audit_pub} is the key of {name!r}, not the console's")
        state.trail = Trail.open(paths.audit_db, paths.audit_key, actor=CONSOLE_ACTOR)
        try:
            state.record("console.started", None, tls=config.tls)
            yield
        finally:
            state.trail.close()
            state.trail = None

    app = FastAPI(
        title="fedcollab console",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # no unauthenticated schema of the API
    )
    app.state.console = state
    app.mount("/static", StaticFiles(directory=_STATIC), name="static")

    @app.middleware("http")
    async def authenticate(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        principal = state.codec.principal(request.cookies.get(session_cookie), state.users)
        request.state.principal = principal
        path = request.url.path
        if principal is None and not path.startswith(_PUBLIC):
            response: Response = _unauthenticated(path)
        else:
            response = await call_next(request)
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if not path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        if config.tls:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        return response

    @app.exception_handler(NotAuthenticated)
    async def not_authenticated(request: Request, _exc: NotAuthenticated) -> Response:
        return _unauthenticated(request.url.path)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, _exc: Forbidden) -> Response:
        if _wants_json(request.url.path):
            return JSONResponse({"error": "forbidden"}, status_code=403)
        return render(request, "error.html", {"title": "Forbidden", "code": 403}, status=403)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        # Browsers ask for it on every page; answering it (empty) keeps it from being
        # redirected to /login like any other unauthenticated path.
        return Response(status_code=204)

    @app.get("/", include_in_schema=False)
    def index(_p: SignedIn) -> Response:
        return RedirectResponse("/jobs", status_code=303)

    @app.get("/login", include_in_schema=False)
    def login_page(request: Request) -> Response:
        if request.state.principal is not None:
            return RedirectResponse("/jobs", status_code=303)
        return _login_form(request, "", 200)

    def _login_form(request: Request, error: str, status: int) -> Response:
        previous = request.cookies.get(login_cookie)
        kept = state.codec.current_login_nonce(previous)
        if kept is not None and previous is not None:
            nonce, cookie = kept, previous
        else:
            nonce, cookie = state.codec.login_nonce()
        response = render(request, "login.html", {"error": error, "nonce": nonce}, status=status)
        response.set_cookie(
            login_cookie, cookie, max_age=3600, httponly=True, samesite="strict",
            secure=config.tls, path="/",
        )  # fmt: skip
        return response

    @app.post("/login", include_in_schema=False)
    def login(
        request: Request,
        username: str = Form(default="", max_length=256),
        password: str = Form(default="", max_length=4096),
        nonce: str = Form(default="", max_length=256),
    ) -> Response:
        if not state.codec.check_login_nonce(request.cookies.get(login_cookie), nonce):
            return _login_form(request, "The login form expired; please try again.", 403)
        name = username.strip().lower()
        shown = name if len(name) <= 64 and name.isprintable() else "<invalid>"
        if state.guard.locked(name):
            state.record("console.login", shown, outcome="locked")
            return _login_form(
                request, "Too many failed attempts: this account is locked for 15 minutes.", 429
            )
        user = state.users.authenticate(name, password)
        if user is None:
            state.guard.failed(name)
            state.record("console.login", shown, outcome="failed")
            return _login_form(request, "Invalid user name or password.", 401)
        state.guard.succeeded(name)
        state.record("console.login", user.name, outcome="ok", role=str(user.role))
        response = RedirectResponse("/jobs", status_code=303)
        response.set_cookie(
            session_cookie, state.codec.issue(user), max_age=state.codec.max_age_s,
            httponly=True, samesite="strict", secure=config.tls, path="/",
        )  # fmt: skip
        response.delete_cookie(login_cookie, path="/", samesite="strict", secure=config.tls)
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(
        principal: SignedIn,
        csrf: str = Form(default="", max_length=256),
    ) -> Response:
        check_csrf(principal, csrf)
        state.users.end_sessions(principal.name)
        state.record("console.logout", principal.name)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(session_cookie, path="/", secure=config.tls, httponly=True)
        return response

    for module in (routes_jobs, routes_partners, routes_audit):
        app.include_router(module.router)
    return app


def _unauthenticated(path: str) -> Response:
    if _wants_json(path):
        return JSONResponse({"error": "authentication required"}, status_code=401)
    return RedirectResponse("/login", status_code=303)
