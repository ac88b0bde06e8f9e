"""Console users, passwords, login throttling and signed session cookies.

Users live in ``<ws>/console/users.json`` (mode 0600, replaced atomically)::

    {"version": 1, "users": {"alice": {"role": "operator", "partner": null,
                                        "hash": "$argon2id$v=19$...", "created": "..."}}}

A session is a cookie signed with the console's secret
(:class:`itsdangerous.URLSafeTimedSerializer`) that names the user, the role,
the partner, a fingerprint of the password hash and a CSRF nonce.  It is
checked against ``users.json`` on every request, so removing a user, changing
a role or a password ends every session of that user at once.  Signing out
bumps the user's session generation in ``users.json``: a copy of the cookie
taken before is dead from then on, on every device (sign-out is everywhere).

Notes
-----
* Passwords are hashed with argon2id (RFC 9106) at argon2-cffi's defaults
  (t=3, m=64 MiB, p=4, the RFC's second recommended option); a stored hash
  made with weaker parameters is upgraded at the next successful login.
* An unknown user name is verified against a dummy hash made with the same
  parameters, so a login takes about as long whether or not the user exists.
* After 5 failed logins a user name (known or not, so the lock reveals
  nothing) is locked for 15 minutes: an online guesser gets 480 tries a day
  at most, against a 12-character minimum password (NIST SP 800-63B 5.2.2).
  The counters live in memory: restarting the console resets them.
* Sessions expire after 8 hours (one working day); the CSRF nonce is 128
  random bits bound to the session.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from itsdangerous import BadSignature, URLSafeTimedSerializer

from fedcollab.common.atomic import write_json_atomic
from fedcollab.common.errors import ConsoleError

__all__ = [
    "MIN_PASSWORD_CHARS",
    "SESSION_MAX_AGE_S",
    "LoginGuard",
    "Principal",
    "Role",
    "SessionCodec",
    "User",
    "UserStore",
]

MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024  # bounds the hashing work an attacker can request
SESSION_MAX_AGE_S = 8 * 3600
LOCKOUT_ATTEMPTS = 5
LOCKOUT_S = 15 * 60
_USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class Role(StrEnum):
    OPERATOR = "operator"
    PARTNER = "partner"
    COMPLIANCE = "compliance"


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    partner: str | None
    password_hash: str
    created: str
    generation: int = 0

    @property
    def fingerprint(self) -> str:
        """Changes whenever the password (hence its salted hash) changes."""
        return hashlib.sha256(self.password_hash.encode()).hexdigest()[:32]

    def public(self) -> dict[str, Any]:
        """What may be shown: never the hash."""
        return {"name": self.name, "role": str(self.role), "partner": self.partner}


@dataclass(frozen=True)
class Principal:
    """The signed-in user of one request."""

    name: str
    role: Role
    partner: str | None
    csrf: str


def check_username(name: str) -> str:
    if not _USERNAME_RE.match(name):
        raise ConsoleError(
            f"invalid user name {name!r}",
            hint="use 1-64 lower-case letters, digits, '.', '-' or '_', starting with a "
            "letter or digit",
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise ConsoleError(
            f"the password is too short ({len(password)} characters)",
            hint=f"choose at least {MIN_PASSWORD_CHARS} characters; a passphrase is easiest",
        )
    if len(password) > MAX_PASSWORD_CHARS:
        raise ConsoleError(f"the password is longer than {MAX_PASSWORD_CHARS} characters")
    return password


class UserStore:
    """``users.json``: add, remove, list and authenticate console users."""

    def __init__(self, path: Path, *, hasher: PasswordHasher | None = None) -> None:
        self.path = path
        self.hasher = hasher or PasswordHasher()
        self._lock = threading.Lock()
        self._dummy: str | None = None

    # -- storage ---------------------------------------------------------------
    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConsoleError(
                f"{self.path} is unreadable: {exc}", hint="restore it from a backup"
            ) from exc
        users = raw.get("users") if isinstance(raw, dict) else None
        if not isinstance(users, dict) or raw.get("version") != 1:
            raise ConsoleError(f"{self.path} is not a console user file (version 1)")
        return users

    def _write(self, users: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, {"version": 1, "users": users}, private=True)

    @staticmethod
    def _user(name: str, raw: dict[str, Any]) -> User:
        try:
            return User(
                name=name,
                role=Role(raw["role"]),
                partner=raw.get("partner"),
                password_hash=str(raw["hash"]),
                created=str(raw.get("created", "")),
                generation=int(raw.get("generation", 0)),
            )
        except (KeyError, ValueError) as exc:
            raise ConsoleError(f"user {name!r} in the console user file is malformed") from exc

    def users(self) -> list[User]:
        return [self._user(n, r) for n, r in sorted(self._read().items())]

    def get(self, name: str) -> User | None:
        raw = self._read().get(name)
        return None if raw is None else self._user(name, raw)

    def add(self, name: str, password: str, *, role: Role, partner: str | None) -> User:
        check_username(name)
        check_password(password)
        if (role is Role.PARTNER) != (partner is not None):
            raise ConsoleError(
                "a partner user needs --partner, and only a partner user may have one",
                hint="pass --partner NAME with --role partner",
            )
        record = {
            "role": str(role),
            "partner": partner,
            "hash": self.hasher.hash(password),
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        with self._lock:
            users = self._read()
            if name in users:
                raise ConsoleError(
                    f"user {name!r} already exists", hint="remove it first to replace it"
                )
            users[name] = record
            self._write(users)
        return self._user(name, record)

    def remove(self, name: str) -> None:
        with self._lock:
            users = self._read()
            if users.pop(name, None) is None:
                raise ConsoleError(f"no console user {name!r}")
            self._write(users)

    def end_sessions(self, name: str) -> None:
        """Invalidate every session issued so far to ``name`` (sign-out)."""
        with self._lock:
            users = self._read()
            if name in users:
                users[name]["generation"] = int(users[name].get("generation", 0)) + 1
                self._write(users)

    def _rehash(self, name: str, password: str) -> None:
        with self._lock:
            users = self._read()
            if name in users:
                users[name]["hash"] = self.hasher.hash(password)
                self._write(users)

    # -- authentication ----------------------------------------------------------
    def authenticate(self, name: str, password: str) -> User | None:
        """The user if ``password`` is right; None otherwise (same work either way)."""
        user = self.get(name) if _USERNAME_RE.match(name) else None
        if len(password) > MAX_PASSWORD_CHARS:
            password = password[:MAX_PASSWORD_CHARS]  # still hashed: no timing shortcut
        if user is None:
            if self._dummy is None:
                self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
            with contextlib.suppress(VerificationError):
                self.hasher.verify(self._dummy, password)
            return None
        try:
            self.hasher.verify(user.password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if self.hasher.check_needs_rehash(user.password_hash):
            self._rehash(name, password)
            user = self.get(name)
        return user


class LoginGuard:
    """Failed-login counters per user name: 5 failures lock the name for 15 minutes."""

    def __init__(self, *, attempts: int = LOCKOUT_ATTEMPTS, lock_s: float = LOCKOUT_S) -> None:
        self.attempts = attempts
        self.lock_s = lock_s
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def locked(self, name: str) -> bool:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.get(name, []) if now - t < self.lock_s]
            self._failures[name] = recent
            return len(recent) >= self.attempts

    def failed(self, name: str) -> None:
        with self._lock:
            self._failures.setdefault(name, []).append(time.monotonic())
            if len(self._failures) > 10_000:  # bound memory under a spraying attack
                oldest = min(self._failures, key=lambda n: max(self._failures[n]))
                del self._failures[oldest]

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name, None)


class SessionCodec:
    """Signs and checks session and login-form cookies."""

    def __init__(self, secret: bytes, *, max_age_s: int = SESSION_MAX_AGE_S) -> None:
        self.max_age_s = max_age_s
        sha256 = {"digest_method": hashlib.sha256}
        self._session = URLSafeTimedSerializer(
            secret, salt="fedcollab-console-session", signer_kwargs=sha256
        )
        self._login = URLSafeTimedSerializer(
            secret, salt="fedcollab-console-login", signer_kwargs=sha256
        )

    def issue(self, user: User) -> str:
        return self._session.dumps(
            {
                "u": user.name,
                "r": str(user.role),
                "p": user.partner,
                "f": user.fingerprint,
                "g": user.generation,
                "c": secrets.token_urlsafe(16),
            }
        )

    def principal(self, cookie: str | None, users: UserStore) -> Principal | None:
        """The session's user if the cookie is authentic, fresh and still matches users.json."""
        if not cookie:
            return None
        try:
            data = self._session.loads(cookie, max_age=self.max_age_s)
        except BadSignature:
            return None
        if not isinstance(data, dict):
            return None
        user = users.get(str(data.get("u", "")))
        if (
            user is None
            or not secrets.compare_digest(str(data.get("f", "")), user.fingerprint)
            or data.get("r") != str(user.role)
            or data.get("p") != user.partner
            or data.get("g") != user.generation
        ):
            return None
        return Principal(user.name, user.role, user.partner, str(data.get("c", "")))

    def login_nonce(self) -> tuple[str, str]:
        """(nonce for the form, signed cookie value) protecting the login form itself."""
        nonce = secrets.token_urlsafe(16)
        return nonce, self._login.dumps(nonce)

    def current_login_nonce(self, cookie: str | None) -> str | None:
        """The nonce of a still-valid login cookie: a login page shown again (another tab,
        or the browser's own requests that land on /login) must not invalidate the form
        already on screen. Reused only in its first 50 minutes, so a form stays valid."""
        if not cookie:
            return None
        try:
            nonce = self._login.loads(cookie, max_age=3000)
        except BadSignature:
            return None
        return nonce if isinstance(nonce, str) else None

    def check_login_nonce(self, cookie: str | None, nonce: str) -> bool:
        if not cookie or not nonce:
            return False
        try:
            expected = self._login.loads(cookie, max_age=3600)
        except BadSignature:
            return False
        return isinstance(expected, str) and secrets.compare_digest(expected, nonce)
