"""Starting Ray for Flower's simulation engine, with retries on a loaded machine.

Ray 2.55 waits a fixed 30 s for its raylet to register with its GCS
(``ray/_private/node.py``, ``raylet_start_wait_time_s = 30``; not configurable) and
then raises a bare ``Exception("The current node timed out during startup ...")``.
On a loaded 2-core machine (load average 25-45) that ended ``fedcollab run``, the
privacy study and the wheel test before any partner ran. Flower's Ray backend starts
Ray only if it is not running yet (``flwr/server/superlink/fleet/vce/backend/
raybackend.py``, ``RayBackend.init_ray``), so :func:`start_ray` starts it first, with
the arguments Flower would pass, and retries a start that timed out. Nothing of the
job has run at that point (no ServerApp, no ClientApp, no audit entry, no ledger
charge), so a retry has no side effect. The Ray processes a failed start left behind
(``gcs_server``, ``raylet``, Ray's Python helpers: children of this process) are
killed before the next attempt.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fedcollab.common.errors import FederationError

__all__ = ["ATTEMPTS", "start_ray"]

log = logging.getLogger(__name__)

#: Starts tried before giving up (each waits up to Ray's own 30 s).
ATTEMPTS = 3
#: What Ray's exception says when its raylet did not register in time.
_STARTUP_TIMEOUT = "timed out during startup"


def _ray_children() -> list[int]:
    """Pids of this process's children that are Ray's (from /proc)."""
    me, found = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:  # exited meanwhile, or not ours to read
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and (b"/ray/" in cmdline or b"gcs_server" in cmdline or b"raylet" in cmdline):
            found.append(int(entry.name))
    return found


def _stop_leftovers() -> None:
    import ray

    ray.shutdown()  # whatever the failed start registered in this process
    for pid in _ray_children():
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def start_ray(
    init_args: Mapping[str, Any],
    *,
    attempts: int = ATTEMPTS,
    init: Callable[..., Any] | None = None,
) -> bool:
    """Start Ray as Flower's backend would, retrying a start that timed out.

    Returns True when this call started Ray (the caller shuts it down), False when Ray
    was already running. ``init`` is ``ray.init`` (a parameter for the retry test).
    Raises :class:`FederationError` after ``attempts`` timed-out starts; any other
    failure propagates at once.
    """
    import ray

    if ray.is_initialized():
        return False
    start = init or ray.init
    # As RayBackend.init_ray: Ray's workers get this driver's sys.path.
    pythonpath = os.pathsep.join(sys.path)
    if os.environ.get("PYTHONPATH"):
        pythonpath = f"{pythonpath}{os.pathsep}{os.environ['PYTHONPATH']}"
    os.environ["PYTHONPATH"] = pythonpath
    args = {"include_dashboard": False, **dict(init_args)}
    for attempt in range(1, attempts + 1):
        try:
            start(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **args)
            return True
        except Exception as exc:  # Ray raises a bare Exception for this
            if _STARTUP_TIMEOUT not in str(exc):
                raise
            _stop_leftovers()
            if attempt == attempts:
                raise FederationError(
                    f"the simulation engine (Ray) did not start: its raylet timed out "
                    f"{attempts} times ({exc})",
                    hint="the machine is overloaded: run again when it is less busy",
                ) from exc
            log.warning("Ray did not start (attempt %d of %d): %s", attempt, attempts, exc)
    raise AssertionError("unreachable")  # pragma: no cover
