"""Joint inference for new user ids with a trained vertical logistic regression.

A job with ``vertical.predict_with = "<training job>"`` scores users with the
model shares the parties kept from that job (:meth:`VerticalStore.save_model`),
under the same protections as training:

1. PSI between the label holder's *query ids* (its node's ``vertical-queries``
   file, one id per line; by default every row it holds) and each feature
   party's ids (:mod:`client.vertical`), so nobody learns which queried users a
   party does not hold;
2. each feature party transforms the aligned rows with its *saved*
   preprocessing and sends ``X_i w_i`` masked pairwise, sealed to the label
   holder (``predict``);
3. the label holder sums the masked scores (the masks cancel only in the sum),
   adds its own part and keeps the probabilities at its node
   (``<state>/vertical/predictions/<job>-<run>.csv``); the coordinator learns
   only how many users were scored.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedcollab.client.vertical_store import array_bytes, bytes_array, write_private_file
from fedcollab.common.errors import ProtocolError
from fedcollab.privacy.key_transport import verify_offer
from fedcollab.privacy.masking import MaskingKey, mask_vector, pairwise_seeds, unmask_sum
from fedcollab.protocols.preprocessing import Preprocessor

if TYPE_CHECKING:
    from fedcollab.client.vertical import PartyContext, Reply

__all__ = ["feature_predict", "label_predict", "query_rows"]

_PURPOSE = "vertical-lr/joint-inference"


def query_rows(p: PartyContext) -> np.ndarray:
    """The label holder's rows to score: its ``vertical-queries`` ids, else every row."""
    ids = [str(i) for i in p.data.dataset.ids]
    path = p.config.get("vertical-queries")
    if not path:
        return np.arange(len(ids), dtype=np.int64)
    wanted = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    index = {i: k for k, i in enumerate(ids)}
    missing = [w for w in wanted if w and w not in index]
    if missing:
        raise ProtocolError(
            f"{len(missing)} query ids are not in this node's data",
            hint="list only ids of rows in the node's CSV in its vertical-queries file",
        )
    return np.array(sorted({index[w] for w in wanted if w}), dtype=np.int64)


def _features(p: PartyContext, rows: np.ndarray) -> np.ndarray:
    job = p.v.predict_with
    pre = Preprocessor.from_dict(json.loads(p.store.model_file(job, "preprocessor.json")))
    sub = p.data.dataset.subset(rows)
    return pre.transform(sub.numeric, sub.categorical, sub.boolean).astype(np.float64)


def _weights(p: PartyContext) -> np.ndarray:
    return bytes_array(p.store.model_file(p.v.predict_with, "weights.npy"), what="model share")


def feature_predict(p: PartyContext) -> Reply:
    offers = p.keys.mask_offers
    missing = sorted(set(p.v.feature_parties) - set(offers))
    if missing:
        raise ProtocolError(f"the request carries no masking key of {missing}")
    publics = {
        q: verify_offer(offers[q], run=f"{p.run}#mask", partner=q, peers=p.peers)
        for q in p.v.feature_parties
    }
    seeds = pairwise_seeds(
        MaskingKey.from_bytes(p.store.get("mask.key")), me=p.me, peers=publics, run=p.run
    )
    x = _features(p, p.store.get_array("aligned"))
    w = _weights(p)
    if x.shape[1] != w.size:
        raise ProtocolError(
            f"the saved model share of {p.v.predict_with!r} has {w.size} weights for "
            f"{x.shape[1]} columns",
            hint="retrain: the data contract changed since",
        )
    # A per-call step kept at this party: were a second predict ever answered in a run
    # (the run contract answers one), its masks would be fresh, so two masked vectors
    # would not difference to this party's partial scores.
    calls = int(p.store.get("predict.calls").decode()) if p.store.has("predict.calls") else 0
    p.store.put("predict.calls", str(calls + 1).encode())
    masked = mask_vector(x @ w, me=p.me, seeds=seeds, step=calls, purpose=_PURPOSE)
    return {}, {"scores": p.seal_to(p.label, "predict/scores", array_bytes(masked))}


def label_predict(p: PartyContext) -> Reply:
    aligned = p.store.get_array("aligned")
    masked = [
        bytes_array(
            p.open_from(q, "predict/scores", p.payload.part(f"scores/{q}")),
            what=f"{q}'s masked scores",
        )
        for q in p.v.feature_parties
    ]
    w = _weights(p)  # own weights, the intercept last
    z = _features(p, aligned) @ w[:-1] + w[-1] + unmask_sum(masked)
    prob = 0.5 * (1.0 + np.tanh(0.5 * z))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([p.data.dataset.schema.id_column, "probability"])
    for i, pr in zip(p.data.dataset.ids[aligned], prob, strict=True):
        writer.writerow([i, f"{pr:.6f}"])
    path = p.store.root.parent / "predictions" / f"{p.spec.name}-{p.store.root.name}.csv"
    write_private_file(path, out.getvalue().encode())
    return {"scored": len(aligned), "queried": len(query_rows(p))}, {}
