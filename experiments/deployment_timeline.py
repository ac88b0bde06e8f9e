"""What a deployed job's timeline says about its rounds: round times from the job's
``progress.jsonl``, each partner's steps from its own audit log, and where a round's time
goes (:func:`breakdown`), including what one more exchange per step costs
(:func:`one_more_exchange`). Used by :mod:`experiments.bench_he_deployment`,
:mod:`experiments.bench_deployment` and :mod:`experiments.scale_deployment`.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["breakdown", "one_more_exchange", "partner_steps", "round_times", "second_exchanges"]


def round_times(events: Iterable[Mapping[str, Any]]) -> dict[int, float]:
    """Seconds of round ``i`` (from ``round`` event ``i-1`` to ``i``), for i >= 2.

    >>> round_times([{"event": "round", "round": 1, "time": 10.0},
    ...              {"event": "round", "round": 2, "time": 12.5}])
    {2: 2.5}
    """
    at = {int(e["round"]): float(e["time"]) for e in events if e.get("event") == "round"}
    return {r: at[r] - at[r - 1] for r in sorted(at) if r - 1 in at}


def partner_steps(node_dir: Path, partner: str, digest: str, t0: float) -> dict[str, Any]:
    """From a partner's own audit log: per step of job ``digest``, when its ClientApp
    logged the request (after process start-up and imports) and its reply, s after ``t0``."""
    from fedcollab.common.keys import Signer
    from fedcollab.compliance.log import AuditLog

    with AuditLog.open(
        node_dir / "audit.db", origin=partner, signer=Signer.load(node_dir / "audit.key")
    ) as log:
        entries = [json.loads(e) for e in log.entries()]
    steps: dict[str, Any] = {}
    for e in entries:
        if e["body"].get("digest") == digest and e["type"] in ("request.received", "data.sent"):
            at = dt.datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp()
            steps.setdefault(e["body"]["step"], {})[e["type"]] = round(at - t0, 3)
    return steps


def breakdown(mode: Mapping[str, Any]) -> dict[str, float]:
    """Medians over partners and rounds 2..4: previous ``round`` event -> partner's code
    running; its work until the reply; the decryption hop (last reply -> decrypted)."""
    at = {int(e["round"]): e["t"] for e in mode["timeline_s"] if e["event"] == "round"}
    start, work, hop = [], [], []
    for r in range(2, max(at) + 1):
        sent = []
        for steps in mode["partner_steps_s"].values():
            s = steps.get(f"round-{r}", {})
            if {"request.received", "data.sent"} <= s.keys():
                start.append(s["request.received"] - at[r - 1])
                work.append(s["data.sent"] - s["request.received"])
                sent.append(s["data.sent"])
            if "data.sent" in steps.get(f"round-{r}.decrypt", {}):
                hop.append(steps[f"round-{r}.decrypt"]["data.sent"] - max(sent, default=0.0))
    out = {"to_partner_code_s": statistics.median(start), "partner_work_s": statistics.median(work)}
    if hop:
        out["decryption_hop_s"] = statistics.median(hop)
    second = second_exchanges(mode["partner_steps_s"], rounds=range(2, max(at) + 1))
    if second:
        out["second_exchange_s"] = statistics.median(second)
    return out


def second_exchanges(
    partner_steps: Mapping[str, Mapping[str, Mapping[str, float]]], *, rounds: Iterable[int]
) -> list[float]:
    """Per round of a masked mode: the last partner's masked input sent -> the last
    partner's unmasking reply sent (the partners' own logs). The unmasking is an exchange
    with next to no work at the partner (Shamir shares it holds), so this is what one more
    exchange per step costs in this deployment, coordinator work included.

    >>> second_exchanges({"a": {"round-2": {"data.sent": 1.0},
    ...                         "round-2.secagg-unmask": {"data.sent": 1.25}}}, rounds=[2])
    [0.25]
    """
    out = []
    for r in rounds:
        sent = [s.get(f"round-{r}", {}).get("data.sent") for s in partner_steps.values()]
        unmask = [
            s.get(f"round-{r}.secagg-unmask", {}).get("data.sent") for s in partner_steps.values()
        ]
        if sent and unmask and None not in sent and None not in unmask:
            out.append(
                max(x for x in unmask if x is not None) - max(x for x in sent if x is not None)
            )
    return out


def one_more_exchange(modes: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The plaintext round ``P`` of this run plus one more exchange ``E``, as a multiple of
    ``P``: ``(P + E) / P``, with ``E`` the masked mode's measured unmasking exchange
    (:func:`second_exchanges`, this implementation's, coordinator work included), and with
    ``E`` the plaintext round's own exchange (``P`` less the partners' work).

    An estimate of what a second exchange per step costs here, not a bound: runs vary
    with the load (docs/secure_aggregation.md records masked rounds of 1.53-2.55x), and
    another implementation's exchange may cost less. docs/secure_aggregation.md ("Why a
    masked step needs two exchanges") shows that a dropout-tolerant protocol secure
    against a malicious coordinator needs the second exchange."""
    p = modes["plaintext"]["median_round_s"]
    own = p - modes["plaintext"]["breakdown_s"]["partner_work_s"]
    out = {"plaintext_round_s": p, "plaintext_exchange_s": own, "ratio_own_exchange": (p + own) / p}
    second = modes.get("masked", {}).get("breakdown_s", {}).get("second_exchange_s")
    if second is not None:
        out.update(masked_second_exchange_s=second, ratio_masked_exchange=(p + second) / p)
    return out
