"""Helpers for browser tests: the console under test, its users, page actions.

The console's pages follow a DOM contract (ids and data attributes, see
``coordinator/console``); these helpers and the tests rely on it, never on layout or
wording beyond it.
"""

from __future__ import annotations

import re
import subprocess
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from fedcollab.federation.local_federation import LocalFederation
from tests.support.integration import BIN

# Generous: the machine is shared, and two cores run a SuperLink, two SuperNodes and
# their ClientApps, the console and Chromium.
UI_TIMEOUT_MS = 30_000

#: The ``new_page`` fixture: ``new_page(name)`` opens a page in a fresh browser context.
NewPage = Callable[..., Page]


@dataclass(frozen=True)
class User:
    name: str
    role: str  # operator | partner | compliance
    password: str
    partner: str | None = None


@dataclass(frozen=True)
class Console:
    """A running console in front of a running federation."""

    url: str
    fed: LocalFederation
    log: Path  # the console's stdout and stderr
    operator: User
    compliance: User
    partner_a: User
    partner_b: User

    @property
    def workspace(self) -> Path:
        """The federation workspace the console was started on."""
        return self.fed.ws.root


@dataclass
class Command:
    """A ``fedcollab`` process started by :func:`fedcollab`; :meth:`finish` waits for it.

    Each such process spends seconds importing every command (torch among them), so
    tests start the ones they need early and collect them late.
    """

    args: tuple[str, ...]
    proc: subprocess.Popen[str]
    timeout: float

    def finish(self) -> str:
        """Its stdout; a non-zero exit (or a hang) fails the test with its output."""
        shown = "fedcollab " + " ".join(self.args)
        try:
            out, err = self.proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            pytest.fail(f"`{shown}` took over {self.timeout:g} s:\n{out}{err}")
        if self.proc.returncode != 0:
            pytest.fail(f"`{shown}` exited {self.proc.returncode}:\n{out}{err}")
        return out


def fedcollab(*args: str, timeout: float = 300.0) -> Command:
    """Start ``fedcollab ARGS`` as a process, output piped (see the ``cli`` fixture)."""
    proc = subprocess.Popen(
        [str(BIN / "fedcollab"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return Command(args, proc, timeout)


#: The ``cli`` fixture: ``cli(*args)`` starts ``fedcollab ARGS``, killed if left running.
StartCommand = Callable[..., Command]


def console_cli(*args: str, stdin: str | None = None) -> str:
    """Run ``fedcollab console ARGS`` in this process (the command's own code, without the
    seconds each ``fedcollab`` process spends importing every command); fails on error."""
    with warnings.catch_warnings():  # typer imports click helpers click deprecates
        warnings.simplefilter("ignore", DeprecationWarning)
        from typer.testing import CliRunner

        from fedcollab.cli.console import app

    result = CliRunner().invoke(app, list(args), input=stdin)
    if result.exit_code != 0:
        pytest.fail(
            f"`fedcollab console {' '.join(args)}` exited {result.exit_code}: "
            f"{result.exception!r}\n{result.output}"
        )
    return result.output


def url_path(path: str) -> re.Pattern[str]:
    """Matches a page URL whose path is exactly ``path`` (any query string)."""
    return re.compile(r"^https?://[^/]+" + re.escape(path) + r"(\?.*)?$")


def login_form_submitted(page: Page, user: User) -> None:
    """Fill in and submit the login form of the page (already on /login)."""
    page.fill("#username", user.name)
    page.fill("#password", user.password)
    page.click("#login-submit")


def login(page: Page, user: User) -> None:
    """Log in through the form; returns once the page says who is logged in."""
    page.goto("/login")
    login_form_submitted(page, user)
    expect(page.locator("#whoami")).to_have_text(f"{user.name} ({user.role})")


def logout(page: Page) -> None:
    page.click("#logout")
    expect(page).to_have_url(url_path("/login"))


def fetch_status(page: Page, path: str) -> int:
    """The HTTP status of a same-origin ``fetch`` made by the page (its cookies).

    Redirects are not followed, so a redirect to /login shows as an opaque 0.
    """
    status: Any = page.evaluate(
        "async (p) => (await fetch(p, {redirect: 'manual', credentials: 'same-origin'})).status",
        path,
    )
    return int(status)


def record_texts(page: Page, selectors: Sequence[str]) -> None:
    """From now on, keep in ``window.__seen[selector]`` every text the element shows.

    A MutationObserver catches each update the page's own polling makes, however
    briefly it lasts; the record lives in the page, so it also proves the page was
    not reloaded (see :func:`recorded_texts`).
    """
    page.evaluate(
        """(selectors) => {
            window.__seen = {};
            const take = () => {
                for (const s of selectors) {
                    const el = document.querySelector(s);
                    const text = el ? el.textContent.trim() : null;
                    const list = (window.__seen[s] = window.__seen[s] || []);
                    if (text !== null && list[list.length - 1] !== text) list.push(text);
                }
            };
            take();
            new MutationObserver(take).observe(document.documentElement, {
                subtree: true, childList: true, characterData: true, attributes: true,
            });
        }""",
        list(selectors),
    )


def recorded_texts(page: Page) -> dict[str, list[str]]:
    """What :func:`record_texts` saw; fails if the page was reloaded since."""
    seen: Any = page.evaluate("() => window.__seen ?? null")
    assert seen is not None, "the page was reloaded: the live view must update in place"
    return {str(k): [str(t) for t in v] for k, v in seen.items()}
