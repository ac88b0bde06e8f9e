"""The coordinator side of secure aggregation: route shares, check, and unmask the sum.

Server steps of Bonawitz et al. 2017 ("Practical Secure Aggregation for
Privacy-Preserving Machine Learning", ACM CCS; Bell et al. 2020, "Secure
Single-Server Aggregation with (Poly)Logarithmic Overhead", ACM CCS, for the
sparse variant): the coordinator relays sealed share envelopes
(:func:`route_shares`), collects the survivors' signatures on one survivor
set into an :class:`~privacy.secagg_partner.UnmaskRequest`
(:func:`unmask_request`), and, given at least ``t`` survivors' share
replies, computes the sum (:func:`unmask_sum`):

    sum_{u in U3} y_u - sum_{u in U3} PRG(b_u)
                      - sum_{v in U2 \\ U3} sum_{u in U3} +-PRG(s_uv)

``b_u`` is reconstructed (Shamir 1979) from the survivors' shares and checked
against the commitment in ``u``'s signed advertisement; a dropped partner's
masking key ``s_v`` is reconstructed and checked against its signed public
key, so a wrong share is caught even when exactly ``t`` shares arrive (with
more, :func:`privacy.shamir.combine` also cross-checks them).

Pure: the inputs are the messages the partners sent, the output is the
decoded float64 sum and who is in it (:class:`UnmaskedSum`).

Notes
-----
Cost: one ChaCha20 stream per survivor (self-mask) plus one per (dropped,
survivor) pair, i.e. ``|U3| + |U3| * |U2 \\ U3|`` streams of ``8 * length``
bytes; Shamir reconstruction is negligible next to it (Lagrange weights are
shared by all secrets, :func:`privacy.shamir.combine`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from fedcollab.common.keys import verify_signature
from fedcollab.privacy.envelope import Envelope
from fedcollab.privacy.key_transport import PeerKeys
from fedcollab.privacy.masking import MaskingKey
from fedcollab.privacy.secagg_messages import (
    MaskedInput,
    SurvivorSignature,
    UnmaskRequest,
    UnmaskResponse,
    survivor_statement,
)
from fedcollab.privacy.secagg_session import (
    Advertisement,
    SecAggConfig,
    SecAggRefusal,
    commit_self_seed,
    mask_stream,
    pair_sign,
    pairwise_seed,
    self_mask_key,
)
from fedcollab.privacy.shamir import Share, combine

__all__ = ["UnmaskedSum", "route_shares", "unmask_request", "unmask_sum", "unmask_total"]


@dataclass(frozen=True)
class UnmaskedSum:
    """The decoded sum over ``contributors`` (U3); ``dropped`` were unmasked away."""

    values: np.ndarray
    contributors: tuple[str, ...]
    dropped: tuple[str, ...]


def route_shares(
    sent: Mapping[str, Mapping[str, Envelope]],
) -> dict[str, dict[str, Envelope]]:
    """Sender -> recipient -> envelope, turned into each recipient's inbox."""
    inboxes: dict[str, dict[str, Envelope]] = {}
    for sender, envelopes in sent.items():
        for recipient, env in envelopes.items():
            if env.sender != sender or env.recipient != recipient:
                raise SecAggRefusal(f"envelope from {sender!r} is addressed inconsistently")
            inboxes.setdefault(recipient, {})[sender] = env
    return inboxes


def unmask_request(
    config: SecAggConfig,
    signatures: Collection[SurvivorSignature],
    *,
    survivors: Collection[str],
    u2: Collection[str],
    peers: PeerKeys,
) -> UnmaskRequest:
    """The request to send the survivors, once at least ``t`` of them signed ``survivors``.

    The consistency check of Bonawitz et al. 2017 (Fig. 4, round 3): the signers
    ``U4`` are the survivors whose signature on this very set verifies, and there must
    be at least ``t``. A survivor lost after its masked input (it never signs) stays in
    ``U3``: its input is in the sum and its self-mask is removed with the others'
    shares. A signature that does not verify, or signs another set, is refused.
    """
    u3 = tuple(sorted(config.check_subset(frozenset(survivors), "the survivor set")))
    statement = survivor_statement(config, u3)
    by_partner = {s.partner: s for s in signatures}
    for name, sig in by_partner.items():
        if name not in u3:
            raise SecAggRefusal(f"{name!r} signed but is not a survivor of this set")
        if sig.survivors != u3:
            raise SecAggRefusal(f"survivor {name!r} signed another survivor set")
        if not verify_signature(peers.get(name), sig.signature, statement):
            raise SecAggRefusal(f"survivor {name!r}'s signature on the survivor set is invalid")
    if len(by_partner) < config.threshold:
        missing = sorted(set(u3) - set(by_partner))
        raise SecAggRefusal(
            f"survivors {missing} did not sign the survivor set: {len(by_partner)} signatures, "
            f"{config.threshold} needed",
            hint="too many partners dropped during the consistency check; the step cannot "
            "be unmasked",
        )
    dropped = tuple(sorted(set(u2) - set(u3)))
    return UnmaskRequest(u3, {v: by_partner[v].signature for v in sorted(by_partner)}, dropped)


def _shares_of(
    responses: Mapping[str, UnmaskResponse], owner: str, kind: str, config: SecAggConfig
) -> list[Share]:
    out = []
    for holder, resp in sorted(responses.items()):
        table = resp.self_shares if kind == "self" else resp.key_shares
        share = table.get(owner)
        if share is None:
            raise SecAggRefusal(f"{holder!r} did not reveal its {kind} share of {owner!r}")
        if share.x != config.index(holder):
            raise SecAggRefusal(f"{holder!r} revealed a share at another holder's index")
        out.append(share)
    return out


def unmask_sum(
    config: SecAggConfig,
    *,
    adverts: Mapping[str, Advertisement],
    u2: Collection[str],
    masked: Mapping[str, MaskedInput],
    request: UnmaskRequest,
    responses: Mapping[str, UnmaskResponse],
    peers: PeerKeys,
) -> UnmaskedSum:
    """The sum of the survivors' vectors; raises :class:`SecAggRefusal` on any bad input."""
    if set(masked) != set(request.survivors):
        raise SecAggRefusal("the masked inputs are not exactly the survivor set's")
    total = np.zeros(config.length, dtype=np.uint64)
    for name in sorted(masked):
        item = masked[name]
        if item.partner != name:
            raise SecAggRefusal(f"masked input of {item.partner!r} filed under {name!r}")
        item.verify(config, peers)
        total += item.vector(config)
    return unmask_total(
        config,
        total=total,
        adverts=adverts,
        u2=u2,
        request=request,
        responses=responses,
        peers=peers,
    )


def unmask_total(
    config: SecAggConfig,
    *,
    total: np.ndarray,
    adverts: Mapping[str, Advertisement],
    u2: Collection[str],
    request: UnmaskRequest,
    responses: Mapping[str, UnmaskResponse],
    peers: PeerKeys,
) -> UnmaskedSum:
    """Remove the masks from ``total``, the survivors' masked inputs already summed mod 2^64
    (by :func:`unmask_sum`, or recovered from a decrypted CKKS sum by
    :func:`privacy.secagg_ckks.masked_total`)."""
    u3 = set(request.survivors)
    dropped = set(request.dropped)
    if dropped != set(u2) - u3:
        raise SecAggRefusal("every partner of U2 outside the survivors must be unmasked away")
    if not set(responses) <= u3 or len(responses) < config.threshold:
        raise SecAggRefusal(
            f"{len(responses)} survivors answered, {config.threshold} needed",
            hint="too many partners dropped after sending; the step cannot be unmasked",
        )
    arr = np.asarray(total)
    if arr.dtype != np.uint64 or arr.shape != (config.length,):
        raise SecAggRefusal(f"the masked total is not {config.length} uint64 words")
    total = arr.copy()
    for name in set(u2):
        adverts[name].verify(config, peers)
    for u in sorted(u3):
        seed = combine(_shares_of(responses, u, "self", config), threshold=config.threshold)
        if commit_self_seed(config, u, seed) != adverts[u].self_commitment:
            raise SecAggRefusal(
                f"the self-mask seed reconstructed for {u!r} does not match its commitment",
                hint="a survivor revealed a wrong share; the step is refused",
            )
        total -= mask_stream(self_mask_key(config, u, seed), config.length)
    for v in sorted(dropped):
        raw = combine(_shares_of(responses, v, "key", config), threshold=config.threshold)
        key = MaskingKey.from_bytes(raw)
        if key.public_bytes() != adverts[v].masking_key:
            raise SecAggRefusal(
                f"the masking key reconstructed for {v!r} does not match its signed public key",
                hint="a survivor revealed a wrong share; the step is refused",
            )
        for u in sorted(u3):
            seed = pairwise_seed(config, key, me=v, peer=u, peer_public=adverts[u].masking_key)
            # u added pair_sign(u, v) * PRG(s_uv); take it back out.
            if pair_sign(u, v) > 0:
                total -= mask_stream(seed, config.length)
            else:
                total += mask_stream(seed, config.length)
    values = config.codec.decode(total, summands=len(u3))
    return UnmaskedSum(values, tuple(sorted(u3)), tuple(sorted(dropped)))
