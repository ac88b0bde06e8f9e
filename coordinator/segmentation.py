"""User segmentation: federated k-means with segment profiles.

Seeding in the spirit of k-FED (Dennis, Li, Smith 2021, arXiv:2103.00697):
partners cluster locally and report only clusters of at least
``min_cluster_size`` rows as (count, sum); the coordinator runs weighted
k-means++ on those local centres. Then Lloyd iterations (Lloyd 1982) on
summed per-cluster sums and counts, and finally segment profiles in business
units (size, mean of every numeric feature in original units, purchase rate)
from summed per-segment counts and sums.

Leakage: at seeding the coordinator sees each partner's local cluster sums
and counts (aggregates of >= ``min_cluster_size`` rows); in Lloyd steps and
profiles each partner's per-cluster sums and counts (only their total under
homomorphic aggregation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from flwr.serverapp import Grid

from common.jobspec import JobSpec
from common.schema import DatasetSchema
from common.serde import Payload
from coordinator.outputs import JobOutputs
from coordinator.roster import Partner, Roster
from protocols import kmeans, preprocessing, segments

__all__ = ["SegmentationResult", "run_segmentation"]


@dataclass
class SegmentationResult:
    iterations: int = 0
    objective: float = float("nan")
    history: list[dict[str, Any]] = field(default_factory=list)
    centroids: list[list[float]] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)


def run_segmentation(
    grid: Grid,
    roster: Roster,
    spec: JobSpec,
    schema: DatasetSchema,
    pre: preprocessing.Preprocessor,
    outputs: JobOutputs,
) -> SegmentationResult:
    s = spec.segmentation
    d = pre.n_features
    pre_meta = pre.to_dict()
    encrypted = spec.privacy.encrypted
    if s.seeding_for(encrypted=encrypted) == "kfed":
        centroids = _kfed_seed(grid, roster, spec, pre_meta, d)
    else:
        centroids = _summed_seed(grid, roster, spec, pre_meta, d)
    result = SegmentationResult()
    length = kmeans.cluster_vector_length(k=s.k, n_features=d)
    previous_objective = float("inf")
    for it in range(1, s.lloyd_iterations + 1):
        total = roster.new_sum(length, params="wide")
        roster.request(
            grid,
            action="query.kmeans_step",
            meta={"preprocessor": pre_meta, "centroids": centroids.tolist()},
            into=total,
            step=f"lloyd-{it}",
            expect_length=length,
        )
        new_centroids, objective, counts = kmeans.update_centroids(
            roster.reveal(grid, total, step=f"lloyd-{it}"), centroids
        )
        result.history.append(
            {"iteration": it, "objective": objective, "sizes": [int(c) for c in counts]}
        )
        outputs.event(
            "round", task="segmentation", round=it, total=s.lloyd_iterations, objective=objective
        )
        outputs.trace_step(f"lloyd-{it}", new_centroids)
        shift = float(np.max(np.abs(new_centroids - centroids)))
        centroids = new_centroids
        result.iterations = it
        converged = shift <= s.tolerance or (
            previous_objective - objective <= s.tolerance * max(abs(objective), 1.0)
        )
        previous_objective = objective
        if converged:
            break

    numeric_names = [f.name for f in schema.numeric_features]
    plen = segments.profile_vector_length(k=s.k, numeric_names=numeric_names)

    both = roster.new_sum(plen + length, params="wide")

    roster.request(
        grid,
        action="query.segment_profile",
        meta={"preprocessor": pre_meta, "centroids": centroids.tolist()},
        into=both,
        step="segment-profiles",
        expect_length=plen + length,
    )
    summed = roster.reveal(grid, both, step="segment-profiles")
    _, result.objective, _ = kmeans.update_centroids(summed[plen:], centroids)
    profiles = segments.profiles_from_vector(summed[:plen], k=s.k, numeric_names=numeric_names)
    result.centroids = centroids.tolist()
    result.profiles = [asdict(p) for p in profiles]
    outputs.write_json(
        "centroids.json", {"feature_names": pre.feature_names, "centroids": result.centroids}
    )
    outputs.write_json("segments.json", result.profiles)
    outputs.write_json("preprocessor.json", pre_meta)
    return result


def _kfed_seed(
    grid: Grid, roster: Roster, spec: JobSpec, pre_meta: dict[str, Any], d: int
) -> np.ndarray:
    """k-FED seeding: per-partner local clusters (plaintext jobs only)."""
    s = spec.segmentation
    seeds: list[np.ndarray] = []

    def on_seed(_p: Partner, payload: Payload) -> None:
        assert payload.vector is not None
        seeds.append(payload.vector)

    roster.request(
        grid,
        action="query.kmeans_seed",
        meta={"preprocessor": pre_meta},
        on_reply=on_seed,
        step="kmeans-seed",
        expect_length=kmeans.seed_vector_length(k_local=s.k_local, n_features=d),
    )
    return kmeans.seed_centroids(seeds, k=s.k, n_features=d, seed=s.seed)


def _summed_seed(
    grid: Grid, roster: Roster, spec: JobSpec, pre_meta: dict[str, Any], d: int
) -> np.ndarray:
    """Summed seeding: Lloyd steps from random candidates, then weighted k-means++."""
    s = spec.segmentation
    m = s.seed_candidates
    candidates = kmeans.random_candidates(m, n_features=d, seed=s.seed)
    length = kmeans.cluster_vector_length(k=m, n_features=d)
    summed = np.zeros(length)
    for it in range(1, s.seed_steps + 1):
        total = roster.new_sum(length, params="wide")
        roster.request(
            grid,
            action="query.kmeans_step",
            meta={"preprocessor": pre_meta, "centroids": candidates.tolist()},
            into=total,
            step=f"kmeans-seed-{it}",
            expect_length=length,
        )
        summed = roster.reveal(grid, total, step=f"kmeans-seed-{it}")
        candidates, _, _ = kmeans.update_centroids(summed, candidates)
    return kmeans.seed_from_cells(summed, m=m, k=s.k, n_features=d, seed=s.seed)
