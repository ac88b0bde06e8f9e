"""Role checks in the browser: what a partner, a stranger and a logged-out page get.

A partner user sees its own privacy budget and nothing of another partner's (403 on
the page and on the API) nor the audit trail; a browser without a session is sent to
/login for pages and gets 401 from the API and downloads; once a user logs out, the
pages still open in that browser get 401 from the API.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from playwright.sync_api import Page, Response, expect

from tests.support.browser import (
    Console,
    NewPage,
    fetch_status,
    login,
    login_form_submitted,
    logout,
    url_path,
)

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def _goto_status(page: Page, path: str) -> int:
    response = page.goto(path)
    assert response is not None, path
    return response.status


def test_partner_sees_only_its_own_budget(console: Console, new_page: NewPage) -> None:
    own, other = console.partner_a.partner, console.partner_b.partner
    assert own and other
    page = new_page("partner")
    login(page, console.partner_a)
    expect(page.locator("#nav-audit")).to_have_count(0)
    expect(page.locator("#nav-participants")).to_have_count(0)

    page.click("#nav-budgets")
    expect(page).to_have_url(url_path(f"/budgets/{own}"))
    expect(page.locator("svg#budget-chart")).to_be_attached()
    rows = page.locator("table#budgets tr[data-partner][data-dataset]")
    expect(rows).not_to_have_count(0)
    expect(page.locator(f'table#budgets tr[data-partner="{own}"][data-dataset]')).to_have_count(
        rows.count()
    )

    # The overview lists only its own ledger.
    assert _goto_status(page, "/budgets") == 200
    expect(page.locator(f'table#budgets tr[data-partner="{own}"]').first).to_be_attached()
    expect(page.locator(f'table#budgets tr[data-partner="{other}"]')).to_have_count(0)
    expect(page.locator("body")).not_to_contain_text(other)

    # Another partner's ledger: forbidden as a page and through the API.
    assert _goto_status(page, f"/budgets/{other}") == 403
    expect(page.locator("body")).not_to_contain_text("epsilon", ignore_case=True)
    assert _goto_status(page, f"/api/budgets/{other}") == 403
    assert _goto_status(page, f"/api/budgets/{own}") == 200
    assert json.loads(page.locator("body").inner_text())["partner"] == own
    assert _goto_status(page, "/api/budgets") == 200
    ledgers = json.loads(page.locator("body").inner_text())["ledgers"]
    assert [lg["partner"] for lg in ledgers] == [own]

    # Nor the audit trail, the participants' roster or audit exports.
    assert _goto_status(page, "/audit") == 403
    assert _goto_status(page, "/api/audit") == 403
    assert _goto_status(page, "/api/participants") == 403
    page.goto("/jobs")
    assert fetch_status(page, "/audit/coordinator/bundle.zip") == 403
    assert fetch_status(page, "/audit/report.zip") == 403


def test_compliance_officer_sees_every_ledger(console: Console, new_page: NewPage) -> None:
    page = new_page("compliance")
    login(page, console.compliance)
    page.click("#nav-budgets")
    expect(page).to_have_url(url_path("/budgets"))
    expect(page.locator("svg#budget-chart")).to_be_attached()
    for user in (console.partner_a, console.partner_b):
        row = page.locator(f'table#budgets tr[data-partner="{user.partner}"][data-dataset]')
        expect(row).not_to_have_count(0)
    assert _goto_status(page, f"/budgets/{console.partner_b.partner}") == 200
    expect(page.locator("#whoami")).to_have_text(f"{console.compliance.name} (compliance)")


def test_login_with_browser_favicon(console: Console, new_page: NewPage) -> None:
    """Chromium asks for /favicon.ico as a page loads; the login form must survive it.

    (The console once redirected that request to /login, whose answer replaced the
    open form's nonce cookie: every login in a real browser was refused as expired.)
    """
    page = new_page("login-with-favicon")
    page.goto("/login")
    # The favicon request is made once the page has loaded, before anyone can type.
    page.wait_for_load_state("networkidle")
    with page.expect_response(_login_post) as reply:
        login_form_submitted(page, console.partner_b)
    error = page.locator("#login-error")
    assert reply.value.status == 303, f"login refused ({reply.value.status}): {error.inner_text()}"
    expect(page.locator("#whoami")).to_have_text(f"{console.partner_b.name} (partner)")


def test_wrong_password_is_refused(console: Console, new_page: NewPage) -> None:
    page = new_page("wrong-password")
    page.goto("/login")
    wrong = dataclasses.replace(console.partner_b, password=console.partner_b.password + "x")
    with page.expect_response(_login_post) as reply:
        login_form_submitted(page, wrong)
    assert reply.value.status == 401  # not 403: the form itself was accepted
    expect(page.locator("#login-error")).to_be_visible()
    expect(page.locator("#login-error")).not_to_be_empty()
    expect(page.locator("#whoami")).to_have_count(0)
    assert fetch_status(page, "/api/jobs") == 401


def _login_post(response: Response) -> bool:
    return response.request.method == "POST" and url_path("/login").match(response.url) is not None


def test_unauthenticated_browser_gets_nothing(console: Console, new_page: NewPage) -> None:
    page = new_page("anonymous")
    for path in ("/jobs", "/budgets", f"/budgets/{console.partner_a.partner}", "/audit", "/"):
        response = page.goto(path)
        assert response is not None
        expect(page).to_have_url(url_path("/login"))
        first = response.request.redirected_from
        assert first is not None, f"{path} was not redirected"
        redirect = first.response()
        assert redirect is not None and redirect.status == 303, path
        expect(page.locator("#whoami")).to_have_count(0)
    for path in ("/api/jobs", f"/api/budgets/{console.partner_a.partner}", "/api/audit"):
        assert _goto_status(page, path) == 401, path
        assert "authentication required" in page.locator("body").inner_text()
    page.goto("/login")
    for path in ("/audit/coordinator/bundle.zip", "/audit/report.zip", "/api/participants"):
        assert fetch_status(page, path) == 401, path


def test_logout_ends_the_session_for_open_pages(console: Console, new_page: NewPage) -> None:
    own = console.partner_a.partner
    page = new_page("open-page")
    login(page, console.partner_a)
    page.goto(f"/budgets/{own}")
    assert fetch_status(page, f"/api/budgets/{own}") == 200

    other_tab = page.context.new_page()  # same browser, same session
    other_tab.goto("/jobs")
    logout(other_tab)
    other_tab.close()

    assert fetch_status(page, f"/api/budgets/{own}") == 401
    assert fetch_status(page, "/api/jobs") == 401
    page.reload()
    expect(page).to_have_url(url_path("/login"))


def test_session_cookie_is_dead_after_logout(console: Console, new_page: NewPage) -> None:
    own = console.partner_a.partner
    page = new_page("replayed-cookie")
    login(page, console.partner_a)
    cookies = page.context.cookies()
    logout(page)

    replay = new_page("replay")
    # The cookie as it was before logout, e.g. copied off the machine.
    replay.context.add_cookies(
        [{"name": c["name"], "value": c["value"], "url": console.url} for c in cookies]
    )
    replay.goto("/login")
    assert fetch_status(replay, f"/api/budgets/{own}") == 401
