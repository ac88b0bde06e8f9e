"""A real signed audit log for compliance-report tests: a coordinator and two brands'
events (granted, refused, released, cosigned), its bundle, a job folder, a registry, and
the keys an officer pins (the ``world`` fixture, module-scoped, and ``pins``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedcollab.common.keys import Signer, format_verifier_key
from fedcollab.compliance.bundle import export_bundle
from fedcollab.compliance.checkpoint import cosign
from fedcollab.compliance.events import make_event
from fedcollab.compliance.log import AuditLog
from fedcollab.compliance.trust import TrustPolicy

ORIGIN = "fedcollab.test/audit"


DIGEST = "sha256:" + "ab" * 32


REFUSED_DIGEST = "sha256:" + "cd" * 32


DS_A = "sha256:" + "a1" * 32


DS_B = "sha256:" + "b2" * 32


EVIL = '<script>alert("x")</script>'


MODEL_BYTES = b"model weights"


MODEL_HASH = "sha256:" + hashlib.sha256(MODEL_BYTES).hexdigest()


CARD: dict[str, Any] = {
    "job": {"name": "churn", "digest": DIGEST, "task": "purchase_prediction", "mode": "sim"},
    "partners": [
        {"name": "brand-a", "dataset_hash": DS_A, "n_rows": 100},
        {"name": "brand-b", "dataset_hash": DS_B, "n_rows": 80},
    ],
    "fedcollab_version": "0.1.0",
}


_PINS: dict[str, bytes] = {}


_SMALL: dict[Path, TrustPolicy] = {}


def pins() -> TrustPolicy:
    """The keys an officer collected from every party of the ``world`` log."""
    return TrustPolicy.from_keys(_PINS)


def _h(data: str) -> str:
    return "sha256:" + hashlib.sha256(data.encode()).hexdigest()


def _registry(path: Path) -> Path:
    purpose = {
        "id": "purchase-prediction",
        "name": "Purchase propensity model",
        "description": "Joint model of purchase intent",
        "legal_basis": {"pipl": "consent", "gdpr": "legitimate-interests", "note": "LIA-7"},
        "consent": {
            "separate_consent_for_provision": True,
            "sensitive_data": False,
            "gdpr_explicit_consent": False,
        },
        "data_categories": ["browsing sessions", "purchases"],
        "retention_days": 365,
        "recipients": ["coordinator"],
        "cross_border": False,
        "cross_border_mechanism": None,
        "impact_assessment_ref": "PIA-2025-007",
        "controller": "Brand Alliance Ltd",
        "valid_from": "2025-01-01",
        "valid_until": "2099-12-31",
    }
    doc = {"version": 1, "controller": "Brand Alliance Ltd", "purposes": [purpose]}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def _events(keys: dict[str, Signer]) -> Iterator[dict[str, Any]]:
    def ev(actor: str, type_: str, body: dict[str, Any]) -> dict[str, Any]:
        return make_event(keys[actor], actor, type_, body)

    job = {"job": "churn", "digest": DIGEST}
    yield ev(
        "coordinator",
        "job.submitted",
        {
            **job,
            "purpose": "purchase-prediction",
            "task": "purchase_prediction",
            "participants": ["brand-a", "brand-b"],
            "legal_basis": {"pipl": "consent", "gdpr": "legitimate-interests"},
            "grants": [{"partner": "brand-a", "grant_digest": "sha256:" + "01" * 32}],
            "consents": [
                {
                    "partner": "brand-a",
                    "purpose": "purchase-prediction",
                    "kind": "separate",
                    "evidence_ref": "CONSENT-A-42",
                    "subjects_covered": 100,
                }
            ],
        },
    )
    yield ev("coordinator", "job.started", {**job, "mode": "simulation"})
    yield ev(
        "coordinator",
        "job.participants",
        {
            **job,
            "partners": [
                {"name": "brand-a", "dataset_hash": DS_A, "n_rows": 100},
                {"name": "brand-b", "dataset_hash": DS_B, "n_rows": 80},
            ],
            "refused": [{"node": 7, "partner": "brand-c", "reason": "schema mismatch"}],
        },
    )
    for step in (1, 2):
        replies = {p: _h(f"{p}-{step}") for p in ("brand-a", "brand-b")}
        for p, reply in replies.items():
            yield ev(
                p,
                "request.received",
                {**job, "action": "train", "step": step, "request": _h(f"req-{step}")},
            )
            yield ev(
                p,
                "data.sent",
                {
                    **job,
                    "action": "train",
                    "step": step,
                    "reply": reply,
                    "n_values": 10,
                    "privacy": {"clip_norm": 1.0},
                },
            )
        yield ev(
            "coordinator",
            "round.aggregated",
            {
                **job,
                "step": step,
                "partners": list(replies),
                "contributions": replies,
                "aggregate": _h(f"agg-{step}"),
                "protection": "plaintext-sum",
            },
        )
    yield ev(
        "coordinator",
        "partner.dropped",
        {**job, "partner": "brand-b", "step": 3, "reason": f"timeout {EVIL}"},
    )
    yield ev(
        "coordinator",
        "model.released",
        {
            **job,
            "outputs": {"model.pt": MODEL_HASH},
            "recipients": ["brand-a", "brand-b"],
            "metrics": {"auc": 0.71},
        },
    )
    yield ev("coordinator", "job.completed", {**job, "wall_time_s": 12.5})
    yield ev(
        "coordinator",
        "checkpoint.cosignatures",
        {
            **job,
            "checkpoint": {"origin": "coordinator", "size": 17, "root": "00" * 32},
            "cosigned_by": ["brand-a"],
            "cosign_refused": {"brand-b": "timeout"},
        },
    )
    yield ev(
        "coordinator",
        "job.refused",
        {
            "job": "sneaky",
            "digest": REFUSED_DIGEST,
            "purpose": "profiling",
            "error": "PolicyRefusal",
            "reason": f"purpose not registered {EVIL}",
        },
    )
    yield ev(
        "brand-b",
        "request.refused",
        {"job": "sneaky", "digest": REFUSED_DIGEST, "action": "train", "error": "PolicyRefusal"},
    )
    yield ev("brand-a", "experimental.thing", {"note": "future event type"})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report")
    log_key = Signer.generate()
    keys = {n: Signer.generate() for n in ("coordinator", "brand-a", "brand-b")}
    with AuditLog.open(root / "audit.db", origin=ORIGIN, signer=log_key) as log:
        events = list(_events(keys))
        log.append_many(events[:8])
        log.checkpoint()
        log.append_many(events[8:])
        cp = log.checkpoint()
        cosigned = cosign(cp, keys["brand-a"], "brand-a")
        log.add_cosignature(cosigned, name="brand-a", public_key=keys["brand-a"].public_key)
        export_bundle(log, root / "bundle", public_keys={n: s.public_key for n, s in keys.items()})
    _PINS.update({ORIGIN: log_key.public_key, **{n: s.public_key for n, s in keys.items()}})
    job_dir = root / "job"
    job_dir.mkdir()
    (job_dir / "model.pt").write_bytes(MODEL_BYTES)
    (job_dir / "model_card.json").write_text(json.dumps(CARD), encoding="utf-8")
    (root / "log.pub").write_text(format_verifier_key(ORIGIN, log_key.public_key) + "\n")
    return {
        "root": root,
        "bundle": root / "bundle",
        "registry": _registry(root / "registry.json"),
        "job": job_dir,
        "log_pub": root / "log.pub",
    }
