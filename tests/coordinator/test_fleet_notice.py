"""coordinator/fleet_notice.py: one process bumps a notice, another wakes on it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from fedcollab.coordinator.fleet_notice import NOTICE_ENV, Notice, from_env, notice_dir


def test_a_bump_from_another_thread_wakes_the_waiter(tmp_path: Path) -> None:
    notice = Notice(notice_dir(tmp_path) / "inbox")
    assert notice.token() is None  # no file yet: the first bump creates it
    seen = notice.token()
    timer = threading.Timer(0.2, notice.bump)
    timer.start()
    t0 = time.monotonic()
    assert notice.wait(seen, timeout_s=30.0)
    assert time.monotonic() - t0 < 25.0  # woken by the bump, not by the timeout
    timer.join()
    assert notice.token() is not None and notice.token() != seen


def test_without_a_bump_the_wait_times_out(tmp_path: Path) -> None:
    notice = Notice(notice_dir(tmp_path) / "outbox")
    notice.bump()
    seen = notice.token()
    assert not notice.wait(seen, timeout_s=0.05)


def test_every_bump_is_a_change_even_when_the_file_wraps(tmp_path: Path) -> None:
    notice = Notice(tmp_path / "inbox")
    for _ in range(5000):  # past the 4,096-byte wrap
        before = notice.token()
        notice.bump()
        assert notice.token() != before
    assert (tmp_path / "inbox").stat().st_size < 4097


def test_the_directory_is_private_and_named_by_the_environment(tmp_path: Path) -> None:
    path = notice_dir(tmp_path / "state")
    assert path.stat().st_mode & 0o777 == 0o700
    assert from_env("inbox", {}) is None
    notice = from_env("inbox", {NOTICE_ENV: str(path)})
    assert notice is not None and notice.path == path / "inbox"
