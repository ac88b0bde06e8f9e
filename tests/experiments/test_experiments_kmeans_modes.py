"""experiments.kmeans_modes: the job each mode runs, the checks and the README row.

Pure functions on synthetic run records; no simulation runs (the study itself is
`python -m experiments.reproduce --only kmeans_modes`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from experiments.kmeans_modes import MODES, _checks, job_for, one_row_steps
from experiments.readme_rows import ROWS
from fedcollab.client.partner_data import PartnerSource

DATA = Path(__file__).resolve().parents[2] / "data"


def _sources() -> list[PartnerSource]:
    schema = DATA / "online_shoppers.schema.json"
    csv = DATA / "online_shoppers_intention.csv"
    return [PartnerSource(partner=f"p{i}", data=csv, schema=schema) for i in range(9)]


@pytest.mark.parametrize(
    ("mode", "seeding", "encrypted", "masked"),
    [
        ("plaintext-kfed", "kfed", False, False),
        ("plaintext-summed", "summed", False, False),
        ("masked", "summed", False, True),
        ("ckks+masked", "summed", True, True),
    ],
)
def test_each_mode_runs_the_job_it_names(
    mode: str, seeding: str, encrypted: bool, masked: bool
) -> None:
    spec = job_for(_sources(), k=8, mode=mode)
    p = spec.privacy
    assert (p.encrypted, p.masked, p.dp) == (encrypted, masked, "none")
    assert spec.segmentation.k == 8 and spec.segmentation.k_local == 16
    assert spec.segmentation.seeding_for(encrypted=encrypted or masked, dp=False) == seeding
    assert set(MODES) == {"plaintext-kfed", "plaintext-summed", "masked", "ckks+masked"}


def _run(mode: str, ratio: float, centroids: list[list[float]]) -> dict[str, Any]:
    return {"table": "t", "k": 5, "mode": mode, "ratio": ratio, "centroids": centroids}


def test_checks_judge_every_run_and_the_masked_modes_against_summed() -> None:
    c = [[0.0, 1.0], [2.0, 3.0]]
    runs = [
        _run("plaintext-summed", 1.01, c),
        _run("masked", 1.01, [[0.0, 1.0], [2.0, 3.0 + 1e-9]]),
        _run("ckks+masked", 1.03, [[0.0, 1.0], [2.0, 3.5]]),
    ]
    checks = _checks(runs)
    assert checks["t/k5/plaintext-summed: ratio <= 1.02"] is True
    assert checks["t/k5/ckks+masked: ratio <= 1.02"] is False
    assert checks["t/k5/masked: equals plaintext-summed"] is True
    assert checks["t/k5/ckks+masked: equals plaintext-summed"] is False
    assert runs[2]["vs_summed"] == pytest.approx(0.5)
    title, text = ROWS["kmeans_modes"](
        {
            "runs": runs,
            "modes": ["plaintext-summed", "masked", "ckks+masked"],
            "ks": [5],
            "checks": checks,
            "tables": {"t": {"title": "Table T", "partners": ["a", "b"]}},
        }
    )
    assert title == "Table T, simulation"
    assert "ckks+masked 1.0300-1.0300" in text and "**not met**" in text
    assert "within 5.0e-01" in text and "one row" not in text  # runs without the count
    runs[0]["one_row_steps"], runs[1]["one_row_steps"] = 2, 0
    _, counted = ROWS["kmeans_modes"](
        {"runs": runs, "modes": ["plaintext-summed"], "ks": [5], "checks": checks,
         "tables": {"t": {"title": "Table T", "partners": ["a"]}}}
    )  # fmt: skip
    assert "differ by one row" in counted and ": 2 over 2 jobs" in counted


def test_one_row_steps_counts_steps_whose_sizes_differ_by_one_moved_row() -> None:
    sizes = [[10, 10, 10], [11, 9, 10], [11, 9, 10], [12, 9, 9], [12, 10, 8], [14, 8, 8]]
    history = [{"sizes": s} for s in sizes]
    # +1/-1 (one row), none, +1/-1 (one row), +1/-1 (one row), +2/-2 (two rows: no)
    assert one_row_steps(history) == 3
    assert one_row_steps(history[:1]) == 0
