"""Job pages and API: list, live detail, downloads, and submission (operators)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse

from fedcollab.common.errors import FedcollabError
from fedcollab.coordinator.console.auth import Principal, Role
from fedcollab.coordinator.console.charts import bar_chart, line_points
from fedcollab.coordinator.console.context import ConsoleState, render, state_of
from fedcollab.coordinator.console.jobs import (
    DOWNLOADS,
    JobRef,
    job_detail,
    job_participants,
    job_summary,
)
from fedcollab.coordinator.console.permissions import (
    Forbidden,
    Permission,
    check_csrf,
    may_see_job,
    need,
    require,
)
from fedcollab.coordinator.console.submission import new_form_id, start_submission

__all__ = ["router"]

router = APIRouter()
Viewer = Annotated[Principal, Depends(need(Permission.VIEW_JOBS))]
Submitter = Annotated[Principal, Depends(need(Permission.SUBMIT_JOBS))]


def _visible(state: ConsoleState, principal: Principal) -> list[JobRef]:
    return [r for r in state.catalog.refs() if may_see_job(principal, job_participants(r))]


def _ref(state: ConsoleState, principal: Principal, job_id: str) -> JobRef:
    ref = state.catalog.get(job_id)
    if ref is None:
        # Same answer as for a job the user may not see: ids reveal nothing.
        raise Forbidden()
    require(may_see_job(principal, job_participants(ref)))
    return ref


def _detail(ref: JobRef, principal: Principal) -> dict[str, Any]:
    detail = job_detail(ref)
    if principal.role is Role.PARTNER:  # another partner's refusal reason is its business
        for row in detail["participants"]:
            if row["partner"] != principal.partner:
                row["detail"] = ""
    chart = line_points(detail["metric"]["points"], total=detail.get("total"))
    detail["chart"] = {
        "points": chart.points,
        "y_min": chart.y_min,
        "y_max": chart.y_max,
        "x_max": chart.x_max,
    }
    return detail


@router.get("/jobs")
def jobs_page(request: Request, principal: Viewer) -> Response:
    state = state_of(request)
    jobs = [job_summary(r) for r in _visible(state, principal)]
    return render(request, "jobs.html", {"jobs": jobs})


@router.get("/api/jobs")
def jobs_api(request: Request, principal: Viewer) -> Response:
    state = state_of(request)
    return JSONResponse({"jobs": [job_summary(r) for r in _visible(state, principal)]})


@router.get("/jobs/new")
def new_job_page(request: Request, _p: Submitter) -> Response:
    return render(request, "job_new.html", {"error": "", "spec": "", "form_id": new_form_id()})


@router.post("/jobs/new")
def new_job(
    request: Request,
    principal: Submitter,
    spec: str = Form(default="", max_length=262_144),
    csrf: str = Form(default="", max_length=256),
    form_id: str = Form(default="", max_length=64),
) -> Response:
    check_csrf(principal, csrf)
    state = state_of(request)
    try:
        sub = start_submission(state.ws, spec, user=principal.name, form_id=form_id)
    except FedcollabError as exc:
        state.record("console.job_rejected", principal.name, error=type(exc).__name__)
        error = f"{type(exc).__name__}: {exc.diagnostics()}"
        context = {"error": error, "spec": spec, "form_id": new_form_id()}
        return render(request, "job_new.html", context, status=422)
    job, out, early = sub.spec, sub.out, sub.early
    if sub.duplicate:  # the same form again: show the job it already started
        ref = next((r for r in state.catalog.refs() if r.dir == out.resolve()), None)
        return RedirectResponse(f"/jobs/{ref.id}" if ref else "/jobs", status_code=303)
    state.record(
        "console.job_submitted", principal.name, job=job.name, digest=job.digest(),
        out_dir=str(out), refused=type(early).__name__ if early else None,
    )  # fmt: skip
    if early is not None:
        error = f"{type(early).__name__}: {early.diagnostics()}"
        context = {"error": error, "spec": spec, "form_id": new_form_id()}
        return render(request, "job_new.html", context, status=422)
    ref = next((r for r in state.catalog.refs() if r.dir == out.resolve()), None)
    return RedirectResponse(f"/jobs/{ref.id}" if ref else "/jobs", status_code=303)


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, principal: Viewer) -> Response:
    state = state_of(request)
    detail = _detail(_ref(state, principal, job_id), principal)
    attributions = detail.get("attributions")
    drivers = None
    if attributions:
        feats = attributions["features"][:20]
        drivers = bar_chart(
            [(str(f.get("feature")), float(f.get("importance") or 0.0), None) for f in feats]
        )
    return render(request, "job.html", {"job": detail, "drivers_chart": drivers})


@router.get("/api/jobs/{job_id}")
def job_api(request: Request, job_id: str, principal: Viewer) -> Response:
    state = state_of(request)
    return JSONResponse(_detail(_ref(state, principal, job_id), principal))


@router.get("/jobs/{job_id}/files/{name}")
def job_file(request: Request, job_id: str, name: str, principal: Viewer) -> Response:
    state = state_of(request)
    ref = _ref(state, principal, job_id)
    if name not in DOWNLOADS or not (ref.dir / name).is_file():
        return JSONResponse({"error": "not found"}, status_code=404)
    return FileResponse(ref.dir / name, media_type="text/csv", filename=f"{ref.id}-{name}")
