"""A partner's segmentation replies: k-means seeding, Lloyd steps, segment profiles.

Every reply is a sum over this partner's rows per cluster, with clusters of fewer than
``MIN_AGGREGATE_ROWS`` of its rows reported empty (or, under DP, clipped rows and
Gaussian noise instead); the coordinator's centroids are encoded with its preprocessor
like every other request (:mod:`client.handler_rows`).
"""

from __future__ import annotations

import numpy as np

from fedcollab.client.handler_rows import (
    MIN_AGGREGATE_ROWS,
    Reply,
    dp_plan,
    features,
    request_preprocessor,
)
from fedcollab.client.partner_data import PartnerData
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.messages import KMeansStepRequest
from fedcollab.common.serde import Payload
from fedcollab.protocols import client_dp, kmeans, segments

__all__ = ["kmeans_seed", "kmeans_step", "segment_profile"]


def _segment_x(data: PartnerData, spec: JobSpec, payload: Payload) -> np.ndarray:
    pre = request_preprocessor(payload)
    return features(data, spec, pre, np.arange(data.dataset.n_rows))


def kmeans_seed(data: PartnerData, spec: JobSpec, payload: Payload) -> Reply:
    s = spec.segmentation
    vec = kmeans.local_seed_vector(
        _segment_x(data, spec, payload),
        k_local=s.k_local,
        # The spec is the coordinator's: this partner's own floor holds whatever it says.
        min_cluster_size=max(s.min_cluster_size, MIN_AGGREGATE_ROWS),
        seed=s.seed,
    )
    return {}, vec


def _centroids(payload: Payload) -> np.ndarray:
    return np.asarray(payload.as_(KMeansStepRequest).centroids, dtype=np.float64)


def kmeans_step(data: PartnerData, spec: JobSpec, payload: Payload) -> Reply:
    centroids = _centroids(payload)
    plan = dp_plan(spec)
    if plan is not None:  # clipped rows, Gaussian noise on sums and counts, no suppression
        return {}, client_dp.private_cluster_vector(
            _segment_x(data, spec, payload),
            centroids,
            noise_multiplier=plan.noise_multiplier,
            row_clip_norm=spec.privacy.row_clip_norm,
        )
    vec = kmeans.local_cluster_vector(_segment_x(data, spec, payload), centroids)
    k, d = centroids.shape
    return {}, kmeans.suppress_small_clusters(vec, k=k, n_features=d, min_rows=MIN_AGGREGATE_ROWS)


def segment_profile(data: PartnerData, spec: JobSpec, payload: Payload) -> Reply:
    """Reply vector: ``[profile sums | Lloyd sums of the final centroids]``."""
    centroids = _centroids(payload)
    ds = data.dataset
    x = _segment_x(data, spec, payload)
    plan = dp_plan(spec)
    if plan is not None:  # bounded profile (protocols.dp_segments) with Gaussian noise
        return {}, client_dp.private_profile_vector(
            x,
            centroids,
            ds.labels,
            noise_multiplier=plan.noise_multiplier,
            row_clip_norm=spec.privacy.row_clip_norm,
        )
    assignments = kmeans.assign(x, centroids)
    numeric_names = [f.name for f in ds.schema.numeric_features]
    vec = segments.local_profile_vector(
        assignments,
        ds.numeric,
        ds.labels,
        k=centroids.shape[0],
        numeric_names=numeric_names,
    )
    k, d = centroids.shape
    vec = segments.suppress_small_segments(
        vec, k=k, numeric_names=numeric_names, min_rows=MIN_AGGREGATE_ROWS
    )
    lloyd = kmeans.suppress_small_clusters(
        kmeans.local_cluster_vector(x, centroids), k=k, n_features=d, min_rows=MIN_AGGREGATE_ROWS
    )
    return {}, np.concatenate([vec, lloyd])
