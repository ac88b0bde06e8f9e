"""experiments.bench_he: one small run writes complete, self-consistent figures.

Asserts what the JSON holds, never how fast anything ran (benchmarks are not tests).
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments import bench_he


def test_small_run_writes_consistent_json(tmp_path: Path) -> None:
    argv = ["--sizes", "2000", "--partners", "3", "--repeats", "1", "--out", str(tmp_path)]
    bench_he.main(argv)

    res = json.loads((tmp_path / "bench_he.json").read_text())
    assert res["deployment"] is None  # filled only by the deployment benchmark
    assert res["command"] == ["python", "-m", "experiments.bench_he", *argv]
    assert {"cpus", "python", "tenseal"} <= res["machine"].keys()
    compact = res["parameter_sets"]["compact"]
    assert compact["poly_modulus_degree"] == 8192
    assert compact["coeff_mod_bit_sizes"] == [60, 40]
    assert compact["scale_bits"] == 32
    # One seeded polynomial per 4096 values (privacy.ckks_wire).
    assert compact["byte_ratio_floor_vs_float32"] == 4.0

    (r,) = res["results"]
    assert (r["size"], r["partners"], r["repeats"], r["ciphertexts_per_reply"]) == (2000, 3, 1, 1)

    b = r["bytes"]
    assert b["float32_reference"] == 4 * 2000
    # Real serialised sizes: float64 on the wire, and one full ciphertext sent seeded (one
    # polynomial of 8192 x 8 bytes and a seed, privacy.ckks_wire).
    assert b["plaintext_float64_reply"] > 8 * 2000
    assert 8192 * 8 <= b["ciphertext"] < 2 * 8192 * 8
    assert b["ciphertext_reply"] > b["ciphertext"] > 4 * 2000
    assert b["ratio_ciphertext_to_float32"] == b["ciphertext_reply"] / (4 * 2000)
    assert b["ratio_ciphertext_to_float64_wire"] == (
        b["ciphertext_reply"] / b["plaintext_float64_reply"]
    )

    s = r["seconds"]
    for phase in ("encryption_per_partner", "transfer", "aggregation", "decryption", "round"):
        assert s["encrypted"][phase] > 0
    enc = s["encrypted"]
    assert enc["round"] == (
        enc["encryption_per_partner"] + enc["transfer"] + enc["aggregation"] + enc["decryption"]
    )
    assert s["plaintext"]["round"] == s["plaintext"]["transfer"] + s["plaintext"]["aggregation"]
    assert s["ratio_round_encrypted_to_plaintext"] == enc["round"] / s["plaintext"]["round"]

    acc = r["accuracy"]
    assert acc["max_abs_error_plaintext"] == 0.0
    assert 0 < acc["max_abs_error_encrypted"] <= acc["rounding_grid"] == 2.0**-12
    assert acc["relative_error"] < 1e-6
    assert 100 < acc["max_abs_partner_value"] <= 1000
    assert r["peak_rss_mb_after"] > 0

    by_goal = {g["goal"]: g for g in res["goals"]}
    assert len(by_goal) == 4
    byte_goal = by_goal["ciphertext reply <= 15x float32"]
    assert byte_goal["value"] == b["ratio_ciphertext_to_float32"]
    assert byte_goal["passed"] is (b["ratio_ciphertext_to_float32"] <= 15)
    assert "4096 slots" in byte_goal["note"]  # 2000 values: one ciphertext, mostly empty
