"""What the demo checks and shows once its jobs ran: the audit trails and the insights.

:func:`export_and_verify` exports every party's audit log as a bundle, verifies each
offline under a trust policy that pins every party's key, and cross-checks the logs
(as a compliance officer would, docs/compliance.md); :func:`insights` and
:func:`render_insights` summarise the purchase drivers and segments the jobs wrote.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console

from fedcollab.common.keys import Signer
from fedcollab.compliance.bundle import export_bundle, verify_bundle
from fedcollab.compliance.crossref import cross_check
from fedcollab.compliance.log import AuditLog
from fedcollab.compliance.trail import load_verifier_key
from fedcollab.compliance.trust import TrustPolicy
from fedcollab.coordinator.workspace import Workspace

__all__ = ["export_and_verify", "insights", "render_insights"]


def export_and_verify(
    ws: Workspace, partners: list[str], out: Path, *, required: list[str] | None = None
) -> dict[str, Any]:
    """Export every party's audit log as a bundle, verify each offline with its key
    pinned, and cross-check that the coordinator's and partners' logs agree.

    ``required``: the partners whose cosignature the coordinator's log must carry
    (default: all of ``partners``). The coordinator asks only the partners still in a
    job at its end to cosign, so a partner that only ever dropped out has none.
    """
    shutil.rmtree(out, ignore_errors=True)
    keys = {p: load_verifier_key(ws.node_dir(p) / "audit.pub")[1] for p in partners}
    with AuditLog.open(ws.audit_db, origin="coordinator", signer=Signer.load(ws.audit_key)) as log:
        export_bundle(log, out / "coordinator", public_keys=keys)
    coordinator_key = load_verifier_key(ws.audit_pub)[1]
    # Every key pinned (as an officer pins the keys collected from each party), every
    # partner's cosignature required: a cosignature under an unpinned key never counts.
    policy = TrustPolicy.from_keys({"coordinator": coordinator_key, **keys})
    bundles = {}
    for p in partners:
        node = ws.node_dir(p)
        with AuditLog.open(
            node / "audit.db", origin=p, signer=Signer.load(node / "audit.key")
        ) as log:
            export_bundle(log, out / p, public_keys={})
        bundles[p] = verify_bundle(out / p, policy)
    must_cosign = partners if required is None else required
    report = verify_bundle(out / "coordinator", policy.with_required(must_cosign))
    check = cross_check(report, bundles)
    check.raise_on_findings()
    cosigners = sorted({n for cp in report.checkpoints for n in cp.cosigned_by()})
    unverified = sorted(
        {n for cp in report.checkpoints for n, st in cp.cosignatures if st != "verified"}
    )
    return {
        "coordinator_entries": report.size,
        "coordinator_root": report.root_hex,
        "cosigners": cosigners,
        "unverified_cosigners": unverified,
        "matched": dict(check.matched),
    }


def insights(prediction_dir: Path, segmentation_dir: Path) -> dict[str, Any]:
    """The top purchase drivers and the segment labels the jobs wrote (attributions.json,
    segments.json), for the summary."""
    doc = json.loads((prediction_dir / "attributions.json").read_text())
    segs = json.loads((segmentation_dir / "segments.json").read_text())
    return {
        "drivers": {
            "method": doc["method"],
            "metric": doc["metric"],
            "top": [
                {k: f.get(k) for k in ("feature", "importance", "direction", "coefficient")}
                for f in doc["features"][:5]
            ],
        },
        "segments": [
            {k: s.get(k) for k in ("segment", "label", "share", "purchase_rate", "lift")}
            for s in segs
        ],
    }


def render_insights(result: dict[str, Any], console: Console) -> None:
    drivers = result["drivers"]
    console.print(
        f"purchase drivers ({drivers['method']}, {drivers['metric']}): "
        + ", ".join(
            f"{d['feature']} {d['direction'] or ''}{d['importance']:.2f}"
            + (f" (coef {d['coefficient']:+.2f})" if d.get("coefficient") is not None else "")
            for d in drivers["top"]
        )
    )
    for seg in result["segments"]:
        console.print(
            f"segment {seg['segment']}: {seg['label']} ({seg['share']:.0%} of users, "
            f"purchase rate {seg['purchase_rate']:.0%}, lift {seg['lift']:.2f})"
        )
