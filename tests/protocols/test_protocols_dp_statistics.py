"""protocols.dp_statistics: the statistics of a DP job, bounded and noised (issue 13)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcollab.common.errors import PrivacyError
from fedcollab.protocols import dp_statistics, evaluation, preprocessing

LAYOUT = preprocessing.MomentsLayout(
    numeric_names=("spend", "visits"),
    categorical_vocab={"channel": ("app", "web")},
    boolean_names=("member",),
)
BOUNDS = {"spend": [0.0, 1000.0], "visits": [0.0, 50.0]}
TINY = 1e-9  # noise multiplier that leaves the statistics as they are, to 1e-6


def _rows(rng: np.random.Generator, n: int) -> tuple[dict, dict, dict]:  # type: ignore[type-arg]
    numeric = {"spend": rng.gamma(2.0, 300.0, n), "visits": rng.poisson(8, n).astype(float)}
    categorical = {"channel": rng.choice(["app", "web", "kiosk"], n).astype(object)}
    boolean = {"member": rng.integers(0, 2, n).astype(float)}
    return numeric, categorical, boolean


def _scaled(numeric: dict, categorical: dict, boolean: dict) -> np.ndarray:  # type: ignore[type-arg]
    scaled = {
        c: (np.clip(v, *BOUNDS[c]) - sum(BOUNDS[c]) / 2) / ((BOUNDS[c][1] - BOUNDS[c][0]) / 2)
        for c, v in numeric.items()
    }
    return preprocessing.local_moments(LAYOUT, scaled, categorical, boolean)


def test_moments_are_the_clipped_moments_up_to_the_noise() -> None:
    numeric, categorical, boolean = _rows(np.random.default_rng(0), 300)
    got = dp_statistics.private_moments(
        LAYOUT, numeric, categorical, boolean, bounds=BOUNDS, noise_multiplier=TINY
    )
    clipped = {c: np.clip(v, *BOUNDS[c]) for c, v in numeric.items()}
    exact = preprocessing.local_moments(LAYOUT, clipped, categorical, boolean)
    np.testing.assert_allclose(got, exact, rtol=1e-6, atol=1e-3)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40))
def test_one_row_moves_the_scaled_moments_by_at_most_the_sensitivity(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    numeric, categorical, boolean = _rows(rng, n)
    numeric["spend"][0] = rng.choice([-1e9, 1e9, 500.0])  # outliers are clipped
    full = _scaled(numeric, categorical, boolean)
    drop = [{k: v[1:] for k, v in d.items()} for d in (numeric, categorical, boolean)]
    fewer = _scaled(*drop)
    assert np.linalg.norm(full - fewer) <= dp_statistics.moments_sensitivity(LAYOUT) + 1e-9


def test_moments_without_bounds_are_refused() -> None:
    numeric, categorical, boolean = _rows(np.random.default_rng(1), 10)
    with pytest.raises(PrivacyError, match="no declared bounds"):
        dp_statistics.private_moments(
            LAYOUT, numeric, categorical, boolean, bounds={"spend": [0, 1]}, noise_multiplier=1.0
        )


def test_eval_vector_is_a_coarse_histogram_with_noise_on_its_slots_only() -> None:
    rng = np.random.default_rng(2)
    y, p = rng.integers(0, 2, 500), rng.random(500)
    vec = dp_statistics.private_eval_vector(y, p, bins=1000, noise_std=5.0)
    slots = np.nonzero(vec)[0]
    assert len(slots) <= 2 * dp_statistics.DP_EVAL_BINS and np.all(slots >= 3)  # head 0
    exact = dp_statistics.private_eval_vector(y, p, bins=1000, noise_std=TINY)
    m = evaluation.metrics_from_vector(exact, bins=1000, noisy=True)
    assert m.n == 500
    coarse = evaluation.metrics_from_vector(
        evaluation.local_eval_vector(y, np.floor(p * 20) / 20 + 0.025, bins=1000), bins=1000
    )
    assert m.auc == pytest.approx(coarse.auc, abs=1e-9)
    assert m.accuracy == pytest.approx(np.mean((p >= 0.5) == (y == 1)))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 60))
def test_one_row_moves_an_eval_histogram_by_one(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    y, p = rng.integers(0, 2, n), rng.random(n)
    full = dp_statistics.private_eval_vector(y, p, bins=1000, noise_std=TINY)
    fewer = dp_statistics.private_eval_vector(y[1:], p[1:], bins=1000, noise_std=TINY)
    assert np.linalg.norm(full - fewer) == pytest.approx(1.0, abs=1e-6)


def test_exact_decoder_falls_back_to_unit_std_on_a_negative_second_moment() -> None:
    """The exact decoder's fallback (std 1 in the data's units): right for a constant
    column, wrong for a noisy one, which is why DP moments have their own decoder."""
    layout = preprocessing.MomentsLayout(numeric_names=("x",))
    pre = preprocessing.Preprocessor.from_moments(layout, [800.0, 40.0, -5.0])
    assert pre.stds == (1.0,) and pre.means == (0.05,)


def test_private_decoder_without_noise_is_the_exact_one() -> None:
    numeric, categorical, boolean = _rows(np.random.default_rng(4), 500)
    clipped = {c: np.clip(v, *BOUNDS[c]) for c, v in numeric.items()}
    exact = preprocessing.Preprocessor.from_moments(
        LAYOUT, preprocessing.local_moments(LAYOUT, clipped, categorical, boolean)
    )
    vec = dp_statistics.private_moments(
        LAYOUT, numeric, categorical, boolean, bounds=BOUNDS, noise_multiplier=TINY
    )
    got = dp_statistics.decode_private_moments(LAYOUT, vec, bounds=BOUNDS, noise_std=0.0)
    np.testing.assert_allclose(got.means, exact.means, rtol=1e-6)
    np.testing.assert_allclose(got.stds, exact.stds, rtol=1e-6)
    np.testing.assert_allclose(got.boolean_means, exact.boolean_means, rtol=1e-6)


def test_private_decoder_keeps_a_negative_variance_at_the_noise_floor() -> None:
    """A sum of squares pushed below 0 decodes to the noise floor's std (in the column's
    scale), a mean inside the bounds and a boolean mean inside [0, 1]."""
    layout = preprocessing.MomentsLayout(numeric_names=("x",), boolean_names=("b",))
    # scaled units for x in [0, 100]: c = h = 50; count 800, mean -1.2 (below the
    # bounds), sum of squares -5; boolean: 800 rows, sum 900 (> count).
    n, s1, s2 = 800.0, -960.0, -5.0
    c = h = 50.0
    vec = [n, c * n + h * s1, c * c * n + 2 * c * h * s1 + h * h * s2, 800.0, 900.0]
    pre = dp_statistics.decode_private_moments(
        layout, vec, bounds={"x": [0.0, 100.0]}, noise_std=40.0
    )
    floor_t = dp_statistics.NOISE_FLOOR_SE * 40.0 * np.sqrt(1.0 + 4.0) / n  # m clipped to -1
    assert pre.means == pytest.approx((0.0,))
    assert pre.stds == pytest.approx((h * np.sqrt(floor_t),))
    assert pre.boolean_means == (1.0,)


def test_private_decoder_keeps_a_skewed_column_on_its_scale() -> None:
    """The privacy study's failure, replayed: 9 partners x 800 rows of a PageValues-like
    column (85% zeros, bounds [0, 100]) at the statistics noise of a sample-level
    epsilon-1 job (z 20.6, the Online Shoppers layout's sensitivity sqrt(38)). The exact
    decoder's std collapses to 1 in some draws (inputs up to 100); the private decoder's
    std stays within [0.5, 4] x the true one in every draw."""
    rng = np.random.default_rng(11)
    layout = preprocessing.MomentsLayout(numeric_names=("pv",))
    bounds = {"pv": [0.0, 100.0]}
    per_slot = 20.6 * 38**0.5  # z * sensitivity of the Online Shoppers layout
    # this one-column layout's sensitivity is sqrt(3): scale z to the same slot noise
    z = per_slot / dp_statistics.moments_sensitivity(layout)
    x = np.where(rng.random(7200) < 0.85, 0.0, np.clip(rng.exponential(30.0, 7200), 0, 100))
    true_std = float(np.std(x))
    exact_collapsed, ratios = 0, []
    for _ in range(300):
        noisy = sum(
            dp_statistics.private_moments(
                layout, {"pv": part}, {}, {}, bounds=bounds, noise_multiplier=z
            )
            for part in np.split(x, 9)
        )
        exact_collapsed += preprocessing.Preprocessor.from_moments(layout, noisy).stds[0] == 1.0
        got = dp_statistics.decode_private_moments(
            layout, noisy, bounds=bounds, noise_std=per_slot * 3.0
        )
        assert 0.0 <= got.means[0] <= 100.0
        ratios.append(got.stds[0] / true_std)
    assert exact_collapsed > 0
    assert min(ratios) >= 0.5 and max(ratios) <= 4.0, (min(ratios), max(ratios))


def test_a_noisy_evaluations_n_is_the_unclipped_sum_of_its_bins() -> None:
    """Clipping noisy bins at 0 before summing adds every bin's positive noise: the rows a
    DP job reported ran high (542 for 411 test rows, new-user review of 2026-12-06). The
    reported n is now the plain sum, unbiased; over 200 draws its mean is within 3 standard
    errors of the true 60 rows, where the clipped sum is far above it (most bins are
    empty: every one adds about 0.4 noise std once clipped)."""
    rng = np.random.default_rng(3)
    y, p = rng.integers(0, 2, 60), rng.uniform(0.9, 0.95, 60)  # a confident model
    ns, clipped = [], []
    for _ in range(200):
        vec = dp_statistics.private_eval_vector(y, p, bins=1000, noise_std=5.0)
        ns.append(evaluation.metrics_from_vector(vec, bins=1000, noisy=True).n)
        clipped.append(float(np.maximum(vec[3:], 0.0).sum()))
    slots = 2 * dp_statistics.DP_EVAL_BINS
    se = 5.0 * np.sqrt(slots) / np.sqrt(len(ns))
    assert abs(np.mean(ns) - 60) < 3 * se + 0.5
    assert np.mean(clipped) > 60 + 10 * se
