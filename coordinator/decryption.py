"""One contributor decrypts an encrypted step's sum; the coordinator holds no key.

CKKS (Cheon, Kim, Kim, Song 2017, "Homomorphic Encryption for Arithmetic of
Approximate Numbers", ASIACRYPT) lets the coordinator add the partners'
ciphertexts (:class:`privacy.ckks.EncryptedSum`, summed in
:meth:`coordinator.roster.Roster.request`); revealing the sum needs a partner
holding the job's key. :func:`decrypt` asks one ``query.he_decrypt`` (group
``<step>.decrypt``) at a time, in :meth:`HeSession.decryptors
<coordinator.encryption.HeSession.decryptors>` order: the dealer first, then the
other contributors that hold the key; in a plain "ckks" job the dealer only (two key
holders decrypting different subsets of one step would give a vector by difference,
and the partners refuse it). The request carries every contributor's
ciphertext and signed contribution statement, and not the coordinator's sum: the
decryptor verifies each statement against the keys it pinned and recomputes the sum
itself (:mod:`privacy.verified_decryption`), so the coordinator's own aggregate is never
what gets decrypted (its digest, in the coordinator's log, equals the one the decryptor
logs for the sum it decrypted).

A decryptor that does not answer, or refuses for another reason, is dropped and the
next one is asked; one that refuses with a ``CiphertextError`` (a contribution made
under another key, or altered) stops the step, logged as ``aggregate.refused``. In
"ckks+masked" jobs (Bonawitz et al. 2017, "Practical Secure Aggregation for
Privacy-Preserving Machine Learning", ACM CCS; :mod:`privacy.secagg_ckks`) the
decrypted values are the limb sums of one-time-padded words, and the survivors'
signatures ride in the same exchange as the first decryption request
(``alongside``, :func:`coordinator.secagg_round.unmask`).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.serverapp import Grid

from fedcollab.common.errors import CiphertextError, NotEnoughPartnersError
from fedcollab.common.serde import Payload, encode
from fedcollab.compliance.trail import digest_vector
from fedcollab.coordinator.broadcast import Outcome, Request, exchange
from fedcollab.coordinator.encryption import HeSession
from fedcollab.coordinator.membership import Membership

__all__ = ["EncryptedAggregate", "decrypt"]


@dataclass(frozen=True)
class EncryptedAggregate:
    """One encrypted step's sum, held by the coordinator until a contributor decrypts it."""

    #: The summed ciphertext (:meth:`privacy.ckks.EncryptedSum.serialize`).
    blob: bytes
    #: Who is in the sum, sorted: every reply that decoded was summed.
    contributors: list[str]
    #: Each contributor's signed contribution statement (compliance.contribution), in
    #: :attr:`contributors` order (None where a reply carried none).
    bindings: list[Any]
    #: Each contributor's ciphertext: the decryptor recomputes the sum from these.
    ciphertexts: dict[str, bytes]


def decrypt(
    members: Membership,
    grid: Grid,
    he: HeSession,
    aggregate: EncryptedAggregate,
    *,
    step: str,
    params: str,
    length: int,
    alongside: Sequence[Request] = (),
) -> tuple[np.ndarray, list[Outcome] | None]:
    """A contributor of ``step`` decrypts ``aggregate``, recomputed from the contributions.

    ``alongside`` is sent with the first decryption request (one exchange for all);
    their outcomes are returned too, in order (None: no ``alongside``).
    """
    contributors = aggregate.contributors
    he_meta = {
        "step": step,
        "contributors": contributors,
        "params": params,
        "length": length,
        "key_digest": he.key_digest,
    }
    by_name = {p.name: node for node, p in members.active.items()}
    other_outcomes: list[Outcome] | None = None
    # A contributor decrypts: it checks every statement against the request it got.
    candidates = he.decryptors([n for n in by_name if n in contributors])
    if members.spec.privacy.aggregation == "ckks":
        # Only the dealer decrypts a plain "ckks" job's sums (client/encryption.py).
        candidates = candidates[:1] if candidates[:1] == [he.dealer] else []
    for name in candidates:
        node = by_name[name]
        got: list[Payload] = []
        request = Request(
            node_ids=[node],
            message_type="query.he_decrypt",
            content_for=lambda _n: encode(
                {**members.job_meta(), "he": he_meta, "bindings": aggregate.bindings},
                # Only the contributions: the decryptor sums them itself, so the
                # coordinator's sum would be a redundant copy (a reply's size again).
                parts=aggregate.ciphertexts,
            ),
            on_reply=lambda _n, payload, got=got: got.append(payload),  # type: ignore[misc]
            group_id=f"{step}.decrypt",
            timeout_s=members.spec.round_timeout_s,
            expect_length=length,
        )
        if alongside:
            outcome, *others = exchange(grid, [request, *alongside])
            alongside, other_outcomes = (), others
        else:
            outcome = exchange(grid, [request])[0]
        if got:
            values = got[0].array
            assert values is not None  # expect_length: a reply without its vector fails
            if members.spec.task == "segmentation":
                # The key holder's receipt goes with the next step's request: partners
                # derive its centroids from these values only (client.centroid_chain).
                members.step_sums[step] = {
                    "values": base64.b64encode(
                        np.ascontiguousarray(values, dtype="<f8").tobytes()
                    ).decode(),
                    "receipt": got[0].meta.get("receipt"),
                }
            members.audit.aggregated(
                f"{step}.decrypt",
                {name: digest_vector(values)},
                digest_vector(values),
                protection="ckks-decrypted",
            )
            return values, other_outcomes
        reason = outcome.refused.get(node) or outcome.dropped.get(node, "no reply")
        if node in outcome.refused and "CiphertextError" in reason:
            members.audit.event(
                "aggregate.refused", step=step, decryptor=name, contributors=contributors
            )
            raise CiphertextError(
                f"partner {name} refused to decrypt the aggregate of {step}: a contribution "
                "was made under another key or altered",
                hint="see the partners' node logs and the audit log; resubmit the job",
            )
        members.drop(node, step=f"{step}.decrypt", reason=reason)
    if members.spec.privacy.aggregation == "ckks":
        raise NotEnoughPartnersError(
            f"the key dealer {he.dealer!r} did not decrypt the aggregate of {step}; in a "
            "'ckks' job no other partner may",
            hint="restart the dealer's node and resubmit the job, or use "
            'privacy.aggregation = "ckks+masked", which tolerates a lost key holder',
        )
    raise NotEnoughPartnersError(
        f"no partner holding the job key could decrypt the aggregate of {step}",
        hint="restart the partners' nodes and resubmit the job",
    )
