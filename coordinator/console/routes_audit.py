"""The audit browser: logs with verification status, entries, and one-click exports.

Operators and compliance officers browse; only compliance officers export.
Every export is recorded in the console's own audit log before it is served.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from fedcollab.common.errors import ComplianceError, FedcollabError
from fedcollab.common.keys import parse_verifier_key
from fedcollab.compliance.trust import TrustPolicy
from fedcollab.coordinator.console.audit_view import (
    AuditSource,
    bundle_zip,
    list_entries,
    report_zip,
)
from fedcollab.coordinator.console.auth import Principal
from fedcollab.coordinator.console.context import ConsoleState, render, state_of
from fedcollab.coordinator.console.permissions import Forbidden, Permission, need
from fedcollab.coordinator.console.settings import partner_bundles
from fedcollab.coordinator.policy_gate import registry_path
from fedcollab.coordinator.superlink import partner_audit_keys

__all__ = ["router"]

router = APIRouter()
AuditViewer = Annotated[Principal, Depends(need(Permission.VIEW_AUDIT))]
Exporter = Annotated[Principal, Depends(need(Permission.EXPORT_AUDIT))]


def _source(state: ConsoleState, log: str) -> AuditSource:
    source = state.audit.sources.get(log)
    if source is None:
        raise Forbidden()
    return source


def _zip_response(data: bytes, filename: str) -> Response:
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


@router.get("/audit")
def audit_page(request: Request, _p: AuditViewer) -> Response:
    state = state_of(request)
    return render(request, "audit.html", {"logs": [s.to_dict() for s in state.audit.all()]})


@router.get("/api/audit")
def audit_api(request: Request, _p: AuditViewer) -> Response:
    state = state_of(request)
    return JSONResponse({"logs": [s.to_dict() for s in state.audit.all()]})


def _report_policy(state: ConsoleState) -> TrustPolicy:
    """What ``audit report --trust coordinator=audit.pub --trust-peers peers.json`` applies:
    the coordinator's and every registered partner's key pinned, and (the report's
    default, :meth:`TrustPolicy.report_default`) a cosignature of each partner required."""
    name, pub = parse_verifier_key(state.ws.audit_pub.read_text(encoding="utf-8").strip())
    partners: dict[str, bytes] = {}
    for partner, vkey in partner_audit_keys(state.ws).items():
        key_name, partners[partner] = parse_verifier_key(vkey)
        if key_name != partner:  # as --trust-peers refuses a re-labelled key
            raise ComplianceError(
                f"the registered audit key of {partner!r} is the key of {key_name!r}",
                hint=f"register {partner!r} again with its own audit.pub",
            )
    policy = TrustPolicy.from_keys({**partners, name: pub}, registered=partners)
    return policy.report_default(name)


@router.get("/audit/report.zip")
def report_download(
    request: Request,
    principal: Exporter,
    job: str = Query(default="", max_length=128),
) -> Response:
    """The compliance report of the coordinator's log (HTML + PDF + the bundles it verified).

    Partners' bundles registered with ``console bundle add`` are verified and
    cross-checked as ``audit report --ledger`` does; logs that disagree give 409
    with every finding (the CLI writes the report and exits 31)."""
    state = state_of(request)
    refs = state.catalog.refs()
    if job:
        refs = [r for r in refs if r.id == job]
        if not refs:
            return JSONResponse({"error": "no such job"}, status_code=404)
    registry = registry_path(state.ws)
    try:
        data, report = report_zip(
            _source(state, "coordinator"),
            registry=registry if registry.is_file() else None,
            jobs=[r.dir for r in refs if (r.dir / "model_card.json").is_file()],
            policy=_report_policy(state),
            partner_bundles=partner_bundles(state.ws),
        )
    except FedcollabError as exc:
        state.record("console.export", principal.name, what="report", ok=False, error=exc.message)
        return JSONResponse({"error": exc.message}, status_code=409)
    state.record(
        "console.export", principal.name, what="report", log="coordinator", job=job or None,
        ok=True, size=report.size, root=report.root_hex,
    )  # fmt: skip
    suffix = f"-{job}" if job else ""
    return _zip_response(data, f"compliance-report{suffix}-{_stamp()}.zip")


@router.get("/audit/{log}")
def audit_log_page(
    request: Request,
    log: str,
    _p: AuditViewer,
    type: str = Query(default="", max_length=128),
    job: str = Query(default="", max_length=128),
    page: int = Query(default=1, ge=1, le=1_000_000),
) -> Response:
    state = state_of(request)
    source = _source(state, log)
    entries = list_entries(source, event_type=type, job=job, page=page)
    status = state.audit.status(log).to_dict()
    return render(
        request,
        "audit_log.html",
        {"log": status, "entries": entries, "filters": {"type": type, "job": job}},
    )


@router.get("/api/audit/{log}/entries")
def audit_entries_api(
    request: Request,
    log: str,
    _p: AuditViewer,
    type: str = Query(default="", max_length=128),
    job: str = Query(default="", max_length=128),
    page: int = Query(default=1, ge=1, le=1_000_000),
) -> Response:
    source = _source(state_of(request), log)
    return JSONResponse(list_entries(source, event_type=type, job=job, page=page))


@router.get("/audit/{log}/bundle.zip")
def bundle_download(request: Request, log: str, principal: Exporter) -> Response:
    state = state_of(request)
    source = _source(state, log)
    try:
        data, report = bundle_zip(source)
    except FedcollabError as exc:
        state.record("console.export", principal.name, what="bundle", log=log, ok=False,
                     error=exc.message)  # fmt: skip
        return JSONResponse({"error": f"the bundle does not verify: {exc.message}"}, 409)
    state.record(
        "console.export", principal.name, what="bundle", log=log, ok=True,
        size=report.size, root=report.root_hex,
    )  # fmt: skip
    return _zip_response(data, f"{log}-audit-bundle-{_stamp()}.zip")
