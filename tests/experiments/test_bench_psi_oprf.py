"""experiments.bench_psi_oprf: one small run writes complete, self-consistent figures.

Asserts what the JSON holds, never how fast anything ran (benchmarks are not tests).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import bench_psi_oprf


def test_small_run_writes_consistent_json(tmp_path: Path) -> None:
    argv = ["--n", "600", "--compare-n", "200", "--out", str(tmp_path)]
    bench_psi_oprf.main(argv)

    res = json.loads((tmp_path / "bench_psi_oprf.json").read_text())
    assert res["command"] == ["python", "-m", "experiments.bench_psi_oprf", *argv]
    assert {"cpus", "loadavg_at_start", "loadavg_at_end", "pynacl"} <= res["machine"].keys()
    runs = [(r["protocol"], r["n_per_party"]) for r in res["results"]]
    assert runs == [("oprf-cm20", 600), ("oprf-cm20", 200), ("ecdh-x25519", 200)]
    for r in res["results"]:
        assert r["correct"] is True
        assert r["intersection"] == round(0.5 * r["n_per_party"])
    for r in res["results"][:2]:
        s = r["seconds"]
        assert s["wall"] == pytest.approx(sum(s[p] for p in bench_psi_oprf.PHASES))
        assert r["params"] == {"m": 1024 if r["n_per_party"] == 600 else 256,
                               "w": 591 if r["n_per_party"] == 600 else 585,
                               "l2_bytes": 8 if r["n_per_party"] == 600 else 7}  # fmt: skip
        assert r["message_bytes"]["matrix"] == r["params"]["w"] * r["params"]["m"] // 8
        assert r["message_bytes"]["values"] == r["n_per_party"] * r["params"]["l2_bytes"]
    assert res["target"]["applies"] is False
    assert res["side_by_side"]["n_per_party"] == 200
    assert res["side_by_side"]["ecdh_wall_over_oprf_wall"] > 0
