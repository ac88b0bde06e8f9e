"""experiments/deployment_timeline.py and bench_he_deployment's README row: the round
breakdown and one more exchange's cost, from partner logs shaped as the benchmark reads
them."""

from __future__ import annotations

from typing import Any

import pytest

from experiments.deployment_timeline import breakdown, one_more_exchange, second_exchanges


def _masked_mode() -> dict[str, Any]:
    """Rounds 1..3 of a masked job: replies at r + 0.1 / r + 0.2, unmasking replies at
    r + 0.5 / r + 0.45, next requests received 0.2 s after each ``round`` event."""
    steps: dict[str, dict[str, dict[str, float]]] = {"a": {}, "b": {}}
    for r in (1, 2, 3):
        steps["a"][f"round-{r}"] = {"request.received": r - 0.8, "data.sent": r + 0.1}
        steps["b"][f"round-{r}"] = {"request.received": r - 0.8, "data.sent": r + 0.2}
        steps["a"][f"round-{r}.secagg-unmask"] = {"request.received": r + 0.4, "data.sent": r + 0.5}
        steps["b"][f"round-{r}.secagg-unmask"] = {
            "request.received": r + 0.4,
            "data.sent": r + 0.45,
        }
    timeline = [{"event": "round", "round": r, "t": r - 1.0} for r in (1, 2, 3)]
    return {"timeline_s": timeline, "partner_steps_s": steps}


def test_the_second_exchange_runs_from_the_last_input_to_the_last_unmasking() -> None:
    got = second_exchanges(_masked_mode()["partner_steps_s"], rounds=[2, 3])
    assert got == pytest.approx([0.3, 0.3])
    # A round some partner has not logged both steps of is left out, not guessed.
    partial = _masked_mode()["partner_steps_s"]
    del partial["b"]["round-3.secagg-unmask"]
    assert second_exchanges(partial, rounds=[2, 3]) == pytest.approx([0.3])
    assert breakdown(_masked_mode())["second_exchange_s"] == pytest.approx(0.3)


def test_one_more_exchange_is_added_to_the_plaintext_round() -> None:
    modes = {
        "plaintext": {"median_round_s": 0.4, "breakdown_s": {"partner_work_s": 0.1}},
        "masked": {"median_round_s": 1.0, "breakdown_s": {"second_exchange_s": 0.3}},
    }
    more = one_more_exchange(modes)
    assert more["ratio_own_exchange"] == pytest.approx((0.4 + 0.3) / 0.4)
    assert more["ratio_masked_exchange"] == pytest.approx((0.4 + 0.3) / 0.4)
    modes["masked"]["breakdown_s"] = {"second_exchange_s": 0.5}
    assert one_more_exchange(modes)["ratio_masked_exchange"] == pytest.approx(2.25)
    del modes["masked"]
    assert "ratio_masked_exchange" not in one_more_exchange(modes)


def test_the_readme_row_states_one_more_exchange_beside_the_goals() -> None:
    from experiments.readme_rows import ROWS

    def mode(seconds: float) -> dict[str, Any]:
        return {"median_round_s": seconds, "test_auc": 0.9157}

    result: dict[str, Any] = {
        "partners": ["a", "b", "c"],
        "model": {"parameters": 99393},
        "job": {"rounds": 4},
        "repeats": 2,
        "machine": {"cpus": 2, "loadavg_1min_at_start": 1.0, "loadavg_1min_at_end": 1.5},
        "modes": {"plaintext": mode(0.33), "encrypted": mode(0.96), "masked": mode(0.77)},
        "goal": {"value": 2.9, "target": 2.0, "passed": False},
        "goals": [
            {
                "goal": "masked round <= 1.3x plaintext round",
                "value": 2.33,
                "target": 1.3,
                "passed": False,
            }
        ],
        "ratio_encrypted_to_plaintext": {"job_wall_time": 1.6},
        "bytes": {"ciphertext": 3_282_186, "plaintext_float64": 811_176},
        "one_more_exchange": {
            "masked_second_exchange_s": 0.29,
            "ratio_masked_exchange": 1.88,
            "ratio_own_exchange": 1.73,
        },
    }
    _, text = ROWS["bench_he_deployment"](result)
    assert "masked round 0.8 s = 2.33x plaintext (goal 1.3x **not met**" in text
    assert "(the masked unmasking, 0.29 s): 1.88x, 1.73x with the plaintext" in text
    del result["one_more_exchange"]
    assert "one more exchange" not in ROWS["bench_he_deployment"](result)[1]
