"""experiments.bench_secagg --quick: one smoke run writes complete, consistent JSON.

Asserts what the JSON holds (exact sums, byte ratios computed from the recorded sizes),
never how fast anything ran (benchmarks are not tests).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from experiments import bench_secagg


def test_quick_run_writes_consistent_json(tmp_path: Path) -> None:
    argv = ["--quick", "--out", str(tmp_path)]
    bench_secagg.main(argv)
    res = json.loads((tmp_path / "bench_secagg.json").read_text())
    assert res["command"] == ["python", "-m", "experiments.bench_secagg", *argv]
    rows = res["results"]
    assert {(r["size"], r["partners"], r["dropout"]) for r in rows} == {
        (1000, 5, 0.0),
        (1000, 5, 0.2),
    }
    for r in rows:
        assert r["masked"]["exact_on_grid"] is True
        assert r["masked"]["survivors"] == 5 - round(5 * r["dropout"])
        assert r["plaintext"]["reply_bytes"] == 8 * r["size"]
        assert r["masked"]["reply_bytes"] > 8 * r["size"]
        assert r["masked_reply_ratio"] == r["masked"]["reply_bytes"] / (8 * r["size"])
        assert r["plaintext"]["flower_reply_bytes"] > 8 * r["size"]
        assert r["masked"]["flower_reply_bytes"] > r["masked"]["reply_bytes"]
        assert r["ckks"]["reply_bytes"] >= 8192 * 8  # one seeded polynomial, one prime
        # a partner sends more than its reply: keys, sealed shares, signatures
        assert r["masked"]["partner_bytes_sent"] > r["masked"]["reply_bytes"]
        cm = r["ckks+masked"]
        # Both limbs of a value in one complex slot of a one-prime "limbs" ciphertext: as
        # many ciphertexts as the values take in "compact", each of the same size.
        per_ct = r["ckks"]["reply_bytes"] / math.ceil((r["size"] + 1) / 4096)
        assert cm["reply_bytes"] == pytest.approx(
            per_ct * math.ceil((r["size"] + 1) / 4096), rel=0.02
        )
        assert cm["partner_seconds"] > r["masked"]["partner_seconds"]
        assert cm["distinct_ciphertexts"] == min(3, r["masked"]["survivors"])
    goals = res["goals"]
    worst = max(max(r["masked_reply_ratio"], r["masked_flower_reply_ratio"]) for r in rows)
    assert goals["masked_reply_bytes"]["met"] == (worst <= 1.1)
    assert goals["unmask_time"]["met"] is None  # the 100-partner case is not in --quick


def test_pairs_over_the_work_cap_are_skipped_and_listed(tmp_path: Path) -> None:
    """``--max-values`` skips (parameters x partners) pairs over the cap; the JSON lists
    them and the README row says they were not run."""
    from experiments.readme_rows import ROWS

    argv = ["--sizes", "1000,2000", "--partners", "3", "--dropouts", "0",
            "--max-values", "5000", "--out", str(tmp_path)]  # fmt: skip
    assert bench_secagg.main(argv) == 0
    res = json.loads((tmp_path / "bench_secagg.json").read_text())
    assert [r["size"] for r in res["results"]] == [1000]
    assert res["skipped"] == [{"size": 2000, "partners": 3}]
    _, text = ROWS["bench_secagg"](res)
    assert "at 1,000 parameters, 3 partners" in text
    assert text.endswith("not run: 2,000 parameters x 3 partners")
