"""A party's side of a vertical job's CM20 PSI (``vertical.psi = "cm20"``).

The label holder L runs the two-party OT-based PSI of Chase and Miao (CRYPTO
2020, :mod:`protocols.psi_oprf`) with each feature party F, as the CM20
*receiver*; every message between them is sealed and signed end to end
(:mod:`privacy.envelope`), so the relay forwards opaque bytes:

===============  ==============  ==================================================
step (phase)     who             sends back (through the relay)
===============  ==============  ==================================================
``psi-salt``     L (psi_salt)    a fresh 32-byte salt sealed to each F; its set size
                 F (oprf_size)   its set size
``psi-setup``    L (oprf_start)  for each F, CM20's first message (parameters and
                                 the base OTs' ``A``), sealed to F
``psi-answer``   F (oprf_answer) the PRF key and the OT reply, sealed to L
``psi-matrix``   L (oprf_matrix) for each F, the matrix ``Delta``, sealed to F
``psi-values``   F (oprf_values) its ids' OPRF values in a random order, sealed to L
``intersect``    L               the common rows in a fresh random order: its own
                                 kept, each F's positions sealed to F (padded to
                                 F's set size)
===============  ==============  ==================================================

Set sizes are public inputs of CM20 and travel in the clear (the relay sees them
in the message lengths anyway); each party checks the parameter header of the
other's first message against the sizes it knows, so a relay that states other
sizes gets a refusal. Ids are hashed with the salt, which the relay never holds.
Each step is answered once per run (client.run_contract.vertical_plan), and a
party's CM20 state is kept between steps in its 0600 vertical store
(``OprfPsiReceiver.to_bytes``), erased with the run's other secrets.

What each party learns, and the malicious label holder's dictionary attack
that the ring PSI does not allow: docs/vertical.md ("PSI").
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from functools import reduce
from typing import TYPE_CHECKING

import numpy as np

from fedcollab.common.errors import ProtocolError
from fedcollab.common.messages.vertical import OprfAnswerRequest, OprfStartRequest
from fedcollab.protocols.psi_oprf import OprfPsiConfig, OprfPsiReceiver, OprfPsiSender

if TYPE_CHECKING:
    from fedcollab.client.vertical import PartyContext, Reply

__all__ = ["PHASES", "answer", "intersect", "matrix", "size", "start", "values"]


def _topic(feature: str, what: str) -> str:
    return f"psi/cm20/{feature}/{what}"


def _ids(p: PartyContext, rows: np.ndarray) -> list[str]:
    return [str(i) for i in p.data.dataset.ids[rows]]


def _config(p: PartyContext, feature: str, n_feature: int, n_label: int) -> OprfPsiConfig:
    # One CM20 run per feature party: the run id names the pair.
    return OprfPsiConfig(f"{p.run}/{feature}", n_feature, n_label, p.store.get("psi.salt"))


def _sizes(p: PartyContext) -> dict[str, int]:
    sizes: dict[str, int] = json.loads(p.store.get("psi.sizes.json"))
    return sizes


def size(p: PartyContext) -> Reply:
    """A feature party: every row takes part; its set size."""
    rows = np.arange(p.data.dataset.n_rows, dtype=np.int64)
    p.store.put_array("psi.rows", rows)
    return {"n_values": int(rows.size)}, {}


def start(p: PartyContext) -> Reply:
    """The label holder: one CM20 receiver per feature party, at the sizes stated."""
    request = p.request
    assert isinstance(request, OprfStartRequest)  # the plan matched the phase
    features = set(p.v.feature_parties)
    if set(request.sizes) != features:
        raise ProtocolError(
            f"the PSI set-up names the parties {sorted(request.sizes)}, this job's feature "
            f"parties are {sorted(features)}",
            hint="the relay must state each feature party's set size once; refused",
        )
    rows = p.store.get_array("psi.rows")
    ids = _ids(p, rows)
    sizes = {**request.sizes, p.me: len(ids)}
    p.store.put("psi.sizes.json", json.dumps(sizes, sort_keys=True).encode())
    parts = {}
    for feature in sorted(features):
        receiver = OprfPsiReceiver(_config(p, feature, request.sizes[feature], len(ids)), ids)
        first = receiver.start()
        p.store.put(f"psi.cm20.{feature}", receiver.to_bytes())
        parts[f"setup/{feature}"] = p.seal_to(feature, _topic(feature, "setup"), first)
    return {}, parts


def answer(p: PartyContext) -> Reply:
    """A feature party: the PRF key and OT reply, for the label holder's first message."""
    request = p.request
    assert isinstance(request, OprfAnswerRequest)
    salt = p.open_from(p.label, "psi/salt", p.payload.part("salt"))
    if len(salt) != 32:
        raise ProtocolError("the label holder's PSI salt has the wrong length")
    p.store.put("psi.salt", salt)
    rows = p.store.get_array("psi.rows")
    config = _config(p, p.me, int(rows.size), request.n_receiver)
    setup = p.open_from(p.label, _topic(p.me, "setup"), p.payload.part("setup"))
    sender = OprfPsiSender(config, _ids(p, rows))
    reply = sender.answer(setup)  # refuses a header of other sizes than ours
    p.store.put("psi.cm20.sender", sender.to_bytes())
    p.store.put("psi.cm20.n_receiver", str(request.n_receiver).encode())
    return {}, {"reply": p.seal_to(p.label, _topic(p.me, "reply"), reply)}


def _receiver(p: PartyContext, feature: str) -> OprfPsiReceiver:
    sizes = _sizes(p)
    config = _config(p, feature, int(sizes[feature]), int(sizes[p.me]))
    return OprfPsiReceiver.restore(config, p.store.get(f"psi.cm20.{feature}"))


def matrix(p: PartyContext) -> Reply:
    """The label holder: each feature party's matrix."""
    parts = {}
    for feature in sorted(p.v.feature_parties):
        receiver = _receiver(p, feature)
        reply = p.open_from(feature, _topic(feature, "reply"), p.payload.part(f"reply/{feature}"))
        delta = receiver.answer(reply)
        p.store.put(f"psi.cm20.{feature}", receiver.to_bytes())
        parts[f"matrix/{feature}"] = p.seal_to(feature, _topic(feature, "matrix"), delta)
    return {}, parts


def values(p: PartyContext) -> Reply:
    """A feature party: its OPRF values, in an order only it knows (kept for its rows)."""
    rows = p.store.get_array("psi.rows")
    n_receiver = int(p.store.get("psi.cm20.n_receiver"))
    config = _config(p, p.me, int(rows.size), n_receiver)
    sender = OprfPsiSender.restore(config, p.store.get("psi.cm20.sender"))
    delta = p.open_from(p.label, _topic(p.me, "matrix"), p.payload.part("matrix"))
    out = sender.evaluate(delta)
    # The order of the values: position j the label holder names is row order[j].
    p.store.put_array("psi.permutation", sender.rows(np.arange(rows.size, dtype=np.int64)))
    p.store.put("psi.cm20.sender", b"")  # key, choices and seeds are of no further use
    return {}, {"values": p.seal_to(p.label, _topic(p.me, "values"), out)}


def intersect(p: PartyContext) -> dict[str, np.ndarray]:
    """The label holder: the rows every feature party holds too, and each one's positions
    of them, aligned (position ``j`` of every party is the same user)."""
    found = {}
    for feature in sorted(p.v.feature_parties):
        raw = p.open_from(feature, _topic(feature, "values"), p.payload.part(f"values/{feature}"))
        found[feature] = _receiver(p, feature).finish(raw)
        p.store.put(f"psi.cm20.{feature}", b"")
    common = reduce(np.intersect1d, (r.rows for r in found.values()))
    # np.intersect1d sorts by our row index; every party trains in this order, so it
    # must say nothing about our file's order (the ring's is the blinded tags'): shuffle.
    keys = np.frombuffer(secrets.token_bytes(8 * common.size), dtype=np.uint64)
    common = common[np.argsort(keys, kind="stable")]
    positions = {p.me: common.astype(np.int64)}
    for feature, result in found.items():
        order = np.argsort(result.rows)
        at = np.searchsorted(result.rows[order], common)
        positions[feature] = result.sender_positions[order][at].astype(np.int64)
    n = int(p.store.get_array("psi.rows").size)
    p.store.put_array("psi.permutation", np.arange(n, dtype=np.int64))
    return positions


#: phase -> (the role that answers it, its handler); ``intersect`` is the ring's phase.
PHASES: dict[str, tuple[str, Callable[[PartyContext], Reply]]] = {
    "oprf_size": ("feature_party", size),
    "oprf_start": ("label_holder", start),
    "oprf_answer": ("feature_party", answer),
    "oprf_matrix": ("label_holder", matrix),
    "oprf_values": ("feature_party", values),
}
