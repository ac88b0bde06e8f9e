"""A live job end to end in the browser.

The operator logs in, submits a job through the console's form and watches its page
update in place (rounds, status, chart) until it completes; the compliance officer
then checks the audit view, downloads the coordinator's bundle and verifies it
offline with ``fedcollab audit verify``, its key pinned.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import (
    Console,
    NewPage,
    StartCommand,
    fetch_status,
    login,
    logout,
    record_texts,
    recorded_texts,
    url_path,
)

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# Short, so the whole directory stays within its share of the CI budget (each round
# is a message to every partner, and each message starts a ClientApp process there);
# early stopping off, so every round runs. Two rounds already show the page moving.
ROUNDS = 2
# Round 1 starts after the handshake and the federated moments; on this 2-core machine
# a round of two partners takes 15-20 s, over 35 s when other jobs share it.
JOB_TIMEOUT_MS = 420_000

JOB_SPEC = """\
name = "browser-purchase"
task = "purchase_prediction"
purpose = "purchase-prediction"
schema = {schema}
min_partners = 2
rounds = {rounds}
round_timeout_s = 90.0
startup_timeout_s = 60.0

[model]
kind = "logreg"

[evaluation]
early_stopping_patience = 0
"""


def test_operator_follows_live_job_then_compliance_exports_verified_bundle(
    console: Console, new_page: NewPage, cli: StartCommand, tmp_path: Path
) -> None:
    page = new_page("operator")
    login(page, console.operator)

    # Submit through the form.
    page.click("#nav-jobs")
    page.click("#new-job")
    expect(page).to_have_url(url_path("/jobs/new"))
    schema = console.fed.partners[0].schema
    page.fill("#job-spec", JOB_SPEC.format(schema=json.dumps(str(schema)), rounds=ROUNDS))
    page.click("#submit-job")
    expect(page).to_have_url(re.compile(r"/jobs/(?!new\b)[^/?#]+$"))
    expect(page.locator("#job-error")).to_have_count(0)
    job_id = page.url.rsplit("/", 1)[1]

    # Watch it live: the page polls the API and updates in place. Nothing has run yet
    # (round 1 comes after the handshake and the federated moments).
    record_texts(page, ["#job-status", "#job-round"])
    expect(page.locator("table#rounds tr[data-round]")).to_have_count(0)
    expect(page.locator("svg#metric-chart polyline")).to_have_count(0)
    expect(page.locator("#job-status")).to_have_text("completed", timeout=JOB_TIMEOUT_MS)
    seen = recorded_texts(page)  # also: the page was never reloaded
    statuses, rounds = seen["#job-status"], seen["#job-round"]
    assert "running" in statuses, statuses
    assert statuses.index("running") < statuses.index("completed"), statuses
    assert "failed" not in statuses, statuses
    assert len(set(rounds)) >= 2, f"#job-round never changed: {rounds}"
    expect(page.locator("#job-round")).to_have_text(re.compile(rf"^\s*{ROUNDS}\s*/\s*{ROUNDS}\s*$"))
    expect(page.locator("table#rounds tr[data-round]")).to_have_count(ROUNDS)
    expect(page.locator("svg#metric-chart polyline").first).to_be_attached()
    expect(page.locator("#participants-list")).to_contain_text(console.fed.partners[0].partner)
    expect(page.locator("#participants-list")).to_contain_text(console.fed.partners[1].partner)
    # The purchase-prediction drivers (feature attributions of the final model).
    expect(page.locator("table#drivers tr[data-feature]")).not_to_have_count(0)
    expect(page.locator('table#drivers tr[data-feature="visits"]')).to_have_count(1)

    # The jobs list agrees.
    page.click("#nav-jobs")
    row = page.locator(f'table#jobs tr[data-job="{job_id}"]')
    expect(row.locator("td.status")).to_have_text("completed")
    expect(row.locator("a.job-link")).to_have_attribute("href", re.compile(rf"/jobs/{job_id}$"))
    # Operators read the audit trail; only compliance officers export it.
    page.click("#nav-audit")
    expect(page.locator('table#audit-logs tr[data-log="coordinator"]')).to_be_visible()
    expect(page.locator("a.export-bundle")).to_have_count(0)
    assert fetch_status(page, "/audit/coordinator/bundle.zip") == 403
    logout(page)

    # The compliance officer: the audit view, then an exported bundle that verifies.
    login(page, console.compliance)
    page.click("#nav-audit")
    expect(page).to_have_url(url_path("/audit"))
    coordinator = page.locator('table#audit-logs tr[data-log="coordinator"]')
    expect(coordinator.locator("td.verification")).to_contain_text("verified")
    bundle = _download_bundle(page, "coordinator", tmp_path)
    # `fedcollab audit verify` runs while the browser goes on (each process needs
    # seconds to start); the coordinator's key is pinned from the workspace.
    coordinator_key = f"coordinator={console.fed.ws.audit_pub}"
    verify_coordinator = cli("audit", "verify", str(bundle), "--trust", coordinator_key)

    # The console keeps its own signed log: it verifies, and holds the logins and the
    # export just made.
    page.reload()
    console_row = page.locator('table#audit-logs tr[data-log="console"]')
    expect(console_row.locator("td.verification")).to_contain_text("verified")
    console_bundle = _download_bundle(page, "console", tmp_path)
    console_key = f"console={console.workspace / 'console' / 'audit.pub'}"
    verify_console = cli("audit", "verify", str(console_bundle), "--trust", console_key)
    events = _events(console_bundle)
    logins = {e["body"].get("user") for e in events if "login" in e["type"]}
    assert {console.operator.name, console.compliance.name} <= logins, events
    exports = [e["body"] for e in events if "export" in e["type"]]
    assert any(body.get("log") == "coordinator" for body in exports), exports

    assert "verified" in verify_console.finish()
    assert "verified" in verify_coordinator.finish()
    types = {e["type"] for e in _events(bundle)}
    assert {"job.submitted", "job.started", "round.aggregated", "job.completed"} <= types


def _download_bundle(page: Page, log: str, tmp_path: Path) -> Path:
    """Click the row's export link; save, unzip and return the bundle folder."""
    link = page.locator(f'table#audit-logs tr[data-log="{log}"] a.export-bundle')
    with page.expect_download() as info:
        link.click()
    download = info.value
    assert download.failure() is None, download.failure()
    archive = tmp_path / f"{log}.zip"
    download.save_as(archive)
    out = tmp_path / f"{log}-bundle"
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():  # a bundle must not write outside its folder
            assert not name.startswith("/") and ".." not in Path(name).parts, name
        zf.extractall(out)
    found = sorted(p.parent for p in out.rglob("entries.jsonl"))
    assert len(found) == 1, f"expected one bundle in {log}.zip, found {found}"
    return found[0]


def _events(bundle: Path) -> list[dict[str, Any]]:
    lines = (bundle / "entries.jsonl").read_text().splitlines()
    return [json.loads(line)["event"] for line in lines if line]
