"""The partner node's side of masked aggregation (``privacy.aggregation = "masked"`` or
``"ckks+masked"``: then the masked words leave as 32-bit limbs inside a CKKS ciphertext,
:mod:`privacy.secagg_ckks`, decrypted only as a verified sum by the key holder).

Wires :class:`privacy.secagg_partner.SecAggPartner` (Bonawitz et al. 2017, CCS,
malicious-server variant; docs/secure_aggregation.md) into the node. One session per
aggregate step of the run (``moments``, ``round-3``, ``lloyd-2``, ...):

======================  ===========================================  =====================
request                 what the node does                           reply
======================  ===========================================  =====================
``query.secagg``        ``<step>.secagg-advertise``: fresh signed    ``meta["advert"]``
                        session keys for the cohort it is sent
``query.secagg``        ``<step>.secagg-share``: checks every        ``parts``: one sealed
                        advertisement against *its own* pinned keys  envelope per peer
``<the step's action>`` the planned request; its vector leaves       ``parts["masked"]``
                        only masked (``meta["secagg"]["inbox"]``)
``query.secagg``        ``<step>.secagg-sign`` (only if a partner    ``meta["signature"]``
                        dropped): signs the survivor set once
                        (never a set without itself)
``query.secagg``        ``<step>.secagg-unmask``: shares for the     ``meta["response"]``
                        set t survivors signed, never both kinds;
                        with no dropout, unsigned: self-mask shares
                        for exactly its own U2; either way only if
                        every survivor signed an answer to the
                        request this node answered at the step
======================  ===========================================  =====================

Every stage is a planned ``(run, action, step)`` of the partner's run contract
(:mod:`client.run_contract`), so it is answered once; the session itself refuses
out-of-order stages. What the node decides itself, never from the request:

* the threshold: :func:`~privacy.secagg_session.minimum_threshold` of the cohort
  (``2t - n > 1``: the coordinator plus one partner cannot unmask anyone), and at
  least ``max(2, min_partners)``: a survivor set is signed, and its sum unmasked,
  only with that many partners in it. This is the DP noise floor of client-level
  DP (DP-FedAvg: each contributor adds ``1/min_partners`` of the noise variance,
  :mod:`privacy.client_dp`), enforced by every survivor on the *unmasked* sum, as
  the key holder enforces it on decrypted sums in plain "ckks";
* the cohort: sorted, including this node, within the job's participants, at least
  ``max(2, min_partners)`` partners;
* the fixed-point budget (:data:`CODEC`);
* the purpose string, which binds the session to the job digest and the step;
* what it answered at the step (its run contract's request digest): before it reveals
  any share, every survivor must have signed an answer to that same request
  (:func:`compliance.contribution.check_bindings`, as the key holder checks before a
  decryption). Otherwise the coordinator could send one partner other centroids, another
  layout or model than the rest, and the unmasked sum would isolate that partner's
  answer (red team of 2026-12-07: all three partners of a "masked" job revealed their
  shares for such a mix).

The session (keys, self-mask seed, held shares) is stored 0600 under the node's
key store (``he/<run>/secagg/<step>``) between messages and erased with the run.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedcollab.client.he_keys import NodeKeyStore, load_peer_keys, write_private
from fedcollab.common.errors import ProtocolError
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.keys import Signer
from fedcollab.common.messages import (
    DataRequest,
    SecAggRequest,
    SecAggShareRequest,
    SecAggSignRequest,
    SecAggUnmaskRequest,
)
from fedcollab.common.serde import Payload
from fedcollab.compliance.contribution import check_bindings
from fedcollab.privacy.envelope import Envelope
from fedcollab.privacy.fixed_point import split_high_low
from fedcollab.privacy.secagg_job import (
    ACTION,
    CODEC,
    MAX_COHORT,
    STAGES,
    session_config,
    stage_steps,
)
from fedcollab.privacy.secagg_messages import MaskedInput
from fedcollab.privacy.secagg_partner import SecAggPartner
from fedcollab.privacy.secagg_session import SecAggConfig, SecAggRefusal
from fedcollab.privacy.secagg_wire import (
    dump,
    load_advertisement,
    load_unmask_request,
)

__all__ = [
    "ACTION",
    "CODEC",
    "MAX_COHORT",
    "STAGES",
    "handle",
    "mask_reply",
    "pinned_config",
    "session_config",
    "stage_steps",
]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError("a secure-aggregation field holds invalid base64") from exc


def _path(config: Mapping[str, str], run: str, step: str) -> Path:
    return NodeKeyStore.from_config(config).secagg_session(run, step)


def _config_for(path: Path, spec: JobSpec, *, run: str, step: str, me: str) -> SecAggConfig:
    """The session config pinned at this step's advertisement."""
    pinned = path.with_suffix(".config")
    if not pinned.exists():
        raise SecAggRefusal(
            f"this node advertised no session keys for step {step!r}",
            hint="each aggregate step starts with its advertisement; refused",
        )
    meta = json.loads(pinned.read_text(encoding="utf-8"))
    return session_config(spec, run=run, step=step, me=me, meta=meta)


def pinned_config(
    node: Mapping[str, str], spec: JobSpec, *, run: str, step: str, me: str
) -> SecAggConfig:
    """The session config this node pinned at ``step``'s advertisement (after the step
    too: the sessions' keys are erased at the job's end, the config is not secret)."""
    return _config_for(_path(node, run, step), spec, run=run, step=step, me=me)


def _load(
    node: Mapping[str, str], spec: JobSpec, *, run: str, step: str, me: str
) -> tuple[SecAggPartner, Path]:
    path = _path(node, run, step)
    cfg = _config_for(path, spec, run=run, step=step, me=me)
    partner = SecAggPartner.restore(
        path.read_bytes(),
        cfg,
        me=me,
        signer=Signer.load(node["audit-key"]),
        peers=load_peer_keys(node),
    )
    return partner, path


def handle(
    node: Mapping[str, str],
    spec: JobSpec,
    payload: Payload,
    *,
    run: str,
    step: str,
    me: str,
    answered: Callable[[str], str | None],
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Serve one ``query.secagg`` stage (``step`` is ``<aggregate>.secagg-<stage>``);
    ``answered(step)`` is the request digest this node answered at ``step`` (its run
    contract), None if it answered none."""
    aggregate, _, stage = step.rpartition(".secagg-")
    if stage not in STAGES or not aggregate:
        raise ProtocolError(f"{step!r} is not a secure-aggregation stage")
    if stage == "advertise":
        session = payload.as_(SecAggRequest).secagg
        cfg = session_config(spec, run=run, step=aggregate, me=me, meta=session.model_dump())
        partner = SecAggPartner(
            cfg, me=me, signer=Signer.load(node["audit-key"]), peers=load_peer_keys(node)
        )
        advert = partner.advertise()
        path = _path(node, run, aggregate)
        write_private(
            path.with_suffix(".config"),
            json.dumps({"cohort": list(cfg.cohort), "length": cfg.length}).encode(),
        )
        write_private(path, partner.to_bytes())
        return {"advert": _b64(dump(advert))}, {}
    partner, path = _load(node, spec, run=run, step=aggregate, me=me)
    reply: tuple[dict[str, Any], dict[str, bytes]]
    if stage == "share":
        raw = payload.as_(SecAggShareRequest).secagg.adverts
        adverts = {n: load_advertisement(_unb64(a)) for n, a in raw.items()}
        envelopes = partner.share_keys(adverts)
        reply = {}, {n: e.to_bytes() for n, e in envelopes.items()}
    elif stage == "sign":
        survivors = payload.as_(SecAggSignRequest).secagg.survivors
        reply = {"signature": _b64(dump(partner.sign_survivors(list(survivors))))}, {}
    else:
        asked = payload.as_(SecAggUnmaskRequest).secagg
        request = load_unmask_request(_unb64(asked.request))
        _same_request(node, asked.bindings, run=run, step=aggregate, own=answered(aggregate),
                      survivors=request.survivors)  # fmt: skip
        reply = {"response": _b64(dump(partner.unmask(request)))}, {}
    write_private(path, partner.to_bytes())
    return reply


def _same_request(
    node: Mapping[str, str],
    bindings: Any,
    *,
    run: str,
    step: str,
    own: str | None,
    survivors: tuple[str, ...],
) -> None:
    """Refuse to reveal shares unless every survivor signed an answer to the request this
    node answered at ``step`` (module notes)."""
    if own is None:
        raise SecAggRefusal(
            f"this node sent no masked input at step {step!r}, so it cannot check what the "
            "survivors answered",
            hint="only a partner that answered the step unmasks it; refused",
        )
    check_bindings(
        bindings, peers=load_peer_keys(node), run=run, step=step, request=own,
        contributors=list(survivors),
    )  # fmt: skip


def mask_reply(
    node: Mapping[str, str],
    spec: JobSpec,
    payload: Payload,
    *,
    run: str,
    step: str,
    me: str,
    vector: np.ndarray,
) -> tuple[MaskedInput, SecAggConfig]:
    """The step's reply vector, masked (the vector itself never leaves), and its session.

    A session of twice the vector's length carries it split into high and low words
    (:func:`privacy.fixed_point.split_high_low`: statistics in business units exceed
    one word's budget); any other length is refused. Which of the two is a matter of
    representation only: either way the coordinator gets masked words and their sum.
    """
    masks = payload.as_(DataRequest).secagg
    if masks is None:
        raise SecAggRefusal(
            "a masked job's request carries no share envelopes",
            hint="refusing to reply without masks; refused",
        )
    partner, path = _load(node, spec, run=run, step=step, me=me)
    inbox = {n: Envelope.from_bytes(_unb64(e)) for n, e in masks.inbox.items()}
    if partner.config.length == 2 * vector.size:
        vector = split_high_low(vector)
    elif partner.config.length != vector.size:
        raise SecAggRefusal(
            f"the session masks {partner.config.length} words, the reply has {vector.size} "
            "values (or twice that, split)",
            hint="the coordinator announced another length; refused",
        )
    masked = partner.masked_input(inbox, vector)
    write_private(path, partner.to_bytes())
    return masked, partner.config
