"""The rounds of a masked step at the coordinator: advertise, share keys, sign, unmask.

Long module: the server side of one protocol whose safety rests on the order of its
stages (no share is asked for before the survivors signed), kept together so that
order reads in one place.

Bonawitz et al. 2017 ("Practical Secure Aggregation for Privacy-Preserving Machine
Learning", ACM CCS), server side, over the Flower Message API. For each aggregate
step of a "masked" or "ckks+masked" job (one :class:`~coordinator.secagg.MaskedSum`):

* :func:`share_keys`, before the step's own request (rounds 0-1): every partner of
  the cohort advertises its signed session keys (``<step>.secagg-advertise``), then
  seals its seed shares for the others (``<step>.secagg-share``); the coordinator
  routes the envelopes (:func:`privacy.secagg_unmask.route_shares`), which ride on
  the step's own request, and asks for input only the partners who shared (U2).
* :func:`add_masked_input`, during the step's request (round 2): each reply's masked
  words, checked against the sender's session (signature, length) before they count
  (in "ckks+masked" they arrive as CKKS ciphertexts, which the roster sums).
* :func:`unmask`, when the step is revealed (rounds 3-4): if a partner of U2 sent no
  masked input, the consistency check (at least ``t`` survivors sign the survivor set,
  ``<step>.secagg-sign``; in "ckks+masked" in the same exchange as the decryption of
  the limb sums, :mod:`coordinator.decryption`), then the unmasking
  (``<step>.secagg-unmask``) and the survivors' sum
  (:func:`privacy.secagg_unmask.unmask_sum` / ``unmask_total``). With no dropout
  there is no set to agree on: the unmasking (self-mask shares of U2 only) is asked at
  once, in "ckks+masked" with the decryption (:mod:`privacy.secagg_partner`, Notes,
  "No dropout", for why that reveals nothing more).

Every stage is one ``query.secagg`` request; a partner that errors, refuses or
misses the deadline is dropped (:meth:`Membership.drop
<coordinator.membership.Membership.drop>`) and the quorum checked after it. The
sealed share envelopes are logged as the partners log them (``round.aggregated``,
``secagg-sealed-shares``), so every reply a partner's trail counts as sent is in the
log it cosigns; the unmasked sum is logged as ``secagg.unmasked``. Every signature is
checked against the partners' registered audit keys (:func:`registered_peers`).

*Keys ahead* (:class:`Ahead`). A job's next masked step (next round, Lloyd step or
final evaluation) has its keys advertised in the same exchange as this step's own
request (:func:`advertise_ahead`) and shared in the same exchange as this step's
unmasking, so from the second step on a step costs two exchanges (its request, the
unmasking) when nobody dropped, three with the consistency check, instead of five; and
each partner one message per exchange (:mod:`common.batch`). Nothing a party sees
changes: each stage of each step is still asked once, partners keep one session per
step, and the next step's shares are sealed to keys that step's partners advertised.
A partner that fails the next step's set-up is dropped there, as it would be a moment
later; if that set-up fails altogether the next step runs its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import numpy as np
from flwr.serverapp import Grid

from fedcollab.common.errors import CiphertextError, NotEnoughPartnersError
from fedcollab.common.messages.replies import (
    SecAggAdvertReply,
    SecAggResponseReply,
    SecAggSignatureReply,
)
from fedcollab.common.serde import Payload, encode
from fedcollab.compliance.trail import digest_parts, digest_vector
from fedcollab.coordinator.broadcast import Outcome, Request, exchange
from fedcollab.coordinator.membership import Membership
from fedcollab.coordinator.secagg import MaskedSum, b64, peer_keys, unb64
from fedcollab.privacy.envelope import Envelope
from fedcollab.privacy.fixed_point import join_high_low
from fedcollab.privacy.key_transport import PeerKeys
from fedcollab.privacy.secagg_ckks import masked_total
from fedcollab.privacy.secagg_job import ACTION, session_config
from fedcollab.privacy.secagg_messages import UnmaskRequest
from fedcollab.privacy.secagg_session import SecAggRefusal
from fedcollab.privacy.secagg_unmask import (
    route_shares,
    unmask_request,
    unmask_sum,
    unmask_total,
)
from fedcollab.privacy.secagg_wire import (
    dump,
    load_advertisement,
    load_survivor_signature,
    load_unmask_response,
)

__all__ = [
    "Ahead",
    "Decrypt",
    "Stage",
    "add_masked_input",
    "advertise_ahead",
    "registered_peers",
    "share_keys",
    "unmask",
]


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


def registered_peers(members: Membership) -> PeerKeys:
    """The partners' registered audit keys (audit config, else the policy bundle's)."""
    config = members.audit.config
    keys = dict(config.partner_keys or {}) if config is not None else {}
    if not keys and members.policy is not None:
        keys = dict(members.policy.partner_keys)
    return peer_keys(keys)


def add_masked_input(members: Membership, acc: MaskedSum, partner: str, payload: Payload) -> None:
    """One reply of a "masked" step: its masked words, checked before they are summed."""
    if "masked" not in payload.parts:
        raise CiphertextError("a masked job's reply carries no masked input")
    try:
        acc.add(partner, payload.parts["masked"], registered_peers(members))
    except SecAggRefusal as exc:
        raise CiphertextError(exc.message) from exc


@dataclass(frozen=True)
class Stage:
    """One ``query.secagg`` round of ``step`` (group ``<step>.secagg-<name>``): who is
    asked, with what, and what each reply does (``on_reply`` gets the sender's name)."""

    members: Membership
    step: str
    #: "advertise", "share", "sign" or "unmask".
    name: str
    nodes: list[int]
    meta: dict[str, object]
    on_reply: Callable[[str, Payload], None]

    @property
    def group(self) -> str:
        return f"{self.step}.secagg-{self.name}"

    def run(self, grid: Grid) -> list[str]:
        """The round in one exchange; returns who answered (the others are dropped)."""
        request, finish = self.request()
        return finish(exchange(grid, [request])[0])

    def request(self) -> tuple[Request, Callable[[Outcome], list[str]]]:
        """The round as a request, and what to do with its outcome (for an exchange
        shared with another request)."""
        members = self.members
        full = {**members.job_meta(), "secagg": self.meta}
        sealed: dict[str, str] = {}

        def handle(node: int, payload: Payload) -> None:
            try:
                self.on_reply(members.active[node].name, payload)
            except SecAggRefusal as exc:
                raise CiphertextError(exc.message) from exc
            if payload.parts:  # the sealed share envelopes: logged as the partner logs them
                sealed[members.active[node].name] = digest_parts(payload.parts)

        request = Request(
            node_ids=self.nodes,
            message_type=ACTION,
            content_for=lambda _n: encode(full),
            on_reply=handle,
            group_id=self.group,
            timeout_s=members.step_timeout_s(len(self.nodes)),
        )

        def finish(outcome: Outcome) -> list[str]:
            for node, reason in {**outcome.dropped, **outcome.refused}.items():
                members.drop(node, step=self.group, reason=reason)
            if sealed:  # every reply a partner's trail counts as sent is in the log it cosigns
                members.audit.aggregated(
                    self.group, sealed, None, protection="secagg-sealed-shares"
                )
            members.check_quorum(self.group)
            return [members.active[n].name for n in outcome.replied if n in members.active]

        return request, finish


def share_keys(
    members: Membership, grid: Grid, acc: MaskedSum, *, step: str, only: set[int] | None
) -> set[int]:
    """Advertise and share keys for ``step``; returns the nodes to ask for input (U2).

    A step whose keys were shared ahead (:class:`Ahead`, during the previous step) is
    not set up again; one whose keys were only advertised ahead is only shared."""
    settle_advertisement(acc)
    if acc.u2:
        by_name = {p.name: node for node, p in members.active.items()}
        return {by_name[n] for n in acc.u2 if n in by_name and (only is None or by_name[n] in only)}
    if acc.config is None and acc.advertise_sent:
        # Partners answer a step's advertisement once: its set-up cannot run again.
        raise NotEnoughPartnersError(
            f"the keys of step {step} could not be set up: too few partners answered its "
            "advertisement or shared their keys",
            hint="restart the dropped partners and resubmit",
        )
    if acc.config is None:
        advertise, advertised = advertise_stage(members, acc, step=step, only=only)
        advertised(exchange(grid, [advertise])[0])
    share, shared = share_stage(members, acc, step=step)
    return shared(exchange(grid, [share])[0])


@dataclass(frozen=True)
class Ahead:
    """The next masked step of the job, whose keys are advertised and shared during
    this step's consistency check and unmasking (one exchange each instead of two of
    their own before the next step): its name and its accumulator (from
    :meth:`Roster.new_sum <coordinator.roster.Roster.new_sum>`), asked of every active
    partner. Partners answer each stage of each step once and keep one session per
    step, so the order across steps does not matter to them."""

    step: str
    acc: MaskedSum


def advertise_stage(
    members: Membership, acc: MaskedSum, *, step: str, only: set[int] | None
) -> tuple[Request, Callable[[Outcome], list[str]]]:
    """Round 0 of ``step``: every partner of the cohort advertises its signed session
    keys; the request, and what to do with its outcome."""
    peers = registered_peers(members)
    nodes = sorted(n for n in members.active if only is None or n in only)
    cohort = sorted(members.active[n].name for n in nodes)
    config = session_config(
        members.spec,
        run=members.audit.run_id,
        step=step,
        me=cohort[0] if cohort else "",
        meta={"cohort": cohort, "length": acc.length},
    )
    acc.config = config
    meta: dict[str, object] = {"cohort": cohort, "length": acc.length}

    def on_advert(name: str, payload: Payload) -> None:
        adv = load_advertisement(unb64(payload.as_(SecAggAdvertReply).advert))
        if adv.partner != name:
            raise SecAggRefusal(f"{name!r} sent {adv.partner!r}'s advertisement")
        adv.verify(config, peers)
        acc.adverts[name] = adv

    request, finish = Stage(
        members, step, "advertise", nodes=nodes, meta=meta, on_reply=on_advert
    ).request()

    def advertised(outcome: Outcome) -> list[str]:
        answered = finish(outcome)
        config.check_subset(frozenset(acc.adverts), "the advertised key set")
        return answered

    return request, advertised


def share_stage(
    members: Membership, acc: MaskedSum, *, step: str
) -> tuple[Request, Callable[[Outcome], set[int]]]:
    """Round 1 of ``step``: every partner that advertised seals its seed shares for the
    others; the request, and what to do with its outcome (the nodes to ask for input)."""
    config = acc.config
    assert config is not None
    meta: dict[str, object] = {"cohort": list(config.cohort), "length": acc.length}
    sent: dict[str, dict[str, Envelope]] = {}

    def on_shares(name: str, payload: Payload) -> None:
        envelopes = {r: Envelope.from_bytes(b) for r, b in payload.parts.items()}
        if set(envelopes) != set(acc.adverts):
            raise SecAggRefusal(f"{name!r} sealed shares for another set of partners")
        sent[name] = envelopes

    by_name = {p.name: node for node, p in members.active.items()}
    share_nodes = [by_name[n] for n in sorted(acc.adverts) if n in by_name]
    adverts = {n: b64(dump(a)) for n, a in acc.adverts.items()}
    request, finish = Stage(
        members,
        step,
        "share",
        nodes=share_nodes,
        meta={**meta, "adverts": adverts},
        on_reply=on_shares,
    ).request()

    def shared(outcome: Outcome) -> set[int]:
        finish(outcome)
        try:
            acc.inboxes = route_shares(sent)
            acc.u2 = config.check_subset(frozenset(sent), "the set of partners who shared keys")
        except SecAggRefusal as exc:
            raise NotEnoughPartnersError(exc.message, hint=exc.hint) from exc
        now = {p.name: node for node, p in members.active.items()}
        return {now[n] for n in acc.u2 if n in now}

    return request, shared


def advertise_ahead(
    members: Membership, ahead: Ahead | None
) -> tuple[Request, Callable[[Outcome], Ahead | None]] | None:
    """The next step's advertisement as a request to send with this step's request (or,
    if it was not, with this step's unmasking or signatures), and what to do with its
    outcome; None if there is nothing to advertise (no next step, or already done)."""
    if ahead is None or ahead.acc.config is not None or ahead.acc.u2:
        return None
    if ahead.acc.advertise_sent:
        return None  # partners answer a step's advertisement once: never ask again
    try:
        request, advertised = advertise_stage(members, ahead.acc, step=ahead.step, only=None)
    except SecAggRefusal:
        return None  # e.g. too small a cohort: the next step finds out itself
    ahead.acc.advertise_sent = True
    return request, lambda outcome: _ahead_stage(ahead, lambda: advertised(outcome))


def settle_advertisement(acc: MaskedSum) -> None:
    """Finish an advertisement that rode with the previous step's request (see
    :attr:`MaskedSum.advertised <coordinator.secagg.MaskedSum.advertised>`): drop the
    partners that failed it and check the set; once."""
    finish, acc.advertised = acc.advertised, None
    if finish is not None:
        finish()


def _advertised(ahead: Ahead | None) -> bool:
    return ahead is not None and ahead.acc.config is not None and not ahead.acc.u2


def _enough_adverts(ahead: Ahead | None) -> bool:
    """Whether the next step's advertised keys can make a session (else its key sharing
    is not asked: the set-up has failed, :func:`settle_advertisement` says so)."""
    if ahead is None or ahead.acc.config is None:
        return False
    try:
        ahead.acc.config.check_subset(frozenset(ahead.acc.adverts), "the advertised key set")
    except SecAggRefusal:
        return False
    return True


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
        meta={**meta, "request": b64(dump(request))},
        on_reply=on_response,
    ).request()
    along = [respond]
    share: tuple[Request, Callable[[Outcome], set[int]]] | None = None
    advertise = None
    if _advertised(ahead) and _enough_adverts(ahead):
        assert ahead is not None
        share = share_stage(members, ahead.acc, step=ahead.step)
        along.append(share[0])
    elif not _advertised(ahead):  # not advertised yet: now; the next step shares itself
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
        _ahead_stage(ahead, lambda: share[1](outcomes[1]))
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


def _ahead_stage(ahead: Ahead, finish: Callable[[], object]) -> Ahead | None:
    """Finish a stage of the next step's set-up; on failure forget that set-up (the
    next step runs its own, and the job fails there if it must)."""
    try:
        finish()
    except (NotEnoughPartnersError, SecAggRefusal):
        ahead.acc.config, ahead.acc.u2 = None, frozenset()
        ahead.acc.adverts.clear()
        ahead.acc.inboxes.clear()
        return None
    return ahead
