"""Jobs: the index, the live job page's data, downloads, and submission from the console."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from fedcollab.common.jobspec import JobSpec
from fedcollab.common.release_text import released_text
from fedcollab.coordinator.console.jobs import JobCatalog
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.coordinator.submit import append_job_index
from tests.console.conftest import Env, csrf_of

Client = Callable[[str], TestClient]
SCHEMA = Path(__file__).resolve().parents[2] / "data" / "online_shoppers.schema.json"


def _spec_text(purpose: str = "purchase-prediction") -> str:
    return (
        f'name = "web-purchase"\ntask = "purchase_prediction"\npurpose = "{purpose}"\n'
        f'participants = ["brand-a", "brand-b"]\nrounds = 3\nschema = "{SCHEMA}"\n'
    )


def test_job_page_and_api(as_user: Client) -> None:
    olga = as_user("olga")
    detail = olga.get("/api/jobs/purchase").json()
    assert detail["status"] == "completed" and (detail["round"], detail["total"]) == (3, 5)
    assert [p for p, _ in detail["metric"]["points"]] == [1, 2, 3]
    assert detail["chart"]["points"].count(",") == 3
    assert [f["feature"] for f in detail["attributions"]["features"]] == [
        "PageValues",
        "BounceRates",
    ]
    page = olga.get("/jobs/purchase").text
    assert '<span id="job-status" class="status status-completed">completed</span>' in page
    assert '<span id="job-round">3 / 5</span>' in page
    assert re.search(r'<svg id="metric-chart".*?<polyline', page, re.S)
    assert page.count('<tr data-round="') == 3
    assert 'tr data-feature="PageValues"' in page and 'table id="drivers"' in page
    running = olga.get("/api/jobs/solo-b").json()
    assert running["status"] == "running" and running["metric"]["key"] == "objective"


def test_live_progress_is_seen_by_the_next_poll(env: Env, as_user: Client) -> None:
    olga = as_user("olga")
    JobOutputs(env.results / "solo-b").event(
        "round", task="segmentation", round=4, total=5, objective=800.0, epsilon=None
    )
    detail = olga.get("/api/jobs/solo-b").json()
    assert detail["round"] == 4 and len(detail["rounds"]) == 4


def test_segments_and_downloads(env: Env, as_user: Client) -> None:
    out = JobOutputs(env.results / "solo-b")
    segment = {"segment": 0, "size": 10, "share": 0.5, "purchase_rate": 0.2, "means": {}}
    out.write_json("segments.json", [{**segment, "label": "browsers", "lift": 1.3}])
    out.write_bytes("segments.csv", b"segment,size\n0,10\n")
    out.write_bytes("model.pt", b"secret weights")
    bert = as_user("bert")
    page = bert.get("/jobs/solo-b").text
    assert 'tr data-segment="0"' in page and "browsers" in page
    assert bert.get("/jobs/solo-b/files/segments.csv").text == "segment,size\n0,10\n"
    assert bert.get("/jobs/solo-b/files/model.pt").status_code == 404
    assert bert.get("/jobs/solo-b/files/..%2Fpurchase%2Fresult.json").status_code in (403, 404)
    assert as_user("anna").get("/jobs/solo-b/files/segments.csv").status_code == 403


def test_job_index_lists_submitted_jobs(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "somewhere" / "purchase"
    JobOutputs(out).event("job_start", job="purchase", task="purchase_prediction")
    spec = JobSpec.model_validate(
        {
            "name": "purchase",
            "task": "purchase_prediction",
            "purpose": "p",
            "participants": ("brand-a", "brand-b"),
            "schema": {},
        }
    )
    append_job_index(env.ws, spec, out, run_id=7)
    refs = JobCatalog(env.ws.root, [env.results]).refs()
    ids = {r.id for r in refs}
    assert len(ids) == len(refs) == 3  # two folders called "purchase": distinct ids
    indexed = next(r for r in refs if r.index.get("run_id") == 7)
    assert indexed.id.startswith("purchase-") and indexed.index["participants"] == [
        "brand-a",
        "brand-b",
    ]


def test_submission_refused_by_the_policy_gate_shows_the_typed_error(as_user: Client) -> None:
    olga = as_user("olga")
    csrf = csrf_of(olga)
    assert olga.get("/jobs/new").status_code == 200
    resp = olga.post("/jobs/new", data={"spec": _spec_text(), "csrf": csrf})
    assert resp.status_code == 422
    error = re.search(r'<pre id="job-error"[^>]*>(.*?)</pre>', resp.text, re.S)
    assert error is not None and error.group(1).startswith("PolicyRefusal: ")
    bad = olga.post("/jobs/new", data={"spec": "name = [", "csrf": csrf})
    assert bad.status_code == 422 and "JobSpecError" in bad.text
    assert "&lt;" not in bad.text or "<script" not in bad.text


def test_the_same_form_sent_twice_starts_one_job(env: Env, as_user: Client) -> None:
    olga = as_user("olga")
    form_id = re.search(r'name="form_id" value="([^"]+)"', olga.get("/jobs/new").text)
    assert form_id is not None
    data = {"spec": _spec_text(), "csrf": csrf_of(olga), "form_id": form_id.group(1)}
    first = olga.post("/jobs/new", data=data)
    again = olga.post("/jobs/new", data=data)  # a double click
    assert first.status_code == 422  # refused by the policy gate, its folder kept
    assert again.status_code == 303 and again.headers["location"].startswith("/jobs/")
    folders = [p for p in (env.ws.root / "jobs").iterdir() if p.is_dir()]
    assert len(folders) == 1
    other = re.search(r'name="form_id" value="([^"]+)"', first.text)
    assert other is not None and other.group(1) != data["form_id"]  # a retry is a new job


def test_final_metrics_are_a_table(as_user: Client) -> None:
    page = as_user("olga").get("/jobs/purchase").text
    table = re.search(r'<table id="job-final">(.*?)</table>', page, re.S)
    assert table is not None, page
    assert "<th>Metric</th><th>test</th>" in table.group(1)
    assert "<tr><td>AUC</td><td>0.88</td></tr>" in table.group(1)
    assert '<pre id="job-final"' not in page and "{&#34;" not in page


def test_scoring_job_page_has_no_rounds(env: Env, as_user: Client) -> None:
    out = JobOutputs(env.results / "scores")
    out.event("job_start", job="scores", task="vertical", digest="sha256:00", mode="deployment",
              scoring=True)  # fmt: skip
    olga = as_user("olga")
    running = olga.get("/jobs/scores").text
    assert 'id="metric-chart"' not in running and 'id="job-round"' not in running
    assert "per round" not in running and "Round 0" not in running
    assert "No final metrics yet." in running
    final = {"scored": 90, "queried": 100, "model": "risk-train", "predictions": "kept"}
    out.event("job_end", status="completed", final=final, objective=None, dropouts=[],
              audit=None)  # fmt: skip
    detail = olga.get("/api/jobs/scores").json()
    assert detail["scoring"] is True and detail["shows_rounds"] is False
    assert detail["final_table"]["columns"] == ["Metric", "Value"]
    assert ["users scored", 90] in detail["final_table"]["rows"]
    page = olga.get("/jobs/scores").text
    assert "<tr><td>users scored</td><td>90</td></tr>" in page
    assert 'id="metric-chart"' not in page and "train loss per round" not in page


def test_training_job_without_rounds_yet_says_so(env: Env, as_user: Client) -> None:
    out = JobOutputs(env.results / "fresh")
    out.event("job_start", job="fresh", task="purchase_prediction", digest="sha256:00",
              mode="deployment", scoring=False)  # fmt: skip
    page = as_user("olga").get("/jobs/fresh").text
    assert '<span id="job-round">not started</span>' in page
    assert 'id="metric-chart"' in page


def test_the_job_page_names_the_released_model_and_its_warnings(env: Env, as_user: Client) -> None:
    """The terminal's `released` line and warnings (new-user review, 2026-12-06), on the
    job page too, in the same words (common.release_text)."""
    out = JobOutputs(env.results / "rare")
    out.event("job_start", job="rare", task="purchase_prediction", digest="sha256:00",
              mode="deployment")  # fmt: skip
    out.event("released", round=0, selection="validation", validation_auc=0.4118,
              dp_estimate=False, test_auc=0.52, test_n=73,
              warnings=[{"kind": "initial_model"},
                        {"kind": "few_minority_rows", "split": "test", "label": 1, "rows": 2,
                         "n": 73, "threshold": 10}])  # fmt: skip
    olga = as_user("olga")
    detail = olga.get("/api/jobs/rare").json()
    assert detail["released"]["headline"] == (
        "Released: the initial model (best validation AUC 0.4118)"
    )
    headline, said = released_text(
        {"round": 0, "selection": "validation", "validation_auc": 0.4118,
         "warnings": [{"kind": "initial_model"}]}
    )  # fmt: skip
    assert headline == "released: the initial model (best validation AUC 0.4118)"
    assert said[0] in " ".join(detail["released"]["warnings"])
    page = olga.get("/jobs/rare").text
    assert '<p id="job-released">Released: the initial model' in page
    warnings = re.search(r'<ul id="job-warnings">(.*?)</ul>', page, re.S)
    assert warnings is not None, page
    assert "the initial, untrained one" in warnings.group(1)
    assert "the test split has only 2 positive rows (of 73 rows)" in warnings.group(1)
