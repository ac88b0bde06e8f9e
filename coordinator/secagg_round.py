"""The rounds of a masked step at the coordinator after its key set-up: input, sign, unmask.

Bonawitz et al. 2017 ("Practical Secure Aggregation for Privacy-Preserving Machine
Learning", ACM CCS), server side, over the Flower Message API. For each aggregate
step of a "masked" or "ckks+masked" job (one :class:`~coordinator.secagg.MaskedSum`),
after its keys were set up (rounds 0-1, :mod:`coordinator.secagg_setup`):

* :func:`add_masked_input`, during the step's request (round 2): each reply's masked
  words, checked against the sender's session (signature, length) before they count
  (in "ckks+masked" they arrive as CKKS ciphertexts, which the roster sums).
* :func:`unmask`, when the step is revealed (rounds 3-4): if a partner of U2 sent no
  masked input, the consistency check (at least ``t`` survivors sign the survivor set,
  ``<step>.secagg-sign``; in "ckks+masked" in the same exchange as the decryption of
  the limb sums, :mod:`coordinator.decryption`), then the unmasking
  (``<step>.secagg-unmask``) and the survivors' sum
  (:func:`privacy.secagg_unmask.unmask_sum` / ``unmask_total``). No share is asked for
  before the survivors signed. With no dropout there is no set to agree on: the
  unmasking (self-mask shares of U2 only) is asked at once, in "ckks+masked" with the
  decryption (:mod:`privacy.secagg_partner`, Notes, "No dropout", for why that reveals
  nothing more).

Every stage is one ``query.secagg`` request (:class:`~coordinator.secagg_setup.Stage`);
a partner that errors, refuses or misses the deadline is dropped and the quorum checked
after it. The unmasked sum is logged as ``secagg.unmasked``.

*Keys ahead.* With an :class:`~coordinator.secagg_setup.Ahead` (the job's next masked
step, whose advertisement rode with this step's request,
:func:`~coordinator.secagg_setup.advertise_ahead`), :func:`unmask` asks that step's key
sharing in the same exchange as this step's unmasking: from the second step on a step
costs two exchanges (its request, the unmasking) when nobody dropped, three with the
consistency check, instead of five; and each partner one message per exchange
(:mod:`common.batch`). Nothing a party sees changes: each stage of each step is asked
once, partners keep one session per step, and the next step's shares are sealed to keys
that step's partners advertised. Who fails the next step's set-up is dropped after this
step's unmasking; if that set-up fails altogether, the next step stops with that reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Protocol

import numpy as np
from flwr.serverapp import Grid
from pydantic import ValidationError

from fedcollab.common.errors import CiphertextError, NotEnoughPartnersError
from fedcollab.common.messages import ContributionBinding
from fedcollab.common.messages.replies import SecAggResponseReply, SecAggSignatureReply
from fedcollab.common.serde import Payload
from fedcollab.compliance.contribution import check_bindings
from fedcollab.compliance.trail import digest_bytes, digest_parts, digest_vector
from fedcollab.coordinator.broadcast import Outcome, Request, exchange
from fedcollab.coordinator.membership import Membership
from fedcollab.coordinator.secagg import MaskedSum, b64, unb64
from fedcollab.coordinator.secagg_setup import (
    Ahead,
    Stage,
    advertise_ahead,
    ahead_stage,
    enough_adverts,
    is_advertised,
    registered_peers,
    settle_advertisement,
    share_stage,
)
from fedcollab.privacy.fixed_point import join_high_low
from fedcollab.privacy.key_transport import PeerKeys
from fedcollab.privacy.secagg_ckks import masked_total
from fedcollab.privacy.secagg_messages import UnmaskRequest
from fedcollab.privacy.secagg_session import SecAggRefusal
from fedcollab.privacy.secagg_unmask import unmask_request, unmask_sum, unmask_total
from fedcollab.privacy.secagg_wire import dump, load_survivor_signature, load_unmask_response

__all__ = ["Decrypt", "add_masked_input", "check_masked_statement", "unmask"]


class Decrypt(Protocol):
    """How the roster has a step's CKKS sum decrypted (:meth:`Roster._decrypt
    <coordinator.roster.Roster._decrypt>`), sending ``alongside`` in the same exchange."""

    def __call__(
        self,
        grid: Grid,
        *,
        step: str,
        params: str,
        length: int,
        alongside: Sequence[Request] = (),
    ) -> tuple[np.ndarray, list[Outcome] | None]: ...


def check_masked_statement(
    peers: PeerKeys, partner: str, payload: Payload, *, run: str, step: str, request: str
) -> None:
    """A masked reply's signed statement (compliance.contribution): under ``partner``'s
    registered key, for this run and step, naming the request it was sent and the masked
    words (or ciphertext) it carries; CiphertextError otherwise. Every survivor checks
    all survivors' statements before it reveals a share (client.secagg_node), so a reply
    with a wrong or missing one is refused here rather than make every survivor refuse
    the step (red team of 2026-12-07: one partner without a trail, or one that signed
    another request, stopped every masked step)."""
    raw = payload.meta.get("binding")
    try:
        binding = None if raw is None else ContributionBinding.model_validate(raw)
    except ValidationError as exc:
        raise CiphertextError(f"{partner!r} sent a malformed contribution statement") from exc
    signed = check_bindings([binding], peers=peers, run=run, step=step, request=request,
                            contributors=[partner])  # fmt: skip
    carried = (
        digest_bytes(payload.ciphertext)
        if payload.ciphertext is not None
        else digest_parts(payload.parts)
    )
    if signed[partner] != carried:
        raise CiphertextError(f"{partner!r}'s statement names other masked words than it sent")


def add_masked_input(members: Membership, acc: MaskedSum, partner: str, payload: Payload) -> None:
    """One reply of a "masked" step: its masked words, checked before they are summed."""
    if "masked" not in payload.parts:
        raise CiphertextError("a masked job's reply carries no masked input")
    try:
        acc.add(partner, payload.parts["masked"], registered_peers(members))
    except SecAggRefusal as exc:
        raise CiphertextError(exc.message) from exc


def unmask(
    members: Membership,
    grid: Grid,
    acc: MaskedSum,
    *,
    step: str,
    decrypt: Decrypt,
    ahead: Ahead | None = None,
) -> np.ndarray:
    """Unmasking (after the consistency check if anyone dropped); the survivors' sum,
    logged as the aggregate.

    *No dropout* (every partner of U2 sent its masked input, all still active): the
    unmasking is asked at once, for U2 and self-mask shares only (in "ckks+masked" in
    the same exchange as the decryption); partners check that themselves
    (:meth:`SecAggPartner.unmask <privacy.secagg_partner.SecAggPartner.unmask>`).
    *Otherwise*: the survivors sign their set first (with the decryption), then unmask.

    With ``ahead``, the next step's keys are shared in the same exchange as the
    unmasking, after their advertisement (with this step's request, see
    :func:`advertise_ahead`, or else with the signatures). If that set-up fails (too few
    partners answered), the next step sets its keys up itself and fails or goes on
    there; this step's sum is not held back by it."""
    config = acc.config
    if config is None:
        raise CiphertextError(f"no masked aggregate for step {step}")
    peers = registered_peers(members)
    limbs = None
    by_name = {p.name: node for node, p in members.active.items()}
    survivors = sorted(n for n in acc.survivors if n in by_name)
    meta: dict[str, object] = {"cohort": list(config.cohort), "length": acc.length}
    complete = set(survivors) == set(acc.u2)
    if complete:
        request = UnmaskRequest(tuple(survivors), {}, ())
    elif len(survivors) < config.threshold:
        # Too few for any survivor to sign (each refuses a set below t): say so here
        # rather than ask and report the refusals as the survivors' fault.
        raise NotEnoughPartnersError(
            f"step {step}: {len(survivors)} survivors, the session's threshold is "
            f"{config.threshold}",
            hint="restart the dropped partners and resubmit",
        )
    else:

        def on_signature(name: str, payload: Payload) -> None:
            sig = load_survivor_signature(unb64(payload.as_(SecAggSignatureReply).signature))
            if sig.partner != name:
                raise SecAggRefusal(f"{name!r} sent {sig.partner!r}'s survivor signature")
            acc.signatures[name] = sig

        sign, signed = Stage(
            members,
            step,
            "sign",
            nodes=[by_name[n] for n in survivors],
            meta={**meta, "survivors": survivors},
            on_reply=on_signature,
        ).request()
        along = [sign]
        advertise = advertise_ahead(members, ahead)
        if advertise is not None:
            along.append(advertise[0])
        if acc.ckks is None:
            outcomes = exchange(grid, along)
        else:
            # The key holder's verified, exact limb sums, in the same exchange as the
            # survivors' signatures: the decryptor sees the masked total either way, and
            # no share is revealed before the signatures are in (the unmasking below).
            limbs, got = decrypt(
                grid, step=step, params=acc.ckks.params, length=2 * acc.length, alongside=along
            )
            outcomes = got if got is not None else exchange(grid, along)
        signed(outcomes[0])
        if advertise is not None and ahead is not None:
            ahead.acc.advertised = partial(advertise[1], outcomes[1])
        try:
            request = unmask_request(
                config, list(acc.signatures.values()), survivors=survivors, u2=acc.u2, peers=peers
            )
        except SecAggRefusal as exc:
            raise NotEnoughPartnersError(
                f"step {step}: {exc.message}", hint="restart the dropped partners and resubmit"
            ) from exc

    def on_response(name: str, payload: Payload) -> None:
        resp = load_unmask_response(unb64(payload.as_(SecAggResponseReply).response))
        if resp.partner != name:
            raise SecAggRefusal(f"{name!r} sent {resp.partner!r}'s shares")
        acc.responses[name] = resp

    # A survivor dropped at the consistency check is not asked; one that failed only the
    # next step's advertisement is (that is settled after this step's unmasking).
    by_name = {p.name: node for node, p in members.active.items()}
    respond, responded = Stage(
        members,
        step,
        "unmask",
        nodes=[by_name[n] for n in survivors if n in by_name],
        meta={
            **meta,
            "request": b64(dump(request)),
            # What each survivor signed it answered: every survivor checks them all.
            "bindings": [acc.bindings.get(n) for n in request.survivors],
        },
        on_reply=on_response,
    ).request()
    along = [respond]
    share: tuple[Request, Callable[[Outcome], set[int]]] | None = None
    advertise = None
    if is_advertised(ahead) and enough_adverts(ahead):
        assert ahead is not None
        share = share_stage(members, ahead.acc, step=ahead.step)
        along.append(share[0])
    elif not is_advertised(ahead):  # not advertised yet: now; the next step shares itself
        advertise = advertise_ahead(members, ahead)
        if advertise is not None:
            along.append(advertise[0])
    if complete and acc.ckks is not None:
        # No dropout: the decryption goes with the unmasking. The decryptor sees the
        # masked total (self-masks still in it); the shares remove the self-masks only.
        limbs, got = decrypt(
            grid, step=step, params=acc.ckks.params, length=2 * acc.length, alongside=along
        )
        outcomes = got if got is not None else exchange(grid, along)
    else:
        outcomes = exchange(grid, along)
    responded(outcomes[0])
    if ahead is not None:
        # This step's survivors answered: now drop who failed the next step's
        # advertisement (sent with this step's request or its signatures).
        settle_advertisement(ahead.acc)
    if share is not None and ahead is not None and ahead.acc.config is not None:
        ahead_stage(ahead, lambda: share[1](outcomes[1]))
    elif advertise is not None:
        advertise[1](outcomes[1])
    try:
        if limbs is None:
            result = unmask_sum(
                config,
                adverts=acc.adverts,
                u2=acc.u2,
                masked={n: acc.masked[n] for n in request.survivors},
                request=request,
                responses=acc.responses,
                peers=peers,
            )
        else:
            if set(request.survivors) != acc.contributors:
                raise SecAggRefusal("the decrypted sum is not the survivor set's")
            result = unmask_total(
                config,
                total=masked_total(limbs, length=acc.length),
                adverts=acc.adverts,
                u2=acc.u2,
                request=request,
                responses=acc.responses,
                peers=peers,
            )
    except SecAggRefusal as exc:
        members.audit.event("aggregate.refused", step=step, reason=exc.message)
        raise NotEnoughPartnersError(
            f"step {step} could not be unmasked: {exc.message}", hint=exc.hint or ""
        ) from exc
    values = join_high_low(result.values) if acc.split else result.values
    if members.spec.task == "segmentation":
        # Every partner recomputes this unmasking itself before it derives the next
        # step's centroids from it (client.centroid_chain): each item below is signed by
        # its partner or checked against a signed commitment.
        members.step_sums.setdefault(step, {})["masks"] = {
            "u2": sorted(acc.u2),
            "adverts": {n: b64(dump(a)) for n, a in acc.adverts.items()},
            "masked": {}
            if limbs is not None
            else {n: b64(acc.masked[n].to_bytes()) for n in request.survivors},
            "request": b64(dump(request)),
            "responses": {n: b64(dump(r)) for n, r in acc.responses.items()},
            "bindings": [acc.bindings.get(n) for n in request.survivors],
        }
    # Not a round.aggregated event: no partner sent anything named "<step>.unmask",
    # and partners' trails are cross-checked against those events (compliance).
    members.audit.event(
        "secagg.unmasked",
        step=step,
        contributors=list(result.contributors),
        dropped=list(result.dropped),
        aggregate=digest_vector(values),
        masked_total=None if limbs is None else digest_vector(limbs),
        protection="masked-unmasked",
        consistency="signed" if not complete else "no-dropout",
    )
    members.outputs.event(
        "secure_aggregation",
        step=step,
        contributors=len(result.contributors),
        dropped=list(result.dropped),
    )
    return values
