"""A whole secure-aggregation session in one process (real crypto, no network).

Shared by the unit, property and adversarial tests and by experiments.bench_secagg's
smoke checks: partners and the coordinator exchange exactly the values the protocol
says, so a test can stop at any stage and play the malicious coordinator.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np

from fedcollab.common.keys import Signer
from fedcollab.privacy.envelope import Envelope
from fedcollab.privacy.fixed_point import FixedPointCodec
from fedcollab.privacy.key_transport import PeerKeys
from fedcollab.privacy.secagg_messages import MaskedInput, SurvivorSignature
from fedcollab.privacy.secagg_partner import SecAggPartner
from fedcollab.privacy.secagg_session import Advertisement, SecAggConfig, minimum_threshold
from fedcollab.privacy.secagg_unmask import (
    UnmaskedSum,
    route_shares,
    unmask_request,
    unmask_sum,
)

CODEC = FixedPointCodec(frac_bits=24, max_abs_value=1e6, max_partners=1000)


def names(n: int) -> tuple[str, ...]:
    return tuple(f"p{i:03d}" for i in range(n))


def make_config(
    n: int, *, length: int = 8, run: str = "run-1", step: int = 0, threshold: int | None = None
) -> SecAggConfig:
    return SecAggConfig(
        run=run,
        step=step,
        purpose="fedavg",
        cohort=names(n),
        threshold=threshold if threshold is not None else minimum_threshold(n),
        length=length,
        codec=CODEC,
    )


@dataclass
class Federation:
    config: SecAggConfig
    signers: dict[str, Signer]
    peers: PeerKeys
    partners: dict[str, SecAggPartner] = field(default_factory=dict)
    adverts: dict[str, Advertisement] = field(default_factory=dict)
    inboxes: dict[str, dict[str, Envelope]] = field(default_factory=dict)
    masked: dict[str, MaskedInput] = field(default_factory=dict)
    signatures: dict[str, SurvivorSignature] = field(default_factory=dict)

    @classmethod
    def start(cls, config: SecAggConfig, signers: Mapping[str, Signer] | None = None) -> Federation:
        keys = dict(signers) if signers else {n: Signer.generate() for n in config.cohort}
        peers = PeerKeys({n: s.public_key for n, s in keys.items()})
        fed = cls(config, keys, peers)
        fed.partners = {
            n: SecAggPartner(config, me=n, signer=keys[n], peers=peers) for n in config.cohort
        }
        return fed

    def advertise(self, alive: Collection[str]) -> None:
        self.adverts = {n: self.partners[n].advertise() for n in sorted(alive)}

    def share(self, alive: Collection[str]) -> None:
        sent = {n: self.partners[n].share_keys(self.adverts) for n in sorted(alive)}
        self.inboxes = route_shares(sent)

    def mask(self, inputs: Mapping[str, np.ndarray], alive: Collection[str]) -> None:
        self.masked = {
            n: self.partners[n].masked_input(self.inboxes[n], inputs[n]) for n in sorted(alive)
        }

    @property
    def u2(self) -> frozenset[str]:
        return frozenset(next(iter(self.inboxes.values())))

    def sign(self, survivors: Collection[str], signers: Collection[str]) -> None:
        self.signatures = {n: self.partners[n].sign_survivors(survivors) for n in sorted(signers)}

    def finish(self, survivors: Collection[str], responders: Collection[str]) -> UnmaskedSum:
        request = unmask_request(
            self.config,
            list(self.signatures.values()),
            survivors=survivors,
            u2=self.u2,
            peers=self.peers,
        )
        responses = {n: self.partners[n].unmask(request) for n in sorted(responders)}
        return unmask_sum(
            self.config,
            adverts=self.adverts,
            u2=self.u2,
            masked={n: self.masked[n] for n in survivors},
            request=request,
            responses=responses,
            peers=self.peers,
        )


def run_session(
    config: SecAggConfig,
    inputs: Mapping[str, np.ndarray],
    *,
    drop_before_share: Collection[str] = (),
    drop_after_share: Collection[str] = (),
    drop_after_unmask_signing: Collection[str] = (),
) -> UnmaskedSum:
    """Drop partners before sharing keys, after sharing (before masking), or after the
    survivor check (they then send no shares)."""
    fed = Federation.start(config)
    everyone = set(config.cohort)
    fed.advertise(everyone)
    fed.share(everyone - set(drop_before_share))
    survivors = everyone - set(drop_before_share) - set(drop_after_share)
    fed.mask(inputs, survivors)
    fed.sign(survivors, survivors)
    return fed.finish(survivors, survivors - set(drop_after_unmask_signing))
