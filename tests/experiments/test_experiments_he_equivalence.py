"""experiments.he_equivalence: the comparison of plaintext and encrypted runs.

Pure functions on synthetic traces and metrics documents; no simulation runs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from experiments.he_equivalence import (
    RELATIVE_TARGET,
    compare_prediction,
    compare_segmentation,
    compare_traces,
)

PLAIN = {
    "round-1": np.array([0.5, -2.0, 0.25]),
    "round-2": np.array([0.4, -1.5, 0.125]),
    "round-10": np.array([0.3, -1.0, 0.0625]),
}


def _shifted(trace: dict[str, np.ndarray], step: str, index: int, delta: float) -> dict[str, Any]:
    out = {k: v.copy() for k, v in trace.items()}
    out[step][index] += delta
    return out


def test_identical_traces_have_no_difference() -> None:
    r = compare_traces(PLAIN, {k: v.copy() for k, v in PLAIN.items()})
    assert [s["step"] for s in r["per_step"]] == ["round-1", "round-2", "round-10"]  # numeric
    assert r["common_steps"] == 3 and r["only_plaintext"] == r["only_encrypted"] == []
    assert r["max_abs_diff"] == r["max_ratio"] == 0.0
    assert r["max_parameter_scale"] == 2.0


def test_differences_and_scales_per_step() -> None:
    enc = _shifted(PLAIN, "round-2", 2, 3e-7)
    r = compare_traces(PLAIN, enc)
    by_step = {s["step"]: s for s in r["per_step"]}
    assert by_step["round-1"]["max_abs_diff"] == 0.0
    assert by_step["round-2"]["max_abs_diff"] == pytest.approx(3e-7)
    assert by_step["round-2"]["parameter_scale"] == 1.5  # of the plaintext model
    assert by_step["round-2"]["ratio"] == pytest.approx(2e-7)
    assert by_step["round-10"]["parameter_scale"] == 1.0
    assert r["max_abs_diff"] == pytest.approx(3e-7)
    assert r["max_ratio"] == pytest.approx(2e-7)


def test_only_common_steps_are_compared() -> None:
    enc = {"round-1": PLAIN["round-1"].copy(), "round-2": PLAIN["round-2"] + 1.0}
    r = compare_traces(PLAIN, enc)
    assert (r["steps_plaintext"], r["steps_encrypted"], r["common_steps"]) == (3, 2, 2)
    assert r["only_plaintext"] == ["round-10"] and r["only_encrypted"] == []
    assert r["max_abs_diff"] == 1.0


def test_empty_and_zero_traces() -> None:
    r = compare_traces({}, {})
    assert r["common_steps"] == 0 and r["max_ratio"] is None
    zeros = {"lloyd-1": np.zeros(4)}
    assert compare_traces(zeros, zeros)["per_step"][0]["ratio"] == 0.0
    assert compare_traces(zeros, {"lloyd-1": np.full(4, 1e-9)})["max_ratio"] == math.inf


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="round-1"):
        compare_traces({"round-1": np.zeros(3)}, {"round-1": np.zeros(4)})


def test_nan_fails_the_check() -> None:
    enc = _shifted(PLAIN, "round-1", 0, math.nan)
    r = compare_prediction(_metrics(3, 0.85), _metrics(3, 0.85), PLAIN, enc)
    assert math.isnan(r["trace"]["max_ratio"])
    assert not r["checks"][_RELATIVE_CHECK]


@given(
    values=st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=50),
    delta=st.floats(-1e-3, 1e-3),
    index=st.integers(0, 49),
)
def test_max_abs_diff_is_the_perturbation(values: list[float], delta: float, index: int) -> None:
    plain = np.array(values)
    enc = plain.copy()
    enc[index % plain.size] += delta
    r = compare_traces({"round-1": plain}, {"round-1": enc})
    assert r["max_abs_diff"] == pytest.approx(abs(delta), abs=1e-12)
    assert r["max_parameter_scale"] == float(np.max(np.abs(plain)))


def _metrics(rounds: int, auc: float) -> dict[str, Any]:
    return {"rounds_run": rounds, "best_round": rounds - 1, "final": {"test": {"auc": auc}}}


_RELATIVE_CHECK = "prediction: max |enc - plain| <= 1e-6 x parameter scale, every common round"
_AUC_CHECK = "prediction: final test AUC equal to 3 decimals"


def test_prediction_passes_within_target() -> None:
    enc = _shifted(PLAIN, "round-10", 1, 0.5 * RELATIVE_TARGET)  # scale 1.0
    r = compare_prediction(_metrics(10, 0.85212), _metrics(10, 0.85168), PLAIN, enc)
    assert r["checks"] == {_RELATIVE_CHECK: True, _AUC_CHECK: True}
    assert r["test_auc"]["plaintext_3dp"] == r["test_auc"]["encrypted_3dp"] == 0.852
    assert r["same_rounds_run"] and r["findings"] == []


def test_prediction_fails_beyond_target_and_on_auc() -> None:
    enc = _shifted(PLAIN, "round-10", 1, 2 * RELATIVE_TARGET)
    r = compare_prediction(_metrics(10, 0.8526), _metrics(10, 0.8524), PLAIN, enc)
    assert r["checks"] == {_RELATIVE_CHECK: False, _AUC_CHECK: False}
    missing_auc = _metrics(10, 0.85)
    missing_auc["final"]["test"]["auc"] = None
    assert not compare_prediction(missing_auc, missing_auc, PLAIN, PLAIN)["checks"][_AUC_CHECK]


def test_different_early_stopping_is_a_finding() -> None:
    enc = {k: v for k, v in PLAIN.items() if k != "round-10"}
    r = compare_prediction(_metrics(10, 0.85), _metrics(2, 0.85), PLAIN, enc)
    assert r["rounds_run"] == {"plaintext": 10, "encrypted": 2}
    assert not r["same_rounds_run"]
    (finding,) = r["findings"]
    assert "after 10 rounds" in finding and "after 2" in finding and "2 common rounds" in finding
    assert r["trace"]["common_steps"] == 2
    assert r["checks"][_RELATIVE_CHECK]  # judged over the common rounds


def _segmentation(objectives: list[float], final: float) -> dict[str, Any]:
    history = [{"iteration": i, "objective": o} for i, o in enumerate(objectives, start=1)]
    return {"iterations": len(objectives), "objective": final, "history": history}


def test_segmentation_objectives_and_centroids() -> None:
    plain_c = {"lloyd-1": np.array([[1.0, -4.0], [0.5, 2.0]]), "lloyd-2": np.ones((2, 2))}
    enc_c = {"lloyd-1": plain_c["lloyd-1"] + 1e-9, "lloyd-2": plain_c["lloyd-2"].copy()}
    r = compare_segmentation(
        _segmentation([120.0, 110.0, 109.0], 109.0),
        _segmentation([120.0, 110.5], 110.0),
        plain_c,
        enc_c,
    )
    assert r["trace"]["max_abs_diff"] == pytest.approx(1e-9)
    assert r["trace"]["max_parameter_scale"] == 4.0
    assert [o["abs_diff"] for o in r["objective_per_iteration"]] == [0.0, 0.5]
    assert r["final_objective"]["abs_diff"] == 1.0
    assert r["final_objective"]["relative_diff"] == pytest.approx(1 / 109)
    assert r["iterations"] == {"plaintext": 3, "encrypted": 2}
    assert len(r["findings"]) == 1
    assert all(r["checks"].values())
