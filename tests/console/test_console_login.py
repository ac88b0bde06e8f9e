"""Login: passwords, lockout, the login form's own CSRF nonce, session cookies."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from fedcollab.common.errors import ConsoleError
from fedcollab.coordinator.console.auth import LoginGuard, Role, SessionCodec, UserStore
from tests.console.conftest import PASSWORD, Env, login


def test_login_sets_a_strict_httponly_session_cookie(anon: TestClient) -> None:
    resp = login(anon, "olga")
    assert resp.status_code == 303 and resp.headers["location"] == "/jobs"
    cookie = next(c for c in resp.headers.get_list("set-cookie") if c.startswith("fc_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=28800" in cookie
    assert anon.get("/api/jobs").status_code == 200


def test_wrong_password_and_unknown_user_look_the_same(anon: TestClient) -> None:
    wrong = login(anon, "olga", "not the password at all")
    unknown = login(anon, "nobody", "not the password at all")
    for resp in (wrong, unknown):
        assert resp.status_code == 401
        assert 'id="login-error"' in resp.text and "Invalid user name or password" in resp.text
        assert "fc_session" not in resp.headers.get("set-cookie", "")
    assert anon.get("/api/jobs").status_code == 401


def test_lockout_after_five_failures(anon: TestClient) -> None:
    for _ in range(5):
        assert login(anon, "carl", "wrong wrong wrong").status_code == 401
    locked = login(anon, "carl")  # the right password, too late
    assert locked.status_code == 429 and "locked" in locked.text
    assert anon.get("/api/jobs").status_code == 401
    assert login(anon, "olga").status_code == 303  # other users are not affected


def test_lockout_expires() -> None:
    guard = LoginGuard(attempts=2, lock_s=0.05)
    guard.failed("x")
    guard.failed("x")
    assert guard.locked("x")
    time.sleep(0.06)
    assert not guard.locked("x")


def test_login_form_needs_its_nonce(anon: TestClient) -> None:
    resp = anon.post("/login", data={"username": "olga", "password": PASSWORD, "nonce": "x"})
    assert resp.status_code == 403
    assert anon.get("/api/jobs").status_code == 401


def test_login_is_recorded_without_the_password(anon: TestClient) -> None:
    login(anon, "olga", "a wrong password here")
    login(anon, "olga")
    olga_entries = anon.get("/api/audit/console/entries?type=console.login").json()["entries"]
    outcomes = [e["body"] for e in olga_entries]
    assert any('"outcome": "failed"' in b for b in outcomes)
    assert any('"outcome": "ok"' in b for b in outcomes)
    assert not any("wrong password" in b or PASSWORD in b for b in outcomes)


def test_production_hasher_is_argon2id_with_defaults(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.json")
    assert store.hasher.type.name == "ID"
    default = PasswordHasher()
    assert (store.hasher.time_cost, store.hasher.memory_cost) == (
        default.time_cost,
        default.memory_cost,
    )


def test_passwords_and_names_are_checked(env: Env) -> None:
    with pytest.raises(ConsoleError, match="too short"):
        env.users.add("dora", "short", role=Role.OPERATOR, partner=None)
    with pytest.raises(ConsoleError, match="invalid user name"):
        env.users.add("Dora Smith", PASSWORD, role=Role.OPERATOR, partner=None)
    with pytest.raises(ConsoleError, match="partner"):
        env.users.add("dora", PASSWORD, role=Role.PARTNER, partner=None)
    with pytest.raises(ConsoleError, match="already exists"):
        env.users.add("olga", PASSWORD, role=Role.OPERATOR, partner=None)
    mode = env.users.path.stat().st_mode & 0o777
    assert mode == 0o600


def test_sessions_expire_and_need_the_secret(env: Env) -> None:
    user = env.users.get("olga")
    assert user is not None
    cookie = SessionCodec(b"k" * 32).issue(user)
    assert SessionCodec(b"k" * 32).principal(cookie, env.users) is not None
    assert SessionCodec(b"k" * 32, max_age_s=-1).principal(cookie, env.users) is None
    assert SessionCodec(b"j" * 32).principal(cookie, env.users) is None


def test_login_page_shown_again_keeps_the_form_valid(anon: TestClient) -> None:
    """Browsers fetch /favicon.ico (and users open a second tab) after the login page:
    neither may invalidate the nonce of the form already on screen."""
    first = anon.get("/login")
    nonce = first.text.split('name="nonce" value="')[1].split('"')[0]
    icon = anon.get("/favicon.ico", follow_redirects=False)
    assert icon.status_code == 204 and not icon.content
    second = anon.get("/login")
    assert f'name="nonce" value="{nonce}"' in second.text
    resp = anon.post(
        "/login",
        data={"username": "olga", "password": PASSWORD, "nonce": nonce},
        follow_redirects=False,
    )
    assert resp.status_code == 303 and resp.headers["location"] == "/jobs"
