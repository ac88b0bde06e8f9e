"""User segmentation: federated k-means with segment profiles.

Seeding in the spirit of k-FED (Dennis, Li, Smith 2021, arXiv:2103.00697):
partners cluster locally and report only clusters of at least
``min_cluster_size`` rows as (count, sum); the coordinator runs weighted
k-means++ on those local centres. Then Lloyd iterations (Lloyd 1982) on
summed per-cluster sums and counts, and finally segment profiles in business
units (size, mean of every numeric feature in original units, purchase rate)
from summed per-segment counts and sums, each described in business terms
(label, description, lift, distinguishing columns: :mod:`protocols.segment_labels`).

Leakage: at seeding the coordinator sees each partner's local cluster sums
and counts (aggregates of >= ``min_cluster_size`` rows); in Lloyd steps and
profiles each partner's per-cluster sums and counts (only their total under
homomorphic aggregation).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from flwr.serverapp import Grid

from fedcollab.common.jobspec import JobSpec
from fedcollab.common.schema import DatasetSchema
from fedcollab.common.serde import Payload
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.coordinator.roster import Accumulator, Partner, Roster
from fedcollab.privacy.dp_plan import DpPlan, resolve
from fedcollab.privacy.flooding import ckks_sum_width, contributors_of
from fedcollab.protocols import dp_segments, kmeans, preprocessing, segment_labels, segments
from fedcollab.protocols.client_dp import cluster_sensitivity, profile_sensitivity

__all__ = ["SegmentationResult", "run_segmentation"]


@dataclass
class SegmentationResult:
    iterations: int = 0
    objective: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    centroids: list[list[float]] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)
    #: Under DP: the released centroids' and profiles' epsilon (record level).
    epsilon: float | None = None


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
    encrypted = spec.privacy.encrypted or spec.privacy.masked  # only sums leave partners
    plan = resolve(spec)
    seeded_from: tuple[str, np.ndarray | None] | None = None
    if s.seeding_for(encrypted=encrypted, dp=plan is not None) == "kfed":
        centroids = _kfed_seed(grid, roster, spec, pre_meta, d)
    else:
        centroids, seeded_from = _summed_seed(grid, roster, spec, pre_meta, d, plan)
    if not s.partners_derive(aggregation=spec.privacy.aggregation, dp=spec.privacy.dp):
        seeded_from = None
    result = SegmentationResult()
    length = kmeans.cluster_vector_length(k=s.k, n_features=d)
    previous_objective = float("inf")
    ahead: Accumulator | None = None
    # The step the current centroids were derived from (None: not derived by partners).
    derived_from = seeded_from
    for it in range(1, s.lloyd_iterations + 1):
        total = ahead if ahead is not None else roster.new_sum(length, params="wide")
        ahead = None
        if it < s.lloyd_iterations and spec.privacy.masked:
            # The next step's keys are advertised with this step's request and shared
            # while this one is unmasked.
            ahead = roster.new_sum(length, params="wide")
        then = None if ahead is None else (f"lloyd-{it + 1}", ahead)
        roster.request(
            grid,
            action="query.kmeans_step",
            meta={
                "preprocessor": pre_meta,
                "centroids": centroids.tolist(),
                **_previous(roster, derived_from),
            },
            into=total,
            step=f"lloyd-{it}",
            expect_length=length,
            then=then,
        )
        revealed = roster.reveal(grid, total, step=f"lloyd-{it}", then=then)
        summed = _denoise(revealed, plan, roster, s.k, d)
        new_centroids, objective, counts = kmeans.update_centroids(summed, centroids)
        eps = plan.job_epsilon(s.seed_steps + it) if plan is not None else None
        shown = objective if plan is None else None  # under DP the inertia is not released
        result.history.append(
            {"iteration": it, "objective": shown, "sizes": [int(c) for c in counts], "epsilon": eps}
        )
        outputs.event(
            "round",
            task="segmentation",
            round=it,
            total=s.lloyd_iterations,
            objective=shown,
            epsilon=eps,
        )
        outputs.trace_step(f"lloyd-{it}", new_centroids)
        shift = float(np.max(np.abs(new_centroids - centroids)))
        still = _still(roster, spec, f"lloyd-{it}", summed, centroids)
        if derived_from is not None:
            derived_from = (f"lloyd-{it}", centroids)
        centroids = new_centroids
        result.iterations = it
        # Under DP the inertia is not released (0): only the centroid shift counts.
        converged = shift <= still or (
            plan is None
            and previous_objective - objective <= s.tolerance * max(abs(objective), 1.0)
        )
        previous_objective = objective
        if converged:
            break

    if plan is not None:
        _dp_profiles(grid, roster, spec, pre, centroids, plan, result)
        releases = s.seed_steps + result.iterations + 1
        result.epsilon = plan.job_epsilon(releases)
        _write(outputs, pre, result)
        return result
    numeric_names = [f.name for f in schema.numeric_features]
    plen = segments.profile_vector_length(k=s.k, numeric_names=numeric_names)

    both = roster.new_sum(plen + length, params="wide")

    roster.request(
        grid,
        action="query.segment_profile",
        meta={
            "preprocessor": pre_meta,
            "centroids": centroids.tolist(),
            **_previous(roster, derived_from),
        },
        into=both,
        step="segment-profiles",
        expect_length=plen + length,
    )
    summed = roster.reveal(grid, both, step="segment-profiles")
    _, result.objective, _ = kmeans.update_centroids(summed[plen:], centroids)
    profiles = segments.profiles_from_vector(summed[:plen], k=s.k, numeric_names=numeric_names)
    result.centroids = centroids.tolist()
    result.profiles = [asdict(p) for p in profiles]
    _write(outputs, pre, result)
    return result


def _write(
    outputs: JobOutputs, pre: preprocessing.Preprocessor, result: SegmentationResult
) -> None:
    outputs.write_json(
        "centroids.json", {"feature_names": pre.feature_names, "centroids": result.centroids}
    )
    # In business terms from the federated profile and preprocessor only (no new data).
    result.profiles = segment_labels.describe_segments(
        result.profiles,
        overall_means=dict(zip(pre.numeric_names, pre.means, strict=True)),
        overall_stds=dict(zip(pre.numeric_names, pre.stds, strict=True)),
    )
    outputs.write_segments(result.profiles)
    outputs.write_json("preprocessor.json", pre.to_dict())


def _min_count(plan: DpPlan, roster: Roster, sensitivity: float) -> float:
    """A summed noisy count below this is mostly noise (3 standard deviations)."""
    return max(3.0 * plan.noise_multiplier * sensitivity * math.sqrt(len(roster.active)), 1.0)


def _denoise(summed: np.ndarray, plan: DpPlan | None, roster: Roster, k: int, d: int) -> np.ndarray:
    if plan is None:
        return summed
    floor = _min_count(plan, roster, cluster_sensitivity(row_clip_norm=plan.row_clip_norm))
    return dp_segments.suppress_noisy_clusters(summed, k=k, n_features=d, min_count=floor)


def _dp_profiles(
    grid: Grid,
    roster: Roster,
    spec: JobSpec,
    pre: preprocessing.Preprocessor,
    centroids: np.ndarray,
    plan: DpPlan,
    result: SegmentationResult,
) -> None:
    """Segment profiles from bounded, noised per-segment sums (protocols.dp_segments)."""
    k, d = centroids.shape
    length = dp_segments.bounded_profile_vector_length(k=k, n_features=d)
    total = roster.new_sum(length, params="wide")
    roster.request(
        grid,
        action="query.segment_profile",
        meta={"preprocessor": pre.to_dict(), "centroids": centroids.tolist()},
        into=total,
        step="segment-profiles",
        expect_length=length,
    )
    summed = roster.reveal(grid, total, step="segment-profiles")
    floor = _min_count(plan, roster, profile_sensitivity(row_clip_norm=plan.row_clip_norm))
    profiles = dp_segments.profiles_from_bounded_vector(
        summed, k=k, preprocessor=pre, min_count=floor
    )
    result.objective = None
    result.centroids = centroids.tolist()
    result.profiles = [asdict(p) for p in profiles]


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
    grid: Grid,
    roster: Roster,
    spec: JobSpec,
    pre_meta: dict[str, Any],
    d: int,
    plan: DpPlan | None,
) -> tuple[np.ndarray, tuple[str, np.ndarray | None] | None]:
    """Summed seeding: Lloyd steps from random candidates (stopped when they no longer
    move), then weighted k-means++; also the last seeding step and its centroids, which
    the first Lloyd step derives from (None when partners do not derive them)."""
    s = spec.segmentation
    m = s.seed_candidates
    candidates = kmeans.random_candidates(m, n_features=d, seed=s.seed)
    length = kmeans.cluster_vector_length(k=m, n_features=d)
    summed = np.zeros(length)
    derive = s.partners_derive(aggregation=spec.privacy.aggregation, dp=spec.privacy.dp)
    # The first step's preprocessor comes from the moments, which partners verify too.
    last: tuple[str, np.ndarray | None] | None = ("moments", None)
    for it in range(1, s.seed_steps + 1):
        total = roster.new_sum(length, params="wide")
        step = f"kmeans-seed-{it}"
        roster.request(
            grid,
            action="query.kmeans_step",
            meta={
                "preprocessor": pre_meta,
                "centroids": candidates.tolist(),
                **(_previous(roster, last) if derive else {}),
            },
            into=total,
            step=step,
            expect_length=length,
        )
        summed = _denoise(roster.reveal(grid, total, step=step), plan, roster, m, d)
        last = (step, candidates)
        moved, _, _ = kmeans.update_centroids(summed, candidates)
        if float(np.max(np.abs(moved - candidates))) <= _still(
            roster, spec, step, summed, candidates
        ):
            # Converged: partners refuse a step whose candidates moved no more than the
            # spec's tolerance or a flooded "ckks" sum's noise (client.centroid_chain).
            break
        candidates = moved
    seed = kmeans.seed_from_cells(summed, m=m, k=s.k, n_features=d, seed=s.seed)
    return seed, (last if derive else None)


def _still(
    roster: Roster, spec: JobSpec, step: str, summed: np.ndarray, centroids: np.ndarray
) -> float:
    """The largest centroid move that counts as none: the spec's tolerance, or what the
    flooding noise of a plain "ckks" sum moves the centroids by alone, as partners
    compute it from the same receipt (client.centroid_chain refuses a further step)."""
    evidence = roster.step_sums.get(step, {})
    width = ckks_sum_width(
        aggregation=spec.privacy.aggregation,
        contributors=contributors_of(evidence.get("receipt")),
        decryptions=spec.segmentation.summed_decryptions,
        length=summed.size,
    )
    return max(spec.segmentation.tolerance, kmeans.flooded_shift(summed, centroids, width=width))


def _previous(roster: Roster, derived_from: tuple[str, np.ndarray | None] | None) -> dict[str, Any]:
    """A request's ``previous``: the step its centroids were derived from, that step's
    centroids and the evidence of its sum (client.centroid_chain; the first step: the
    moments, which the preprocessor is derived from); {} when partners do not derive the
    centroids (DP, plaintext aggregation, k-FED seeding)."""
    if derived_from is None:
        return {}
    step, centroids = derived_from
    if centroids is None:
        return {"previous": {"step": step, **roster.step_sums.pop(step)}}
    return {
        "previous": {"step": step, "centroids": centroids.tolist(), **roster.step_sums.pop(step)}
    }
