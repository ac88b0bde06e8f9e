"""The audit browser: verification status, tampering, exports that verify offline."""

from __future__ import annotations

import io
import sqlite3
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fedcollab.common.errors import ConsoleError
from fedcollab.common.keys import Signer
from fedcollab.compliance.bundle import export_bundle, verify_bundle
from fedcollab.compliance.checkpoint import cosign
from fedcollab.compliance.trail import Trail, load_verifier_key
from fedcollab.compliance.trust import TrustPolicy
from fedcollab.coordinator.console.settings import add_partner_bundle
from tests.console.conftest import PARTNERS, Env

Client = Callable[[str], TestClient]


def _logs(client: TestClient) -> dict[str, dict[str, object]]:
    return {log["name"]: log for log in client.get("/api/audit").json()["logs"]}


def test_good_logs_are_verified(as_user: Client) -> None:
    logs = _logs(as_user("carl"))
    assert str(logs["coordinator"]["verification"]).startswith("verified")
    assert "1 newer entries not yet checkpointed" in str(logs["coordinator"]["verification"])
    assert logs["coordinator"]["size"] == 6 and logs["coordinator"]["checkpoint_size"] == 5
    assert str(logs["console"]["verification"]).startswith("verified")
    page = as_user("carl").get("/audit").text
    assert 'tr data-log="coordinator"' in page and 'class="export-bundle"' in page


def test_tampered_entry_fails_verification(env: Env, as_user: Client) -> None:
    # env.ws is this test's own copy of the workspace: tamper with its log file.
    db = sqlite3.connect(env.ws.audit_db)
    data = db.execute("SELECT data FROM entries WHERE idx = 1").fetchone()[0]
    db.execute(
        "UPDATE entries SET data = ? WHERE idx = 1", (data.replace(b"purchase", b"purchasX"),)
    )
    db.commit()
    db.close()
    carl = as_user("carl")
    status = str(_logs(carl)["coordinator"]["verification"])
    assert status.startswith("FAILED"), status
    assert str(_logs(carl)["console"]["verification"]).startswith("verified")
    page = carl.get("/audit").text
    assert "FAILED" in page
    resp = carl.get("/audit/coordinator/bundle.zip")
    assert resp.status_code == 409 and "does not verify" in resp.json()["error"]


def _unzip(data: bytes, dest: Path) -> Path:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(dest)
    (bundle,) = list(dest.iterdir())
    return bundle


def test_exported_bundle_verifies_offline(env: Env, as_user: Client, tmp_path: Path) -> None:
    carl = as_user("carl")
    resp = carl.get("/audit/coordinator/bundle.zip")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/zip"
    assert "attachment" in resp.headers["content-disposition"]
    bundle = _unzip(resp.content, tmp_path / "coordinator")
    name, key = load_verifier_key(env.ws.audit_pub)
    policy = TrustPolicy.from_keys({name: key})
    report = verify_bundle(bundle, policy, workers=1)  # what `audit verify` runs
    assert report.origin == "coordinator" and report.size == 5

    console = _unzip(carl.get("/audit/console/bundle.zip").content, tmp_path / "console")
    cname, ckey = load_verifier_key(env.ws.root / "console" / "audit.pub")
    creport = verify_bundle(console, TrustPolicy.from_keys({cname: ckey}), workers=1)
    types = [ev["type"] for ev in creport.events()]
    assert creport.origin == "console" and "console.login" in types

    exports = carl.get("/api/audit/console/entries?type=console.export").json()["entries"]
    assert len(exports) == 2 and all('"user": "carl"' in e["body"] for e in exports)
    assert all('"root": "' in e["body"] for e in exports)


def test_the_coordinator_log_is_never_written(env: Env, as_user: Client) -> None:
    before = env.ws.audit_db.read_bytes()
    carl = as_user("carl")
    carl.get("/audit")
    carl.get("/audit/coordinator/bundle.zip")
    carl.get("/audit/coordinator?type=job.started")
    assert env.ws.audit_db.read_bytes() == before


def test_entry_browser_filters_and_pages(as_user: Client) -> None:
    olga = as_user("olga")
    entries = olga.get("/api/audit/coordinator/entries?type=job.started").json()
    assert entries["total"] == 2 and {e["job"] for e in entries["entries"]} == {
        "purchase",
        "solo-b",
    }
    by_job = olga.get("/api/audit/coordinator/entries?job=purchase").json()
    assert by_job["total"] == 5
    page = olga.get("/audit/coordinator?type=job.started").text
    assert page.count("<tr data-index=") == 2


def _cosign(env: Env, partner: str, signer: Signer | None = None) -> None:
    """``partner`` cosigns the coordinator's latest checkpoint (with its own node key, or
    ``signer``, a key the operator made under the partner's name)."""
    key = signer or Signer.load(env.ws.node_dir(partner) / "audit.key")
    with Trail.open(env.ws.audit_db, env.ws.audit_key, actor="coordinator") as trail:
        latest = trail.log.checkpoints()[-1]
        cosigned = cosign(latest, key, partner)
        trail.log.add_cosignature(cosigned, name=partner, public_key=key.public_key)


def test_compliance_report_export(env: Env, as_user: Client) -> None:
    assert as_user("olga").get("/audit/report.zip").status_code == 403
    carl = as_user("carl")
    for partner in PARTNERS:
        _cosign(env, partner)
    resp = carl.get("/audit/report.zip?job=purchase")
    assert resp.status_code == 200, resp.text
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        names = zf.namelist()
        html = next(zf.read(n) for n in names if n.endswith("/report.html")).decode()
    assert any(n.endswith("/report.pdf") for n in names)
    assert any(n.endswith("/bundle/manifest.json") for n in names)
    assert "verified against the pinned key" in html and "UNVERIFIED" not in html


def test_report_with_an_error_finding_is_refused_like_audit_report(
    env: Env, as_user: Client
) -> None:
    """An output that differs from the one its run released is an error finding: `audit
    report` exits 31 on it, and the console answers 409 with the finding (before, it
    served the zip with 200, so a tampered output passed as a clean download)."""
    for partner in PARTNERS:
        _cosign(env, partner)
    (env.results / "purchase" / "attributions.json").write_text('{"features": []}')
    carl = as_user("carl")
    resp = carl.get("/audit/report.zip?job=purchase")
    assert resp.status_code == 409
    error = resp.json()["error"]
    assert "1 error finding(s)" in error and "attributions.json: hash sha256:" in error
    assert "differs from the released" in error
    assert "the report `fedcollab audit report` writes for this log lists them" in error
    exports = carl.get("/api/audit/console/entries?type=console.export").json()["entries"]
    assert len(exports) == 1 and '"ok": false' in exports[0]["body"]


def test_report_requires_every_registered_partner_like_audit_report(
    env: Env, as_user: Client
) -> None:
    """The console applies `audit report`'s default (TrustPolicy.report_default): each
    registered partner must have cosigned under its registered key; else 409 and why."""
    carl = as_user("carl")
    resp = carl.get("/audit/report.zip")
    assert resp.status_code == 409
    assert "required cosigner 'brand-a': cosignature on no checkpoint" in resp.json()["error"]
    _cosign(env, "brand-a")
    resp = carl.get("/audit/report.zip")
    assert resp.status_code == 409
    assert "required cosigner 'brand-b'" in resp.json()["error"]
    _cosign(env, "brand-b", Signer.generate())  # the operator forges brand-b's cosignature
    resp = carl.get("/audit/report.zip")
    assert resp.status_code == 409
    assert "cosignature by 'brand-b' has a wrong key id" in resp.json()["error"]
    exports = carl.get("/api/audit/console/entries?type=console.export").json()["entries"]
    assert len(exports) == 3 and all('"ok": false' in e["body"] for e in exports)


def test_report_refuses_a_registered_key_under_another_name(env: Env, as_user: Client) -> None:
    for partner in PARTNERS:
        _cosign(env, partner)
    registered = env.ws.root / "partners" / "brand-a" / "audit.pub"
    registered.write_text((env.ws.root / "partners" / "brand-b" / "audit.pub").read_text())
    resp = as_user("carl").get("/audit/report.zip")
    assert resp.status_code == 409
    assert "the registered audit key of 'brand-a' is the key of 'brand-b'" in resp.json()["error"]


def test_a_cosignature_under_an_unregistered_name_is_shown_not_counted(
    env: Env, as_user: Client
) -> None:
    _cosign(env, "brand-a")
    _cosign(env, "mallory", Signer.generate())  # not a registered partner: no pinned key
    carl = as_user("carl")
    log = _logs(carl)["coordinator"]
    assert str(log["verification"]).startswith("verified")
    assert log["cosigners"] == ["brand-a"] and log["unverified_cosigners"] == ["mallory"]
    assert "UNVERIFIED KEY, not counted: mallory" in carl.get("/audit").text
    # The report still requires brand-b, whatever else cosigned.
    resp = carl.get("/audit/report.zip")
    assert resp.status_code == 409 and "required cosigner 'brand-b'" in resp.json()["error"]


def _partner_bundle(
    env: Env, partner: str, out: Path, events: list[tuple[str, dict[str, object]]]
) -> Path:
    """``partner``'s own log with ``events``, exported as the partner would."""
    key = env.ws.node_dir(partner) / "audit.key"
    with Trail.open(out / f"{partner}.db", key, actor=partner) as trail:
        for etype, body in events:
            trail.record(etype, body)
        trail.checkpoint()
        export_bundle(trail.log, out / partner, public_keys={})
    return out / partner


def _cosigned_event(env: Env) -> dict[str, object]:
    with Trail.open(env.ws.audit_db, env.ws.audit_key, actor="coordinator") as trail:
        cp = trail.log.checkpoints()[-1]
    c = cp.checkpoint
    return {"origin": c.origin, "size": c.size, "root": c.root.hex()}


def test_report_cross_checks_registered_partner_bundles(
    env: Env, as_user: Client, tmp_path: Path
) -> None:
    """`console bundle add` makes the console's report run `audit report --ledger`'s
    cross-log checks: each partner's own record of what it cosigned is in the report,
    and its bundle travels in the zip."""
    for partner in PARTNERS:
        _cosign(env, partner)
    own = _cosigned_event(env)
    for partner in PARTNERS:
        bundle = _partner_bundle(env, partner, tmp_path, [("checkpoint.cosigned", own)])
        add_partner_bundle(env.ws, partner, bundle)
    resp = as_user("carl").get("/audit/report.zip?job=purchase")
    assert resp.status_code == 200, resp.text
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        names = zf.namelist()
        html = next(zf.read(n) for n in names if n.endswith("/report.html")).decode()
    assert f"size {own['size']}, root {own['root']}" in html
    assert "its bundle was not given" not in html
    assert all(
        any(n.endswith(f"/partner-bundles/{p}/manifest.json") for n in names) for p in PARTNERS
    )


def test_report_refuses_when_a_partner_holds_a_run_the_coordinator_left_out(
    env: Env, as_user: Client, tmp_path: Path
) -> None:
    for partner in PARTNERS:
        _cosign(env, partner)
    sent = {"job": "purchase", "run": "run-omitted", "action": "train.fedavg",
            "step": "round-1", "reply": "00" * 32, "n_values": 4}  # fmt: skip
    add_partner_bundle(
        env.ws, "brand-a", _partner_bundle(env, "brand-a", tmp_path, [("data.sent", sent)])
    )
    resp = as_user("carl").get("/audit/report.zip")
    assert resp.status_code == 409
    assert "left that run out of its log" in resp.json()["error"], resp.text


def test_a_bundle_of_another_party_is_not_registered(env: Env, tmp_path: Path) -> None:
    bundle = _partner_bundle(env, "brand-b", tmp_path, [])
    with pytest.raises(ConsoleError, match="bundle of 'brand-b', not of 'brand-a'"):
        add_partner_bundle(env.ws, "brand-a", bundle)
    with pytest.raises(ConsoleError, match="not an audit bundle"):
        add_partner_bundle(env.ws, "brand-a", tmp_path / "nothing")
