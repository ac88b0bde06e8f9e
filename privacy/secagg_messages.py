"""Secure-aggregation messages: what partners and the coordinator exchange in a session.

The values of the protocol of Bonawitz et al. 2017 ("Practical Secure
Aggregation for Privacy-Preserving Machine Learning", ACM CCS; Bell et al.
2020, "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", ACM
CCS, for the sparse variant), as frozen dataclasses, with the statements the
partners sign: the masked input ``y_u`` (signed over the session digest and the
words' SHA-256), the survivor set U3 (signed by at least ``t`` survivors: the
consistency check of the malicious-server variant), the coordinator's unmask
request and a partner's revealed Shamir shares (Shamir 1979). The state
machine that produces them is :mod:`privacy.secagg_partner`; their wire form is
:mod:`privacy.secagg_wire`.

Notes
-----
Every statement starts with a versioned domain tag and the session's config
digest, so a signature made for one message type or session never verifies
for another.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from fedcollab.common.keys import verify_signature
from fedcollab.privacy.key_transport import PeerKeys
from fedcollab.privacy.secagg_session import SecAggConfig, SecAggRefusal
from fedcollab.privacy.shamir import Share

__all__ = [
    "MaskedInput",
    "SurvivorSignature",
    "UnmaskRequest",
    "UnmaskResponse",
    "input_statement",
    "shares_topic",
    "survivor_statement",
]

_INPUT_MAGIC = b"FCSM1"


def shares_topic(config: SecAggConfig) -> str:
    return f"secagg/{config.digest}/shares"


def survivor_statement(config: SecAggConfig, survivors: Collection[str]) -> bytes:
    names = b"\n".join(n.encode() for n in sorted(survivors))
    return b"fedcollab/secagg/survivors/v1\n" + config.digest.encode() + b"\n" + names


def input_statement(config: SecAggConfig, partner: str, words: bytes) -> bytes:
    digest = hashlib.sha256(words).hexdigest()
    return f"fedcollab/secagg/masked-input/v1\n{config.digest}\n{partner}\n{digest}".encode()


@dataclass(frozen=True)
class MaskedInput:
    """``y_u`` as little-endian uint64 words, signed by the partner over the session."""

    partner: str
    words: bytes
    signature: bytes

    def vector(self, config: SecAggConfig) -> np.ndarray:
        if len(self.words) != 8 * config.length:
            raise SecAggRefusal(
                f"{self.partner!r}'s masked input has {len(self.words)} bytes, expected "
                f"{8 * config.length}"
            )
        return np.frombuffer(self.words, dtype="<u8").astype(np.uint64)

    def verify(self, config: SecAggConfig, peers: PeerKeys) -> None:
        config.index(self.partner)
        statement = input_statement(config, self.partner, self.words)
        if not verify_signature(peers.get(self.partner), self.signature, statement):
            raise SecAggRefusal(
                f"{self.partner!r}'s masked input is not signed by its pinned audit key",
                hint="the reply was forged or belongs to another session; refused",
            )

    def to_bytes(self) -> bytes:
        """Wire form: magic, name, signature, words (the reply's size in the benchmark)."""
        name = self.partner.encode()
        head = struct.pack(">HH", len(name), len(self.signature))
        return _INPUT_MAGIC + head + name + self.signature + self.words

    @classmethod
    def from_bytes(cls, raw: bytes) -> MaskedInput:
        if raw[:5] != _INPUT_MAGIC or len(raw) < 9:
            raise SecAggRefusal("not a masked input")
        n, m = struct.unpack(">HH", raw[5:9])
        name, sig = raw[9 : 9 + n], raw[9 + n : 9 + n + m]
        if len(sig) != m:
            raise SecAggRefusal("masked input is truncated")
        try:
            partner = name.decode()
        except UnicodeDecodeError as exc:
            raise SecAggRefusal("masked input names its partner in invalid UTF-8") from exc
        return cls(partner, raw[9 + n + m :], sig)


@dataclass(frozen=True)
class SurvivorSignature:
    partner: str
    survivors: tuple[str, ...]
    signature: bytes


@dataclass(frozen=True)
class UnmaskRequest:
    """The coordinator's request: the survivor set, the signatures on it (at least ``t``
    survivors'), and the dropped peers whose masking-key shares it asks for."""

    survivors: tuple[str, ...]
    signatures: Mapping[str, bytes]
    dropped: tuple[str, ...]


@dataclass(frozen=True)
class UnmaskResponse:
    """Shares this partner reveals: ``self_shares[v]`` (b_v, v survived) and
    ``key_shares[v]`` (s_v, v dropped); never the same ``v`` in both."""

    partner: str
    self_shares: Mapping[str, Share]
    key_shares: Mapping[str, Share]
