"""Cross-check a coordinator's audit bundle against partners' bundles, offline.

Each party's bundle verifies on its own (:func:`compliance.bundle.verify_bundle`);
this module checks that they tell the same story: for every vector a partner
logged as sent (``data.sent`` with ``n_values > 0``), the coordinator's
``round.aggregated`` event for that job and step records the same digest under
that partner's name, unless the coordinator logged the partner as dropped at
that step. Conversely every contribution the coordinator recorded for a
partner must match a vector that partner logged as sent: the coordinator
cannot attribute to a partner a vector it never sent.

Call it only on bundles that verified (their entries are then authentic).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcollab.common.errors import AuditVerificationError

__all__ = ["CrossCheck", "cross_check"]


def _events(bundle: Path) -> Iterator[dict[str, Any]]:
    with (bundle / "entries.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)["event"]


def _run(body: Mapping[str, Any]) -> str:
    """Events are matched per run (the same job spec may run many times)."""
    return f"{body.get('digest')}/{body.get('run', '')}"


@dataclass(frozen=True)
class CrossCheck:
    """How many contributions were matched, per partner."""

    matched: Mapping[str, int]
    jobs: int


def cross_check(coordinator: Path, partners: Mapping[str, Path]) -> CrossCheck:
    """Raise AuditVerificationError at the first disagreement between the logs."""
    recorded: dict[tuple[str, str, str], str] = {}  # (job digest, step, partner) -> digest
    dropped: set[tuple[str, str, str]] = set()
    jobs: set[str] = set()
    for ev in _events(coordinator):
        body = ev.get("body", {})
        if ev.get("type") == "round.aggregated":
            jobs.add(_run(body))
            for partner, digest in body.get("contributions", {}).items():
                recorded[(_run(body), str(body["step"]), partner)] = str(digest)
        elif ev.get("type") == "partner.dropped":
            dropped.add((_run(body), str(body["step"]), str(body["partner"])))
    matched: dict[str, int] = {}
    for partner, bundle in partners.items():
        sent: dict[tuple[str, str, str], str] = {}
        for ev in _events(bundle):
            body = ev.get("body", {})
            if ev.get("actor") != partner:
                raise AuditVerificationError(
                    f"{bundle}: event by {ev.get('actor')!r} in the log of {partner!r}"
                )
            if ev.get("type") == "data.sent" and int(body.get("n_values", 0)) > 0:
                sent[(_run(body), str(body["step"]), partner)] = str(body["reply"])
        count = 0
        for key, digest in sent.items():
            if key[0] not in jobs:
                continue  # a job of another coordinator, or one this bundle predates
            if key in dropped:
                continue
            if recorded.get(key) != digest:
                raise AuditVerificationError(
                    f"job {key[0][:19]}..., step {key[1]!r}: {partner!r} logged sending {digest}, "
                    f"the coordinator recorded {recorded.get(key)}"
                )
            count += 1
        for key, digest in recorded.items():
            if key[2] == partner and sent.get(key) != digest:
                raise AuditVerificationError(
                    f"job {key[0][:19]}..., step {key[1]!r}: the coordinator attributes {digest} "
                    f"to {partner!r}, which never logged sending it"
                )
        matched[partner] = count
    return CrossCheck(matched=matched, jobs=len(jobs))
