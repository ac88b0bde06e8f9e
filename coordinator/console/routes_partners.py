"""Participants, privacy budgets and grants: pages and API.

A partner user sees only its own ledger and grants: ``/budgets`` lists just
that ledger, ``/budgets/<other>`` and ``/api/budgets/<other>`` answer 403.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from fedcollab.coordinator.console.auth import Principal
from fedcollab.coordinator.console.charts import bar_chart, line_points
from fedcollab.coordinator.console.context import ConsoleState, render, state_of
from fedcollab.coordinator.console.permissions import Permission, may_see_partner, need, require
from fedcollab.coordinator.console.sources import partner_grants, partners, read_ledger
from fedcollab.coordinator.workspace import check_name

__all__ = ["router"]

router = APIRouter()
BudgetViewer = Annotated[Principal, Depends(need(Permission.VIEW_BUDGETS))]
ParticipantViewer = Annotated[Principal, Depends(need(Permission.VIEW_PARTICIPANTS))]


def _ledgers(state: ConsoleState, principal: Principal) -> list[dict[str, Any]]:
    return [
        read_ledger(name, path)
        for name, path in sorted(state.config.ledgers.items())
        if may_see_partner(principal, name)
    ]


def _one(state: ConsoleState, principal: Principal, partner: str) -> dict[str, Any]:
    require(may_see_partner(principal, partner))
    path = state.config.ledgers.get(partner)
    ledger = (
        read_ledger(partner, path)
        if path is not None
        else {"partner": partner, "datasets": [], "charges": [], "error": "no ledger shared"}
    )
    check_name("partner", partner)
    return {**ledger, "grants": partner_grants(state.ws, partner)}


def _chart(ledgers: list[dict[str, Any]]) -> Any:
    return bar_chart(
        [
            (f"{lg['partner']} / {d['dataset']}", d["spent_epsilon"], d["cap_epsilon"])
            for lg in ledgers
            for d in lg["datasets"]
        ]
    )


@router.get("/budgets")
def budgets_page(request: Request, principal: BudgetViewer) -> Response:
    ledgers = _ledgers(state_of(request), principal)
    return render(request, "budgets.html", {"ledgers": ledgers, "chart": _chart(ledgers)})


@router.get("/api/budgets")
def budgets_api(request: Request, principal: BudgetViewer) -> Response:
    return JSONResponse({"ledgers": _ledgers(state_of(request), principal)})


@router.get("/budgets/{partner}")
def budget_page(request: Request, partner: str, principal: BudgetViewer) -> Response:
    ledger = _one(state_of(request), principal, partner)
    history = {
        d["dataset"]: line_points(
            [
                (i, c["epsilon_after"])
                for i, c in enumerate(
                    (c for c in ledger["charges"] if c["dataset"] == d["dataset"]), start=1
                )
            ]
        )
        for d in ledger["datasets"]
    }
    return render(
        request,
        "budget.html",
        {"ledger": ledger, "chart": _chart([ledger]), "history": history},
    )


@router.get("/api/budgets/{partner}")
def budget_api(request: Request, partner: str, principal: BudgetViewer) -> Response:
    return JSONResponse(_one(state_of(request), principal, partner))


@router.get("/participants")
def participants_page(request: Request, _p: ParticipantViewer) -> Response:
    state = state_of(request)
    rows = partners(state.ws, state.catalog, state.nodes)
    return render(request, "participants.html", {"partners": rows})


@router.get("/api/participants")
def participants_api(request: Request, _p: ParticipantViewer) -> Response:
    state = state_of(request)
    return JSONResponse({"partners": partners(state.ws, state.catalog, state.nodes)})
