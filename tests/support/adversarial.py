"""A malicious coordinator driving the real partner code path.

:class:`Attacker` sets partners up exactly as a deployment does (audit keys,
signed grants, pinned coordinator and peer keys, budget ledgers, a node config
that names the partner's own files) and sends them hand-made requests through
``client.client_app._serve``, the function a SuperNode's ClientApp runs for
every message. Nothing in between is simulated: the partner decides from its
own state whether to answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context, Message, RecordDict

from fedcollab.client.client_app import _serve
from fedcollab.client.partner_data import PartnerSource
from fedcollab.common import batch
from fedcollab.common.batch import BatchItem
from fedcollab.common.dataset import load_dataset
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.schema import DatasetSchema
from fedcollab.common.serde import Payload, decode, encode
from fedcollab.compliance.trail import Trail
from fedcollab.coordinator.encryption import HeSession, session_from_keygen
from fedcollab.federation.inmemory import in_memory_federation, task_identity
from fedcollab.privacy.ckks import EncryptedSum
from fedcollab.protocols import preprocessing

SCHEMA: dict[str, Any] = {
    "version": 1,
    "dataset": "shop",
    "delimiter": ",",
    "id_column": "customer_id",
    "label_column": "purchased",
    "features": [
        {"name": "spend", "type": "numeric", "missing": "forbid"},
        {"name": "visits", "type": "numeric", "missing": "forbid"},
        {"name": "channel", "type": "categorical", "vocabulary": None, "missing": "forbid"},
        {"name": "member", "type": "boolean", "missing": "forbid"},
    ],
}


def write_partner(
    root: Path, name: str, *, seed: int, n: int = 200, spend_scale: float = 1.0
) -> PartnerSource:
    """A partner's CSV: ``channel`` holds "web"/"app" often and "kiosk" only 8 times;
    ``spend`` is about 100 times ``spend_scale``."""
    rng = np.random.default_rng(seed)
    spend, visits = spend_scale * rng.gamma(2.0, 50.0, n), rng.poisson(4, n)
    channel = rng.choice(["web", "app"], n).astype(object)
    channel[:8] = "kiosk"  # a rare value (fewer than 10 training rows): it may identify them
    member = rng.integers(0, 2, n)
    y = (spend / (100 * spend_scale) + rng.normal(0, 1, n) > 1).astype(int)
    lines = ["customer_id,spend,visits,channel,member,purchased"]
    lines += [
        f"{name}-{i},{spend[i]:.2f},{visits[i]},{channel[i]},{member[i]},{y[i]}" for i in range(n)
    ]
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.csv").write_text("\n".join(lines) + "\n")
    (root / f"{name}.schema.json").write_text(json.dumps(SCHEMA))
    return PartnerSource(
        partner=name, data=root / f"{name}.csv", schema=root / f"{name}.schema.json"
    )


#: Declared value ranges of :data:`SCHEMA`'s numeric columns (DP jobs need them).
BOUNDS: dict[str, list[float]] = {"spend": [0.0, 1000.0], "visits": [0.0, 50.0]}


def job(**fields: Any) -> JobSpec:
    """A job spec over :data:`SCHEMA`; ``fields`` override the defaults."""
    base: dict[str, Any] = {
        "name": "attack",
        "task": "purchase_prediction",
        "purpose": "purchase-prediction",
        "schema": SCHEMA,
        "min_partners": 2,
        "rounds": 3,
    }
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return JobSpec.model_validate(base, strict=False)


@dataclass
class Attacker:
    """The coordinator's seat, taken by an attacker: it writes every request itself."""

    spec: JobSpec
    configs: dict[str, dict[str, str]]
    run: str = "run-attack-1"
    sent: list[tuple[str, str, str]] = field(default_factory=list)
    #: Run name -> the Flower run (``context.run_id``) that carries it: each run an
    #: honest coordinator starts is a Flower run of its own.
    flower_runs: dict[str, int] = field(default_factory=dict)

    @classmethod
    def against(cls, tmp_path: Path, spec: JobSpec, names: tuple[str, ...] = ("a", "b", "c"),
                spend_scale: float = 1.0, **node: str) -> Attacker:  # fmt: skip
        """Partners ``names`` with real keys, grants and ledgers, serving ``spec``'s purpose;
        ``node`` adds settings to every partner's node config (e.g. ``dp-only="true"``)."""
        sources = [
            write_partner(tmp_path / "data", n, seed=i, spend_scale=spend_scale)
            for i, n in enumerate(names)
        ]
        grid, _audit, _policy = in_memory_federation(spec, sources, tmp_path)
        partners = json.loads(grid.overrides["sim-partners"])
        configs = {p["partner"]: {**p, **node} for p in partners}
        return cls(spec=spec, configs=configs)

    def send(
        self,
        partner: str,
        action: str,
        *,
        step: str,
        meta: Mapping[str, Any] | None = None,
        vector: np.ndarray | None = None,
        ciphertext: bytes | None = None,
        parts: Mapping[str, bytes] | None = None,
        spec: JobSpec | None = None,
        run: str | None = None,
        run_config: Mapping[str, str] | None = None,
        node_config: Mapping[str, str] | None = None,
        flower_run: int | None = None,
    ) -> Payload:
        """One request, as a SuperNode would hand it to the partner's ClientApp;
        ``flower_run`` overrides the Flower run id (default: one per run name)."""
        name = run if run is not None else self.run
        body = {"job": (spec or self.spec).to_json(), "run": name, **(meta or {})}
        if flower_run is None:
            flower_run = self.flower_runs.setdefault(name, len(self.flower_runs) + 1)
        content: RecordDict = encode(body, vector, ciphertext=ciphertext, parts=parts)
        with task_identity():
            msg = Message(content=content, dst_node_id=1, message_type=action, group_id=step)
        msg.metadata.__dict__["_message_id"] = f"m{len(self.sent)}"  # the SuperLink's job
        ctx = Context(
            run_id=flower_run,
            node_id=1,
            node_config=dict(node_config if node_config is not None else self.configs[partner]),
            state=RecordDict(),
            run_config=dict(run_config or {}),
        )
        self.sent.append((partner, action, step))
        return decode(_serve(msg, ctx, {}).content)

    def send_batch(
        self,
        partner: str,
        requests: list[tuple[str, str, Mapping[str, Any], np.ndarray | None]],
        *,
        content: RecordDict | None = None,
    ) -> list[Payload] | Payload:
        """``requests`` ((action, step, meta, vector) each) in one ``query.batch``
        message, as a SuperNode would hand it to the ClientApp: the replies in order, or
        the one refusal of the whole batch. ``content`` replaces the batch's content
        (a malformed envelope)."""
        items = [
            BatchItem(action, step, encode({"job": self.spec.to_json(), "run": self.run,
                                            **meta}, vector))
            for action, step, meta, vector in requests
        ]  # fmt: skip
        if content is None:
            content = batch.pack(items)
        flower_run = self.flower_runs.setdefault(self.run, len(self.flower_runs) + 1)
        with task_identity():
            msg = Message(content=content, dst_node_id=1, message_type=batch.ACTION,
                          group_id="+".join(step for _, step, _, _ in requests))  # fmt: skip
        msg.metadata.__dict__["_message_id"] = f"m{len(self.sent)}"
        ctx = Context(run_id=flower_run, node_id=1, node_config=dict(self.configs[partner]),
                      state=RecordDict(), run_config={})  # fmt: skip
        self.sent.append((partner, batch.ACTION, msg.metadata.group_id))
        reply = _serve(msg, ctx, {}).content
        if "meta" in reply:
            return decode(reply)
        return [decode(c) for c in batch.unpack_replies(reply, len(requests))]

    def handshake(self, partner: str, **kw: Any) -> Payload:
        return self.send(partner, "query.handshake", step="handshake", **kw)

    def trail(self, partner: str) -> list[dict[str, Any]]:
        """The partner's own audit trail, as (type, body) events."""
        cfg = self.configs[partner]
        with Trail.open(Path(cfg["audit-db"]), Path(cfg["audit-key"]), actor=partner) as t:
            return [json.loads(raw) for raw in t.log.entries()]

    def refusals(self, partner: str) -> list[dict[str, Any]]:
        return [e["body"] for e in self.trail(partner) if e["type"] == "request.refused"]


def layout_meta(*, channel: list[str]) -> dict[str, Any]:
    """A moments layout over :data:`SCHEMA` with the category list the attacker chooses."""
    return {
        "layout": {
            "numeric": ["spend", "visits"],
            "categorical": {"channel": channel},
            "boolean": ["member"],
        }
    }


CHANNELS = ["app", "web"]


def preprocessor_dict(tmp_path: Path, *, shift: float = 0.0) -> dict[str, Any]:
    ds = load_dataset(tmp_path / "data" / "a.csv", DatasetSchema.model_validate(SCHEMA))
    layout = preprocessing.MomentsLayout(
        numeric_names=("spend", "visits"),
        categorical_vocab={"channel": tuple(CHANNELS)},
        boolean_names=("member",),
    )
    vec = preprocessing.local_moments(layout, ds.numeric, ds.categorical, ds.boolean)
    vec[1] += shift  # the sum of "spend": another mean
    pre = preprocessing.Preprocessor.from_moments(layout, vec)
    out: dict[str, Any] = pre.to_dict()
    return out


#: Values of one moments reply under :func:`layout_meta` with every channel.
MOMENTS_LENGTH = preprocessing.MomentsLayout(
    numeric_names=("spend", "visits"),
    categorical_vocab={"channel": tuple(CHANNELS)},
    boolean_names=("member",),
).length


def encrypted_moments(
    atk: Attacker, session: HeSession, channels: dict[str, list[str]]
) -> tuple[EncryptedSum, list[Any]]:
    """Each partner's encrypted moments reply (with the category list the attacker picked
    for it), summed; and their signed contribution statements."""
    total = EncryptedSum(session.public, params="wide", length=MOMENTS_LENGTH)
    bindings = []
    ENCRYPTED_REPLIES.clear()
    for name, channel in channels.items():
        reply = atk.send(
            name, "query.moments", step="moments",
            meta={**layout_meta(channel=channel),
                  "he": session.request_meta(name, params="wide")},
        )  # fmt: skip
        assert reply.ciphertext is not None, reply.meta
        total.add(reply.ciphertext)
        ENCRYPTED_REPLIES[name] = reply.ciphertext
        session.installed.add(name)
        bindings.append(reply.meta["binding"])
    return total, bindings


#: The last :func:`encrypted_moments` call's ciphertexts: the decryptor sums them itself.
ENCRYPTED_REPLIES: dict[str, bytes] = {}


def encrypted_job(tmp_path: Path) -> tuple[Attacker, HeSession]:
    atk = Attacker.against(
        tmp_path,
        job(privacy={"encryption": "ckks", "aggregation": "ckks", "key_dealer": "a"}),
        names=("a", "b"),
    )
    offers = {name: atk.handshake(name).meta["he_offer"] for name in atk.configs}
    keygen = atk.send("a", "query.he_keygen", step="he-keygen", meta={"offers": offers})
    return atk, session_from_keygen(keygen.meta, dealer="a")
