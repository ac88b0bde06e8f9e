"""The public surface of each protocols module is what was meant."""

from __future__ import annotations

import importlib

import pytest

EXPECTED = {
    "fedcollab.protocols.vector_sum": {"VectorSum"},
    "fedcollab.protocols.preprocessing": {
        "MomentsLayout",
        "Preprocessor",
        "level_shares",
        "local_moments",
        "local_vocabulary",
        "merge_vocabularies",
    },
    "fedcollab.protocols.models": {
        "ModelKind",
        "build_model",
        "flatten",
        "get_weights",
        "set_weights",
        "shapes_of",
        "unflatten",
    },
    "fedcollab.protocols.local_training": {
        "LocalTrainResult",
        "OptimizerKind",
        "predict_proba",
        "train_local",
    },
    "fedcollab.protocols.fedavg": {"decode_average", "encode_update", "update_length"},
    "fedcollab.protocols.evaluation": {
        "EvalMetrics",
        "eval_vector_length",
        "local_eval_vector",
        "metrics_from_vector",
    },
    "fedcollab.protocols.early_stopping": {"EarlyStopping"},
    "fedcollab.protocols.kmeans": {
        "assign",
        "centralized_kmeans",
        "cluster_vector_length",
        "flooded_shift",
        "kmeans_objective",
        "local_cluster_vector",
        "local_seed_vector",
        "random_candidates",
        "seed_centroids",
        "seed_from_cells",
        "seed_vector_length",
        "suppress_small_clusters",
        "update_centroids",
    },
    "fedcollab.protocols.segments": {
        "SegmentProfile",
        "local_profile_vector",
        "profile_vector_length",
        "profiles_from_vector",
        "suppress_small_segments",
    },
    "fedcollab.protocols.attribution": {
        "ColumnGroup",
        "PermutationImportance",
        "attribution_csv",
        "coefficient_document",
        "column_groups",
        "csv_text",
        "local_permutation_vector",
        "permutation_document",
        "permutation_importance",
        "permutation_vector_length",
    },
    "fedcollab.protocols.segment_labels": {"describe_segments", "segments_csv"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_public_surface(name: str) -> None:
    module = importlib.import_module(name)
    assert set(module.__all__) == EXPECTED[name]
    for attr in module.__all__:
        assert hasattr(module, attr)
