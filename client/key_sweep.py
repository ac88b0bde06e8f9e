"""A node erases expired per-run keys on its own clock, not only when a request comes.

A partner's run contract bounds how long a run's secrets stay on disk (its CKKS keys,
its secure-aggregation sessions, a vertical job's mask keys): :data:`KEY_TTL_S
<fedcollab.client.run_contract.KEY_TTL_S>` after the run's handshake they are erased
(:func:`fedcollab.client.admission.erase_expired`), and the run is over. A completed
job's keys go at its cosign, and so do a failed job's at the failure's cosign
(``coordinator/job.py``), but only for the partners still in the job. The TTL erasure
used to run only when the node's next request came, so a node that was dropped, or
whose coordinator vanished, kept the run's keys for as long as nobody asked it anything.

:func:`start` sweeps when the node starts and every :data:`SWEEP_S` seconds after (a
daemon thread of the node runtime, ``client/node_runtime.py``), in whichever executor
mode. A sweep that fails (a locked or unreadable contract) is logged and tried again at
the next one; it never stops the node.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from fedcollab.client.admission import erase_expired
from fedcollab.client.run_contract import RunContract

__all__ = ["SWEEP_S", "KeySweep", "start", "sweep"]

log = logging.getLogger(__name__)

#: Seconds between two sweeps: a run's keys outlive the TTL by at most this much.
SWEEP_S = 600.0


def sweep(node_config: Mapping[str, str]) -> None:
    """Erase the secrets of every run of this node whose key TTL has passed."""
    erase_expired(RunContract.from_config(node_config), node_config)


class KeySweep:
    """The sweeping thread: :attr:`swept` is set after each sweep (tests wait on it)."""

    def __init__(self, node_config: Mapping[str, str], every_s: float) -> None:
        self.node_config = dict(node_config)
        self.every_s = every_s
        self.swept = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="key-sweep", daemon=True)

    def _loop(self) -> None:
        while True:
            try:
                sweep(self.node_config)
            except Exception:  # logged; the next sweep tries again
                log.warning("expired run keys could not be erased now", exc_info=True)
            self.swept.set()
            if self._stop.wait(self.every_s):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def start(node_config: Mapping[str, str], *, every_s: float = SWEEP_S) -> KeySweep:
    """Sweep now and every ``every_s`` seconds, in a daemon thread."""
    keys = KeySweep(node_config, every_s)
    keys._thread.start()
    return keys
