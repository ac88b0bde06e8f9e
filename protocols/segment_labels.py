"""Segment profiles in business terms: a label, a one-sentence description, lift.

Input: the federated segment profiles of :mod:`protocols.segments` (or
:mod:`protocols.dp_segments`) and the federated per-column means and
standard deviations of the preprocessor; nothing else, so describing the
segments needs no new data from partners.

The rule is deterministic and does not know the data set:

1. **Lift** = segment purchase rate / overall purchase rate, where the overall
   rate is the size-weighted mean of the segments' rates (segments without a
   rate are left out).
2. **Distinguishing columns**: for every numeric column with a segment mean,
   ``z = (segment mean - overall mean) / overall std``; the 3 with the largest
   ``|z|`` (ties: column name), each with ``ratio = segment mean / overall
   mean`` when both are positive.  The overall mean and std are the
   preprocessor's (pooled over all partners' rows).
3. **Label** = ``<tier> <size word>: <high|low> <col1>, <high|low> <col2>``:
   tier "High-converting" (lift >= 1.5), "Low-converting" (lift <= 2/3),
   "Average-converting" otherwise, "Unlabelled" without a rate; size word
   "niche" (share < 10 %), "core" (share >= 35 %), "mid-size" otherwise; a
   column is named only if ``|z| >= 0.25``; with none, "typical profile".
4. **Description**: each distinguishing column as ``"<col> 3.0x the
   average"`` (ratio) or ``"<col> +1.2 SD"`` (no ratio), then ``"purchase
   rate 27% vs 15% overall"``.

>>> rows = describe_segments(
...     [{"segment": 0, "size": 30, "share": 0.3, "purchase_rate": 0.45,
...       "means": {"PageValues": 18.0, "BounceRates": 0.01}},
...      {"segment": 1, "size": 70, "share": 0.7, "purchase_rate": 0.0643,
...       "means": {"PageValues": 1.5, "BounceRates": 0.03}}],
...     overall_means={"PageValues": 6.0, "BounceRates": 0.025},
...     overall_stds={"PageValues": 12.0, "BounceRates": 0.02})
>>> rows[0]["label"]
'High-converting mid-size: high PageValues, low BounceRates'
>>> rows[0]["description"]
'PageValues 3.0x the average, BounceRates 0.4x; purchase rate 45% vs 18% overall'
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fedcollab.common.errors import ProtocolError
from fedcollab.protocols.attribution import csv_text

__all__ = ["describe_segments", "segments_csv"]

TOP_COLUMNS = 3
#: A column at least this many (pooled) standard deviations off the mean is named in the label.
NAMED_Z = 0.25
HIGH_LIFT, LOW_LIFT = 1.5, 2 / 3
NICHE_SHARE, CORE_SHARE = 0.10, 0.35


def _overall_rate(profiles: Sequence[Mapping[str, Any]]) -> float | None:
    rated = [(float(p["size"]), float(p["purchase_rate"])) for p in profiles
             if p.get("purchase_rate") is not None and p.get("size")]  # fmt: skip
    total = sum(n for n, _ in rated)
    return sum(n * r for n, r in rated) / total if total > 0 else None


def _distinguishing(
    means: Mapping[str, float | None],
    overall_means: Mapping[str, float],
    overall_stds: Mapping[str, float],
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for col, value in means.items():
        if value is None or col not in overall_means or not math.isfinite(value):
            continue
        mean, std = float(overall_means[col]), float(overall_stds.get(col, 0.0))
        if not (math.isfinite(mean) and math.isfinite(std)) or std <= 0:
            continue
        z = (float(value) - mean) / std
        ratio = float(value) / mean if mean > 0 and value >= 0 else None
        rows.append(
            {
                "column": col,
                "segment_mean": round(float(value), 6),
                "overall_mean": round(mean, 6),
                "ratio": None if ratio is None else round(ratio, 4),
                "z": round(z, 4),
            }
        )
    rows.sort(key=lambda r: (-abs(r["z"]), r["column"]))
    return rows[:TOP_COLUMNS]


def _label(lift: float | None, share: float, top: Sequence[Mapping[str, Any]]) -> str:
    if lift is None:
        tier = "Unlabelled"
    else:
        tier = (
            "High-converting"
            if lift >= HIGH_LIFT
            else "Low-converting"
            if lift <= LOW_LIFT
            else "Average-converting"
        )
    size = "niche" if share < NICHE_SHARE else "core" if share >= CORE_SHARE else "mid-size"
    named = [f"{'high' if r['z'] > 0 else 'low'} {r['column']}" for r in top[:2]
             if abs(r["z"]) >= NAMED_Z]  # fmt: skip
    return f"{tier} {size}: {', '.join(named) or 'typical profile'}"


def _describe(top: Sequence[Mapping[str, Any]], rate: float | None, overall: float | None) -> str:
    parts: list[str] = []
    for i, r in enumerate(top):
        if r["ratio"] is not None:
            parts.append(f"{r['column']} {r['ratio']:.1f}x" + (" the average" if i == 0 else ""))
        else:
            parts.append(f"{r['column']} {r['z']:+.1f} SD")
    text = ", ".join(parts) or "close to the average on every column"
    if rate is not None and overall is not None:
        text += f"; purchase rate {rate:.0%} vs {overall:.0%} overall"
    return text


def describe_segments(
    profiles: Sequence[Mapping[str, Any]],
    *,
    overall_means: Mapping[str, float],
    overall_stds: Mapping[str, float],
) -> list[dict[str, Any]]:
    """Each profile with ``lift``, ``distinguishing``, ``label`` and ``description`` added
    (its own keys kept); see the module docstring for the rule."""
    for p in profiles:
        if not {"segment", "size", "share", "purchase_rate", "means"} <= set(p):
            raise ProtocolError(f"segment profile lacks keys: {sorted(p)}")
    overall = _overall_rate(profiles)
    out: list[dict[str, Any]] = []
    for p in profiles:
        rate = p["purchase_rate"]
        lift = rate / overall if rate is not None and overall else None
        top = _distinguishing(p["means"], overall_means, overall_stds)
        out.append(
            {
                **p,
                "lift": None if lift is None else round(lift, 4),
                "distinguishing": top,
                "label": _label(lift, float(p["share"]), top),
                "description": _describe(top, rate, overall),
            }
        )
    return out


def segments_csv(profiles: Sequence[Mapping[str, Any]]) -> str:
    """``segments.csv``: one row per described segment, then one column per mean."""
    means = sorted({c for p in profiles for c in p.get("means", {})})
    head = ["segment", "label", "size", "share", "purchase_rate", "lift", "description"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*head, *(csv_text(c) for c in means)])
    for p in profiles:
        row = [p["segment"], csv_text(p["label"]), p["size"], p["share"]]
        row += ["" if p[k] is None else p[k] for k in ("purchase_rate", "lift")]
        row.append(csv_text(p["description"]))
        row += ["" if p["means"].get(c) is None else p["means"][c] for c in means]
        writer.writerow(row)
    return buf.getvalue()
