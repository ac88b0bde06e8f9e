"""A long-running child process that lives and dies with its parent.

The coordinator's Fleet gateway (:mod:`fedcollab.coordinator.fleet_gateway`) and a
partner's node executor (:mod:`fedcollab.client.node_runtime`) each start one Flower
process as their child: it must not outlive them, and stopping it must let a shutdown
it already began (e.g. a SuperNode deactivating itself) finish.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess

__all__ = ["die_with_parent", "stop_child"]


def stop_child(proc: subprocess.Popen[bytes]) -> None:
    """Let the child finish a shutdown it may already be in, then SIGTERM, then SIGKILL."""
    for action in (None, proc.terminate, proc.kill):
        if proc.poll() is not None:
            return
        if action is not None:
            action()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGTERM when its parent dies (``PR_SET_PDEATHSIG``)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
