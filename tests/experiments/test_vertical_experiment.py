"""experiments.vertical: a small run aligns exactly and writes complete figures.

Asserts what the JSON holds, never how fast anything ran (benchmarks are not tests).
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments import readme_rows, vertical
from fedcollab.common.dataset import load_dataset
from fedcollab.common.schema import load_schema
from fedcollab.demo.vertical import LABEL_HOLDER, prepare_vertical
from fedcollab.demo.vertical_summary import true_alignment


def test_psi_alignment_equals_the_true_join(tmp_path: Path) -> None:
    sources = prepare_vertical(tmp_path / "vertical-parties")
    datasets, truth = vertical.load_parties(sources, label_holder=LABEL_HOLDER, rows=300)
    rows, psi = vertical.align(datasets, truth, label_holder=LABEL_HOLDER)
    assert psi["exact"] and psi["intersection"] == psi["true_intersection"] == len(truth) > 0
    ids = {p: d.ids[rows[p]].tolist() for p, d in datasets.items()}
    assert ids["payment"] == ids["billing"] == ids[LABEL_HOLDER]
    # the same ids as the plaintext join of the full files, restricted to the subset
    source = next(src for src in sources if src.partner == LABEL_HOLDER)
    full = load_dataset(source.data, load_schema(source.schema))
    joined = {str(i) for i in full.ids[true_alignment(sources)[LABEL_HOLDER]]}
    assert set(map(str, ids[LABEL_HOLDER])) == joined & {str(i) for i in full.ids[:300]}


def test_small_run_writes_consistent_json(tmp_path: Path) -> None:
    argv = ["--rows", "1500", "--lr-iterations", "3", "--snn-steps", "4", "--epsilons", "8"]
    argv += ["--out", str(tmp_path)]
    vertical.main(argv)  # the exit code reflects the goals, not met on so few rows

    res = json.loads((tmp_path / "vertical.json").read_text())
    assert (tmp_path / "vertical.png").stat().st_size > 0
    assert res["command"] == ["python", "-m", "experiments.vertical", *argv]
    assert {"cpus", "loadavg_1min_at_start", "loadavg_1min_at_end"} <= res["machine"].keys()
    psi = res["psi"]
    assert psi["exact"] and psi["same_ids_as_true_join"] and psi["same_id_in_same_position"]
    assert psi["intersection"] == res["rows"]["intersection"]
    assert res["rows"]["train"] + res["rows"]["test"] == psi["intersection"]
    assert set(res["columns"]) == {"platform", "payment", "billing"}

    lr = res["vertical_lr"]
    assert res["settings"]["vertical_lr"]["l2"] == 1.0 / res["rows"]["train"]
    for mode in ("plaintext", "encrypted"):
        assert 0.0 <= lr[mode]["test_auc"] <= 1.0 and lr[mode]["round_trips"] == 3
    assert lr["abs_auc_difference"] == abs(
        lr["encrypted"]["test_auc"] - lr["plaintext"]["test_auc"]
    )
    assert lr["abs_auc_difference"] < 1e-3  # CKKS leaves the model as in plaintext
    base = res["baselines"]
    assert base["centralized"]["columns"] == sum(res["columns"].values())
    assert base["label_holder_alone"]["columns"] == res["columns"]["platform"]

    snn = res["split_nn"]
    assert list(snn) == ["none", "8"]
    assert snn["none"]["epsilon"] is None and snn["none"]["round_trips"] == 5
    assert snn["8"]["noise_multiplier"] > 0 and 7.5 < snn["8"]["epsilon"] <= 8.0
    assert set(res["checks"]) and all(isinstance(v, bool) for v in res["checks"].values())
    labels = [label for label, _, _ in vertical.models(res)]
    assert labels[:5] == [
        "label holder alone",
        "vertical LR, plaintext",
        "vertical LR, encrypted",
        "vertical LR, label DP ε=8",
        "centralized LR (pooled)",
    ]
    assert len(labels) == 7
    dp = lr["label_dp"]
    assert dp["label_epsilon"] == 8.0 and dp["noise_multiplier"] > 0 and dp["runs"] == 3
    assert dp["test_auc"] == sum(dp["test_auc_runs"]) / 3
    # Tail averaging as a job runs it (last 2 of 3 iterates), and the gap per run, both ways.
    assert dp["average_last"] == res["settings"]["vertical_lr"]["average_last"] == 2
    central = res["baselines"]["centralized"]["test_auc"]
    gaps = res["centralized_minus_vertical_lr_label_dp_runs"]
    assert gaps == [central - a for a in dp["test_auc_runs"]]
    last = res["centralized_minus_vertical_lr_label_dp_runs_last_iterate"]
    assert len(last) == 3 and len(dp["test_auc_runs_last_iterate"]) == 3
    scope, text = readme_rows.vertical(res)
    assert scope.startswith("credit default over")
    assert "with label DP at epsilon 8 (last 2 of 3 iterates averaged)" in text
