"""The compliance report keeps the runs of one job spec apart (compliance.report_runs).

Real signed logs (``runs_world``): the same spec refused by both partners, then
completed twice.  Found by a new-user deployment test: the report showed one
"completed" job with both runs' rounds merged, no trace of the refused run, "No
refusal is recorded" although the partners' bundles held their ``request.refused``,
and ``audit report`` exited 0 with error findings.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from fedcollab.common.keys import Signer
from fedcollab.compliance.events import make_event
from fedcollab.compliance.report import build_report, render_html
from fedcollab.compliance.report_jobs import gather_jobs
from fedcollab.compliance.report_render import pdf_bytes
from fedcollab.compliance.report_runs import RunIndex
from tests.compliance.runs_world import R1, R2, R3, STEPS
from tests.support.audit_world import DIGEST, JOB, PARTNERS
from tests.support.cli import run_cli


def _report(runs: dict[str, Any], *, ledgers: bool = True, folders: tuple[str, ...] = ()) -> Any:
    return build_report(
        runs["coordinator"],
        registry=None,
        jobs=[runs["folders"][r] for r in folders],
        policy=runs["policy"],
        ledger_bundles=runs["ledgers"] if ledgers else (),
    )


def test_each_run_of_one_job_spec_is_its_own_entry(runs: dict[str, Any]) -> None:
    model = _report(runs)
    assert [(j.digest, j.run, j.status) for j in model.jobs] == [
        (DIGEST, R1, "failed"),
        (DIGEST, R2, "completed"),
        (DIGEST, R3, "completed"),
    ]
    refused, second, third = model.jobs
    assert "NotEnoughPartnersError" in refused.status_detail
    assert "refused: 2" in refused.status_detail
    assert refused.rounds == () and not refused.released and refused.outputs == ()
    # Each submission (no run id: logged before the run exists) went to its own run.
    submitted = [j.submitted_at for j in model.jobs]
    assert len(set(submitted)) == 3 and all(submitted)
    # Each run has its own rounds and its own release.
    assert [r.step for r in second.rounds] == list(STEPS[R2])
    assert [r.step for r in third.rounds] == list(STEPS[R3])
    assert max(r.time for r in second.rounds) < min(r.time for r in third.rounds)
    released = [{o.filename: o.sha256 for o in j.outputs} for j in (second, third)]
    assert released[0]["model.pt"] != released[1]["model.pt"]
    assert [len(j.cosignatures) for j in model.jobs] == [0, 1, 1]
    # Provisions are per run too.
    assert sorted((v.run, v.provider) for v in model.provisions) == sorted(
        (r, p) for r in (R2, R3) for p in PARTNERS
    )
    assert model.findings == ()


def test_the_refused_run_shows_in_html_and_pdf(runs: dict[str, Any]) -> None:
    model = _report(runs)
    html = render_html(model)
    for run in (R1, R2, R3):
        assert f"Job {JOB}, run {run}" in html
    assert "NotEnoughPartnersError" in html
    assert pdf_bytes(model).startswith(b"%PDF")


def test_partners_refusals_come_from_their_own_bundles(runs: dict[str, Any]) -> None:
    model = _report(runs)
    assert sorted((r.actor, r.type, r.run, r.subject, r.error, r.log) for r in model.refusals) == [
        (p, "request.refused", R1, "query.handshake", "PrivacyError", p) for p in sorted(PARTNERS)
    ]
    assert all(r.job == JOB and r.digest == DIGEST for r in model.refusals)
    refused = model.jobs[0]
    assert {p.name: p.outcome for p in refused.participants} == {
        p: f"refused: PrivacyError at handshake (recorded in {p}'s own log)" for p in PARTNERS
    }
    html = render_html(model)
    assert "No refusal is recorded" not in html
    assert "in region-1&#39;s own log" in html and "in region-2&#39;s own log" in html


def test_without_the_partners_bundles_no_refusal_is_invented(runs: dict[str, Any]) -> None:
    model = _report(runs, ledgers=False)
    assert [j.run for j in model.jobs] == [R1, R2, R3]
    assert model.refusals == ()
    assert {p.outcome for p in model.jobs[0].participants} == {"declared, did not join"}
    assert "No refusal is recorded in this log." in render_html(model)


def test_submissions_are_taken_by_the_runs_in_order() -> None:
    """Two submissions of one spec before either starts: the first start takes the first."""
    key = Signer.generate()
    sub = {"job": JOB, "digest": DIGEST}

    def ev(type_: str, **body: Any) -> dict[str, Any]:
        return make_event(key, "coordinator", type_, {**sub, **body})

    events = [
        ev("job.submitted", purpose="first"),
        ev("job.submitted", purpose="second"),
        ev("job.started", run="a"),
        ev("job.refused", purpose="third", error="PolicyRefusal", reason="expired"),
        ev("job.started", run="b"),
        ev("job.completed", run="b"),
        ev("job.failed", run="a", error="FederationError", reason="lost"),
    ]
    gathered = gather_jobs(events, purposes=None)
    assert [(j.run, j.purpose, j.status) for j in gathered.jobs] == [
        ("a", "first", "failed"),
        ("b", "second", "completed"),
        ("", "third", "refused"),
    ]
    index = RunIndex()
    assert index.route("job.started", {"digest": DIGEST, "run": "x"}) is not None
    assert index.find({"digest": DIGEST, "run": "x"}) is index.runs[0]
    assert index.find({"digest": DIGEST, "run": "y"}) is None
    assert index.route("request.received", {"note": "names no job"}) is None


def test_cli_exits_0_for_a_report_without_error_findings(
    runs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folders = [a for r in (R2, R3) for a in ("--job", runs["folders"][r])]
    ledgers = [a for b in runs["ledgers"] for a in ("--ledger", b)]
    out = tmp_path / "report"
    code = run_cli(
        monkeypatch, "audit", "report", runs["coordinator"], "--out", out,
        *runs["trust"], *folders, *ledgers,
    )  # fmt: skip
    assert code == 0
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "MISMATCH" not in html and "No cross-check finding" in html
    assert (out / "report.pdf").is_file()


def test_cli_exits_31_on_error_findings_after_writing_the_report(
    runs: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = Path(shutil.copytree(runs["folders"][R2], tmp_path / "purchase"))
    shutil.copy(runs["folders"][R3] / "model.pt", folder / "model.pt")  # the other run's model
    out = tmp_path / "report"
    code = run_cli(
        monkeypatch, "audit", "report", runs["coordinator"], "--out", out,
        *runs["trust"], "--job", folder,
    )  # fmt: skip
    err = " ".join(capsys.readouterr().err.split())
    assert code == 31, err
    assert "1 error finding(s)" in err and f"{DIGEST} run {R2}" in err and "model.pt" in err
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "MISMATCH" in html and (out / "report.pdf").is_file()
