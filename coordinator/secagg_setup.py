"""A masked step's key set-up at the coordinator (rounds 0-1), now or one step ahead.

Bonawitz et al. 2017 ("Practical Secure Aggregation for Privacy-Preserving Machine
Learning", ACM CCS), server side, over the Flower Message API: every partner of the
cohort advertises its signed session keys (``<step>.secagg-advertise``), then seals its
seed shares for the others (``<step>.secagg-share``); the coordinator routes the
envelopes (:func:`privacy.secagg_unmask.route_shares`), which ride on the step's own
request, and asks for input only the partners who shared (U2). :func:`share_keys` runs
both before a step; :class:`Ahead` and :func:`advertise_ahead` run them during the
previous step instead (the advertisement with its request, the key sharing with its
unmasking, :func:`coordinator.secagg_round.unmask`), so from the second step on a step
costs two exchanges when nobody dropped.

Every stage is one ``query.secagg`` request (:class:`Stage`); a partner that errors,
refuses or misses the deadline is dropped (:meth:`Membership.drop
<coordinator.membership.Membership.drop>`) and the quorum checked after it. The sealed
share envelopes are logged as the partners log them (``round.aggregated``,
``secagg-sealed-shares``), so every reply a partner's trail counts as sent is in the
log it cosigns. Every signature is checked against the partners' registered audit keys
(:func:`registered_peers`).

*Ahead.* Partners answer each stage of each step once and keep one session per step, so
the order across steps does not matter to them; but the next step's cohort, and the
threshold each partner derives from it, is fixed when its advertisement leaves with this
step's request, before this step's dropouts are known (docs/secure_aggregation.md,
"What it costs in dropout tolerance"). Who fails the next step's advertisement is
dropped only once this step's survivors answered its unmasking
(:func:`settle_advertisement`); an advertisement is never sent twice, and a step whose
set-up failed ahead stops with that reason (:func:`share_keys`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flwr.serverapp import Grid

from fedcollab.common.errors import CiphertextError, NotEnoughPartnersError
from fedcollab.common.messages.replies import SecAggAdvertReply
from fedcollab.common.serde import Payload, encode
from fedcollab.compliance.trail import digest_parts
from fedcollab.coordinator.broadcast import Outcome, Request, exchange
from fedcollab.coordinator.membership import Membership
from fedcollab.coordinator.secagg import MaskedSum, b64, peer_keys, unb64
from fedcollab.privacy.envelope import Envelope
from fedcollab.privacy.key_transport import PeerKeys
from fedcollab.privacy.secagg_job import ACTION, session_config
from fedcollab.privacy.secagg_session import SecAggRefusal
from fedcollab.privacy.secagg_unmask import route_shares
from fedcollab.privacy.secagg_wire import dump, load_advertisement

__all__ = [
    "Ahead",
    "Stage",
    "advertise_ahead",
    "advertise_stage",
    "ahead_stage",
    "enough_adverts",
    "is_advertised",
    "registered_peers",
    "settle_advertisement",
    "share_keys",
    "share_stage",
]


def registered_peers(members: Membership) -> PeerKeys:
    """The partners' registered audit keys (audit config, else the policy bundle's)."""
    config = members.audit.config
    keys = dict(config.partner_keys or {}) if config is not None else {}
    if not keys and members.policy is not None:
        keys = dict(members.policy.partner_keys)
    return peer_keys(keys)


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
        why, hint = acc.setup_failure or (
            "too few partners answered its advertisement or shared their keys",
            "restart the dropped partners and resubmit",
        )
        raise NotEnoughPartnersError(
            f"the keys of step {step} could not be set up: {why}", hint=hint
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
    return request, lambda outcome: ahead_stage(ahead, lambda: advertised(outcome))


def settle_advertisement(acc: MaskedSum) -> None:
    """Finish an advertisement that rode with the previous step's request (see
    :attr:`MaskedSum.advertised <coordinator.secagg.MaskedSum.advertised>`): drop the
    partners that failed it and check the set; once."""
    finish, acc.advertised = acc.advertised, None
    if finish is not None:
        finish()


def is_advertised(ahead: Ahead | None) -> bool:
    return ahead is not None and ahead.acc.config is not None and not ahead.acc.u2


def enough_adverts(ahead: Ahead | None) -> bool:
    """Whether the next step's advertised keys can make a session (else its key sharing
    is not asked: the set-up has failed, :func:`settle_advertisement` says so)."""
    if ahead is None or ahead.acc.config is None:
        return False
    try:
        ahead.acc.config.check_subset(frozenset(ahead.acc.adverts), "the advertised key set")
    except SecAggRefusal:
        return False
    return True


def ahead_stage(ahead: Ahead, finish: Callable[[], object]) -> Ahead | None:
    """Finish a stage of the next step's set-up; on failure forget that set-up (the
    next step runs its own, and the job fails there if it must)."""
    try:
        finish()
    except (NotEnoughPartnersError, SecAggRefusal) as exc:
        # Said when the step stops: e.g. the quorum, not only "too few keys".
        ahead.acc.setup_failure = (
            exc.message,
            exc.hint or "restart the dropped partners and resubmit",
        )
        ahead.acc.config, ahead.acc.u2 = None, frozenset()
        ahead.acc.adverts.clear()
        ahead.acc.inboxes.clear()
        return None
    return ahead
