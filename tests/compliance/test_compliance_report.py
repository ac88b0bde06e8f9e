"""The compliance report: built from a real signed log, escaped, fail-closed on tampering."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fedcollab.cli.report import app as report_app
from fedcollab.common.errors import AuditVerificationError, ComplianceError
from fedcollab.common.keys import Signer
from fedcollab.compliance.bundle import export_bundle
from fedcollab.compliance.events import make_event
from fedcollab.compliance.log import AuditLog
from fedcollab.compliance.report import build_report, render_html, write_report
from fedcollab.compliance.trust import TrustPolicy
from tests.support.report_world import (
    _PINS,
    _SMALL,
    CARD,
    DIGEST,
    DS_A,
    DS_B,
    MODEL_HASH,
    ORIGIN,
    REFUSED_DIGEST,
    _h,
    pins,
)


@pytest.fixture(scope="module")
def html(world: dict[str, Path]) -> str:
    model = build_report(
        world["bundle"], registry=world["registry"], jobs=[world["job"]], policy=pins()
    )
    return render_html(model)


def test_cover_and_attestation(world: dict[str, Path], html: str) -> None:
    model = build_report(world["bundle"], registry=world["registry"], jobs=(), policy=pins())
    a = model.attestation
    assert a.size == 20 and a.cosigners == ("brand-a",) and a.signers[0] == ORIGIN
    manifest = (world["bundle"] / "manifest.json").read_bytes()
    assert a.manifest_sha256 == hashlib.sha256(manifest).hexdigest()
    assert f"Log verified: 20 entries, root {a.root_hex}" in a.verdict
    assert f"signed by {ORIGIN}, latest checkpoint cosigned by brand-a" in a.verdict
    assert a.root_hex in html and a.manifest_sha256 in html
    assert "Brand Alliance Ltd" in html
    assert "What the verification covers" in html


def test_provenance_sections(html: str) -> None:
    assert DIGEST in html and DS_A in html and DS_B in html
    assert "PIPL: consent; GDPR: legitimate-interests" in html and "LIA-7" in html
    assert "Purchase propensity model" in html and "PIA-2025-007" in html
    assert "plaintext-sum" in html and _h("agg-2") in html
    assert MODEL_HASH in html and "matches" in html
    assert "dropped at step 3" in html and "completed" in html


def test_art23_register(world: dict[str, Path]) -> None:
    model = build_report(world["bundle"], registry=world["registry"], jobs=(), policy=pins())
    rows = {p.provider: p for p in model.provisions}
    assert set(rows) == {"brand-a", "brand-b"}
    a, b = rows["brand-a"], rows["brand-b"]
    assert (a.dataset_hash, a.recipient, a.purpose) == (DS_A, "coordinator", "purchase-prediction")
    assert (a.evidence_ref, a.releases, a.contributions) == ("CONSENT-A-42", 2, 2)
    assert a.first_time and a.first_time <= a.last_time
    assert b.evidence_ref == "" and b.dataset_hash == DS_B
    # brand-b provided without separate consent while the purpose requires one
    assert any(f.severity == "error" and "brand-b" in f.message for f in model.findings)
    assert "CONSENT-A-42" in render_html(model)


def test_privacy_refusals_and_unknown_events(world: dict[str, Path], html: str) -> None:
    assert "No differential-privacy mechanism has been recorded in this log" in html
    model = build_report(world["bundle"], registry=None, jobs=(), policy=pins())
    kinds = {(r.type, r.digest, r.subject) for r in model.refusals}
    assert kinds == {
        ("job.refused", REFUSED_DIGEST, "profiling"),
        ("request.refused", REFUSED_DIGEST, "train"),
        ("participation refused", DIGEST, "brand-c"),
    }
    assert model.unknown_events == (("experimental.thing", 1),)
    assert "experimental.thing" in html
    assert model.purposes is None and not any(
        "record of processing" in f.message for f in model.findings
    )


def test_log_content_is_escaped(html: str) -> None:
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html


def test_job_folder_mismatch_is_flagged(world: dict[str, Path], tmp_path: Path) -> None:
    job = Path(shutil.copytree(world["job"], tmp_path / "job"))
    (job / "model.pt").write_bytes(b"swapped weights")
    card = {**CARD, "partners": [{"name": "brand-a", "dataset_hash": DS_B, "n_rows": 1}]}
    (job / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
    model = build_report(world["bundle"], registry=None, jobs=[job], policy=pins())
    errors = [f.message for f in model.findings if f.severity == "error"]
    assert any("model.pt" in m and "differs" in m for m in errors)
    assert any("brand-a" in m and DS_B in m for m in errors)
    assert "MISMATCH" in model.jobs[0].outputs[0].check

    (job / "model_card.json").write_text(
        json.dumps({**CARD, "job": {"name": "x", "digest": "sha256:" + "00" * 32}})
    )
    model = build_report(world["bundle"], registry=None, jobs=[job], policy=pins())
    assert any("appears nowhere in the log" in f.message for f in model.findings)
    with pytest.raises(ComplianceError):
        build_report(world["bundle"], registry=None, jobs=[tmp_path], policy=pins())


def test_write_report_html_and_pdf(world: dict[str, Path], tmp_path: Path) -> None:
    html_path, pdf_path = write_report(
        world["bundle"],
        registry=world["registry"],
        jobs=[world["job"]],
        policy=pins(),
        out_dir=tmp_path / "out",
    )
    assert html_path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    pdf = pdf_path.read_bytes()
    assert pdf.startswith(b"%PDF") and len(pdf) > 5_000 and pdf.rstrip().endswith(b"%%EOF")


def test_tampered_bundle_writes_nothing(world: dict[str, Path], tmp_path: Path) -> None:
    bundle = Path(shutil.copytree(world["bundle"], tmp_path / "b"))
    entries = bundle / "entries.jsonl"
    entries.write_bytes(entries.read_bytes().replace(b"timeout", b"timeour", 1))
    out = tmp_path / "out"
    with pytest.raises(AuditVerificationError):
        write_report(bundle, registry=None, jobs=(), policy=pins(), out_dir=out)
    assert not out.exists()


def test_untrusted_log_key_is_refused(world: dict[str, Path], tmp_path: Path) -> None:
    other = Signer.generate().public_key
    with pytest.raises(AuditVerificationError):
        write_report(
            world["bundle"],
            registry=None,
            jobs=(),
            policy=TrustPolicy.from_keys({**_PINS, ORIGIN: other}),
            out_dir=tmp_path / "out",
        )
    assert not (tmp_path / "out").exists()


def test_cli_report(world: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [
        str(world["bundle"]),
        "--registry",
        str(world["registry"]),
        "--job",
        str(world["job"]),
        "--out",
        str(out),
        "--trust",
        f"{ORIGIN}={world['log_pub']}",
    ]
    result = CliRunner().invoke(report_app, args)
    # The world's brand-b provided aggregates without the separate consent its purpose
    # requires (an error finding): the report is written, then the command fails (31).
    assert isinstance(result.exception, AuditVerificationError), result.output
    assert result.exception.exit_code == 31
    assert "1 error finding(s)" in result.exception.message
    assert "brand-b provided aggregates" in result.exception.message
    assert (out / "report.html").is_file() and (out / "report.pdf").is_file()
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "pinned (--trust)" in html
    assert "No partner bundle was given" in html


def _small_bundle(root: Path, events: list[tuple[str, str, dict[str, Any]]]) -> Path:
    """A coordinator's own log, as compliance.trail keeps it: origin and actor share a key."""
    keys = {actor: Signer.generate() for actor, _, _ in events}
    with AuditLog.open(root / "audit.db", origin="coordinator", signer=keys["coordinator"]) as log:
        log.append_many([make_event(keys[a], a, t, b) for a, t, b in events])
        log.checkpoint()
        export_bundle(log, root / "bundle", public_keys={n: s.public_key for n, s in keys.items()})
    _SMALL[root / "bundle"] = TrustPolicy.from_keys({n: s.public_key for n, s in keys.items()})
    return root / "bundle"


def test_privacy_ledger_and_crafted_output_names(tmp_path: Path) -> None:
    job = {"job": "dp", "digest": DIGEST}
    spend = {
        "job": "dp",
        "dataset": DS_A,
        "mechanism": "gaussian",
        "delta": 1e-5,
        "accountant": "rdp",
        "cap": 3.0,
    }
    bundle = _small_bundle(
        tmp_path,
        [
            ("brand-a", "privacy.spent", {**spend, "epsilon": 2.0, "cumulative_epsilon": 2.0}),
            ("brand-a", "privacy.spent", {**spend, "epsilon": 1.5, "cumulative_epsilon": 3.5}),
            (
                "coordinator",
                "model.released",
                {**job, "outputs": {"../../etc/passwd": MODEL_HASH}, "recipients": []},
            ),
        ],
    )
    folder = tmp_path / "job"
    folder.mkdir()
    card = {"job": {"name": "dp", "digest": DIGEST}, "partners": []}
    (folder / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
    model = build_report(bundle, registry=None, jobs=[folder], policy=_SMALL[bundle])
    assert [s.cumulative_epsilon for s in model.privacy] == ["2", "3.5"]  # RFC 8785 numbers
    assert [s.over_cap for s in model.privacy] == [False, True]
    assert any("exceeds its cap" in f.message for f in model.findings)
    assert model.jobs[0].outputs[0].check == "not checked: not a plain file name"
    html = render_html(model)
    assert "gaussian" in html and "No differential-privacy mechanism" not in html


def test_report_uses_the_verified_bytes_only(
    world: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle swapped right after verification changes nothing: the report never re-reads."""
    import fedcollab.compliance.report as report_module

    bundle = Path(shutil.copytree(world["bundle"], tmp_path / "b"))
    real = report_module.verify_bundle

    def verify_then_swap(path: Path, policy: TrustPolicy, **kwargs: Any) -> Any:
        result = real(path, policy, **kwargs)
        entries = bundle / "entries.jsonl"
        entries.write_bytes(entries.read_bytes().replace(b"timeout", b"timeour"))
        return result

    monkeypatch.setattr(report_module, "verify_bundle", verify_then_swap)
    html, _ = write_report(bundle, registry=None, jobs=(), policy=pins(), out_dir=tmp_path / "o")
    assert "timeour" not in html.read_text(encoding="utf-8")
    assert "timeout" in html.read_text(encoding="utf-8")


def test_public_surface() -> None:
    import fedcollab.compliance.report as report_module

    assert sorted(report_module.__all__) == [
        "ReportModel",
        "build_report",
        "render_html",
        "render_pdf",
        "write_report",
    ]
    assert report_app.registered_commands[0].name == "report"


def test_partner_ledgers_join_the_privacy_section(tmp_path: Path) -> None:
    spend = {"job": "dp", "dataset": DS_A, "mechanism": {"kind": "gaussian"}, "delta": 1e-5,
             "accountant": "rdp", "cap": 3.0}  # fmt: skip
    partner = tmp_path / "p"
    partner.mkdir()
    key = Signer.generate()
    with AuditLog.open(partner / "audit.db", origin="brand-a", signer=key) as log:
        log.append_many(
            [make_event(key, "brand-a", "privacy.spent",
                        {**spend, "epsilon": 1.0, "cumulative_epsilon": 1.0})]
        )  # fmt: skip
        log.checkpoint()
        export_bundle(log, partner / "bundle", public_keys={"brand-a": key.public_key})
    partner = partner / "bundle"
    ckey = Signer.generate()
    cdir = tmp_path / "c"
    cdir.mkdir()
    with AuditLog.open(cdir / "audit.db", origin="coordinator", signer=ckey) as log:
        log.append_many([make_event(ckey, "coordinator", "job.started", {"job": "dp"})])
        log.checkpoint()
        export_bundle(
            log,
            cdir / "bundle",
            public_keys={"coordinator": ckey.public_key, "brand-a": key.public_key},
        )
    pins = TrustPolicy.from_keys({"coordinator": ckey.public_key, "brand-a": key.public_key})
    alone = build_report(cdir / "bundle", registry=None, jobs=[], policy=pins)
    assert alone.privacy == ()
    joined = build_report(
        cdir / "bundle", registry=None, jobs=[], policy=pins, ledger_bundles=[partner]
    )
    assert [(s.actor, s.cumulative_epsilon) for s in joined.privacy] == [("brand-a", "1")]
    assert joined.attestation.cross_checked and joined.attestation.cross_findings == ()
    # The partner's bundle is checked against its own pinned key.
    with pytest.raises(AuditVerificationError, match="key of log 'brand-a' is not pinned"):
        only_coordinator = TrustPolicy.from_keys({"coordinator": ckey.public_key})
        build_report(cdir / "bundle", registry=None, jobs=[],
                     policy=only_coordinator, ledger_bundles=[partner])  # fmt: skip
    # A partner bundle that does not verify is refused, not silently skipped.
    (partner / "entries.jsonl").write_text("{}\n")
    with pytest.raises(AuditVerificationError):
        build_report(cdir / "bundle", registry=None, jobs=[], policy=pins,
                     ledger_bundles=[partner])  # fmt: skip
