"""Federated preprocessing: vocabularies, then standardisation moments.

Two requests, both aggregated at the coordinator without pooled data:

1. Vocabulary: in its handshake each partner reports the distinct values of
   the categorical columns whose vocabulary the schema leaves open; the
   coordinator takes the union (declared vocabularies win).
2. ``query.moments``: each partner sends one vector of counts, sums and sums
   of squares (see :class:`protocols.preprocessing.MomentsLayout`); the
   coordinator only adds the vectors and derives means and standard
   deviations from the total.

Leakage: step 1 reveals which category values each partner holds (not how
often); step 2 reveals to the coordinator the per-partner moments vector in
plaintext jobs; in encrypted jobs (``privacy.encryption = "ckks"``) only the
sum over partners, decrypted by a partner.
"""

from __future__ import annotations

import math
from typing import Any

from flwr.serverapp import Grid

from fedcollab.common.schema import DatasetSchema
from fedcollab.coordinator.roster import Roster
from fedcollab.privacy.dp_plan import DpPlan
from fedcollab.protocols import dp_statistics, preprocessing

__all__ = ["federated_preprocessor", "federated_statistics"]


def federated_preprocessor(
    grid: Grid,
    roster: Roster,
    schema: DatasetSchema,
    *,
    plan: DpPlan | None = None,
    bounds: dict[str, list[float]] | None = None,
) -> preprocessing.Preprocessor:
    return federated_statistics(grid, roster, schema, plan=plan, bounds=bounds)[0]


def federated_statistics(
    grid: Grid,
    roster: Roster,
    schema: DatasetSchema,
    *,
    plan: DpPlan | None = None,
    bounds: dict[str, list[float]] | None = None,
) -> tuple[preprocessing.Preprocessor, dict[str, tuple[float, ...]]]:
    """The preprocessor and each categorical level's pooled share of rows (one request).

    In a DP job (``plan``) every partner's moments carry Gaussian noise
    (:func:`protocols.dp_statistics.private_moments`); they are decoded with the job's
    declared ``bounds`` and the noise's public std (:func:`protocols.dp_statistics.
    decode_private_moments`), which keeps a noisy variance from collapsing a column's
    scale.
    """
    vocabs = [dict(p.vocab) for p in roster.active.values()]
    declared = {
        f.name: list(f.vocabulary) for f in schema.categorical_features if f.vocabulary is not None
    }
    merged = preprocessing.merge_vocabularies(vocabs, declared=declared)
    ordered = {f.name: tuple(merged[f.name]) for f in schema.categorical_features}
    layout = preprocessing.MomentsLayout(
        numeric_names=tuple(f.name for f in schema.numeric_features),
        categorical_vocab=ordered,
        boolean_names=tuple(f.name for f in schema.boolean_features),
    )
    total = roster.new_sum(layout.length, params="wide")
    layout_meta: dict[str, Any] = {
        "numeric": list(layout.numeric_names),
        "categorical": {k: list(v) for k, v in layout.categorical_vocab.items()},
        "boolean": list(layout.boolean_names),
    }
    roster.request(
        grid,
        action="query.moments",
        meta={"layout": layout_meta},
        into=total,
        step="moments",
        expect_length=layout.length,
    )
    summed = roster.reveal(grid, total, step="moments")
    if "moments" in roster.step_sums:  # partners derive a k-means job's preprocessor again
        roster.step_sums["moments"]["layout"] = layout_meta
    if plan is None:
        pre = preprocessing.Preprocessor.from_moments(layout, summed)
    else:
        # Each contributor's slot noise is independent: the sum's std grows with the
        # square root of their number (the active partners bound it from above).
        noise_std = (
            plan.statistics_noise_multiplier
            * dp_statistics.moments_sensitivity(layout)
            * math.sqrt(max(len(roster.active), 1))
        )
        pre = dp_statistics.decode_private_moments(
            layout, summed, bounds=bounds or {}, noise_std=noise_std
        )
    return pre, preprocessing.level_shares(layout, summed)
