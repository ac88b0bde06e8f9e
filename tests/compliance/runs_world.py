"""One job spec run three times, in real signed logs: what ``audit report`` must tell apart.

Built on :class:`tests.support.audit_world.World` (the real trail, log and cosigning
code; a coordinator and two partners, each with its own log and key), as the new-user
deployment test found it: the operator submits the same job file three times.

* run ``R1``: both partners refuse it at the handshake (``request.refused``,
  ``PrivacyError``, in their *own* logs only); the coordinator logs ``job.failed``
  with "refused: 2".
* runs ``R2`` and ``R3``: completed, each with its rounds, its ``model.released``
  (different model bytes, so different hashes) and its cosigned checkpoint.

Each completed run's output folder is written as the coordinator writes it
(``model.pt``, ``model_card.json``, ``metrics.json``, ``audit.json``, ``progress.jsonl``,
``result.json``; no run id in any of them).  ``job.submitted`` carries no run id
either (the policy gate logs it before the run exists), as in a real log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedcollab.compliance.trail import digest_bytes
from fedcollab.compliance.trust import TrustPolicy, read_public_key
from tests.support.audit_world import COORDINATOR, DIGEST, JOB, PARTNERS, World

R1, R2, R3 = "1" * 32, "2" * 32, "3" * 32
DATASETS = {p: "sha256:" + f"{i + 1:02x}" * 32 for i, p in enumerate(PARTNERS)}
STEPS = {R2: ("round-1", "round-2"), R3: ("round-1", "round-2", "round-3")}
REASON = (
    "only 0 of the required 2 partners joined (missing: -; refused: 2: region-1: refused "
    "by the partner (PrivacyError); region-2: refused by the partner (PrivacyError))"
)


def _submitted(world: World) -> None:
    world.coordinator.trail.record(
        "job.submitted",
        {"job": JOB, "digest": DIGEST, "purpose": "purchase-prediction",
         "task": "purchase_prediction", "participants": list(PARTNERS)},
    )  # fmt: skip


def _refused_run(world: World) -> None:
    head = {"job": JOB, "digest": DIGEST, "run": R1}
    _submitted(world)
    world.coordinator.trail.record("job.started", {**head, "mode": "deployment"})
    for p in world.partners.values():
        p.trail.record(
            "request.refused",
            {**head, "action": "query.handshake", "step": "handshake", "error": "PrivacyError"},
        )
    world.coordinator.trail.record(
        "job.failed", {**head, "error": "NotEnoughPartnersError", "reason": REASON}
    )


def _completed_run(world: World, run: str, folder: Path) -> None:
    """The run's events, then its output folder as ``coordinator/job.py`` writes it."""
    head = {"job": JOB, "digest": DIGEST, "run": run}
    coord = world.coordinator.trail
    _submitted(world)
    world.run_job(run, steps=STEPS[run])
    cp = coord.log.checkpoints()[-1].checkpoint
    audit = {"checkpoint": {"origin": cp.origin, "size": cp.size, "root": cp.root.hex()},
             "cosign_refused": {}, "cosigned_by": sorted(PARTNERS)}  # fmt: skip
    partners = [{"name": p, "dataset_hash": h, "n_rows": None} for p, h in DATASETS.items()]
    coord.record("job.participants", {**head, "partners": partners, "refused": []})
    folder.mkdir(parents=True)
    files: dict[str, bytes] = {
        "model.pt": f"weights of run {run}".encode(),
        "metrics.json": json.dumps({"job": JOB, "rounds_run": len(STEPS[run])}).encode(),
        "model_card.json": json.dumps(
            {
                "job": {"name": JOB, "digest": DIGEST, "mode": "deployment"},
                "partners": partners,
                "started": f"run {run}",
            }
        ).encode(),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    coord.record(
        "model.released",
        {**head, "outputs": {n: digest_bytes(d) for n, d in sorted(files.items())},
         "recipients": ["platform-operator", *PARTNERS], "metrics": {"rounds_run": 2}},
    )  # fmt: skip
    (folder / "audit.json").write_text(json.dumps(audit, indent=2), encoding="utf-8")
    progress: list[dict[str, Any]] = [
        {"event": "job_start", "job": JOB, "digest": DIGEST, "mode": "deployment"},
        {"event": "cosigned", **audit},
        {"event": "job_end", "status": "completed", "audit": audit},
    ]
    (folder / "progress.jsonl").write_text("".join(json.dumps(e) + "\n" for e in progress))
    (folder / "result.json").write_text(json.dumps({"status": "completed"}), encoding="utf-8")


def build(root: Path) -> dict[str, Any]:
    """The three runs' bundles, the two completed runs' folders, and the officer's pins."""
    world = World.create(root / "parties")
    _refused_run(world)
    _completed_run(world, R2, root / "results" / "purchase")
    _completed_run(world, R3, root / "results" / "purchase2")
    bundles = world.export(root / "bundles")
    trust = world.trust_args()
    keys = dict(read_public_key(p.pub) for p in (world.coordinator, *world.partners.values()))
    world.close()
    return {
        "coordinator": bundles[COORDINATOR],
        "ledgers": [bundles[p] for p in PARTNERS],
        "folders": {R2: root / "results" / "purchase", R3: root / "results" / "purchase2"},
        "policy": TrustPolicy.from_keys(keys),
        "trust": trust,
    }
