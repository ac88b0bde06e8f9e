"""experiments/proc_cpu.py: CPU of the benchmark's own process tree, by kind of process."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from experiments.proc_cpu import CpuSampler, kind_of

_BURN = (
    "import sys, time\n"
    "t = time.process_time()\n"
    "while time.process_time() - t < 0.4:\n"
    "    pass\n"
    "print(time.process_time(), flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_child_s_cpu_is_counted_under_its_kind_between_two_times() -> None:
    with CpuSampler(interval_s=0.05) as cpu:
        t0 = time.time()
        # The marker as an argument: a partner's executor, as far as the sampler can tell.
        child = subprocess.Popen(
            [sys.executable, "-c", _BURN, "fedcollab.client.node_runtime"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None and child.stdin is not None
        burned = float(child.stdout.readline())  # the child is still alive: see it now
        cpu.sample()
        t1 = time.time()
        child.stdin.close()
        child.wait(60)
    used = cpu.between(t0, t1)
    assert used.get("node", 0.0) >= 0.9 * burned  # its start-up CPU comes on top
    assert used.get("node", 0.0) <= burned + 2.0
    assert cpu.between(t1 + 3600, t1 + 7200) == {k: 0.0 for k in used}  # nothing after


def test_kinds_follow_the_command_line() -> None:
    assert kind_of("python -m fedcollab.coordinator.superlink_launch --node-journal x") == (
        "superlink"
    )
    assert kind_of("python -m fedcollab.client.fleet_poll --superlink 127.0.0.1:1") == "supernode"
    assert kind_of("/venv/bin/python /venv/bin/flwr-serverapp --insecure") == "serverapp"
    assert kind_of("ray::IDLE") == "other"
