"""The coordinator's side of masked aggregation (``privacy.aggregation = "masked"``).

One :class:`MaskedSum` per aggregate step: the session's state at the coordinator.
:mod:`coordinator.secagg_round` runs the rounds that fill it (Bonawitz et al. 2017,
CCS): advertise and share keys before the step's own request (rounds 0-1), the
masked inputs (round 2), the consistency check (at least ``t`` survivors sign the
survivor set) and the unmasking round, then removes the masks
(:func:`privacy.secagg_unmask.unmask_sum`). Every stage is a Flower Message API
request (``query.secagg``, group ``<step>.secagg-<stage>``).

The coordinator never holds a partner's vector: it holds masked words, the
partners' public session keys, and the shares it needs to cancel the masks of the
survivors' *sum* (self-mask shares of survivors, masking-key shares of partners
that dropped after sharing keys). It checks every partner's signatures against
the audit keys registered for the job (``AuditConfig.partner_keys``); the
partners check the same signatures against the keys they pinned themselves.

Dropouts: a partner that misses the advertisement or the key sharing is left out
of the session; one that drops after sharing (before its masked input) is
unmasked away with the survivors' masking-key shares; the sum needs ``t`` of the
cohort (:func:`~privacy.secagg_session.minimum_threshold`) at every stage,
including ``t`` signatures in the consistency check: a survivor lost there stays
in the sum (its self-mask is removed with the others' shares); with fewer than
``t`` signers the step stops (:class:`~common.errors.NotEnoughPartnersError`)
before any share is revealed.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedcollab.common.errors import CiphertextError
from fedcollab.privacy.ckks import EncryptedSum
from fedcollab.privacy.envelope import Envelope
from fedcollab.privacy.key_transport import PeerKeys
from fedcollab.privacy.secagg_messages import MaskedInput, SurvivorSignature, UnmaskResponse
from fedcollab.privacy.secagg_session import Advertisement, SecAggConfig

__all__ = ["MaskedSum", "b64", "peer_keys", "unb64"]


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def unb64(value: object) -> bytes:
    return base64.b64decode(str(value), validate=True)


def peer_keys(partner_keys: object) -> PeerKeys:
    """The partners' registered audit keys, which every session signature must verify under."""
    if not isinstance(partner_keys, dict) or not partner_keys:
        raise CiphertextError(
            "a masked job needs the partners' audit keys at the coordinator",
            hint="register every partner's audit.pub (`fedcollab federation register`)",
        )
    return PeerKeys({str(k): bytes(v) for k, v in partner_keys.items()})


@dataclass
class MaskedSum:
    """One step's masked aggregate while its session runs (coordinator state only)."""

    #: Masked words per partner: the step's values, or twice as many when ``split``.
    length: int
    #: Each value travels as high and low words (privacy.fixed_point.split_high_low):
    #: statistics ("wide" steps) whose values exceed one word's budget.
    split: bool = False
    #: "ckks+masked": the survivors' limb-split masked words, summed under CKKS
    #: (privacy.secagg_ckks); None in "masked" jobs.
    ckks: EncryptedSum | None = None
    config: SecAggConfig | None = None
    adverts: dict[str, Advertisement] = field(default_factory=dict)
    inboxes: dict[str, dict[str, Envelope]] = field(default_factory=dict)
    u2: frozenset[str] = frozenset()
    masked: dict[str, MaskedInput] = field(default_factory=dict)
    signatures: dict[str, SurvivorSignature] = field(default_factory=dict)
    responses: dict[str, UnmaskResponse] = field(default_factory=dict)

    #: "ckks+masked": whose ciphertexts are in :attr:`ckks` (the survivors, U3).
    contributors: set[str] = field(default_factory=set)
    #: Each sender's signed statement of the request it answered (compliance.contribution),
    #: forwarded with the unmasking: survivors check them before revealing shares.
    bindings: dict[str, Any] = field(default_factory=dict)
    #: Its advertisement went out with the previous step's request
    #: (:func:`coordinator.secagg_round.advertise_ahead`): never sent again.
    advertise_sent: bool = False
    #: What to do with that advertisement's outcome (drop who failed it, check the
    #: set), deferred until the previous step's survivors are fixed
    #: (:func:`coordinator.secagg_round.settle_advertisement`).
    advertised: Callable[[], object] | None = None
    #: Why its set-up ahead failed and what to do (coordinator.secagg_setup.ahead_stage),
    #: for the error the step then stops with.
    setup_failure: tuple[str, str] | None = None

    @property
    def count(self) -> int:
        return len(self.masked) if self.ckks is None else self.ckks.count

    @property
    def survivors(self) -> set[str]:
        return set(self.masked) if self.ckks is None else set(self.contributors)

    def inbox_meta(self, name: str) -> dict[str, object]:
        return {"inbox": {s: b64(e.to_bytes()) for s, e in self.inboxes.get(name, {}).items()}}

    def add(self, name: str, raw: bytes, peers: PeerKeys) -> None:
        """One survivor's masked input, checked (signature, session, length) before use."""
        assert self.config is not None
        item = MaskedInput.from_bytes(raw)
        if item.partner != name or name not in self.u2:
            raise CiphertextError(f"a masked input from {name!r} that is not its own session's")
        item.verify(self.config, peers)
        item.vector(self.config)  # the length
        self.masked[name] = item

    def zeros(self) -> np.ndarray:
        return np.zeros(self.length)
