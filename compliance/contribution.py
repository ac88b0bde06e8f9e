"""Each contribution bound to the request it answers, and checked before a decryption.

A coordinator that sends partners *different* requests in one step (another
model, other centroids, another vocabulary for one partner) and then has the
sum decrypted learns the difference between what it asked; an aggregate must
mix only answers to the same request. Every data-bearing reply therefore
carries a statement signed with the partner's audit key::

    {"v": 1, "partner": ..., "run": ..., "action": ..., "step": ...,
     "request": <digest of the request's shared part>, "reply": <digest of the reply>}

and the partner asked to decrypt a step's aggregate (:func:`check_bindings`)
decrypts only when every claimed contributor's statement verifies under the
audit key the decryptor pinned for that partner, names this run and step, and
names the same request digest as the request the decryptor itself answered in
that step. The refusal is logged in the decryptor's trail like every refusal.

The statement follows the "bind everything you sign to its context" rule of
signed statements (e.g. RFC 9162's signed tree heads, in-toto/DSSE envelopes):
domain-separated by :data:`CONTRIBUTION_DOMAIN`, over RFC 8785 canonical JSON.

Notes
-----
* The *shared part* of a request is its meta without the per-partner fields
  (``he``: this partner's sealed key and encryption parameters; ``cosign``:
  this partner's inclusion proofs; ``secagg``: the share envelopes sealed to
  it) plus its vector: the part every partner of a step must receive
  identically. Partners log its digest as ``request_shared`` in
  ``request.received``, so an auditor can compare it across partners too.
* The decryptor does not take the coordinator's word for the sum: it is sent
  each contributor's ciphertext, checks its digest against the reply digest the
  contributor signed, and adds them itself (:func:`client.encryption.decrypt`;
  issue 14). A forged aggregate (one partner's ciphertext plus a plaintext in the
  contribution slot) is therefore never decrypted.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedcollab.common.errors import CiphertextError
from fedcollab.common.keys import Signer, verify_signature
from fedcollab.common.messages import ContributionBinding
from fedcollab.compliance.events import canonical_json
from fedcollab.compliance.trail import digest_bytes, digest_vector
from fedcollab.privacy.key_transport import PeerKeys

__all__ = [
    "CONTRIBUTION_DOMAIN",
    "SUM_RECEIPT_DOMAIN",
    "check_bindings",
    "check_sum_receipt",
    "shared_request_digest",
    "sign_contribution",
    "sign_sum_receipt",
]

#: Domain-separation prefix of contribution statements (no other signature of the key
#: can be replayed as one).
CONTRIBUTION_DOMAIN = b"fedcollab-contribution-v1\n"
#: Domain-separation prefix of a key holder's sum receipts (:func:`sign_sum_receipt`).
SUM_RECEIPT_DOMAIN = b"fedcollab-sum-receipt-v1\n"
#: Request fields that legitimately differ per partner (see Notes).
PER_PARTNER_FIELDS = frozenset({"he", "cosign", "secagg"})


def shared_request_digest(meta: Mapping[str, Any], vector: np.ndarray | None) -> str:
    """Digest of what every partner of a step must have received identically."""
    shared = {k: v for k, v in meta.items() if k not in PER_PARTNER_FIELDS}
    text = json.dumps(shared, sort_keys=True, separators=(",", ":"))
    return digest_bytes(text.encode() + b"\n" + digest_vector(vector).encode())


def sign_contribution(
    signer: Signer,
    *,
    partner: str,
    run: str,
    action: str,
    step: str,
    request: str,
    reply: str,
) -> dict[str, Any]:
    """The signed statement a reply carries as ``meta["binding"]``."""
    statement = {
        "v": 1,
        "partner": partner,
        "run": run,
        "action": action,
        "step": step,
        "request": request,
        "reply": reply,
    }
    signature = signer.sign(CONTRIBUTION_DOMAIN + canonical_json(statement))
    return {"statement": statement, "signature": base64.b64encode(signature).decode()}


def _signed(item: Any, peers: PeerKeys, domain: bytes, what: str) -> tuple[dict[str, Any], str]:
    """A signed statement's JSON object and signer, once its signature verifies under the
    key this node pinned for the partner it names (``domain``-separated); CiphertextError
    otherwise."""
    try:
        if item is None:
            raise ValueError(f"no {what} was sent")
        statement = dict(item.statement)
        signature = base64.b64decode(item.signature, validate=True)
        partner = str(statement["partner"])
    except (AttributeError, KeyError, ValueError, binascii.Error) as exc:
        raise CiphertextError(
            f"a {what} is malformed ({exc!r})",
            hint="the coordinator altered it, or runs another fedcollab version; refused",
        ) from exc
    public = peers.keys.get(partner)
    if public is None or not verify_signature(
        public, signature, domain + canonical_json(statement)
    ):
        raise CiphertextError(
            f"the {what} of {partner!r} does not verify under its pinned key",
            hint="a statement the partner did not sign (the coordinator's own), or a key this "
            "node did not pin; refused",
        )
    return statement, partner


def check_bindings(
    bindings: Sequence[ContributionBinding | None],
    *,
    peers: PeerKeys,
    run: str,
    step: str,
    request: str,
    contributors: Sequence[str],
) -> dict[str, str]:
    """Raise CiphertextError unless every contributor signed an answer to ``request``;
    returns each contributor's signed reply digest (what its ciphertext must hash to).
    A contributor that signed nothing is ``None`` in ``bindings`` (common.messages)."""
    seen: dict[str, str] = {}
    for item in bindings:
        statement, partner = _signed(item, peers, CONTRIBUTION_DOMAIN, "contribution statement")
        if statement.get("run") != run or statement.get("step") != step:
            raise CiphertextError(
                f"{partner!r}'s statement belongs to another run or step",
                hint="statements are bound to their run and step; refused",
            )
        if statement.get("request") != request:
            raise CiphertextError(
                f"{partner!r} answered another request than this node in step {step!r}",
                hint="an aggregate of answers to different requests would reveal their "
                "difference; the coordinator sent partners different requests; refused",
            )
        if partner in seen:
            raise CiphertextError(f"{partner!r} has two statements", hint="refused")
        seen[partner] = str(statement.get("reply", ""))
    if set(seen) != set(contributors):
        raise CiphertextError(
            f"contribution statements name {sorted(seen)}, the aggregate claims "
            f"{sorted(set(contributors))}",
            hint="every claimed contributor must have signed its answer; refused",
        )
    return seen


def sign_sum_receipt(
    signer: Signer,
    *,
    partner: str,
    run: str,
    step: str,
    request: str,
    values: np.ndarray,
    contributors: Sequence[str],
) -> dict[str, Any]:
    """A key holder's receipt for what it decrypted at ``step``: the sum of the signed
    answers of ``contributors`` to ``request`` (the request digest it checked every
    contribution against) is ``values``. Partners derive the next k-means step from a
    sum only with this receipt (client.centroid_chain), so the coordinator cannot
    substitute its own, nor leave a partner out of a sum it still asks that partner to
    build on."""
    statement = {
        "v": 1,
        "kind": "sum",
        "partner": partner,
        "run": run,
        "step": step,
        "request": request,
        "contributors": sorted(contributors),
        "sum": digest_vector(values),
    }
    signature = signer.sign(SUM_RECEIPT_DOMAIN + canonical_json(statement))
    return {"statement": statement, "signature": base64.b64encode(signature).decode()}


def check_sum_receipt(
    receipt: Any,
    *,
    peers: PeerKeys,
    run: str,
    step: str,
    request: str,
    values: np.ndarray,
    member: str,
) -> str:
    """Raise CiphertextError unless ``receipt`` (``statement``/``signature``, see
    :func:`sign_sum_receipt`) is a pinned partner's signature that ``values`` is the sum
    of answers to ``request`` at ``step`` of ``run``, ``member``'s among them; returns
    the signer's name."""
    statement, partner = _signed(receipt, peers, SUM_RECEIPT_DOMAIN, "sum receipt")
    expected = {"v": 1, "kind": "sum", "run": run, "step": step, "request": request}
    wrong = sorted(k for k, v in expected.items() if statement.get(k) != v)
    if wrong:
        raise CiphertextError(
            f"the sum receipt names another {', '.join(wrong)} than step {step!r} of this run "
            "as this node answered it",
            hint="a sum of answers to another request, step or run; refused",
        )
    if statement.get("sum") != digest_vector(values):
        raise CiphertextError(
            "the values sent as the decrypted sum are not the ones the key holder signed",
            hint="the coordinator altered the sum; refused",
        )
    contributors = statement.get("contributors")
    if not isinstance(contributors, list) or member not in contributors:
        raise CiphertextError(
            f"the sum of step {step!r} leaves out {member!r}'s own answer",
            hint="a sum without this partner, while it is asked to go on from it, lets the "
            "coordinator choose whose data places the next step; refused",
        )
    return partner
