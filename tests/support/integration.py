"""Helpers for integration tests: synthetic partner files, free ports.

Every federation here is real: a SuperLink with TLS and node authentication
and one SuperNode process per partner, on loopback ports picked free.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import numpy as np

from fedcollab.client.partner_data import PartnerSource
from fedcollab.common.schema import load_schema
from fedcollab.common.split import split_horizontal
from fedcollab.federation.local_federation import free_port_block

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"

SCHEMA = {
    "version": 1,
    "dataset": "shop",
    "delimiter": ",",
    "id_column": "customer_id",
    "label_column": "purchased",
    "features": [
        {"name": "visits", "type": "numeric", "missing": "forbid"},
        {"name": "basket_value", "type": "numeric", "missing": "mean"},
        {"name": "channel", "type": "categorical", "vocabulary": None, "missing": "forbid"},
        {"name": "member", "type": "boolean", "missing": "forbid"},
    ],
}


def write_synthetic(directory: Path, *, n_rows: int = 1200, seed: int = 0) -> tuple[Path, Path]:
    """A small shop dataset where purchases depend on the features."""
    rng = np.random.default_rng(seed)
    visits = rng.poisson(5, n_rows)
    basket = rng.gamma(2.0, 20.0, n_rows)
    channel = rng.choice(["web", "app", "store"], n_rows)
    member = rng.integers(0, 2, n_rows)
    logit = 0.3 * (visits - 5) + 0.02 * (basket - 40) + 0.8 * member + (channel == "app") - 1.0
    purchased = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(int)
    lines = ["customer_id,visits,basket_value,channel,member,purchased"]
    for i in range(n_rows):
        basket_txt = "" if i % 97 == 0 else f"{basket[i]:.2f}"
        lines.append(f"c{i:05d},{visits[i]},{basket_txt},{channel[i]},{member[i]},{purchased[i]}")
    directory.mkdir(parents=True, exist_ok=True)
    csv_path = directory / "shop.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    schema_path = directory / "shop.schema.json"
    schema_path.write_text(json.dumps(SCHEMA))
    return csv_path, schema_path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_partners(directory: Path, n_partners: int) -> list[PartnerSource]:
    csv_path, schema_path = write_synthetic(directory / "source")
    files = split_horizontal(
        csv_path,
        load_schema(schema_path),
        directory / "partners",
        mode="iid",
        n_partners=n_partners,
        prefix="brand",
    )
    return [PartnerSource(partner=f.name, data=f.csv, schema=f.schema) for f in files]


def write_job(
    path: Path, schema: Path, *, encrypted: bool = False, dealer: str = "", **overrides: Any
) -> Path:
    """A purchase job file; ``encrypted`` jobs name ``dealer`` as their key dealer."""
    fields = {
        "name": "it-purchase",
        "task": "purchase_prediction",
        "purpose": "purchase-prediction",
        "schema": str(schema),
        "min_partners": 3,
        "rounds": 2,
        "round_timeout_s": 60.0,
        "startup_timeout_s": 60.0,
        **overrides,
    }
    lines = []
    for key, value in fields.items():
        lines.append(f"{key} = {json.dumps(value)}")
    if encrypted:
        lines += ["[privacy]", 'encryption = "ckks"', f"key_dealer = {json.dumps(dealer)}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def node_port_base(block: int = 20) -> int:
    """A base for the nodes' runtime APIs (base + partner index) with ``block`` free ports."""
    return free_port_block(block)


def card_run(events: list[dict[str, Any]], out: Path) -> str:
    digest = json.loads((out / "model_card.json").read_text())["job"]["digest"]
    runs = [e["body"]["run"] for e in events if e["type"] == "job.started"
            and e["body"].get("digest") == digest]  # fmt: skip
    return str(runs[-1])
