"""experiments.bench_psi: one small run writes complete, self-consistent figures.

Asserts what the JSON holds, never how fast anything ran (benchmarks are not tests).
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments import bench_psi


def test_make_sets_overlap() -> None:
    sets = bench_psi.make_sets(100, 0.3, 3, seed=1)
    assert list(sets) == ["p0", "p1", "p2"]
    assert all(len(s) == len(set(s)) == 100 for s in sets.values())
    assert len(set(sets["p0"]) & set(sets["p1"]) & set(sets["p2"])) == 30
    assert len(set(sets["p0"]) & set(sets["p1"])) == 30


def test_small_run_writes_consistent_json(tmp_path: Path) -> None:
    argv = ["--n", "600", "--sizes", "200,600", "--three-party-n", "150", "--out", str(tmp_path)]
    argv += ["--calibration-values", "300", "--openssl-seconds", "0"]
    bench_psi.main(argv)

    res = json.loads((tmp_path / "bench_psi.json").read_text())
    assert (tmp_path / "psi_scaling.png").stat().st_size > 0
    assert res["command"] == ["python", "-m", "experiments.bench_psi", *argv]
    assert {"cpus", "loadavg_at_start", "loadavg_at_end", "cryptography"} <= res["machine"].keys()
    runs = [(r["n_per_party"], r["parties"]) for r in res["results"]]
    assert runs == [(600, 2), (200, 2), (150, 3)]  # the main run is not repeated in the series
    assert res["main"] == res["results"][0]
    for r in res["results"]:
        assert r["correct"] is True
        assert r["intersection"] == round(0.5 * r["n_per_party"])
        assert r["scalar_mults"] == r["parties"] ** 2 * r["n_per_party"]
        s = r["seconds"]
        assert s["wall"] == s["own"] + s["hops"] + s["seal"] + s["intersect"] + s["map_back"]
        assert r["rows_per_s_per_core"] == r["parties"] * r["n_per_party"] / (
            s["wall"] * r["cores_used"]
        )
        assert r["cores_used"] == 1  # below the pool threshold: inline, one core
    summary = res["summary"]
    assert summary["target"]["applies"] is False  # 600 ids, not the 1M x 1M goal
    assert summary["target"]["met"] is (res["main"]["seconds"]["wall"] <= 60)
    us = res["calibration"]["module_us_per_mult_one_core"]
    main = res["main"]
    assert summary["floor_seconds"] == main["scalar_mults"] * us * 1e-6 / main["cores_used"]
    assert summary["floor_seconds_openssl_speed"] is None  # skipped
    assert set(summary["anchors_rows_per_s_per_core"].values()) == {2_000, 4_700}
