"""A partner's node runtime: the SuperNode runs no code the coordinator sends.

Long module: the executor's task loop and its runtime-API clients, with the design
note on Flower's isolation modes they rest on; its FAB check is in
:mod:`client.fab_check`, its runtime folder (settings, secret, TLS) in
:mod:`client.runtime_folder`, its serving in the SuperNode's process (the default) in
:mod:`client.runtime_local`.

Flower's default (``flower-supernode --isolation subprocess``) starts a
``flwr-clientapp`` per message that installs the run's FAB and imports the
ClientApp *from the FAB* (``flwr/supernode/runtime/run_clientapp.py``:
``install_from_fab`` then ``get_load_client_app_fn``). Whoever can start a
run (an outsider at an open Control API, or the coordinator itself) thus
runs arbitrary code at every partner, with the partner's node config.

Options in Flower 1.41, and why this module takes the second:

* ``--trusted-entities``: the SuperNode accepts only FABs signed by a listed
  publisher key. The FAB's code still runs; the signer would be the
  coordinator (fedcollab builds the job FAB at submission), so a malicious
  coordinator signs whatever it wants. It does not stop the attack we care
  about.
* ``--isolation process`` (chosen): the SuperNode launches nothing; an
  external executor takes tasks from its runtime API (``AcquireTask``,
  authenticated with ``--superexec-auth-secret-file``: an HMAC key derived
  from a 32-byte secret only this node holds). This process is that
  executor. For every task it pulls the message, context, run and FAB,
  checks the FAB is exactly a fedcollab job FAB (the pyproject written by
  ``coordinator/submit.py`` naming fedcollab's components, and the
  placeholder module, nothing else), and then always calls the ClientApp
  **installed on this machine** (``fedcollab.client.client_app:app``); code
  in the FAB is never imported. Any other FAB is refused: an error reply,
  and a ``run.refused`` event in the partner's own audit trail.

Other hardening:

* The node's settings (partner name, data, schema, audit key and log, grant,
  ledger, peers, coordinator key) live in its private runtime folder
  (:mod:`client.runtime_folder`, 0600 in 0700) and are handed to the ClientApp as its
  ``node_config`` by this process: no data, key or grant path appears on a command
  line. The runtime API listens on 127.0.0.1 with TLS (a node-local CA made at every
  start), never ``--insecure``.
* The installed ClientApp is imported once and serves every message: the
  1-2 s of torch/TenSEAL imports, and torch's ~1 s set-up of a first training
  (:func:`warm_up`), are paid at start-up, not per message or in a job's round 1.
  Messages are served one at a time, so no task may block for long: the pull of a
  task's message objects is bounded by ``_PULL_MAX_S`` (Flower's default waits up to
  2 h; after a coordinator restart a node got a message whose objects never came
  and served nothing more, for every later job), then the task fails and the next
  one is served. That message's cause is fixed in the SuperNode
  (:mod:`fedcollab.client.run_ended`); the bound stays as a backstop.
  The SuperNode tells this process when a message is stored (a byte on
  a pipe, ``client/fleet_poll.py``), so a task is taken at once, not at the next poll.
  Every task is served over one kept-alive runtime connection (:func:`_for_task`: a
  client per task, its token fixed, sharing the connection) and without Flower's
  immediate first heartbeat,
  so a message costs the SuperNode and this process one HTTP call and one TLS
  handshake fewer than Flower's ``flwr-clientapp``.

Run as ``python -m fedcollab.client.node_runtime --state-dir DIR``. By default the
SuperNode runs in this process's main thread and the executor in a second thread,
taking each task from the SuperNode's own state
(:func:`fedcollab.client.runtime_local.serve_in_process`): the runtime-API connection
above is then not used. With ``FEDCOLLAB_NODE_EXECUTOR=process`` it starts
``flower-supernode`` as its child (same process group; the child also dies with it
via ``PR_SET_PDEATHSIG``) and serves its tasks over that connection.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedcollab.client.fab_check import check_fab
from fedcollab.client.fleet_poll import NOTIFY_FD_ENV
from fedcollab.client.runtime_folder import NodeState, load_settings
from fedcollab.common.child_process import die_with_parent, stop_child
from fedcollab.common.errors import FedcollabError
from fedcollab.common.third_party_noise import plain_flower_logs

__all__ = ["answer", "main", "serve", "warm_up"]

log = logging.getLogger(__name__)

_AUTH_METHODS = frozenset({"/flwr.proto.Runtime/AcquireTask"})
#: Longest wait between two task polls of this node's own runtime API. The SuperNode
#: (client/fleet_poll.py) also writes a byte to a pipe (its fd in the environment
#: variable NOTIFY_FD_ENV) once a message is stored, and the next poll starts then, so
#: this is only the fallback (a SuperNode started without the notice pipe): nine idle
#: executors polling every 0.2 s cost a tenth of a core of a 2-core machine.
_POLL_S = 1.0
#: First retry of a task's objects the SuperNode is still pulling (Flower: 1 s).
_PULL_BACKOFF_S = 0.05
#: Longest wait for one task's message objects at this node's own SuperNode (seconds).
_PULL_MAX_S = 120.0


def _bound_object_pulls() -> None:
    """Bound the object pulls of Flower's ``pull_task_input`` in this process: it looks
    ``pull_and_inflate_object_from_tree`` up in its module at call time, with Flower's
    ``max_time`` default of 7200 s."""
    import functools

    from flwr.supernode.runtime import run_clientapp

    name = "pull_and_inflate_object_from_tree"
    current = getattr(run_clientapp, name)
    if not isinstance(current, functools.partial):
        setattr(
            run_clientapp,
            name,
            functools.partial(
                current, max_time=_PULL_MAX_S, initial_backoff=_PULL_BACKOFF_S, backoff_cap=2.0
            ),
        )


# -- the executor loop -------------------------------------------------------------


def _record_refusal(node_config: Mapping[str, str], body: Mapping[str, Any]) -> None:
    from fedcollab.client.audit import PartnerAudit

    audit = PartnerAudit.from_config(str(node_config.get("partner", "")), node_config)
    if audit is None:
        log.error("no audit trail configured: run refusal not recorded")
        return
    with contextlib.suppress(FedcollabError):
        audit.record("run.refused", dict(body))


def _task_retry_invoker() -> Any:
    """Flower's runtime retry invoker, except that a 401 fails the call.

    Flower's invoker answers a 401 (the task's token is no longer valid) with SIGINT to
    its own process (``flwr/supercore/retry/http_retry.py``, ``_should_giveup``): right
    for a ``flwr-clientapp`` that serves one task, fatal for this executor, which serves
    every task of the node and stops ``flower-supernode`` when it exits. The SuperNode
    revokes a task's token when it finishes the task itself, e.g. when it drops a message
    whose run ended while the executor already pulls it (:mod:`fedcollab.client.run_ended`;
    seen: the node exited). Here that task fails and the next one is served."""
    import httpx
    from flwr.supercore.retry import make_simple_http_retry_invoker

    invoker = make_simple_http_retry_invoker()
    flower_giveup = invoker.should_giveup

    def should_giveup(exc: Exception) -> bool:
        if (
            isinstance(exc, httpx.HTTPStatusError)
            and exc.response.status_code == httpx.codes.UNAUTHORIZED
        ):
            return True
        return bool(flower_giveup(exc)) if flower_giveup is not None else False

    invoker.should_giveup = should_giveup
    return invoker


def _task_client(address: str, ca: bytes) -> Any:
    """The executor's runtime connection for task calls (one for the process's life);
    it carries no task token: :func:`_for_task` makes each task's client on top of it."""
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.runtime import RuntimeHttpClient

    return RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=False,
        root_certificates=ca,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr-clientapp")],
        retry_invoker=_task_retry_invoker(),
    )


def _for_task(shared: Any, token: str) -> Any:
    """A client for one task: ``shared``'s kept-alive connection, this task's token fixed.

    Flower's ``flwr-clientapp`` opens a new client (a new TLS connection) per task. Here
    every task reuses ``shared``'s ``httpx.Client``, and its token is bound to this
    object, never swapped: a request of a finished task still in flight (Flower's object
    pulls and pushes leave worker threads running when one object fails, and its
    invoker retries transport errors) goes out under that task's own, revoked token,
    gets a 401 and stops, instead of acting in the next task's run (a red-team finding
    against a token swapped between tasks)."""
    from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor

    task = copy.copy(shared)
    task._interceptors = (*shared._interceptors, RuntimeTokenHttpInterceptor(token))
    task._retry_invoker = _task_retry_invoker()
    return task


def _later_heartbeats(client: Any) -> Any:
    """The task's heartbeat, except the first, sent at the sender's start.

    A claimed task is alive for ``HEARTBEAT_DEFAULT_INTERVAL`` (30 s) from its claim
    and again from its activation (``flwr/supercore/corestate``); the sender's next beat
    comes 17.5-22.5 s later, inside that window. Skipping the first saves a request per
    message on both sides and the task's first call no longer races it.

    Unlike Flower's (``make_task_heartbeat_fn_http``), a beat the node answers with
    ``success=False`` (the task is no longer alive there, e.g. its run just ended), or
    refuses because the task's token is revoked, ends nothing but the beats: the task's
    next call fails and the node serves the next task. Flower's raises SIGINT in its own
    process, right for a ``flwr-clientapp`` that serves one task, fatal here (in the
    SuperNode's process it stops the node; a red team hit it by racing a beat with a
    run's end, 4 of 3,000 tries). Transport errors and 503/504 count as a missed beat."""
    import httpx
    from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest

    from fedcollab.client.runtime_local import TaskTokenRevoked

    request = SendTaskHeartbeatRequest()
    first = [True]

    def beat() -> bool:
        if first[0]:
            first[0] = False
            return True
        try:
            client.SendTaskHeartbeat(request)  # success=False: the task is over, see above
        except httpx.TransportError:
            return False
        except httpx.HTTPStatusError as err:
            if err.response.status_code in (httpx.codes.SERVICE_UNAVAILABLE,
                                            httpx.codes.GATEWAY_TIMEOUT):  # fmt: skip
                return False
            if err.response.status_code != httpx.codes.UNAUTHORIZED:
                raise
        except TaskTokenRevoked:
            pass
        return True

    return beat


def answer(app: Any, message: Any, context: Any) -> tuple[Any, str, str]:
    """``app``'s reply to ``message``, with the task's sub-status and details. If the
    ClientApp raises (e.g. a message type no handler is registered for: Flower's
    ``ClientApp`` raises ``ValueError``), an error reply, as Flower's own ClientApp process
    sends: without a reply the SuperNode's loop waits on this message forever
    (client/unanswered.py). Its reason names the exception's class only, nothing of the
    partner's data; the node log has the traceback."""
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.common.constant import ErrorCode, SubStatus

    try:
        return app(message=message, context=context), SubStatus.COMPLETED, ""
    except Exception as exc:
        log.exception("the ClientApp raised on %s", message.metadata.message_type)
        details = f"the partner's ClientApp raised {type(exc).__name__}"
        error = Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details)
        return Message(error, reply_to=message), SubStatus.FAILED, details


def _serve_task(client: Any, node_config: Mapping[str, str]) -> None:
    """Serve one task through ``client``, the task's runtime client (its token fixed:
    :func:`_for_task` over HTTPS, or :class:`~fedcollab.client.runtime_local.
    LocalRuntimeClient` in the SuperNode's process)."""
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender
    from flwr.supernode.runtime.run_clientapp import (
        pull_task_input,
        push_message,
        push_task_output,
    )

    from fedcollab.client.client_app import app

    _bound_object_pulls()
    heartbeat = HeartbeatSender(_later_heartbeats(client))
    heartbeat.start()
    context = None
    sub_status, details = SubStatus.FAILED, "refused by the partner node"
    started = time.monotonic()
    try:
        message, context, run, fab = pull_task_input(client)
        pulled = time.monotonic()
        context.node_config = dict(node_config)
        reason = check_fab(fab.content)
        if reason is None:
            reply, sub_status, details = answer(app, message, context)
        else:
            log.error(
                "refusing run %s (app %s, FAB %s): %s", run.run_id, run.fab_id, fab.hash_str, reason
            )
            _record_refusal(
                node_config,
                {
                    "run": str(run.run_id),
                    "app": run.fab_id,
                    "version": run.fab_version,
                    "fab_hash": fab.hash_str,
                    "action": message.metadata.message_type,
                    "reason": reason,
                },
            )
            reply = Message(
                Error(
                    code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                    reason="run refused: this partner runs only its installed fedcollab ClientApp",
                ),
                reply_to=message,
            )
        computed = time.monotonic()
        push_message(client, reply, context)
        done = time.monotonic()
        log.info(
            "served %s %s of run %s in %.2f s (pull %.2f s, ClientApp %.2f s, push %.2f s)",
            message.metadata.message_type,
            message.metadata.group_id[:200],  # the step; a batch's steps joined by "+"
            run.run_id,
            done - started,
            pulled - started,
            computed - pulled,
            done - computed,
        )
    except Exception:
        log.exception("task failed")
    finally:
        with contextlib.suppress(Exception):
            push_task_output(client=client, context=context, sub_status=sub_status, details=details)
        if heartbeat.is_running:
            heartbeat.stop()


def warm_up() -> float:
    """Train a 4-feature model on 8 synthetic rows once; the seconds it took.

    A process's first ``train_local`` pays torch's lazy set-up (optimizer, autograd;
    ~1 s of CPU): measured in a deployed job, every partner's round 1 took 5.5-6 s of
    ClientApp time against 0.2-0.4 s for later rounds (9 nodes on 2 cores). Paid here,
    at node start, the first job's round 1 costs what its computation costs. No
    partner data is touched. Google's dp_accounting is imported here too (about 1 s
    with SciPy): :mod:`privacy.accounting` imports it where it computes, so a node's
    first DP request would pay it otherwise."""
    import dp_accounting  # noqa: F401
    import numpy as np

    from fedcollab.protocols.local_training import predict_proba, train_local
    from fedcollab.protocols.models import build_model

    started = time.monotonic()
    model = build_model("logreg", n_features=4, seed=0)
    x, y = np.zeros((8, 4), dtype=np.float32), np.array([0, 1] * 4)
    train_local(model, x, y, epochs=1, batch_size=4, learning_rate=0.1, seed=0)
    predict_proba(model, x)
    return time.monotonic() - started


def _wait_for_notice(fd: int | None, timeout_s: float) -> int | None:
    """Wait up to ``timeout_s`` for the SuperNode's "message stored" byte on ``fd``;
    the fd to wait on next time (None once the SuperNode closed its end: sleep)."""
    if fd is None:
        time.sleep(timeout_s)
        return None
    ready, _, _ = select.select([fd], [], [], timeout_s)
    if ready:
        try:
            if not os.read(fd, 4096):
                return None  # end of file: only the timeout is left
        except BlockingIOError:
            pass
    return fd


def serve(state: NodeState) -> int:
    """Start ``flower-supernode`` and execute its ClientApp tasks until it exits: in
    this process by default, or with ``FEDCOLLAB_NODE_EXECUTOR=process`` as its parent
    over the runtime API (client/runtime_local.py)."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import (
        RuntimeVersionHttpInterceptor,
        SuperExecAuthHttpInterceptor,
    )
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    from fedcollab.client import key_sweep
    from fedcollab.client.runtime_local import in_process, serve_in_process

    settings = load_settings(state)
    node_config = {str(k): str(v) for k, v in settings["node_config"].items()}
    address = str(settings["runtime_address"])
    import fedcollab.client.client_app  # noqa: F401 - imported once, before the first message

    with contextlib.suppress(ImportError):
        import torch  # noqa: F401 - the handlers import it lazily: pay it here, not in round 1

    key_sweep.start(node_config)  # expired run keys go on the node's own clock
    if in_process():
        return serve_in_process(settings, node_config)
    notice, notify = os.pipe()  # the SuperNode writes a byte per message it stored
    os.set_blocking(notice, False)
    proc = subprocess.Popen(
        list(settings["supernode"]),
        preexec_fn=die_with_parent,
        pass_fds=(notify,),
        env={**os.environ, NOTIFY_FD_ENV: str(notify)},
    )
    os.close(notify)

    def _stop(signum: int, _frame: object) -> None:
        # A group-wide SIGTERM already reached the child: a second one would cut
        # its graceful shutdown short (the finally block below signals it if needed).
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _stop)
    try:  # while the SuperNode connects; a failure here costs only the warm-up
        log.info("warmed up local training in %.2f s", warm_up())
    except Exception:
        log.warning("warm-up of local training failed; round 1 pays it", exc_info=True)
    ca = state.tls_ca.read_bytes()
    client = RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=False,
        root_certificates=ca,
        interceptors=[
            RuntimeVersionHttpInterceptor(component_name="SuperExec"),
            SuperExecAuthHttpInterceptor(
                master_secret=state.secret.read_bytes(), protected_methods=_AUTH_METHODS
            ),
        ],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    task_client = _task_client(address, ca)
    waiting: int | None = notice
    try:
        while proc.poll() is None:
            try:
                res = client.AcquireTask(
                    AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
                )
            except Exception as exc:  # the SuperNode is still starting or stopping
                log.debug("runtime API not ready: %s", exc)
                time.sleep(0.5)
                continue
            if res.HasField("task") and res.token:
                _serve_task(_for_task(task_client, res.token), node_config)
            else:
                waiting = _wait_for_notice(waiting, _POLL_S)
        return proc.returncode or 0
    finally:
        os.close(notice)
        client.close()
        task_client.close()
        stop_child(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedcollab-node-runtime")
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stdout,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per runtime poll otherwise
    plain_flower_logs()
    return serve(NodeState(args.state_dir.resolve()))


if __name__ == "__main__":
    sys.exit(main())
