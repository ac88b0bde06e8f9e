"""A job's requests to its partners: fan-out, aggregation, key ceremony, secure aggregation.

Long module: fan-out to the partners, aggregation, the key ceremony and the
secure-aggregation requests of one job's roster (membership is in
coordinator/membership.py, decryption in coordinator/decryption.py). Planned
split: the secure-aggregation path into its own module.

:class:`Roster` extends :class:`~coordinator.membership.Membership` (who takes
part, handshake, dropouts, quorum). During the job every request goes through
:meth:`Roster.request`: it fans the request out (:mod:`coordinator.broadcast`),
adds each reply to a plaintext, CKKS or masked sum as it arrives, records each
contribution's digest, and drops a partner that errors, refuses or misses the
deadline. Encrypted jobs run their key ceremony here
(:meth:`Roster.setup_encryption`) and reveal aggregates through one partner's
decryption (:mod:`coordinator.decryption`) or the secure-aggregation unmasking
(:meth:`Roster.reveal`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import RecordDict
from flwr.serverapp import Grid

from fedcollab.common.errors import CiphertextError, NotEnoughPartnersError
from fedcollab.common.serde import Payload, encode
from fedcollab.compliance.trail import digest_bytes, digest_parts, digest_vector
from fedcollab.coordinator.broadcast import Outcome, Request, broadcast, exchange
from fedcollab.coordinator.decryption import EncryptedAggregate, decrypt
from fedcollab.coordinator.encryption import HeSession, params_summary, session_from_keygen
from fedcollab.coordinator.membership import Membership, Partner, refusal_hint
from fedcollab.coordinator.secagg import MaskedSum, b64, peer_keys, unb64
from fedcollab.privacy.ckks import EncryptedSum
from fedcollab.privacy.envelope import Envelope
from fedcollab.privacy.fixed_point import join_high_low
from fedcollab.privacy.key_transport import PeerKeys
from fedcollab.privacy.secagg_ckks import PARAMS as MASKED_PARAMS
from fedcollab.privacy.secagg_ckks import masked_total
from fedcollab.privacy.secagg_job import ACTION, session_config
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
from fedcollab.protocols.vector_sum import VectorSum

__all__ = ["Partner", "Roster", "refusal_hint"]


@dataclass
class Roster(Membership):
    """Membership plus requests, aggregation, key ceremony and decryption."""

    #: Encrypted jobs: the key ceremony's public result (no secret key).
    he: HeSession | None = None
    #: Encrypted steps: the summed ciphertext, its contributors, their signed
    #: contribution statements and ciphertexts, until a partner decrypts it.
    _aggregates: dict[str, EncryptedAggregate] = field(default_factory=dict)

    # -- requests -----------------------------------------------------------
    def request(
        self,
        grid: Grid,
        *,
        action: str,
        meta: dict[str, object],
        vector_for: Callable[[int], object] | None = None,
        on_reply: Callable[[Partner, Payload], None] | None = None,
        into: VectorSum | EncryptedSum | MaskedSum | None = None,
        step: str,
        expect_length: int | None = None,
        only: set[int] | None = None,
    ) -> list[Partner]:
        """Send ``action`` to every active partner; returns those whose reply was used.

        With ``into``, each reply's vector is added to that sum as it arrives,
        and the audit log records each partner's contribution digest and the
        aggregate's digest.
        """
        full_meta = {**self.job_meta(), **meta}
        contributions: dict[str, str] = {}
        bindings: dict[str, Any] = {}
        ciphertexts: dict[str, bytes] = {}

        encrypted = isinstance(into, EncryptedSum)
        masked = isinstance(into, MaskedSum)
        if isinstance(into, MaskedSum):
            only = self._secagg_setup(grid, into, step=step, only=only)

        def handle(node: int, payload: Payload) -> None:
            partner = self.active[node]
            if on_reply is not None:  # first: it may reject the reply before it is summed
                on_reply(partner, payload)
            if "binding" in payload.meta:
                bindings[partner.name] = payload.meta["binding"]
            if isinstance(into, MaskedSum) and into.ckks is not None:
                self._add_encrypted(into.ckks, partner.name, payload, step)
                assert payload.ciphertext is not None
                contributions[partner.name] = digest_bytes(payload.ciphertext)
                ciphertexts[partner.name] = payload.ciphertext
                into.contributors.add(partner.name)
                return
            if isinstance(into, MaskedSum):
                if "masked" not in payload.parts:
                    raise CiphertextError("a masked job's reply carries no masked input")
                try:
                    into.add(partner.name, payload.parts["masked"], self._peers())
                except SecAggRefusal as exc:
                    raise CiphertextError(exc.message) from exc
                contributions[partner.name] = digest_parts(payload.parts)
                return
            if isinstance(into, EncryptedSum):
                self._add_encrypted(into, partner.name, payload, step)
                assert payload.ciphertext is not None
                contributions[partner.name] = digest_bytes(payload.ciphertext)
                ciphertexts[partner.name] = payload.ciphertext
                return
            if into is not None:
                into.add(payload.array)  # validates before adding: a refused vector adds nothing
            if payload.vector is not None:
                contributions[partner.name] = digest_vector(payload.vector)

        def content_for(node: int) -> RecordDict:
            vec = vector_for(node) if vector_for is not None else None
            if isinstance(into, MaskedSum):
                name = self.active[node].name
                extra: dict[str, object] = {"secagg": into.inbox_meta(name)}
                if into.ckks is not None:
                    assert self.he is not None
                    extra["he"] = self.he.request_meta(name, params=into.ckks.params)
                return encode({**full_meta, **extra}, vec)  # type: ignore[arg-type]
            if isinstance(into, EncryptedSum):
                assert self.he is not None
                he = self.he.request_meta(self.active[node].name, params=into.params)
                return encode({**full_meta, "he": he}, vec)  # type: ignore[arg-type]
            return encode(full_meta, vec)  # type: ignore[arg-type]

        outcome = broadcast(
            grid,
            node_ids=(asked := [n for n in self.active if only is None or n in only]),
            message_type=action,
            content_for=content_for,
            on_reply=handle,
            group_id=step,
            timeout_s=self.step_timeout_s(len(asked)),
            expect_length=None if encrypted or masked else expect_length,
        )
        for node, reason in {**outcome.dropped, **outcome.refused}.items():
            self.drop(node, step=step, reason=reason)
        if contributions:
            used = {self.active[n].name for n in outcome.replied if n in self.active}
            aggregate: str | None = None
            protection = "plaintext-sum"
            summed = into.ckks if isinstance(into, MaskedSum) else into
            if isinstance(summed, EncryptedSum):
                if summed.count:
                    blob = summed.serialize()
                    aggregate = digest_bytes(blob)
                    # Every reply that decoded was summed: the set is exactly who sent.
                    names = sorted(contributions)
                    self._aggregates[step] = EncryptedAggregate(
                        blob,
                        contributors=names,
                        bindings=[bindings.get(n) for n in names],
                        ciphertexts={n: ciphertexts[n] for n in names},
                    )
                protection = "ckks-sum" if into is summed else "ckks+masked-sum"
            elif isinstance(into, MaskedSum):
                protection = "masked-sum"  # the sum is logged when it is unmasked
            elif isinstance(into, VectorSum):
                aggregate = digest_vector(into.total)
            self.audit.aggregated(
                step,
                {k: v for k, v in contributions.items() if k in used or encrypted or masked},
                aggregate,
                protection=protection,
            )
        self._check_quorum(step)
        return [self.active[n] for n in outcome.replied if n in self.active]

    def _add_encrypted(self, into: EncryptedSum, partner: str, payload: Payload, step: str) -> None:
        assert self.he is not None
        try:
            if payload.ciphertext is None:
                raise CiphertextError("an encrypted job's reply carries no ciphertext")
            self.he.check_reply(payload.meta, params=into.params, length=into.length)
            into.add(payload.ciphertext)  # validates first: a refused ciphertext adds nothing
        except CiphertextError as exc:
            self.audit.event("ciphertext.refused", partner=partner, step=step, reason=exc.message)
            raise
        self.he.installed.add(partner)

    def sample(self, rate: float) -> set[int]:
        """Partners drawn for one round, each independently with probability ``rate``
        (DP-FedAvg's partner subsampling; the accounting assumes it is secret and fair)."""
        if rate >= 1.0:
            return set(self.active)
        rng = np.random.default_rng(secrets.randbits(128))
        return {n for n in sorted(self.active) if rng.random() < rate}

    # -- homomorphic encryption ----------------------------------------------
    def new_sum(self, length: int, *, params: str = "wide") -> VectorSum | EncryptedSum | MaskedSum:
        """The accumulator for one step: plaintext, masked, or CKKS when the job is encrypted.

        ``params``: "compact" for model updates, "wide" for statistics
        (:data:`privacy.ckks.PARAMETER_SETS`).
        """
        # Masked statistics travel split into high and low words (privacy.fixed_point):
        # sums of squares in business units exceed one word's budget.
        split = params == "wide"
        words = 2 * length if split else length
        if self.spec.privacy.aggregation == "masked":
            return MaskedSum(words, split=split)
        if self.spec.privacy.aggregation == "ckks+masked":
            assert self.he is not None
            # Two 32-bit limbs per masked word, always "wide" (privacy.secagg_ckks).
            limbs = EncryptedSum(self.he.public, params=MASKED_PARAMS, length=2 * words)
            return MaskedSum(words, split=split, ckks=limbs)
        if self.he is None:
            return VectorSum(length)
        return EncryptedSum(self.he.public, params=params, length=length)

    def reveal(
        self, grid: Grid, acc: VectorSum | EncryptedSum | MaskedSum, *, step: str
    ) -> np.ndarray:
        """The summed vector of ``step``: in plaintext jobs the sum itself; in masked jobs
        the survivors' sum once their masks are removed; in encrypted jobs a partner
        decrypts it (the coordinator never holds the key)."""
        if isinstance(acc, VectorSum):
            return acc.total
        if isinstance(acc, MaskedSum):
            return self._secagg_finish(grid, acc, step=step)
        return self._decrypt(grid, step=step, params=acc.params, length=acc.length)[0]

    def _decrypt(
        self,
        grid: Grid,
        *,
        step: str,
        params: str,
        length: int,
        alongside: Request | None = None,
    ) -> tuple[np.ndarray, Outcome | None]:
        """The aggregate of ``step`` leaves the roster for a contributor to decrypt
        (:func:`coordinator.decryption.decrypt`, which sends ``alongside`` with it)."""
        assert self.he is not None
        if step not in self._aggregates:
            raise CiphertextError(f"no encrypted aggregate for step {step}")
        return decrypt(
            self,
            grid,
            self.he,
            self._aggregates.pop(step),
            step=step,
            params=params,
            length=length,
            alongside=alongside,
        )

    # -- masked aggregation (coordinator.secagg) --------------------------------
    def _peers(self) -> PeerKeys:
        """The partners' registered audit keys (audit config, else the policy bundle's)."""
        config = self.audit.config
        keys = dict(config.partner_keys or {}) if config is not None else {}
        if not keys and self.policy is not None:
            keys = dict(self.policy.partner_keys)
        return peer_keys(keys)

    def _stage(
        self,
        grid: Grid,
        acc: MaskedSum,
        *,
        step: str,
        stage: str,
        nodes: list[int],
        meta: dict[str, object],
        on_reply: Callable[[str, Payload], None],
    ) -> list[str]:
        """One ``query.secagg`` round; returns who answered (the others are dropped)."""
        request, finish = self._stage_request(
            acc, step=step, stage=stage, nodes=nodes, meta=meta, on_reply=on_reply
        )
        return finish(exchange(grid, [request])[0])

    def _stage_request(
        self,
        acc: MaskedSum,
        *,
        step: str,
        stage: str,
        nodes: list[int],
        meta: dict[str, object],
        on_reply: Callable[[str, Payload], None],
    ) -> tuple[Request, Callable[[Outcome], list[str]]]:
        """A ``query.secagg`` round as a request, and what to do with its outcome."""
        full = {**self.job_meta(), "secagg": meta}
        sealed: dict[str, str] = {}

        def handle(node: int, payload: Payload) -> None:
            try:
                on_reply(self.active[node].name, payload)
            except SecAggRefusal as exc:
                raise CiphertextError(exc.message) from exc
            if payload.parts:  # the sealed share envelopes: logged as the partner logs them
                sealed[self.active[node].name] = digest_parts(payload.parts)

        request = Request(
            node_ids=nodes,
            message_type=ACTION,
            content_for=lambda _n: encode(full),
            on_reply=handle,
            group_id=f"{step}.secagg-{stage}",
            timeout_s=self.step_timeout_s(len(nodes)),
        )

        def finish(outcome: Outcome) -> list[str]:
            for node, reason in {**outcome.dropped, **outcome.refused}.items():
                self.drop(node, step=f"{step}.secagg-{stage}", reason=reason)
            if sealed:  # every reply a partner's trail counts as sent is in the log it cosigns
                self.audit.aggregated(
                    f"{step}.secagg-{stage}", sealed, None, protection="secagg-sealed-shares"
                )
            self._check_quorum(f"{step}.secagg-{stage}")
            return [self.active[n].name for n in outcome.replied if n in self.active]

        return request, finish

    def _secagg_setup(
        self, grid: Grid, acc: MaskedSum, *, step: str, only: set[int] | None
    ) -> set[int]:
        """Advertise and share keys for ``step``; returns the nodes to ask for input (U2)."""
        peers = self._peers()
        nodes = sorted(n for n in self.active if only is None or n in only)
        cohort = sorted(self.active[n].name for n in nodes)
        config = session_config(
            self.spec,
            run=self.audit.run_id,
            step=step,
            me=cohort[0] if cohort else "",
            meta={"cohort": cohort, "length": acc.length},
        )
        acc.config = config
        meta: dict[str, object] = {"cohort": cohort, "length": acc.length}

        def on_advert(name: str, payload: Payload) -> None:
            adv = load_advertisement(unb64(payload.meta["advert"]))
            if adv.partner != name:
                raise SecAggRefusal(f"{name!r} sent {adv.partner!r}'s advertisement")
            adv.verify(config, peers)
            acc.adverts[name] = adv

        self._stage(grid, acc, step=step, stage="advertise", nodes=nodes, meta=meta,
                    on_reply=on_advert)  # fmt: skip
        config.check_subset(frozenset(acc.adverts), "the advertised key set")
        sent: dict[str, dict[str, Envelope]] = {}

        def on_shares(name: str, payload: Payload) -> None:
            envelopes = {r: Envelope.from_bytes(b) for r, b in payload.parts.items()}
            if set(envelopes) != set(acc.adverts):
                raise SecAggRefusal(f"{name!r} sealed shares for another set of partners")
            sent[name] = envelopes

        by_name = {p.name: node for node, p in self.active.items()}
        share_nodes = [by_name[n] for n in sorted(acc.adverts) if n in by_name]
        adverts = {n: b64(dump(a)) for n, a in acc.adverts.items()}
        self._stage(grid, acc, step=step, stage="share", nodes=share_nodes,
                    meta={**meta, "adverts": adverts}, on_reply=on_shares)  # fmt: skip
        try:
            acc.inboxes = route_shares(sent)
            acc.u2 = config.check_subset(frozenset(sent), "the set of partners who shared keys")
        except SecAggRefusal as exc:
            raise NotEnoughPartnersError(exc.message, hint=exc.hint) from exc
        return {by_name[n] for n in acc.u2 if n in by_name}

    def _secagg_finish(self, grid: Grid, acc: MaskedSum, *, step: str) -> np.ndarray:
        """Consistency check and unmasking; the survivors' sum, logged as the aggregate."""
        config = acc.config
        if config is None:
            raise CiphertextError(f"no masked aggregate for step {step}")
        peers = self._peers()
        limbs = None
        by_name = {p.name: node for node, p in self.active.items()}
        survivors = sorted(n for n in acc.survivors if n in by_name)
        meta: dict[str, object] = {"cohort": list(config.cohort), "length": acc.length}

        def on_signature(name: str, payload: Payload) -> None:
            sig = load_survivor_signature(unb64(payload.meta["signature"]))
            if sig.partner != name:
                raise SecAggRefusal(f"{name!r} sent {sig.partner!r}'s survivor signature")
            acc.signatures[name] = sig

        sign, signed = self._stage_request(
            acc, step=step, stage="sign", nodes=[by_name[n] for n in survivors],
            meta={**meta, "survivors": survivors}, on_reply=on_signature,
        )  # fmt: skip
        if acc.ckks is None:
            signed(exchange(grid, [sign])[0])
        else:
            # The key holder's verified, exact limb sums, in the same exchange as the
            # survivors' signatures: the decryptor sees the masked total either way, and
            # no share is revealed before the signatures are in (the unmasking below).
            limbs, outcome = self._decrypt(
                grid, step=step, params=acc.ckks.params, length=2 * acc.length, alongside=sign
            )
            signed(outcome if outcome is not None else exchange(grid, [sign])[0])
        try:
            request = unmask_request(
                config, list(acc.signatures.values()), survivors=survivors, u2=acc.u2, peers=peers
            )
        except SecAggRefusal as exc:
            raise NotEnoughPartnersError(
                f"step {step}: {exc.message}", hint="restart the dropped partners and resubmit"
            ) from exc

        def on_response(name: str, payload: Payload) -> None:
            resp = load_unmask_response(unb64(payload.meta["response"]))
            if resp.partner != name:
                raise SecAggRefusal(f"{name!r} sent {resp.partner!r}'s shares")
            acc.responses[name] = resp

        self._stage(grid, acc, step=step, stage="unmask",
                    nodes=[by_name[n] for n in survivors if n in by_name],
                    meta={**meta, "request": b64(dump(request))},
                    on_reply=on_response)  # fmt: skip
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
            self.audit.event("aggregate.refused", step=step, reason=exc.message)
            raise NotEnoughPartnersError(
                f"step {step} could not be unmasked: {exc.message}", hint=exc.hint or ""
            ) from exc
        values = join_high_low(result.values) if acc.split else result.values
        # Not a round.aggregated event: no partner sent anything named "<step>.unmask",
        # and partners' trails are cross-checked against those events (compliance).
        self.audit.event(
            "secagg.unmasked",
            step=step,
            contributors=list(result.contributors),
            dropped=list(result.dropped),
            aggregate=digest_vector(values),
            masked_total=None if limbs is None else digest_vector(limbs),
            protection="masked-unmasked",
        )
        self.outputs.event(
            "secure_aggregation",
            step=step,
            contributors=len(result.contributors),
            dropped=list(result.dropped),
        )
        return values

    def setup_encryption(self, grid: Grid) -> None:
        """Run the key ceremony at the dealer partner and keep its public result."""
        spec = self.spec
        by_name = {p.name: node for node, p in self.active.items()}
        offers = {p.name: p.he_offer for p in self.active.values() if p.he_offer is not None}
        for name in sorted(set(by_name) - set(offers)):
            self.drop(by_name[name], step="he-keygen", reason="no transport key offered")
        candidates = [spec.privacy.key_dealer] if spec.privacy.key_dealer else sorted(offers)
        for dealer in candidates:
            if dealer not in by_name or dealer not in offers:
                continue
            replies: list[Payload] = []
            outcome = broadcast(
                grid,
                node_ids=[by_name[dealer]],
                message_type="query.he_keygen",
                content_for=lambda _n: encode({**self.job_meta(), "offers": offers}),
                on_reply=lambda _n, payload, replies=replies: replies.append(payload),  # type: ignore[misc]
                group_id="he-keygen",
                timeout_s=spec.round_timeout_s,
            )
            if not replies:
                node = by_name[dealer]
                self.drop(
                    node,
                    step="he-keygen",
                    reason=outcome.refused.get(node) or outcome.dropped.get(node, "no reply"),
                )
                continue
            self.he = session_from_keygen(replies[0].meta, dealer=dealer)
            rejected = dict(replies[0].meta.get("rejected", {}))
            for name, node in by_name.items():
                if node in self.active and name not in self.he.sealed:
                    self.drop(
                        node,
                        step="he-keygen",
                        reason=f"transport key refused by the dealer: {rejected.get(name, '-')}",
                    )
            self.audit.event(
                "he.keys",
                dealer=dealer,
                key_digest=self.he.key_digest,
                key_id=self.he.public.key_id,
                recipients=sorted(self.he.sealed),
                rejected=rejected,
                parameters=params_summary(),
            )
            self.outputs.event("encryption", dealer=dealer, key_digest=self.he.key_digest)
            self._check_quorum("he-keygen")
            return
        raise NotEnoughPartnersError(
            "no partner could run the key ceremony"
            + (f" (key_dealer {spec.privacy.key_dealer!r})" if spec.privacy.key_dealer else ""),
            hint="check the dealer's node log (peer keys pinned? audit key set?) and resubmit",
        )
