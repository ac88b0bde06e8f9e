"""Wake-ups between the coordinator's processes, so no hop polls its neighbour blindly.

A deployed exchange crosses the coordinator's ServerApp (it pushes the requests to
the SuperLink), the SuperLink, the Fleet gateway (:mod:`.fleet_gateway`) and each
partner's SuperNode, which pulls. Without notices every SuperNode pulled the
SuperLink every 0.2 s while a job ran and the ServerApp pulled it every 0.05 s for
replies; with 9 partners that was about 65 authenticated SQLite-backed requests a
second, and the SuperLink process alone took a whole core of a 2-core machine
(py-spy: most of it in SQLAlchemy), so every exchange waited seconds for CPU.

Two notices, each a file in the coordinator's state directory that one side
appends a byte to and the other side watches (``os.stat``: no request to anyone):

* ``outbox``: the ServerApp pushed requests for partners
  (:func:`coordinator.broadcast.broadcast`). The gateway holds a SuperNode's
  pull that found nothing for up to :data:`HOLD_S` and forwards it again as soon
  as this changes (a long poll), so a request reaches its partner within
  milliseconds and an idle partner costs one pull per :data:`HOLD_S`.
* ``inbox``: a partner pushed a reply or one of its objects through the gateway.
  The ServerApp's reply loop waits on this instead of pulling every 0.05 s, and
  pulls at least every :data:`FALLBACK_S` anyway.

The directory travels to the ServerApp in :data:`NOTICE_ENV` (set by the gateway
for the SuperLink it starts, inherited by Flower's SuperExec and the ServerApps).
Nothing here carries data: a notice says "something changed", the pull that
follows is Flower's own, authenticated as before. Both files live on the
coordinator host, 0700 directory; a missing or unreadable file only means the
waiter falls back to its timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

__all__ = [
    "FALLBACK_S",
    "HOLD_S",
    "NOTICE_ENV",
    "Notice",
    "NoticeWatch",
    "from_env",
    "notice_dir",
]

#: The environment variable naming the notice directory (unset: no notices, poll).
NOTICE_ENV = "FEDCOLLAB_FLEET_NOTICES"
#: Longest hold of a SuperNode pull that found nothing (Flower's client waits 30 s).
HOLD_S = 2.0
#: A waiter on a notice checks the real state at least this often anyway.
FALLBACK_S = 0.5
#: How often a waiter looks at the notice file (a stat: microseconds).
_CHECK_S = 0.005
#: The file is emptied once it reaches this size (a waiter sees the change too).
_WRAP_BYTES = 4096

Token = tuple[int, int] | None


class Notice:
    """One notice file: :meth:`bump` on one side, :meth:`wait` on the other."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def token(self) -> Token:
        """The file's state now; a later :meth:`bump` changes it."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_size, st.st_mtime_ns)

    def bump(self) -> None:
        """Tell the waiters something changed (never raises: a notice is a hint)."""
        with contextlib.suppress(OSError):
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                if os.fstat(fd).st_size >= _WRAP_BYTES:
                    os.ftruncate(fd, 0)
                os.write(fd, b".")
            finally:
                os.close(fd)

    def wait(self, since: Token, timeout_s: float) -> bool:
        """Block until the file differs from ``since`` (True) or ``timeout_s`` passed."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            if self.token() != since:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(_CHECK_S, left))


class NoticeWatch:
    """One task watching a notice for many waiters in an event loop (the gateway's held
    pulls): take :meth:`event` before the work whose result may be stale, then wait on
    it; a change since then has already set it."""

    def __init__(self, notice: Notice) -> None:
        self.notice = notice
        self._token = notice.token()
        self._event: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def event(self) -> asyncio.Event:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    async def _run(self) -> None:
        while True:
            token = self.notice.token()
            if token != self._token:
                self._token = token
                event, self._event = self._event, None
                if event is not None:
                    event.set()
            await asyncio.sleep(_CHECK_S)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def notice_dir(state_dir: Path) -> Path:
    """The coordinator's notice directory (created 0700)."""
    path = state_dir / "notices"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def from_env(name: str, environ: dict[str, str] | None = None) -> Notice | None:
    """The notice ``name`` ("outbox" or "inbox") of :data:`NOTICE_ENV`, or None."""
    raw = (os.environ if environ is None else environ).get(NOTICE_ENV, "")
    return Notice(Path(raw) / name) if raw else None
