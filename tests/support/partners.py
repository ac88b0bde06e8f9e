"""A small synthetic partner dataset for coordinator job tests: a ``shop`` schema with a
numeric signal and noise column, a category and a flag, and ``purchased`` following the
signal (so a job learns something in two rounds)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fedcollab.client.partner_data import PartnerSource

__all__ = ["SCHEMA", "make_partner"]

SCHEMA: dict[str, Any] = {
    "version": 1,
    "dataset": "shop",
    "delimiter": ",",
    "id_column": "customer_id",
    "label_column": "purchased",
    "features": [
        {"name": "noise", "type": "numeric", "missing": "forbid"},
        {"name": "signal", "type": "numeric", "missing": "forbid"},
        {"name": "channel", "type": "categorical", "vocabulary": None, "missing": "forbid"},
        {"name": "member", "type": "boolean", "missing": "forbid"},
    ],
}


def make_partner(root: Path, name: str, seed: int, n: int = 500) -> PartnerSource:
    rng = np.random.default_rng(seed)
    signal, noise = rng.normal(0, 1, n), rng.normal(0, 1, n)
    channel, member = rng.choice(["web", "app", "store"], n), rng.integers(0, 2, n)
    y = (signal + 0.3 * rng.normal(0, 1, n) > 0).astype(int)
    lines = ["customer_id,noise,signal,channel,member,purchased"]
    lines += [f"{name}{i},{noise[i]:.4f},{signal[i]:.4f},{channel[i]},{member[i]},{y[i]}"
              for i in range(n)]  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.csv").write_text("\n".join(lines) + "\n")
    (root / f"{name}.schema.json").write_text(json.dumps(SCHEMA))
    return PartnerSource(
        partner=name, data=root / f"{name}.csv", schema=root / f"{name}.schema.json"
    )
