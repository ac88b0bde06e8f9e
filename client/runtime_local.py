"""The executor inside its SuperNode's process: runtime calls as function calls.

A partner node is fedcollab's executor (:mod:`fedcollab.client.node_runtime`) and
Flower's SuperNode (:mod:`fedcollab.client.fleet_poll`). As two processes, every
message costs about ten calls of the executor to the SuperNode's runtime API (take the
task, pull its input, its message and three objects, push three objects, the reply and
the task's end), each an HTTPS request over loopback: an ``httpx`` request in the
executor, a ``uvicorn`` request in the SuperNode, protobuf both ways. py-spy of a
deployed ``ckks+masked`` round (9 partners, 2 cores) put the SuperNode's runtime API
server at about 40% of its busy samples.

Run in one process (the default, ``FEDCOLLAB_NODE_EXECUTOR`` unset or ``thread``), the
SuperNode runs in the main thread exactly as ``python -m fedcollab.client.fleet_poll``
would, and the executor's task loop in a second thread makes the same calls with
:class:`LocalRuntimeClient`: Flower's request and response messages, handed to the
handlers the runtime API would call (the SuperNode's ``runtime_handlers`` with
fedcollab's notice wrappers, Flower's core heartbeat) on the SuperNode's own state.
What is the same as over HTTP:

* a task's calls carry its token, and each call looks the task up by that token in
  the node's state (what ``authenticate_task`` does): a call of a task the SuperNode
  has finished or revoked fails (:class:`TaskTokenRevoked`) and acts on nothing;
* the ClientApp is the one installed on this machine, behind the FAB check, the run
  contract and everything else :func:`fedcollab.client.node_runtime._serve_task` does;
* the runtime API still listens on 127.0.0.1 with TLS and the SuperExec secret (Flower
  starts it with ``--isolation process``): nothing else uses it.

What changes: the ClientApp shares the process with the SuperNode, so with the node's
Fleet key (the key of the partner's own node, read by the partner's own installed
code; the coordinator's messages still run no code of theirs), and a crash of either
stops both (the node restarts as one, ``fedcollab node start``).
``FEDCOLLAB_NODE_EXECUTOR=process`` keeps the two processes
(``experiments/bench_deployment.py --executor`` measures both).
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import sys
import types
from collections.abc import Mapping
from typing import Any

from fedcollab.client.fleet_poll import NOTIFY_FD_ENV
from fedcollab.client.node_runtime import _POLL_S, _serve_task, _wait_for_notice, log, warm_up
from fedcollab.common.errors import FedcollabError

__all__ = [
    "EXECUTOR_ENV",
    "LocalRuntimeClient",
    "TaskTokenRevoked",
    "capture_app",
    "in_process",
    "serve_in_process",
]


#: ``process``: the executor in a process of its own, over the runtime API (HTTPS).
EXECUTOR_ENV = "FEDCOLLAB_NODE_EXECUTOR"


def in_process() -> bool:
    """Whether the node's executor runs in its SuperNode's process (module notes)."""
    return os.environ.get(EXECUTOR_ENV, "thread").strip().lower() != "process"


class TaskTokenRevoked(FedcollabError):
    """A task's call after the SuperNode finished or revoked the task (as a 401 over
    HTTP): the call did nothing."""

    exit_code = 1


class LocalRuntimeClient:
    """The calls of Flower's ``RuntimeHttpClient`` that an executor makes, on the
    SuperNode ``app``'s own state and handlers (module notes). Without a token it can
    only take a task (:meth:`AcquireTask`); :meth:`for_task` gives the client of one
    task, its token fixed."""

    def __init__(self, app: Any, token: str | None = None) -> None:
        self._app = app
        self._token = token

    def for_task(self, token: str) -> LocalRuntimeClient:
        return LocalRuntimeClient(self._app, token)

    def close(self) -> None:
        """Nothing to close (the HTTP client's interface)."""

    def _state(self) -> Any:
        return self._app.state.runtime_state_factory.state()

    def _call(self, name: str, request: Any) -> Any:
        state = self._state()
        task = state.get_task_by_token(self._token) if self._token else None
        if task is None:
            raise TaskTokenRevoked(
                "this task's token is no longer valid at the node (the SuperNode finished "
                "or revoked the task)",
                hint="nothing to do: the node serves its next task",
            )
        if name == "send_task_heartbeat":
            from flwr.supercore.servicer.runtime import runtime_handlers as core

            return core.send_task_heartbeat(request, state, task)
        # Looked up per call, as the router does: fedcollab's notice wrappers apply.
        return getattr(self._app.state.runtime_handlers, name)(request, state, task)

    def AcquireTask(self, request: Any) -> Any:
        return self._app.state.runtime_handlers.acquire_task(request, self._state())

    def PullTaskInput(self, request: Any) -> Any:
        return self._call("pull_task_input", request)

    def PushTaskOutput(self, request: Any) -> Any:
        return self._call("push_task_output", request)

    def PullMessages(self, request: Any) -> Any:
        return self._call("pull_messages", request)

    def PushMessages(self, request: Any) -> Any:
        return self._call("push_messages", request)

    def PullObject(self, request: Any) -> Any:
        return self._call("pull_object", request)

    def PushObject(self, request: Any) -> Any:
        return self._call("push_object", request)

    def ConfirmMessageReceived(self, request: Any) -> Any:
        return self._call("confirm_message_received", request)

    def SendTaskHeartbeat(self, request: Any) -> Any:
        return self._call("send_task_heartbeat", request)


def capture_app(module: types.ModuleType) -> concurrent.futures.Future[Any]:
    """The SuperNode's runtime API app, once ``module.create_app`` (``flwr.supernode.main``)
    has built it: its first result, before any other wrapper (e.g.
    :func:`fedcollab.client.runtime_fast.install`) wraps it. Raises ``AttributeError``
    if the module lacks the factory."""
    create = module.create_app
    app: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def create_app(*args: Any, **kwargs: Any) -> Any:
        made = create(*args, **kwargs)
        if not app.done():
            app.set_result(made)
        return made

    module.create_app = create_app  # type: ignore[attr-defined]
    return app


def _supernode_args(argv: list[str]) -> list[str]:
    """The ``flower-supernode`` options of the node's SuperNode command line
    (``python -m fedcollab.client.fleet_poll <options>``)."""
    module = "fedcollab.client.fleet_poll"
    if module not in argv:
        raise FedcollabError(
            f"the node's settings start no {module} ({argv[:3]})",
            hint="restart the node with `fedcollab node start` (it rewrites its settings)",
        )
    return argv[argv.index(module) + 1 :]


def _execute_in_thread(app: Any, node_config: Mapping[str, str], notice: int) -> None:
    """The executor's task loop on the SuperNode ``app``'s own state (runs in a
    daemon thread beside the SuperNode, client/runtime_local.py)."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType

    try:
        log.info("warmed up local training in %.2f s", warm_up())
    except Exception:
        log.warning("warm-up of local training failed; round 1 pays it", exc_info=True)
    try:
        local = LocalRuntimeClient(app.result())
        waiting: int | None = notice
        request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
        while True:
            try:
                res = local.AcquireTask(request)
                if res.HasField("task") and res.token:
                    _serve_task(local.for_task(res.token), node_config)
                    continue
            except Exception:  # keep serving: the next task may be fine
                log.exception("taking a task failed")
            waiting = _wait_for_notice(waiting, _POLL_S)
    except BaseException:
        # A node whose executor is gone would stay online and answer nothing: stop it
        # (Flower's SIGTERM handling shuts the SuperNode down), so it shows as offline.
        log.critical("the executor stopped; stopping the node", exc_info=True)
        os.kill(os.getpid(), signal.SIGTERM)
        raise


def serve_in_process(settings: Mapping[str, Any], node_config: Mapping[str, str]) -> int:
    """Run ``flower-supernode`` in this process's main thread and the executor's task
    loop in a second one (client/runtime_local.py); until the SuperNode exits."""
    import threading

    from flwr.supernode import main as supernode_app

    import fedcollab.protocols.local_training
    import fedcollab.protocols.models  # noqa: F401 - the warm-up's, imported before the thread
    from fedcollab.client import fleet_poll

    args = _supernode_args(list(settings["supernode"]))
    app = capture_app(supernode_app)  # before fleet_poll wraps the factory
    notice, notify = os.pipe()  # the SuperNode writes a byte per message it stored
    os.set_blocking(notice, False)
    os.environ[NOTIFY_FD_ENV] = str(notify)
    executor = threading.Thread(
        target=_execute_in_thread, args=(app, node_config, notice), name="executor", daemon=True
    )
    executor.start()
    sys.argv = ["fleet_poll", *args]
    return fleet_poll.main()
