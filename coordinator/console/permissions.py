"""Who may do what in the console: one permission per capability, checked in one place.

Routes declare what they need with ``Depends(need(Permission.X))``; the
dependency resolves the session (:class:`~coordinator.console.auth.SessionCodec`)
and raises :class:`NotAuthenticated` or :class:`Forbidden`, which the app turns
into a redirect to ``/login`` (pages) or a bare 401/403 JSON body (API and
downloads).  Object-level rules (a partner sees its own ledger and the jobs it
takes part in) are the ``may_*`` functions below, used by the routes through
:func:`require`.

Access matrix::

    permission          operator  compliance  partner
    view_jobs              yes       yes       own jobs only
    submit_jobs            yes       -         -
    view_participants      yes       yes       -
    view_budgets           all       all       own ledger only
    view_audit             yes       yes       -
    export_audit           -         yes       -
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from enum import StrEnum

from fastapi import Request

from fedcollab.coordinator.console.auth import Principal, Role

__all__ = [
    "Forbidden",
    "NotAuthenticated",
    "Permission",
    "current_principal",
    "has",
    "may_see_partner",
    "need",
    "require",
]


class Permission(StrEnum):
    VIEW_JOBS = "view_jobs"
    SUBMIT_JOBS = "submit_jobs"
    VIEW_PARTICIPANTS = "view_participants"
    VIEW_BUDGETS = "view_budgets"
    VIEW_AUDIT = "view_audit"
    EXPORT_AUDIT = "export_audit"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.OPERATOR: frozenset(
        {
            Permission.VIEW_JOBS,
            Permission.SUBMIT_JOBS,
            Permission.VIEW_PARTICIPANTS,
            Permission.VIEW_BUDGETS,
            Permission.VIEW_AUDIT,
        }
    ),
    Role.COMPLIANCE: frozenset(
        {
            Permission.VIEW_JOBS,
            Permission.VIEW_PARTICIPANTS,
            Permission.VIEW_BUDGETS,
            Permission.VIEW_AUDIT,
            Permission.EXPORT_AUDIT,
        }
    ),
    Role.PARTNER: frozenset({Permission.VIEW_JOBS, Permission.VIEW_BUDGETS}),
}


class NotAuthenticated(Exception):
    """No valid session: pages redirect to /login, the API answers 401."""


class Forbidden(Exception):
    """A valid session without the right: 403."""


def has(principal: Principal, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS.get(principal.role, frozenset())


def may_see_partner(principal: Principal, partner: str) -> bool:
    """Partner-scoped data (ledger, grants): a partner only its own."""
    if principal.role is Role.PARTNER:
        return principal.partner == partner
    return has(principal, Permission.VIEW_BUDGETS)


def may_see_job(principal: Principal, participants: set[str]) -> bool:
    if principal.role is Role.PARTNER:
        return principal.partner in participants
    return has(principal, Permission.VIEW_JOBS)


def require(allowed: bool) -> None:
    if not allowed:
        raise Forbidden()


def current_principal(request: Request) -> Principal:
    """The request's signed-in user; every state-changing request must carry its CSRF token."""
    principal: Principal | None = request.state.principal
    if principal is None:
        raise NotAuthenticated()
    return principal


def check_csrf(principal: Principal, token: str) -> None:
    if not token or not secrets.compare_digest(token, principal.csrf):
        raise Forbidden()


def need(permission: Permission) -> Callable[[Request], Principal]:
    """A FastAPI dependency: the signed-in user, if the role has ``permission``."""

    def dependency(request: Request) -> Principal:
        principal = current_principal(request)
        require(has(principal, permission))
        return principal

    dependency.__name__ = f"need_{permission}"
    return dependency
