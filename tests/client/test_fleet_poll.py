"""client/fleet_poll.py: the SuperNode pulls fast while a job runs, at Flower's pace idle.

That real nodes start through the launcher is checked with real processes in
tests/adversarial/test_outsider.py (the node's process group's command lines)."""

from __future__ import annotations

import contextlib
import threading
import time
import types

import flwr.supernode.start_client_internal as flower_module
import pytest

from fedcollab.client.fleet_poll import (
    ACTIVE_S,
    ACTIVE_WINDOW_S,
    HELD_MIN_S,
    HELD_NEXT_S,
    LOCAL_S,
    OBJECT_BACKOFF_S,
    PullClock,
    install,
    install_local_notice,
)


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
    clock.sleep(1.25)  # any other wait: as asked
    assert fake.slept == [3.0, ACTIVE_S, 3.0, 1.25]
    assert clock.interval(0.5) == LOCAL_S  # Flower's local waits: on an event (below)
    assert clock.time is time.time  # everything else is the time module


def test_after_a_held_pull_the_next_one_starts_at_once() -> None:
    """The coordinator's gateway held the last empty pull (it answered after 1 s or
    more): it waits for the coordinator itself, so the node pulls again at once, in a
    job or not; a pull answered quickly falls back to the timers above."""
    fake = FakeClock()
    clock = PullClock(monotonic=fake.monotonic, sleep=fake.sleep)
    fake.now += HELD_MIN_S + 0.5  # the pull since the clock started was held
    clock.sleep(3)
    fake.now += 0.1  # answered at once: a gateway without held pulls
    clock.sleep(3)
    clock.message_seen()
    fake.now += 2.0  # held again, while a job runs
    clock.sleep(3)
    fake.now += 0.1
    clock.sleep(3)
    assert fake.slept == [HELD_NEXT_S, 3.0, HELD_NEXT_S, ACTIVE_S]


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


def test_a_local_wait_ends_when_the_executor_pushes_not_at_a_poll() -> None:
    """Flower's wait for its executor's reply (``sleep(0.5)`` in ``_push_messages``)
    waits on the runtime API's pushes, not on a timer: with a backstop of an hour it
    still ends once the executor pushes, and a push that came before the wait began is
    not lost. No other wait is affected."""
    fake = FakeClock()
    clock = PullClock(monotonic=fake.monotonic, sleep=fake.sleep)
    clock.local_wait_s = 3600.0
    clock.local_change()  # pushed before Flower's loop waits: the wait ends at once
    clock.sleep(0.5)
    assert not clock.changed.is_set() and fake.slept == []
    waiting = threading.Event()
    done = threading.Event()

    def flower_loop() -> None:
        waiting.set()
        clock.sleep(0.5)
        done.set()

    thread = threading.Thread(target=flower_loop, daemon=True)
    thread.start()
    assert waiting.wait(60)
    assert not done.wait(0.2)  # no push yet: still waiting (the backstop is an hour)
    clock.local_change()
    assert done.wait(60), "the push did not end the local wait"
    thread.join(60)
    assert fake.slept == []


def test_install_local_notice_wraps_flower_s_runtime_push_handlers() -> None:
    """The installed Flower has the handlers this wraps (the runtime router looks them up
    on the module at every call); a push through them, failed or not, ends a local wait;
    a module without them is left alone."""
    from flwr.supernode.servicer.runtime import runtime_handlers

    assert callable(runtime_handlers.push_messages) and callable(runtime_handlers.push_object)
    calls: list[str] = []
    module = types.ModuleType("stand_in")

    def push_messages(request: object, state: object, task: object) -> str:
        calls.append("messages")
        return "stored"

    def push_object(request: object, state: object, task: object) -> str:
        raise RuntimeError("object store full")

    def push_task_output(request: object, state: object, task: object) -> str:
        calls.append("task output")
        return "finished"

    module.push_messages = push_messages  # type: ignore[attr-defined]
    module.push_object = push_object  # type: ignore[attr-defined]
    module.push_task_output = push_task_output  # type: ignore[attr-defined]
    assert callable(runtime_handlers.push_task_output)
    clock = PullClock()
    assert install_local_notice(module, clock)
    assert not clock.changed.is_set()
    assert module.push_messages(1, 2, 3) == "stored"  # type: ignore[attr-defined]
    assert clock.changed.is_set() and calls == ["messages"]
    assert not clock.task_ended.is_set()
    clock.changed.clear()
    with pytest.raises(RuntimeError):
        module.push_object(1, 2, 3)  # type: ignore[attr-defined]
    assert clock.changed.is_set() and not clock.task_ended.is_set()
    clock.changed.clear()
    assert module.push_task_output(1, 2, 3) == "finished"  # type: ignore[attr-defined]
    assert clock.changed.is_set() and clock.task_ended.is_set()  # the check runs next
    bare = types.ModuleType("changed")
    bare.push_messages = push_messages  # type: ignore[attr-defined]
    assert not install_local_notice(bare, clock)
    assert bare.push_messages is push_messages  # type: ignore[attr-defined]


def test_objects_not_yet_uploaded_are_retried_soon() -> None:
    """The SuperLink lists a message before its objects are uploaded: the node's first
    retry of them comes after OBJECT_BACKOFF_S, not Flower's 1 s (same tries, same bound)."""
    import functools

    assert callable(flower_module.pull_objects)
    module = types.ModuleType("stand_in")
    module.time = time  # type: ignore[attr-defined]
    module._push_messages = lambda *a, **k: None  # type: ignore[attr-defined]
    module.pull_objects = flower_module.pull_objects  # type: ignore[attr-defined]
    assert install(module, PullClock())
    pull = module.pull_objects  # type: ignore[attr-defined]
    assert isinstance(pull, functools.partial) and pull.func is flower_module.pull_objects
    assert pull.keywords["initial_backoff"] == OBJECT_BACKOFF_S <= 0.1


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


# ------------------------------------------------- transient Fleet API errors (issue 14)


def test_a_stored_message_is_announced_to_the_executor_on_its_pipe() -> None:
    """The SuperNode writes one byte per stored message on the pipe its executor passed
    down (client/node_runtime.py waits on it between task polls); without the variable,
    or with a closed pipe, nothing is announced and nothing fails."""
    import os

    from fedcollab.client.fleet_poll import NOTIFY_FD_ENV, notify_executor
    from fedcollab.client.node_runtime import _wait_for_notice

    assert notify_executor({}) is None
    assert notify_executor({NOTIFY_FD_ENV: "not-a-number"}) is None
    read, write = os.pipe()
    os.set_blocking(read, False)
    try:
        notify = notify_executor({NOTIFY_FD_ENV: str(write)})
        assert notify is not None
        clock = PullClock(on_message=notify)
        clock.message_seen()
        clock.message_seen()
        assert os.read(read, 16) == b"mm"
        notify()
        assert _wait_for_notice(read, 60.0) == read  # returns on the byte, drains it
        with pytest.raises(BlockingIOError):
            os.read(read, 16)
        os.close(write)
        assert _wait_for_notice(read, 60.0) is None  # end of file: fall back to sleeping
    finally:
        os.close(read)
        with contextlib.suppress(OSError):
            os.close(write)
    read, write = os.pipe()
    os.close(read)
    try:
        notify = notify_executor({NOTIFY_FD_ENV: str(write)})
        assert notify is not None
        notify()  # the executor is gone (broken pipe): no error
    finally:
        os.close(write)


def test_the_runtime_api_runs_flower_s_tracing_layer_only_when_tracing_is_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The executor's every request to its SuperNode's runtime API went through Flower's
    three ``BaseHTTPMiddleware`` layers; tracing (off unless FLWR_TRACING_ENABLED=1) is
    skipped now, and answers are unchanged (a request without a task token: refused)."""
    import warnings

    import flwr.supernode.main as supernode_app
    from starlette.middleware.base import BaseHTTPMiddleware

    from fedcollab.client.fleet_poll import install_runtime_gate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    def layers_and_answer() -> tuple[int, int, str]:
        calls = 0
        flower_call = BaseHTTPMiddleware.__call__

        async def counted(
            self: BaseHTTPMiddleware, scope: object, rcv: object, snd: object
        ) -> None:
            nonlocal calls
            calls += isinstance(scope, dict) and scope.get("type") == "http"
            await flower_call(self, scope, rcv, snd)  # type: ignore[arg-type]

        app = supernode_app.create_app()
        with monkeypatch.context() as patch:
            patch.setattr(BaseHTTPMiddleware, "__call__", counted)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = TestClient(app, raise_server_exceptions=False).post(
                    "/v1/runtime/pull-task-input",
                    content=b"",
                    headers={"content-type": "application/protobuf"},
                )
        return calls, r.status_code, r.text

    monkeypatch.delenv("FLWR_TRACING_ENABLED", raising=False)
    flower = layers_and_answer()
    monkeypatch.setattr(
        supernode_app, "RuntimeTracingMiddleware", supernode_app.RuntimeTracingMiddleware
    )
    assert install_runtime_gate(supernode_app)
    ours = layers_and_answer()
    assert flower[0] == 3 and ours[0] == 2
    assert ours[1:] == flower[1:] and ours[1] >= 400
    monkeypatch.setenv("FLWR_TRACING_ENABLED", "1")
    assert layers_and_answer()[0] == 3  # tracing on: the layer runs
    assert not install_runtime_gate(types.ModuleType("changed"))
