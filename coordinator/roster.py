"""A job's requests to its partners: fan-out, aggregation, key ceremony.

:class:`Roster` extends :class:`~coordinator.membership.Membership` (who takes
part, handshake, dropouts, quorum). During the job every request goes through
:meth:`Roster.request`: it fans the request out (:mod:`coordinator.broadcast`),
adds each reply to a plaintext, CKKS or masked sum as it arrives, records each
contribution's digest, and drops a partner that errors, refuses or misses the
deadline. Encrypted jobs run their key ceremony here
(:meth:`Roster.setup_encryption`). :meth:`Roster.reveal` gives a step's sum: a
partner's decryption of a CKKS sum (:mod:`coordinator.decryption`), or the
secure-aggregation unmasking of a masked one (:mod:`coordinator.secagg_round`,
whose key sharing :meth:`Roster.request` runs before a masked step).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from flwr.app import RecordDict
from flwr.serverapp import Grid

from fedcollab.common.errors import CiphertextError, NotEnoughPartnersError
from fedcollab.common.messages.replies import DataReply, KeygenReply
from fedcollab.common.serde import Payload, encode, validate_meta
from fedcollab.compliance.contribution import shared_request_digest
from fedcollab.compliance.trail import digest_bytes, digest_parts, digest_vector
from fedcollab.coordinator.broadcast import Outcome, Request, broadcast, exchange
from fedcollab.coordinator.decryption import EncryptedAggregate, decrypt
from fedcollab.coordinator.encryption import HeSession, params_summary, session_from_keygen
from fedcollab.coordinator.membership import Membership, Partner, refusal_hint
from fedcollab.coordinator.secagg import MaskedSum
from fedcollab.coordinator.secagg_round import add_masked_input, check_masked_statement, unmask
from fedcollab.coordinator.secagg_setup import Ahead, advertise_ahead, registered_peers, share_keys
from fedcollab.privacy.ckks import EncryptedSum
from fedcollab.privacy.secagg_ckks import PARAMS as MASKED_PARAMS
from fedcollab.protocols.vector_sum import VectorSum

__all__ = ["Accumulator", "Partner", "Roster", "refusal_hint"]

#: What :meth:`Roster.new_sum` gives a step: a plaintext, CKKS or masked sum.
Accumulator = VectorSum | EncryptedSum | MaskedSum


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
        then: tuple[str, Accumulator] | None = None,
    ) -> list[Partner]:
        """Send ``action`` to every active partner; returns those whose reply was used.

        With ``into``, each reply's vector is added to that sum as it arrives,
        and the audit log records each partner's contribution digest and the
        aggregate's digest.

        ``then``: the job's next step and its accumulator (as for :meth:`reveal`). In
        masked jobs its keys are advertised in the same exchange as this request
        (:func:`~coordinator.secagg_round.advertise_ahead`).
        """
        full_meta = {**self.job_meta(), **meta}
        contributions: dict[str, str] = {}
        bindings: dict[str, Any] = {}
        ciphertexts: dict[str, bytes] = {}

        encrypted = isinstance(into, EncryptedSum)
        masked = isinstance(into, MaskedSum)
        if isinstance(into, MaskedSum):
            only = share_keys(self, grid, into, step=step, only=only)

        sent_requests: dict[int, str] = {}  # node -> the shared digest of what it was sent

        def handle(node: int, payload: Payload) -> None:
            partner = self.active[node]
            if on_reply is not None:  # first: it may reject the reply before it is summed
                on_reply(partner, payload)
            if isinstance(into, MaskedSum):
                # Survivors reveal shares only if every survivor's statement names their
                # own request: one bad statement would stop the step for all, so a reply
                # whose statement is not right is refused here (the partner drops out).
                check_masked_statement(
                    registered_peers(self), partner.name, payload,
                    run=self.audit.run_id, step=step, request=sent_requests[node],
                )  # fmt: skip
            if payload.as_(DataReply).binding is not None:
                # Typed above; forwarded as signed (canonical JSON of the partner's dict).
                bindings[partner.name] = payload.meta["binding"]
                if isinstance(into, MaskedSum):
                    into.bindings[partner.name] = payload.meta["binding"]
            if isinstance(into, MaskedSum) and into.ckks is not None:
                self._add_encrypted(into.ckks, partner.name, payload, step)
                assert payload.ciphertext is not None
                contributions[partner.name] = digest_bytes(payload.ciphertext)
                ciphertexts[partner.name] = payload.ciphertext
                into.contributors.add(partner.name)
                return
            if isinstance(into, MaskedSum):
                add_masked_input(self, into, partner.name, payload)
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
                # The vector goes out as float64 (common.serde.encode), as digested here.
                wire = None if vec is None else np.asarray(vec, dtype="<f8")
                sent_requests[node] = shared_request_digest(full_meta, wire)
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

        asked = [n for n in self.active if only is None or n in only]
        main = Request(
            node_ids=asked,
            message_type=action,
            content_for=content_for,
            on_reply=handle,
            group_id=step,
            timeout_s=self.step_timeout_s(len(asked)),
            expect_length=None if encrypted or masked else expect_length,
        )
        advertise = None
        if masked and then is not None and isinstance(then[1], MaskedSum):
            advertise = advertise_ahead(self, Ahead(then[0], then[1]))
        if advertise is None:
            outcome = exchange(grid, [main])[0]
        else:
            outcome, ahead_outcome = exchange(grid, [main, advertise[0]])
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
        self.check_quorum(step)
        if advertise is not None and then is not None and isinstance(then[1], MaskedSum):
            # Who failed the next step's advertisement is dropped once this step's
            # survivors are fixed (at its unmasking), not now: its input here counts.
            then[1].advertised = partial(advertise[1], ahead_outcome)
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

        ``params``: "compact" for model updates, "wide" for statistics: in masked jobs
        "wide" splits each value into two words (:mod:`privacy.fixed_point`); plain
        "ckks" sums are always "wide" (:data:`privacy.ckks.PARAMETER_SETS`).
        """
        # Masked statistics travel split into high and low words (privacy.fixed_point):
        # sums of squares in business units exceed one word's budget.
        split = params == "wide"
        words = 2 * length if split else length
        if self.spec.privacy.aggregation == "masked":
            return MaskedSum(words, split=split)
        if self.spec.privacy.aggregation == "ckks+masked":
            assert self.he is not None
            # Two 32-bit limbs per masked word, always "limbs" (privacy.secagg_ckks).
            limbs = EncryptedSum(self.he.public, params=MASKED_PARAMS, length=2 * words)
            return MaskedSum(words, split=split, ckks=limbs)
        if self.he is None:
            return VectorSum(length)
        # Every plain "ckks" sum is "wide": its decryptor floods (privacy.flooding), and
        # "compact"'s error would make the noise of the order of the values.
        return EncryptedSum(self.he.public, params="wide", length=length)

    def reveal(
        self,
        grid: Grid,
        acc: VectorSum | EncryptedSum | MaskedSum,
        *,
        step: str,
        then: tuple[str, Accumulator] | None = None,
    ) -> np.ndarray:
        """The summed vector of ``step``: in plaintext jobs the sum itself; in masked jobs
        the survivors' sum once their masks are removed; in encrypted jobs a partner
        decrypts it (the coordinator never holds the key).

        ``then``: the job's next step and its accumulator, asked of every active partner.
        In masked jobs its keys are advertised and shared during this step's unmasking
        (:class:`~coordinator.secagg_round.Ahead`): two exchanges fewer per step."""
        if isinstance(acc, VectorSum):
            return acc.total
        if isinstance(acc, MaskedSum):
            ahead = None
            if then is not None and isinstance(then[1], MaskedSum):
                ahead = Ahead(then[0], then[1])
            return unmask(self, grid, acc, step=step, decrypt=self._decrypt, ahead=ahead)
        return self._decrypt(grid, step=step, params=acc.params, length=acc.length)[0]

    def _decrypt(
        self,
        grid: Grid,
        *,
        step: str,
        params: str,
        length: int,
        alongside: Sequence[Request] = (),
    ) -> tuple[np.ndarray, list[Outcome] | None]:
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

    def setup_encryption(self, grid: Grid) -> None:
        """Run the key ceremony at the dealer partner and keep its public result."""
        spec = self.spec
        by_name = {p.name: node for node, p in self.active.items()}
        offers = {p.name: p.he_offer for p in self.active.values() if p.he_offer is not None}
        for name in sorted(set(by_name) - set(offers)):
            self.drop(by_name[name], step="he-keygen", reason="no transport key offered")
        # Partners accept the job key from the spec's dealer only (client/encryption.py).
        dealer = spec.privacy.key_dealer
        replies: list[Payload] = []
        if dealer in by_name and dealer in offers:
            outcome = broadcast(
                grid,
                node_ids=[by_name[dealer]],
                message_type="query.he_keygen",
                content_for=lambda _n: encode({**self.job_meta(), "offers": offers}),
                on_reply=lambda _n, payload: replies.append(payload),
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
        if not replies:
            raise NotEnoughPartnersError(
                f"the key dealer {dealer!r} did not run the key ceremony",
                hint="check the dealer's node log (connected? peer keys pinned? audit key "
                "set?) and resubmit, or name another privacy.key_dealer",
            )
        self.he = session_from_keygen(replies[0].meta, dealer=dealer)
        rejected = validate_meta(replies[0].meta, KeygenReply).rejected
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
        self.check_quorum("he-keygen")
