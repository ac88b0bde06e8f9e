"""The compliance report's "Model insights" per job, from the job folder's files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fedcollab.compliance.report import build_report, render_html
from fedcollab.compliance.report_render import pdf_bytes
from fedcollab.protocols.attribution import coefficient_document
from fedcollab.protocols.preprocessing import Preprocessor
from fedcollab.protocols.segment_labels import describe_segments
from tests.support.report_world import pins

PRE = Preprocessor(
    numeric_names=("PageValues",), means=(6.0,), stds=(10.0,),
    categorical_vocab={"Month": ("Feb", "Nov")}, boolean_names=(), boolean_means=(),
)  # fmt: skip


def test_insights_section_in_html_and_pdf(world: dict[str, Path], tmp_path: Path) -> None:
    job = Path(shutil.copytree(world["job"], tmp_path / "job"))
    doc = coefficient_document(job="churn", coefficients=[1.3, -0.2, 0.4], pre=PRE)
    doc["features"][1]["feature"] = "<b>Month=Nov</b>"  # file content is untrusted: escaped
    (job / "attributions.json").write_text(json.dumps(doc))
    segs = describe_segments(
        [
            {
                "segment": 0,
                "size": 40,
                "share": 0.4,
                "purchase_rate": 0.3,
                "means": {"PageValues": 20.0},
            },
            {
                "segment": 1,
                "size": 60,
                "share": 0.6,
                "purchase_rate": 0.1,
                "means": {"PageValues": 1.0},
            },
        ],
        overall_means={"PageValues": 6.0},
        overall_stds={"PageValues": 10.0},
    )
    (job / "segments.json").write_text(json.dumps(segs))
    model = build_report(world["bundle"], registry=None, jobs=[job], policy=pins())
    ins = model.jobs[0].insights
    assert ins is not None and ins.method == "coefficients"
    assert ins.attributions[0] == ("PageValues", "1.3000", "+")
    assert ins.segments[0][0] == segs[0]["label"] and ins.segments[0][4] == "1.67"
    # The log's model.released of this job names only model.pt: the files are unattested.
    assert all("unattested" in check for _, check in ins.sources)
    html = render_html(model)
    assert "Model insights" in html and segs[0]["description"] in html
    assert "&lt;b&gt;Month=Nov&lt;/b&gt;" in html and "<b>Month=Nov" not in html
    assert pdf_bytes(model).startswith(b"%PDF")


def test_unreadable_insight_files_are_findings(world: dict[str, Path], tmp_path: Path) -> None:
    job = Path(shutil.copytree(world["job"], tmp_path / "job"))
    (job / "attributions.json").write_text('{"job": 1}')
    (job / "segments.json").write_text("{}")
    model = build_report(world["bundle"], registry=None, jobs=[job], policy=pins())
    assert model.jobs[0].insights is None
    warnings = [f.message for f in model.findings if f.severity == "warning"]
    assert any("attributions.json is not" in m for m in warnings)
    assert any("segments.json is not" in m for m in warnings)
    no_files = build_report(world["bundle"], registry=None, jobs=[world["job"]], policy=pins())
    assert no_files.jobs[0].insights is None and "Model insights" not in render_html(no_files)
