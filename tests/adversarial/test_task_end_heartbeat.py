"""A task's heartbeat that meets the task's end must not stop the partner's node.

Red team (2026-12-06): Flower's task heartbeat (``make_task_heartbeat_fn_http``)
answers a beat the node acknowledges with ``success=False`` by raising SIGINT in its
own process. With the executor in the SuperNode's process (client/runtime_local.py)
that is the node's process: a coordinator that ends runs while partners are mid-task
(``client/run_ended.py`` finishes the task) could race a beat with the task's end (4
of 3,000 tries in the red team's script) and take the partner's node offline; in the
two-process mode it killed the executor, which stops the node too. The executor's
beats (:func:`fedcollab.client.node_runtime._later_heartbeats`) now end nothing but
themselves: no signal, whatever the node answers.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flwr.common.constant import Status, SubStatus
from flwr.proto.runtime_pb2 import SendTaskHeartbeatResponse

from fedcollab.client.node_runtime import _later_heartbeats
from fedcollab.client.runtime_local import LocalRuntimeClient
from tests.client.test_node_runtime_serve import RUN, _SuperNode


@pytest.fixture
def sigints() -> Iterator[list[int]]:
    """SIGINTs raised in this process while the test runs (instead of stopping it)."""
    seen: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: seen.append(signum))
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)


class _Node:
    """The node answering a beat with ``success=False``: the task ended between the
    token check and the heartbeat's acknowledgement (the race the red team hit)."""

    def SendTaskHeartbeat(self, _request: Any) -> SendTaskHeartbeatResponse:
        return SendTaskHeartbeatResponse(success=False)


def test_a_beat_answered_as_over_raises_no_signal(sigints: list[int]) -> None:
    beat = _later_heartbeats(_Node())
    assert beat() is True  # the first is skipped
    assert beat() is True
    assert sigints == []


def test_a_beat_of_a_task_the_node_finished_raises_nothing(
    tmp_path: Path, sigints: list[int]
) -> None:
    node = _SuperNode(tmp_path, local=True)
    try:
        node.run_known()
        _, token = node.deliver("query.nosuch")
        beat = _later_heartbeats(LocalRuntimeClient(node.flower_app).for_task(token))
        beat()  # skipped
        (task,) = node.state.get_tasks(run_ids=[RUN])
        assert node.state.finish_task(task.task_id, SubStatus.STOPPED, "the run ended")
        assert beat() is True  # the token is revoked: the beats end, nothing else
        assert sigints == []
        (task,) = node.state.get_tasks(run_ids=[RUN])
        assert task.status.status == Status.FINISHED
    finally:
        node.close()
