"""Fixtures for browser tests: headless Chromium driving the web console of a live federation.

One federation and one console serve the whole session (starting them is most of the
cost): a real :class:`~federation.local_federation.LocalFederation` with two partners,
``fedcollab console init``, one user per role (random passwords, ``--password-stdin``),
each partner's budget ledger registered (``console ledger add``) -- these commands run
in this process through Typer's runner, sparing a few seconds of imports each -- and
``fedcollab console start`` as a subprocess on a free loopback port. Chromium is
Debian's ``/usr/bin/chromium`` driven by Playwright; a test opens pages with
``new_page``, each in a fresh browser context (its own cookies).

On failure, every page the test opened is saved as ``<n>-<name>.png`` and
``<n>-<name>.html`` in the test's tmp dir (the path is printed in the report).
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from fedcollab.federation.local_federation import LocalFederation
from tests.support.browser import (
    UI_TIMEOUT_MS,
    Command,
    Console,
    NewPage,
    StartCommand,
    User,
    console_cli,
    fedcollab,
)
from tests.support.integration import BIN, free_port, make_partners

CHROMIUM = Path("/usr/bin/chromium")
# This machine's network is closed: without these Chromium stalls on background
# connections (component updates, sync, QUIC probes) and the tests hang.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
CONSOLE_START_S = 90.0
# Every partner's privacy-budget cap (epsilon), so each ledger has a row to show.
BUDGET_CAP = 10.0

_FAILED = pytest.StashKey[bool]()

# Playwright's `expect` waits 5 s by default: too short on a busy machine.
expect.set_options(timeout=UI_TIMEOUT_MS)


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process's group (it was started in its own), SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def _wait_answering(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + CONSOLE_START_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the console exited with {proc.returncode} at start:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/login", timeout=5) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(
                f"the console did not answer on {url} in {CONSOLE_START_S:g} s:\n{_tail(log)}"
            )
        time.sleep(0.5)


@pytest.fixture(scope="session")
def flower_path() -> Iterator[None]:
    """Flower's executables must be on PATH for the processes the federation starts."""
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{BIN}{os.pathsep}{old}"
    yield
    os.environ["PATH"] = old


@pytest.fixture(scope="session")
def console(
    tmp_path_factory: pytest.TempPathFactory, flower_path: None, browser: Browser
) -> Iterator[Console]:
    """A federation of two partners with the console in front of it.

    (``browser`` first: without Chromium the session fails before starting anything.)
    """
    root = tmp_path_factory.mktemp("console")
    partners = make_partners(root, 2)
    with LocalFederation(
        root / "federation",
        partners,
        port=free_port(),
        node_port_base=random.randrange(20000, 40000, 50),
        budget_cap=BUDGET_CAP,
    ) as fed:
        ws = str(fed.ws.root)
        a, b = (p.partner for p in partners)
        operator = User("olivia", "operator", secrets.token_urlsafe(18))
        compliance = User("carl", "compliance", secrets.token_urlsafe(18))
        partner_a = User("alice", "partner", secrets.token_urlsafe(18), partner=a)
        partner_b = User("bob", "partner", secrets.token_urlsafe(18), partner=b)
        console_cli("init", "-w", ws)
        for user in (operator, compliance, partner_a, partner_b):
            extra = ["--partner", user.partner] if user.partner else []
            console_cli(
                "user", "add", user.name, "--role", user.role, *extra, "-w", ws,
                "--password-stdin", stdin=user.password + "\n",
            )  # fmt: skip
        for src in partners:
            console_cli("ledger", "add", src.partner, str(fed.budget_db(src.partner)), "-w", ws)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = root / "console.log"
        with log.open("ab") as sink:
            proc = subprocess.Popen(
                [str(BIN / "fedcollab"), "console", "start", "-w", ws,
                 "--host", "127.0.0.1", "--port", str(port)],
                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group, torn down as one
            )  # fmt: skip
        try:
            fed.wait_online()  # the job needs both partners; meanwhile the console starts
            _wait_answering(url, proc, log)
            yield Console(
                url=url,
                fed=fed,
                log=log,
                operator=operator,
                compliance=compliance,
                partner_a=partner_a,
                partner_b=partner_b,
            )
        finally:
            _stop_group(proc)


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="session")
def browser(playwright: Playwright, downloads: Path) -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} not found: run `make test` (it installs Debian's chromium)",
            pytrace=False,
        )
    # Playwright starts Chromium with a fresh temporary --user-data-dir and removes it
    # at close: no profile, cache or cookie comes from an earlier run.
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        args=list(CHROMIUM_ARGS),
        downloads_path=downloads,
        timeout=60_000,
    )
    try:
        yield browser
    finally:
        browser.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        item.stash[_FAILED] = True
    return report


@pytest.fixture
def new_page(
    browser: Browser, console: Console, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[NewPage]:
    """``new_page(name)``: a page on the console in a fresh browser context (no cookies).

    Downloads are accepted (``Download.save_as`` copies one out). The contexts close
    after the test; if it failed, each page's screenshot and HTML are saved first.
    """
    opened: list[tuple[str, BrowserContext, Page]] = []

    def make(name: str = "page") -> Page:
        context = browser.new_context(base_url=console.url, accept_downloads=True)
        context.set_default_timeout(UI_TIMEOUT_MS)
        page = context.new_page()
        opened.append((f"{len(opened)}-{name}", context, page))
        return page

    yield make
    failed = request.node.stash.get(_FAILED, False)
    for name, context, page in opened:
        if failed and not page.is_closed():
            with contextlib.suppress(Exception):  # saving must not mask the failure
                page.screenshot(path=tmp_path / f"{name}.png", full_page=True)
            with contextlib.suppress(Exception):
                (tmp_path / f"{name}.html").write_text(f"<!-- {page.url} -->\n{page.content()}")
        with contextlib.suppress(Exception):
            context.close()
    if failed and opened:
        print(f"\nbrowser screenshots and HTML: {tmp_path}\nconsole log: {console.log}")


@pytest.fixture
def cli() -> Iterator[StartCommand]:
    """``cli(*args)``: start ``fedcollab ARGS``; whatever still runs after the test is killed."""
    started: list[Command] = []

    def start(*args: str) -> Command:
        started.append(fedcollab(*args))
        return started[-1]

    yield start
    for command in started:
        if command.proc.poll() is None:
            command.proc.kill()
            command.proc.communicate()
