"""client/fleet_poll.py: the SuperNode pulls fast while a job runs, at Flower's pace idle.

That real nodes start through the launcher is checked with real processes in
tests/adversarial/test_outsider.py (the node's process group's command lines)."""

from __future__ import annotations

import time
import types

import flwr.supernode.start_client_internal as flower_module
import pytest

from fedcollab.client.fleet_poll import ACTIVE_S, ACTIVE_WINDOW_S, LOCAL_S, PullClock, install


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_idle_nodes_pull_at_flower_s_pace_and_running_jobs_fast() -> None:
    fake = FakeClock()
    clock = PullClock(monotonic=fake.monotonic, sleep=fake.sleep)
    clock.sleep(3)  # Flower's idle wait, no message yet: unchanged
    clock.message_seen()
    clock.sleep(3)  # a job runs
    fake.now += ACTIVE_WINDOW_S + 1
    clock.sleep(3)  # the job ended long ago
    clock.sleep(0.5)  # Flower's wait for its own reply: local state only
    clock.sleep(1.25)  # any other wait: as asked
    assert fake.slept == [3.0, ACTIVE_S, 3.0, LOCAL_S, 1.25]
    assert clock.time is time.time  # everything else is the time module


def test_install_patches_flower_s_supernode_module_and_marks_messages() -> None:
    """The installed Flower (pinned 1.41.0) has the names this relies on; a pulled
    message (``_push_messages`` is called only then) switches to the fast interval."""
    assert flower_module.time is time and callable(flower_module._push_messages)
    pushed: list[object] = []
    module = types.ModuleType("stand_in")
    module.time = time  # type: ignore[attr-defined]
    module._push_messages = lambda *a, **k: pushed.append(a)  # type: ignore[attr-defined]
    fake = FakeClock()
    clock = PullClock(monotonic=fake.monotonic, sleep=fake.sleep)
    assert install(module, clock)
    assert module.time is clock  # type: ignore[attr-defined]
    assert clock.interval(3) == 3.0
    module._push_messages("state")  # type: ignore[attr-defined]
    assert pushed == [("state",)] and clock.interval(3) == ACTIVE_S


def test_a_changed_flower_module_runs_unpatched() -> None:
    module = types.ModuleType("changed")
    module.time = time  # type: ignore[attr-defined]  # but no _push_messages
    assert not install(module, PullClock())
    assert module.time is time  # type: ignore[attr-defined]


def test_the_active_interval_can_be_set_back_to_flower_s_pace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FEDCOLLAB_ACTIVE_PULL_S", "3")
    clock = PullClock()
    clock.message_seen()
    assert clock.interval(3) == 3.0
    for bad in ("0", "fast", "60"):  # out of [0.05, 3] or not a number: the default
        monkeypatch.setenv("FEDCOLLAB_ACTIVE_PULL_S", bad)
        assert PullClock().active_s == ACTIVE_S
