"""Role checks: anonymous requests get nothing, partners see only their own data."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute

from fedcollab.coordinator.console.auth import Role
from tests.console.conftest import Env, csrf_of, login

Client = Callable[[str], TestClient]
_SAMPLES = {"job_id": "purchase", "log": "coordinator", "partner": "brand-a",
            "name": "attributions.csv"}  # fmt: skip


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: _SAMPLES[m.group(1)], path)


def _walk(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's include_router wrapper
        if included is not None:
            yield from _walk(included.routes)
        elif isinstance(route, APIRoute):
            yield route


def _routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, path parameters filled in, except the public
    ones: /login and /favicon.ico (an empty 204, tested in test_console_login)."""
    out = []
    for route in _walk(app.routes):
        if route.path not in ("/login", "/favicon.ico"):
            out.extend((method, _concrete(route.path)) for method in sorted(route.methods))
    return out


def test_every_route_is_covered(app: FastAPI) -> None:
    paths = {p for _m, p in _routes(app)}
    assert {"/jobs", "/api/jobs", "/audit/coordinator/bundle.zip", "/budgets/brand-a"} <= paths
    assert len(paths) >= 20


def test_anonymous_requests_get_nothing(app: FastAPI, anon: TestClient) -> None:
    for method, path in _routes(app):
        resp = anon.request(method, path)
        if path.startswith("/api/") or path.endswith((".zip", ".csv")):
            assert resp.status_code == 401, (method, path)
            assert resp.json() == {"error": "authentication required"}, (method, path)
        else:
            assert resp.status_code == 303, (method, path)
            assert resp.headers["location"] == "/login"
            assert resp.content == b"", (method, path)


def test_forged_or_altered_session_cookie_is_anonymous(app: FastAPI, anon: TestClient) -> None:
    anon.cookies.set("fc_session", "eyJ1Ijoib2xnYSJ9.AAAAAA.forged")
    assert anon.get("/api/jobs").status_code == 401
    olga = TestClient(app, follow_redirects=False)
    login(olga, "olga")
    cookie = olga.cookies.get("fc_session")
    assert cookie and olga.get("/api/jobs").status_code == 200
    # payload.timestamp.signature; a compressed payload starts with one more "."
    payload, stamp, sig = cookie.rsplit(".", 2)
    flipped = payload[:-1] + ("A" if payload[-1] != "A" else "B")  # same signature
    for forged in (f"{flipped}.{stamp}.{sig}", f"{payload}.{stamp}.{sig[:-2]}AA"):
        anon.cookies.set("fc_session", forged)
        assert anon.get("/api/jobs").status_code == 401


def test_partner_sees_only_its_own_ledger(as_user: Client) -> None:
    anna = as_user("anna")
    assert anna.get("/api/budgets/brand-a").status_code == 200
    for path in ("/api/budgets/brand-b", "/budgets/brand-b"):
        resp = anna.get(path)
        assert resp.status_code == 403, path
        assert "brand-b-orders" not in resp.text
    ledgers = anna.get("/api/budgets").json()["ledgers"]
    assert [lg["partner"] for lg in ledgers] == ["brand-a"]
    page = anna.get("/budgets").text
    assert "brand-a-orders" in page and "brand-b-orders" not in page


def test_partner_sees_only_jobs_it_takes_part_in(as_user: Client) -> None:
    anna, bert = as_user("anna"), as_user("bert")
    assert [j["id"] for j in anna.get("/api/jobs").json()["jobs"]] == ["purchase"]
    assert {j["id"] for j in bert.get("/api/jobs").json()["jobs"]} == {"purchase", "solo-b"}
    for path in ("/api/jobs/solo-b", "/jobs/solo-b"):
        resp = anna.get(path)
        assert resp.status_code == 403, path
        assert "inertia" not in resp.text and "950" not in resp.text
    assert "solo-b" not in anna.get("/jobs").text
    assert anna.get("/api/jobs/no-such-job").status_code == 403  # same answer: ids leak nothing
    assert bert.get("/api/jobs/solo-b").status_code == 200


@pytest.mark.parametrize(
    ("user", "allowed", "denied"),
    [
        ("olga", ["/participants", "/budgets", "/audit", "/jobs/new"],
         ["/audit/coordinator/bundle.zip", "/audit/report.zip"]),
        ("carl", ["/participants", "/budgets", "/audit", "/budgets/brand-b"], ["/jobs/new"]),
        ("anna", ["/jobs", "/budgets/brand-a"],
         ["/participants", "/api/participants", "/audit", "/api/audit", "/audit/coordinator",
          "/audit/coordinator/bundle.zip", "/audit/console/bundle.zip", "/jobs/new"]),
    ],
)  # fmt: skip
def test_access_matrix(as_user: Client, user: str, allowed: list[str], denied: list[str]) -> None:
    client = as_user(user)
    for path in allowed:
        assert client.get(path).status_code == 200, path
    for path in denied:
        assert client.get(path).status_code == 403, path


def test_navigation_shows_only_what_the_role_may_use(as_user: Client) -> None:
    page = as_user("anna").get("/jobs").text
    assert 'id="whoami">anna (partner)<' in page
    assert 'id="nav-jobs"' in page and 'id="nav-budgets"' in page
    assert 'id="nav-audit"' not in page and 'id="nav-participants"' not in page
    assert 'id="new-job"' not in page
    assert 'id="new-job"' in as_user("olga").get("/jobs").text


def test_post_without_csrf_token_is_refused(as_user: Client) -> None:
    olga = as_user("olga")
    assert olga.post("/logout", data={}).status_code == 403
    assert olga.post("/logout", data={"csrf": "wrong"}).status_code == 403
    assert olga.post("/jobs/new", data={"spec": 'name = "x"'}).status_code == 403
    assert olga.get("/api/jobs").status_code == 200  # still signed in
    assert olga.post("/logout", data={"csrf": csrf_of(olga)}).status_code == 303
    assert olga.get("/api/jobs").status_code == 401


def test_a_session_cookie_copied_before_logout_is_dead_after_it(
    app: FastAPI, anon: TestClient
) -> None:
    olga = TestClient(app, follow_redirects=False)
    login(olga, "olga")
    copied = olga.cookies.get("fc_session")
    assert copied
    assert olga.post("/logout", data={"csrf": csrf_of(olga)}).status_code == 303
    anon.cookies.set("fc_session", copied)
    assert anon.get("/api/jobs").status_code == 401
    login(olga, "olga")  # signing in again works and gives a live session
    assert olga.get("/api/jobs").status_code == 200


def test_removing_a_user_ends_its_sessions(env: Env, as_user: Client) -> None:
    bert = as_user("bert")
    assert bert.get("/api/jobs").status_code == 200
    env.users.remove("bert")
    assert bert.get("/api/jobs").status_code == 401
    env.users.add("bert", "another long passphrase", role=Role.PARTNER, partner="brand-b")
    assert bert.get("/api/jobs").status_code == 401  # same name, new password: still out


def test_password_hashes_never_leave_the_server(env: Env, as_user: Client) -> None:
    hashes = [u.password_hash for u in env.users.users()]
    salts = [h.split("$")[-2] for h in hashes]
    for user in ("olga", "carl", "anna"):
        client = as_user(user)
        for path in ("/jobs", "/api/jobs", "/api/budgets", "/budgets", "/audit", "/api/audit",
                     "/audit/console", "/api/audit/console/entries", "/participants"):  # fmt: skip
            text = client.get(path).text
            assert "$argon2" not in text, path
            assert not any(s in text for s in salts), path


def test_security_headers(as_user: Client, anon: TestClient) -> None:
    for resp in (anon.get("/login"), as_user("olga").get("/jobs")):
        assert resp.headers["content-security-policy"].startswith("default-src 'self'")
        assert resp.headers["x-frame-options"] == "DENY"
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["referrer-policy"] == "no-referrer"
        assert resp.headers["cache-control"] == "no-store"
    page = as_user("carl").get("/jobs").text
    assert "<script>" not in page and " style=" not in page  # nothing inline (CSP)


def test_ledgers_are_read_without_writing(env: Env, as_user: Client) -> None:
    ledger = env.ws.node_dir("brand-a") / "budget.db"
    before = ledger.read_bytes()
    carl = as_user("carl")
    assert carl.get("/api/budgets").json()["ledgers"][0]["datasets"][0]["charges"] == 1
    assert 'tr data-partner="brand-a" data-dataset="brand-a-orders"' in carl.get("/budgets").text
    assert '<svg id="budget-chart"' in carl.get("/budgets/brand-a").text
    # SQLite's WAL readers may create the -shm index and an empty -wal; no data is written.
    assert ledger.read_bytes() == before
    wal = ledger.with_name("budget.db-wal")
    assert not wal.exists() or wal.stat().st_size == 0
