"""An in-memory Flower Grid: a whole federation in one process, no Ray, no sockets.

The test double the library ships for its own tests and for anyone testing code
that drives a job (as httpx ships ``MockTransport``): :func:`in_memory_federation`
sets partners up exactly as ``fedcollab run`` does (audit keys, signed grants,
pinned peer keys, the example registry's policy) and returns an
:class:`InMemoryGrid` whose ``push_messages`` runs the partners' real ClientApp
code (``client.client_app._serve``) on each message at once and whose
``pull_messages`` hands the replies back. Encrypted and masked jobs run their
real key ceremonies; nothing is mocked but the transport. ``pushes`` records the
group ids of each push (of a batch: its requests'), so a test can count what went
out in one exchange.

::

    grid, audit, policy = in_memory_federation(spec, sources, tmp_path)
    with task_identity():
        metrics = run_job(grid, spec, JobOutputs(out), mode="simulation",
                          audit_config=audit, policy=policy)

Not for production: every partner's data and keys sit in this one process.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedcollab.client.client_app import _serve
from fedcollab.client.partner_data import PartnerSource
from fedcollab.common import batch
from fedcollab.common.jobspec import JobSpec
from fedcollab.compliance.registry import load_registry
from fedcollab.compliance.trail import load_verifier_key
from fedcollab.coordinator.audit import AuditConfig
from fedcollab.coordinator.local_grants import EXAMPLE_REGISTRY
from fedcollab.coordinator.policy_gate import PolicyBundle
from fedcollab.federation.simulation import _audit_dir, _simulated_policy, simulated_partners


@dataclass(frozen=True)
class _Node:
    node_id: int
    name: str


#: Flower run ids: each grid is one Flower run (the partners bind a job's run to it).
_FLOWER_RUNS = itertools.count(1)


__all__ = ["InMemoryGrid", "in_memory_federation", "task_identity"]


class InMemoryGrid:
    """The part of Flower's ``Grid`` a fedcollab job uses, served in process."""

    def __init__(self, overrides: dict[str, str], names: list[str]) -> None:
        self.overrides = overrides
        self.run_id = next(_FLOWER_RUNS)
        self.nodes = [_Node(i + 1, n) for i, n in enumerate(names)]
        self._ids = itertools.count(1)
        self._replies: dict[str, Message] = {}
        #: The group ids of each push, in order: what went out in one exchange.
        self.pushes: list[list[str]] = []

    def get_nodes(self) -> list[_Node]:
        return list(self.nodes)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        messages = list(messages)
        self.pushes.append([step for msg in messages for step in batch.steps(msg)])
        for msg in messages:
            msg_id = f"m{next(self._ids)}"
            msg.metadata.__dict__["_message_id"] = msg_id  # the SuperLink's job
            node = msg.metadata.dst_node_id
            ctx = Context(
                run_id=self.run_id,
                node_id=node,
                node_config={"partition-id": node - 1},
                state=RecordDict(),
                run_config={},
            )
            self._replies[msg_id] = _serve(msg, ctx, self.overrides)
            ids.append(msg_id)
        return ids

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        return [self._replies.pop(i) for i in ids if i in self._replies]


@contextmanager
def task_identity() -> Iterator[None]:
    """Flower stamps new messages with the running task's identity; a test has none."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def in_memory_federation(
    spec: JobSpec, sources: list[PartnerSource], root: Path
) -> tuple[InMemoryGrid, AuditConfig, PolicyBundle]:
    """Grid, coordinator audit config and policy, as ``fedcollab run`` would make them."""
    audit = _audit_dir(root / "audit", [s.partner for s in sources])
    peer_keys = {
        s.partner: (audit / "partners" / s.partner / "audit.pub").read_text().strip()
        for s in sources
    }
    (audit / "peers.json").write_text(json.dumps(peer_keys))
    partners = simulated_partners(spec, sources, audit)
    policy = _simulated_policy(spec, sources, audit, load_registry(EXAMPLE_REGISTRY))
    keys = {
        s.partner: load_verifier_key(audit / "partners" / s.partner / "audit.pub")[1]
        for s in sources
    }
    config = AuditConfig(
        db=audit / "coordinator" / "audit.db",
        key=audit / "coordinator" / "audit.key",
        partner_keys=keys,
    )
    grid = InMemoryGrid({"sim-partners": json.dumps(partners)}, [s.partner for s in sources])
    return grid, config, policy
