"""CPU time of a benchmark's own process tree, by kind of process, sampled from ``/proc``.

    with CpuSampler() as cpu:
        ...  # run a job whose progress events carry wall-clock times
    cpu.between(t0, t1)  # {"superlink": 1.8, "node": 4.1, ...} core-seconds

A thread reads ``/proc/<pid>/stat`` (user + system time) of this process and every
descendant every ``interval_s`` and keeps the running totals per kind
(:data:`KINDS`: the SuperLink, the coordinator's supervisor, Flower's SuperExec and
ServerApp, each partner's node: its executor, with its SuperNode in the same process by
default (client/runtime_local.py), or its SuperNode process of its own with
``FEDCOLLAB_NODE_EXECUTOR=process``; anything else, such as the
simulation engine's Ray workers and this process, is ``other``). A process is known by
its pid and start time, so a reused pid is a new process; CPU a process spent between
two samples is counted when the second one sees it, and the CPU of a process that
ended between two samples after the last time it was seen is lost (at most one
interval's worth).
:meth:`CpuSampler.between` gives the core-seconds each kind used between two
wall-clock times, from the samples nearest them: the benchmarks divide it by the
rounds in between to say where a round's CPU goes. Linux only (``/proc``).
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

__all__ = ["KINDS", "CpuSampler", "kind_of"]

#: (kind, what its command line contains), first match wins.
KINDS: tuple[tuple[str, str], ...] = (
    ("superlink", "coordinator.superlink_launch"),
    ("coordinator", "coordinator.fleet_gateway"),
    ("superexec", "flower-superexec"),
    ("serverapp", "flwr-serverapp"),
    ("supernode", "client.fleet_poll"),
    ("node", "client.node_runtime"),
)
_PROC = Path("/proc")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def kind_of(cmdline: str) -> str:
    """The kind of a process by its command line (``other`` if none matches).

    >>> kind_of("python -m fedcollab.client.node_runtime --state-dir x")
    'node'
    >>> kind_of("ray::ClientAppActor")
    'other'
    """
    for kind, marker in KINDS:
        if marker in cmdline:
            return kind
    return "other"


def _stat(pid: str) -> tuple[int, str, float] | None:
    """(parent pid, start time, CPU seconds) of ``pid``, None if it is gone."""
    try:
        raw = (_PROC / pid / "stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()
    # fields[0] is field 3 of proc(5): ppid is field 4, utime 14, stime 15, starttime 22.
    return int(fields[1]), fields[19], (int(fields[11]) + int(fields[12])) / _TICK


class CpuSampler:
    """Running CPU totals by kind of this process tree (see the module notes)."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self._seen: dict[tuple[str, str], tuple[str, float]] = {}  # (pid, start): kind, cpu
        self._totals: dict[str, float] = {}
        self._times: list[float] = []
        self._snapshots: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def __enter__(self) -> CpuSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        """Read every process of the tree once and record the totals at this time."""
        root = os.getpid()
        stats: dict[str, tuple[int, str, float]] = {}
        for entry in os.listdir(_PROC):
            if entry.isdigit():
                st = _stat(entry)
                if st is not None:
                    stats[entry] = st
        children: dict[int, list[str]] = {}
        for pid, (ppid, _, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        tree, todo = [], [str(root)]
        while todo:
            pid = todo.pop()
            if pid in stats:
                tree.append(pid)
                todo.extend(children.get(int(pid), []))
        for pid in tree:
            _, start, cpu = stats[pid]
            key = (pid, start)
            known = self._seen.get(key)
            if known is None:
                try:
                    raw = (_PROC / pid / "cmdline").read_bytes()
                except OSError:
                    continue
                kind = kind_of(raw.replace(b"\0", b" ").decode(errors="replace"))
                # Seen at the first sample: its CPU from then on. Started later: all of
                # it (it ran only while sampling did).
                before = cpu if not self._times else 0.0
                known = (kind, before)
            kind, last = known
            self._totals[kind] = self._totals.get(kind, 0.0) + cpu - last
            self._seen[key] = (kind, cpu)
        self._times.append(time.time())
        self._snapshots.append(dict(self._totals))

    def between(self, t0: float, t1: float) -> dict[str, float]:
        """Core-seconds per kind used between wall-clock times ``t0`` and ``t1``
        (from the last sample at or before ``t0`` to the first at or after ``t1``)."""
        if not self._times or t1 < t0:
            return {}
        i = max(0, bisect.bisect_right(self._times, t0) - 1)
        j = min(len(self._times) - 1, bisect.bisect_left(self._times, t1))
        a: Mapping[str, float] = self._snapshots[i]
        b: Mapping[str, float] = self._snapshots[j]
        return {k: round(b[k] - a.get(k, 0.0), 3) for k in sorted(b)}
