"""Job output folders are checked against the run they hold (compliance.report_folders).

Real signed logs (``runs_world``): one spec refused, then completed twice into two
folders.  Before, every folder was compared with the release of whichever run of the
spec came last, so the first run's genuine folder showed 6 hash mismatches.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from fedcollab.compliance.report import build_report
from fedcollab.compliance.report_folders import check_job_dir
from fedcollab.compliance.report_model import Finding, ReportModel
from tests.compliance.runs_world import R2, R3
from tests.support.audit_world import DIGEST


def _report(runs: dict[str, Any], *folders: Path) -> ReportModel:
    return build_report(
        runs["coordinator"],
        registry=None,
        jobs=list(folders),
        policy=runs["policy"],
        ledger_bundles=runs["ledgers"],
    )


def _copy(runs: dict[str, Any], run: str, to: Path, *, drop: tuple[str, ...] = ()) -> Path:
    folder = Path(shutil.copytree(runs["folders"][run], to))
    for name in drop:
        (folder / name).unlink()
    return folder


def _checks(model: ReportModel, run: str) -> set[str]:
    return {o.check for j in model.jobs if j.run == run for o in j.outputs}


def test_each_folder_is_checked_against_its_own_run(runs: dict[str, Any]) -> None:
    first, second = runs["folders"][R2], runs["folders"][R3]
    model = _report(runs, first, second)
    assert model.findings == ()
    assert _checks(model, R2) == {f"matches {first}"}
    assert _checks(model, R3) == {f"matches {second}"}
    by_run = {j.run: j.folders for j in model.jobs}
    assert "audit.json records cosigned" in by_run[R2][0] and str(first) in by_run[R2][0]
    assert str(second) in by_run[R3][0]


def test_one_folder_of_the_earlier_run_alone(runs: dict[str, Any]) -> None:
    model = _report(runs, runs["folders"][R2])
    assert model.findings == ()
    assert _checks(model, R2) == {f"matches {runs['folders'][R2]}"}
    assert _checks(model, R3) == {""}  # not checked: no folder of that run was given


def test_a_swapped_output_is_reported_against_its_own_run_only(
    runs: dict[str, Any], tmp_path: Path
) -> None:
    folder = _copy(runs, R2, tmp_path / "purchase")
    shutil.copy(runs["folders"][R3] / "model.pt", folder / "model.pt")
    model = _report(runs, folder)
    assert [(f.severity, f.job) for f in model.findings] == [("error", f"{DIGEST} run {R2}")]
    assert "model.pt" in model.findings[0].message
    assert _checks(model, R3) == {""}


def test_without_audit_json_the_released_model_card_places_the_folder(
    runs: dict[str, Any], tmp_path: Path
) -> None:
    folder = _copy(runs, R3, tmp_path / "purchase2", drop=("audit.json", "progress.jsonl"))
    model = _report(runs, folder)
    assert model.findings == ()
    assert _checks(model, R3) == {f"matches {folder}"}
    (folders,) = [j.folders for j in model.jobs if j.run == R3]
    assert "model_card.json, which this run released" in folders[0]


def test_a_run_id_the_folder_records_is_used(runs: dict[str, Any], tmp_path: Path) -> None:
    folder = _copy(runs, R3, tmp_path / "purchase2", drop=("audit.json",))
    start = {"event": "job_start", "job": "churn", "digest": DIGEST, "run": R3}
    (folder / "progress.jsonl").write_text(json.dumps(start) + "\n", encoding="utf-8")
    model = _report(runs, folder)
    assert model.findings == () and _checks(model, R3) == {f"matches {folder}"}
    start["run"] = "f" * 32
    (folder / "progress.jsonl").write_text(json.dumps(start) + "\n", encoding="utf-8")
    model = _report(runs, folder)
    assert [f.message for f in model.findings] == [
        f"{folder}: the folder names run {'f' * 32} of job 'churn', which the log does not record"
    ]


def test_a_folder_no_run_can_be_told_for_is_an_error_not_a_guess(
    runs: dict[str, Any], tmp_path: Path
) -> None:
    folder = _copy(runs, R2, tmp_path / "purchase", drop=("audit.json", "progress.jsonl"))
    card = json.loads((folder / "model_card.json").read_text(encoding="utf-8"))
    (folder / "model_card.json").write_text(json.dumps({**card, "edited": True}))
    model = _report(runs, folder)
    (finding,) = model.findings
    assert finding.severity == "error" and finding.job == DIGEST
    assert "cannot tell which of the 3 runs" in finding.message
    assert "its outputs were not checked" in finding.message
    assert _checks(model, R2) == _checks(model, R3) == {""}


def test_check_job_dir_replaces_only_the_matched_run(runs: dict[str, Any]) -> None:
    jobs = list(_report(runs).jobs)
    found: list[Finding] = []
    check_job_dir(runs["folders"][R3], jobs, found)
    assert found == []
    assert [bool(j.folders) for j in jobs] == [False, False, True]
