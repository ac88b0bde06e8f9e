"""A malicious relay (or a relay working with a partner) driving the real vertical party code.

:class:`VerticalWorld` sets up the three parties of the credit-default vertical
split (:mod:`fedcollab.demo.vertical`: platform holds the labels, payment and
billing hold features) exactly as a deployment does -- audit keys, signed
grants, pinned peer keys, budget ledgers, node configs that name each party's
own files -- and sends every request through ``client.client_app._serve``, the
function a SuperNode's ClientApp runs per message. :class:`ServeRelay` is the
coordinator's relay over those calls, so :func:`coordinator.vertical.drive` runs
the honest schedule; a test replaces single requests with its attacker's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, RecordDict

from fedcollab.client.client_app import _serve
from fedcollab.client.partner_data import PartnerSource, load_partner, source_from_config
from fedcollab.client.run_contract import node_split
from fedcollab.client.vertical import PartyContext
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.schema import load_schema
from fedcollab.common.serde import Payload, decode, encode
from fedcollab.common.split import split_vertical
from fedcollab.demo.vertical import DATA_DIR, PARTIES, vertical_job
from fedcollab.federation.inmemory import in_memory_federation, task_identity
from fedcollab.privacy.budget_ledger import BudgetLedger

LABEL = "platform"
Requests = Mapping[str, tuple[dict[str, Any], Mapping[str, bytes]]]
Request = tuple[dict[str, Any], dict[str, bytes]]
Tamper = Callable[[str, str, dict[str, Any], dict[str, bytes]], Request]


def vertical_sources(root: Path, *, rows: int = 1200) -> list[PartnerSource]:
    """The first ``rows`` rows of the credit-default data, split by party."""
    if not (root / "parties" / "platform.csv").exists():
        lines = (DATA_DIR / "uci_credit_card_default.csv").read_text().splitlines()
        small = root / "credit.csv"
        root.mkdir(parents=True, exist_ok=True)
        small.write_text("\n".join(lines[: rows + 1]) + "\n")
        split_vertical(
            small,
            load_schema(DATA_DIR / "credit_default.schema.json"),
            root / "parties",
            parties=PARTIES,
            seed=3,
        )
    return [
        PartnerSource(
            partner=p.name,
            data=root / "parties" / f"{p.name}.csv",
            schema=root / "parties" / f"{p.name}.schema.json",
        )
        for p in PARTIES
    ]


def spec_for(sources: list[PartnerSource], *, privacy: Mapping[str, Any] | None = None,
             **vertical: Any) -> JobSpec:  # fmt: skip
    spec = vertical_job(sources, **vertical)
    if privacy:
        doc = json.loads(spec.to_json())
        doc["privacy"].update(privacy)
        spec = JobSpec.model_validate(doc, strict=False)
    return spec


@dataclass
class VerticalWorld:
    """Three vertical parties with real keys, grants and ledgers, served by ``_serve``."""

    spec: JobSpec
    configs: dict[str, dict[str, str]]
    run: str = "run-vertical-attack-1"
    offers: dict[str, Any] = field(default_factory=dict)
    masks: dict[str, Any] = field(default_factory=dict)
    n_sent: int = 0
    #: One Flower run per run name, as a SuperLink gives each job (client.run_contract
    #: binds a run name to the Flower run it first came in).
    flower_runs: dict[str, int] = field(default_factory=dict)

    @classmethod
    def create(cls, tmp_path: Path, spec: JobSpec, sources: list[PartnerSource],
               cap: float = 1000.0, **node: str) -> VerticalWorld:  # fmt: skip
        grid, _audit, _policy = in_memory_federation(spec, sources, tmp_path)
        partners = json.loads(grid.overrides["sim-partners"])
        configs = {
            p["partner"]: {**p, "state-dir": str(tmp_path / "state" / p["partner"]), **node}
            for p in partners
        }
        world = cls(spec=spec, configs=configs)
        for src in sources:
            with BudgetLedger.open(Path(configs[src.partner]["state-dir"]) / "budget.db") as led:
                led.set_cap(load_schema(src.schema).dataset, epsilon_cap=cap, delta=1e-5)
        return world

    def serve(
        self,
        party: str,
        action: str,
        step: str,
        meta: Mapping[str, Any],
        parts: Mapping[str, bytes] | None = None,
        spec: JobSpec | None = None,
    ) -> Payload:
        """One request as a SuperNode hands it to the party's ClientApp."""
        body = {"job": (spec or self.spec).to_json(), "run": self.run, **meta}
        content: RecordDict = encode(body, parts=dict(parts or {}))
        with task_identity():
            msg = Message(content=content, dst_node_id=1, message_type=action, group_id=step)
        msg.metadata.__dict__["_message_id"] = f"m{self.n_sent}"
        self.n_sent += 1
        flower_run = self.flower_runs.setdefault(self.run, len(self.flower_runs) + 1)
        ctx = Context(run_id=flower_run, node_id=1, node_config=dict(self.configs[party]),
                      state=RecordDict(), run_config={})  # fmt: skip
        return decode(_serve(msg, ctx, {}).content)

    def handshake(self) -> None:
        for party in self.configs:
            reply = self.serve(party, "query.handshake", "handshake", {})
            assert reply.refused is None, reply.meta
            self.offers[party] = reply.meta["he_offer"]
            if "mask_offer" in reply.meta:
                self.masks[party] = reply.meta["mask_offer"]

    def vertical(self, party: str, step: str, meta: Mapping[str, Any],
                 parts: Mapping[str, bytes] | None = None) -> Payload:  # fmt: skip
        """A ``query.vertical`` request with the parties' signed offers (as the relay adds)."""
        full = {"offers": self.offers, "mask_offers": self.masks, **meta, "step": step}
        return self.serve(party, "query.vertical", step, full, parts)


class Refused(Exception):
    """A party refused a relayed request (its typed error's class name)."""

    def __init__(self, party: str, step: str, kind: str) -> None:
        super().__init__(f"{party} refused {step}: {kind}")
        self.party, self.step, self.kind = party, step, kind


@dataclass
class ServeRelay:
    """The coordinator's relay over :class:`VerticalWorld` (``coordinator.vertical.Relay``).

    ``tamper(step, party, meta, parts)`` may rewrite any request before it is sent;
    ``replies`` keeps every reply by step and party (what the relay saw).
    """

    world: VerticalWorld
    tamper: Tamper | None = None
    replies: dict[str, dict[str, Payload]] = field(default_factory=dict)

    def send(self, step: str, requests: Requests) -> dict[str, Payload]:
        out: dict[str, Payload] = {}
        for party, (meta, parts) in requests.items():
            meta2, parts2 = dict(meta), dict(parts)
            if self.tamper is not None:
                meta2, parts2 = self.tamper(step, party, meta2, parts2)
            reply = self.world.serve(party, "query.vertical", step, {**meta2, "step": step}, parts2)
            if reply.refused is not None:
                raise Refused(party, step, str(reply.refused))
            out[party] = reply
        self.replies[step] = out
        return out


def as_party(world: VerticalWorld, party: str) -> PartyContext:
    """``party``'s own context (its keys, data, store): a malicious partner acting with
    everything it legitimately holds."""
    config = world.configs[party]
    split = node_split(config)
    data = load_partner(
        source_from_config(config),
        validation_fraction=split.validation_fraction,
        test_fraction=split.test_fraction,
        split_seed=split.split_seed,
    )
    meta = {"run": world.run, "offers": world.offers, "mask_offers": world.masks}
    return PartyContext(config, data, world.spec, Payload(meta=meta))
