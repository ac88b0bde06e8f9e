"""The public surface of each protocols module is what was meant."""

from __future__ import annotations

import importlib

import pytest

EXPECTED = {
    "protocols.vector_sum": {"VectorSum"},
    "protocols.preprocessing": {
        "MomentsLayout",
        "Preprocessor",
        "local_moments",
        "local_vocabulary",
        "merge_vocabularies",
    },
    "protocols.models": {
        "ModelKind",
        "build_model",
        "flatten",
        "get_weights",
        "set_weights",
        "shapes_of",
        "unflatten",
    },
    "protocols.local_training": {
        "LocalTrainResult",
        "OptimizerKind",
        "predict_proba",
        "train_local",
    },
    "protocols.fedavg": {"decode_average", "encode_update", "update_length"},
    "protocols.evaluation": {
        "EvalMetrics",
        "eval_vector_length",
        "local_eval_vector",
        "metrics_from_vector",
    },
    "protocols.early_stopping": {"EarlyStopping"},
    "protocols.kmeans": {
        "assign",
        "centralized_kmeans",
        "cluster_vector_length",
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
    "protocols.segments": {
        "SegmentProfile",
        "local_profile_vector",
        "profile_vector_length",
        "profiles_from_vector",
        "suppress_small_segments",
    },
    "protocols.attribution": {
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
    "protocols.segment_labels": {"describe_segments", "segments_csv"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_public_surface(name: str) -> None:
    module = importlib.import_module(name)
    assert set(module.__all__) == EXPECTED[name]
    for attr in module.__all__:
        assert hasattr(module, attr)
