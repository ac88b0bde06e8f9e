"""protocols.client_dp (and the bounded profile layout of protocols.dp_segments): clipping
bounds, sensitivities, noise of the right size that nobody can reproduce, and profiles that
decode back to business units."""

from __future__ import annotations

import doctest
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedcollab.common.errors import PrivacyError, ProtocolError
from fedcollab.protocols import client_dp, dp_segments, kmeans, segments
from fedcollab.protocols.client_dp import (
    clip_rows,
    clip_update,
    cluster_sensitivity,
    noise_share,
    noisy_cluster_vector,
    private_cluster_vector,
    private_profile_vector,
    private_update,
    profile_sensitivity,
)
from fedcollab.protocols.dp_segments import (
    bounded_profile_vector_length,
    local_bounded_profile_vector,
    profiles_from_bounded_vector,
    suppress_noisy_clusters,
)
from fedcollab.protocols.preprocessing import Preprocessor

FAST = settings(max_examples=40, deadline=None)
TINY = 1e-9  # a noise multiplier that leaves the statistics readable

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
norms = st.floats(min_value=1e-3, max_value=1e3)


def matrices(max_rows: int = 20, max_cols: int = 6) -> st.SearchStrategy[np.ndarray]:
    shape = st.tuples(st.integers(1, max_rows), st.integers(1, max_cols))
    return hnp.arrays(np.float64, shape, elements=st.floats(-100, 100))


def test_public_surfaces_are_what_was_meant() -> None:
    assert set(client_dp.__all__) == {
        "clip_rows",
        "clip_update",
        "cluster_sensitivity",
        "noise_share",
        "noise_to_signal",
        "noisy_cluster_vector",
        "private_cluster_vector",
        "private_profile_vector",
        "private_update",
        "profile_sensitivity",
    }
    assert set(dp_segments.__all__) == {
        "bounded_profile_vector_length",
        "local_bounded_profile_vector",
        "profiles_from_bounded_vector",
        "suppress_noisy_clusters",
    }


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(client_dp).failed == 0


# --- clipping -----------------------------------------------------------------------------


@FAST
@given(delta=hnp.arrays(np.float64, st.integers(1, 50), elements=finite), c=norms)
def test_clip_update_bounds_the_norm_and_keeps_the_direction(delta: np.ndarray, c: float) -> None:
    clipped = clip_update(delta, clip_norm=c)
    norm = np.linalg.norm(delta)
    assert np.linalg.norm(clipped) <= c * (1 + 1e-12)
    if norm <= c:
        np.testing.assert_array_equal(clipped, delta)
    else:
        np.testing.assert_allclose(clipped, delta * (c / norm), rtol=1e-12)
    assert clipped is not delta


@FAST
@given(x=matrices(), b=norms)
def test_clip_rows_bounds_every_row(x: np.ndarray, b: float) -> None:
    clipped = clip_rows(x, max_norm=b)
    row_norms = np.linalg.norm(x, axis=1)
    assert np.all(np.linalg.norm(clipped, axis=1) <= b * (1 + 1e-12))
    short = row_norms <= b
    np.testing.assert_array_equal(clipped[short], x[short])
    np.testing.assert_allclose(
        clipped[~short], x[~short] * (b / row_norms[~short])[:, None], rtol=1e-12
    )


def test_clipping_refuses_bad_input() -> None:
    with pytest.raises(PrivacyError):
        clip_update(np.ones(3), clip_norm=0.0)
    with pytest.raises(ProtocolError):
        clip_update(np.array([1.0, np.nan]), clip_norm=1.0)
    with pytest.raises(PrivacyError):
        clip_rows(np.ones((2, 2)), max_norm=-1.0)
    with pytest.raises(ProtocolError):
        clip_rows(np.ones(3), max_norm=1.0)


# --- sensitivities: one row more or less moves a vector by at most the stated norm ---------


@FAST
@given(
    x=matrices(),
    extra=hnp.arrays(np.float64, 6, elements=st.floats(-1e4, 1e4)),
    label=st.sampled_from([0.0, 1.0]),
    b=st.floats(0.1, 20.0),
    seed=st.integers(0, 2**31),
)
def test_one_row_moves_the_vectors_by_at_most_their_sensitivity(
    x: np.ndarray, extra: np.ndarray, label: float, b: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    centroids = rng.standard_normal((3, d))
    labels = rng.integers(0, 2, x.shape[0]).astype(np.float64)
    more = np.vstack([x, extra[:d]])
    lloyd = [
        kmeans.local_cluster_vector(clip_rows(m, max_norm=b), centroids)[:-1] for m in (x, more)
    ]
    assert np.linalg.norm(lloyd[1] - lloyd[0]) <= cluster_sensitivity(row_clip_norm=b) * (1 + 1e-9)
    profile = [
        local_bounded_profile_vector(clip_rows(m, max_norm=b), centroids, lab)
        for m, lab in ((x, labels), (more, np.append(labels, label)))
    ]
    assert np.linalg.norm(profile[1] - profile[0]) <= profile_sensitivity(row_clip_norm=b) * (
        1 + 1e-9
    )


def test_sensitivity_values() -> None:
    assert cluster_sensitivity(row_clip_norm=3.0) == pytest.approx(math.sqrt(10))
    assert profile_sensitivity(row_clip_norm=3.0) == pytest.approx(math.sqrt(12))


# --- noise -------------------------------------------------------------------------------


def test_noise_share_has_the_right_std() -> None:
    n = 200_000
    share = noise_share(n, noise_multiplier=2.0, clip_norm=0.5, parties=4)
    assert share.shape == (n,)
    assert np.std(share) == pytest.approx(0.5, rel=0.02)  # z * C / sqrt(parties)
    assert abs(np.mean(share)) < 5 * 0.5 / math.sqrt(n)


def test_shares_of_min_partners_add_up_to_the_full_noise() -> None:
    total = sum(
        noise_share(100_000, noise_multiplier=1.5, clip_norm=2.0, parties=5) for _ in range(5)
    )
    assert np.std(total) == pytest.approx(3.0, rel=0.02)  # z * C


def test_noise_is_never_reproducible() -> None:
    a = noise_share(64, noise_multiplier=1.0, clip_norm=1.0, parties=2)
    b = noise_share(64, noise_multiplier=1.0, clip_norm=1.0, parties=2)
    assert not np.array_equal(a, b)
    vec = np.zeros(kmeans.cluster_vector_length(k=2, n_features=3))
    args: dict[str, Any] = {"k": 2, "n_features": 3, "noise_multiplier": 1.0, "row_clip_norm": 1.0}
    assert not np.array_equal(noisy_cluster_vector(vec, **args), noisy_cluster_vector(vec, **args))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"noise_multiplier": 0.0},
        {"clip_norm": -1.0},
        {"parties": 0},
        {"parties": 1.5},
        {"noise_multiplier": math.inf},
    ],
)
def test_noise_share_refuses_bad_parameters(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"noise_multiplier": 1.0, "clip_norm": 1.0, "parties": 3}
    with pytest.raises(PrivacyError):
        noise_share(10, **{**args, **kwargs})


def test_private_update_is_the_clipped_delta_plus_a_share() -> None:
    old = [np.zeros((2, 3)), np.zeros(3)]
    new = [np.full((2, 3), 10.0), np.full(3, 10.0)]
    out = private_update(new, old, clip_norm=1.0, noise_multiplier=TINY, parties=3)
    assert out.shape == (9,)
    np.testing.assert_allclose(out, np.full(9, 1 / 3), atol=1e-6)  # norm 1, same direction
    noisy = private_update(new, old, clip_norm=1.0, noise_multiplier=50.0, parties=1)
    assert np.linalg.norm(noisy) > 10  # the share is there
    with pytest.raises(ProtocolError):
        private_update(new, old[:1], clip_norm=1.0, noise_multiplier=1.0, parties=3)


# --- DP Lloyd vectors ----------------------------------------------------------------------


def test_noisy_cluster_vector_keeps_the_layout_and_zeroes_the_inertia() -> None:
    rng = np.random.default_rng(0)
    x = clip_rows(rng.standard_normal((200, 3)), max_norm=2.0)
    centroids = rng.standard_normal((4, 3))
    exact = kmeans.local_cluster_vector(x, centroids)
    noisy = noisy_cluster_vector(exact, k=4, n_features=3, noise_multiplier=TINY, row_clip_norm=2.0)
    assert noisy.shape == exact.shape
    assert exact[-1] > 0 and noisy[-1] == 0.0
    np.testing.assert_allclose(noisy[:-1], exact[:-1], atol=1e-6)
    np.testing.assert_array_equal(exact, kmeans.local_cluster_vector(x, centroids))  # not mutated
    with pytest.raises(ProtocolError):
        noisy_cluster_vector(exact[:-1], k=4, n_features=3, noise_multiplier=1.0, row_clip_norm=2.0)


def test_noisy_cluster_vector_noise_has_the_right_std() -> None:
    k, d, z, b = 40, 250, 0.7, 3.0
    vec = np.zeros(kmeans.cluster_vector_length(k=k, n_features=d))
    noisy = noisy_cluster_vector(vec, k=k, n_features=d, noise_multiplier=z, row_clip_norm=b)
    assert np.std(noisy[:-1]) == pytest.approx(z * math.sqrt(b * b + 1), rel=0.04)


def test_private_cluster_vector_clips_rows_before_summing() -> None:
    x = np.array([[100.0, 0.0], [0.0, 100.0], [0.5, 0.0]])
    centroids = np.array([[1.0, 0.0], [0.0, 1.0]])
    vec = private_cluster_vector(x, centroids, noise_multiplier=TINY, row_clip_norm=1.0)
    sums = vec[:4].reshape(2, 2)
    np.testing.assert_allclose(sums, [[1.5, 0.0], [0.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(vec[4:6], [2.0, 1.0], atol=1e-6)
    assert vec[-1] == 0.0


def test_suppress_noisy_clusters_makes_noisy_sums_decodable() -> None:
    k, d = 3, 2
    summed = np.array([4.0, 2.0, 0.3, -0.2, 10.0, 10.0, 2.0, -3.0, 5.0, 0.0])
    previous = np.array([[0.0, 0.0], [7.0, 7.0], [1.0, 1.0]])
    with pytest.raises(ProtocolError):  # a negative noisy count
        kmeans.update_centroids(summed, previous)
    cleaned = suppress_noisy_clusters(summed, k=k, n_features=d, min_count=1.0)
    centroids, _, counts = kmeans.update_centroids(cleaned, previous)
    np.testing.assert_allclose(centroids, [[2.0, 1.0], [7.0, 7.0], [2.0, 2.0]])
    np.testing.assert_allclose(counts, [2.0, 0.0, 5.0])
    with pytest.raises(ProtocolError):
        suppress_noisy_clusters(summed, k=k, n_features=d, min_count=0.0)


# --- DP segment profiles --------------------------------------------------------------------


def shop(seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Two segments in business units: small baskets, and big baskets that buy more."""
    rng = np.random.default_rng(seed)
    big = rng.random(300) < 0.4
    spend = np.where(big, rng.normal(200, 10, 300), rng.normal(20, 3, 300))
    visits = np.where(big, rng.normal(12, 1, 300), rng.normal(3, 0.5, 300))
    labels = (rng.random(300) < np.where(big, 0.6, 0.1)).astype(np.float64)
    return {"spend": spend, "visits": visits}, labels


def fitted(parts: list[dict[str, np.ndarray]]) -> Preprocessor:
    pooled = {c: np.concatenate([p[c] for p in parts]) for c in ("spend", "visits")}
    return Preprocessor(
        numeric_names=("spend", "visits"),
        means=tuple(float(pooled[c].mean()) for c in ("spend", "visits")),
        stds=tuple(float(pooled[c].std()) for c in ("spend", "visits")),
        categorical_vocab={},
        boolean_names=(),
        boolean_means=(),
    )


def test_profiles_decode_to_business_units() -> None:
    parts = [shop(1), shop(2)]
    pre = fitted([p for p, _ in parts])
    xs = [pre.transform(p, {}, {}) for p, _ in parts]
    centroids = kmeans.centralized_kmeans(np.vstack(xs), k=2, seed=0)
    k = 2
    summed = np.zeros(bounded_profile_vector_length(k=k, n_features=2))
    exact = np.zeros(segments.profile_vector_length(k=k, numeric_names=pre.numeric_names))
    for (raw, labels), x in zip(parts, xs, strict=True):
        # No clipping at this bound and no noise to speak of: the profile must be exact.
        summed += private_profile_vector(
            x, centroids, labels, noise_multiplier=TINY, row_clip_norm=1e3
        )
        exact += segments.local_profile_vector(
            kmeans.assign(x, centroids), raw, labels, k=k, numeric_names=pre.numeric_names
        )
    got = profiles_from_bounded_vector(summed, k=k, preprocessor=pre, min_count=1.0)
    want = segments.profiles_from_vector(exact, k=k, numeric_names=pre.numeric_names)
    for g, w in zip(got, want, strict=True):
        assert g.size == w.size and g.share == pytest.approx(w.share)
        assert g.purchase_rate == pytest.approx(w.purchase_rate, abs=1e-6)
        for name in pre.numeric_names:
            assert g.means[name] == pytest.approx(w.means[name], rel=1e-4)


def test_partners_without_labels_do_not_bias_the_purchase_rate() -> None:
    (raw, labels), (raw2, _) = shop(3), shop(4)
    pre = fitted([raw, raw2])
    centroids = np.zeros((1, 2))
    with_labels = local_bounded_profile_vector(pre.transform(raw, {}, {}), centroids, labels)
    without = local_bounded_profile_vector(pre.transform(raw2, {}, {}), centroids, None)
    assert without[-2:].tolist() == [0.0, 0.0]
    (profile,) = profiles_from_bounded_vector(
        with_labels + without, k=1, preprocessor=pre, min_count=1.0
    )
    assert profile.size == 600
    assert profile.purchase_rate == pytest.approx(labels.mean())


def test_profile_noise_has_the_right_std() -> None:
    x = np.zeros((1, 400))
    vec = private_profile_vector(
        x, np.full((30, 400), 5.0), None, noise_multiplier=0.5, row_clip_norm=2.0
    )
    assert vec.shape == (bounded_profile_vector_length(k=30, n_features=400),)
    assert np.std(vec) == pytest.approx(0.5 * math.sqrt(4 + 3), rel=0.04)


def test_noisy_profiles_are_post_processed_safely() -> None:
    pre = fitted([shop(5)[0]])
    k, d = 3, 2
    sums = [[2.0, -1.0], [0.1, 0.1], [3.0, 3.0]]
    counts, labelled, positives = [10.0, 0.4, -2.0], [10.0, 0.2, -1.0], [12.0, 0.5, 1.0]
    vec = np.concatenate([np.ravel(sums), counts, labelled, positives])
    profiles = profiles_from_bounded_vector(vec, k=k, preprocessor=pre, min_count=1.0)
    first, small, negative = profiles
    assert first.purchase_rate == 1.0  # noisy rate above 1 is clamped
    assert first.means["spend"] == pytest.approx(pre.means[0] + pre.stds[0] * 0.2)
    assert small.means == {"spend": None, "visits": None} and small.purchase_rate is None
    assert negative.size == 0 and negative.share == 0.0
    assert first.share == pytest.approx(10.0 / 10.4)
    with pytest.raises(ProtocolError):
        profiles_from_bounded_vector(vec[:-1], k=k, preprocessor=pre, min_count=1.0)
    with pytest.raises(ProtocolError, match="no customers"):
        profiles_from_bounded_vector(np.zeros_like(vec), k=k, preprocessor=pre, min_count=1.0)
    assert d == pre.n_features


def test_noise_to_signal_matches_its_definition_and_refuses_bad_counts() -> None:
    """z * sqrt(d / (m * min_partners * rounds)); counts must be integers >= 1."""
    from fedcollab.protocols.client_dp import noise_to_signal

    got = noise_to_signal(
        noise_multiplier=2.0, n_parameters=100, contributors=10, min_partners=5, rounds=2
    )
    assert got == pytest.approx(2.0 * (100 / (10 * 5 * 2)) ** 0.5)
    # More partners or fewer parameters lower it; it does not depend on the clip norm.
    assert noise_to_signal(
        noise_multiplier=2.0, n_parameters=25, contributors=10, min_partners=5, rounds=2
    ) == pytest.approx(got / 2)
    for bad in ({"n_parameters": 0}, {"contributors": 2.5}, {"rounds": True}):
        kwargs = {"n_parameters": 10, "contributors": 3, "min_partners": 3, "rounds": 1} | bad
        with pytest.raises(PrivacyError, match="integer >= 1"):
            noise_to_signal(noise_multiplier=1.0, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(PrivacyError):
        noise_to_signal(
            noise_multiplier=0.0, n_parameters=1, contributors=1, min_partners=1, rounds=1
        )
