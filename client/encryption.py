"""The partner's side of homomorphic aggregation (:mod:`privacy.ckks`).

- Handshake: offer a fresh per-run X25519 transport key signed with this
  partner's audit key (:func:`offer`).
- ``query.he_keygen`` (the dealer only): the key ceremony. Check every
  partner's offer against the pinned peer keys, make the job's CKKS keys, seal
  them to each partner (:func:`keygen`).
- Every data-bearing reply of an encrypted job leaves encrypted
  (:func:`encrypt_reply`); the sealed key rides on the first request a partner
  gets and is checked against the dealer's pinned signature.
- ``query.he_decrypt``: decrypt an aggregate once per step, and only one this node
  summed itself from the contributors' ciphertexts, each checked against the reply
  digest its contributor signed (at least ``max(2, min_partners)`` distinct ones);
  return it flooded in "ckks" (Gaussian noise sized by the plan's decryption count,
  :mod:`privacy.flooding`), as exact limb sums in "ckks+masked" (:func:`decrypt`).
  The coordinator's claimed sum is never decrypted: a forged aggregate, a plaintext
  offset added to a sum, or one partner's ciphertext presented as a sum has no
  signed contributions that add up to it (issue 14; Li & Micciancio 2021 on why a
  CKKS decryption oracle must not be handed chosen ciphertexts).

Every check fails closed: no pinned keys, no key, a stale key or a request
without encryption parameters is a refusal, never a plaintext reply.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedcollab.client.he_keys import NodeKeyStore, load_peer_keys
from fedcollab.common.errors import CiphertextError
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.keys import Signer
from fedcollab.common.messages import DataRequest, DecryptParams, HeRequest, KeygenRequest
from fedcollab.common.serde import Payload
from fedcollab.compliance.trail import digest_bytes
from fedcollab.privacy.ckks import PARAMETER_SETS, EncryptedSum, SecretKeys
from fedcollab.privacy.key_transport import Sealed, accept, deal, transport_offer, verify_offer
from fedcollab.privacy.secagg_ckks import MAX_CKKS_PARTNERS, exact_limb_sums
from fedcollab.privacy.secagg_ckks import PARAMS as MASKED_PARAMS

#: The one set a plain "ckks" job's sums are decrypted under (coordinator.roster.new_sum).
FLOODED_PARAMS = "wide"

__all__ = ["decrypt", "encrypt_masked", "encrypt_reply", "erase", "keygen", "offer"]


def _signer(config: Mapping[str, str]) -> Signer:
    if not config.get("audit-key"):
        raise CiphertextError(
            "encrypted jobs need this node's audit key (it signs the key ceremony)",
            hint="start the node with --audit-key",
        )
    return Signer.load(config["audit-key"])


def offer(config: Mapping[str, str], *, partner: str, run: str) -> dict[str, str]:
    key = NodeKeyStore.from_config(config).transport_key(run, create=True)
    return transport_offer(key, run=run, partner=partner, signer=_signer(config))


def keygen(
    config: Mapping[str, str], *, partner: str, run: str, payload: Payload
) -> dict[str, Any]:
    """The key ceremony at the dealer: one fresh key set per job."""
    peers = load_peer_keys(config)
    store = NodeKeyStore.from_config(config)
    if store.keys(run) is not None:
        raise CiphertextError(
            f"this node already dealt the keys of run {run}",
            hint="a second ceremony in one run is refused; resubmit the job",
        )
    offers = payload.as_(KeygenRequest).offers
    good: dict[str, Mapping[str, Any]] = {}
    rejected: dict[str, str] = {}
    for name, raw in sorted(offers.items()):
        try:
            verify_offer(raw, run=run, partner=name, peers=peers)
            good[name] = raw
        except CiphertextError as exc:
            rejected[name] = exc.message
    if partner not in good:
        raise CiphertextError("the dealer's own transport key is missing from the ceremony")
    keys = SecretKeys.generate()
    store.save_keys(run, keys)
    store.mark_dealt(run)
    sealed = deal(keys, good, run=run, dealer=partner, peers=peers, signer=_signer(config))
    return {
        "public": base64.b64encode(keys.public().to_bytes()).decode(),
        "key_digest": keys.public().digest,
        "sealed": {name: s.to_json() for name, s in sealed.items()},
        "rejected": rejected,
    }


def _job_keys(
    config: Mapping[str, str],
    *,
    partner: str,
    run: str,
    he: HeRequest,
    dealer: str = "",
) -> SecretKeys:
    """The run's CKKS keys; ``dealer``: the spec's ``privacy.key_dealer`` (the sealed key
    must come from it; empty: refused)."""
    store = NodeKeyStore.from_config(config)
    keys = store.keys(run)
    if keys is None:
        raw = he.sealed
        if raw is None:
            raise CiphertextError(
                f"no key for run {run} at this node and none was sent",
                hint="the coordinator must forward the key ceremony's sealed key",
            )
        sealed = Sealed.from_json(raw)
        if not dealer or sealed.dealer != dealer:
            raise CiphertextError(
                f"the job key was dealt by {sealed.dealer!r}, the job names "
                f"{dealer or 'no key dealer'!r}",
                hint="only the spec's privacy.key_dealer may deal the job key; refused",
            )
        keys = accept(
            sealed,
            run=run,
            partner=partner,
            key=store.transport_key(run),
            peers=load_peer_keys(config),
        )
        store.save_keys(run, keys)
    if keys.public().digest != he.key_digest:
        raise CiphertextError(
            "the request names another encryption key than this job's",
            hint="a stale key from another run, or a coordinator substituting keys; refused",
        )
    return keys


def encrypt_reply(
    config: Mapping[str, str],
    *,
    partner: str,
    run: str,
    request: Payload,
    vector: np.ndarray,
    dealer: str = "",
    limbs: bool = False,
) -> tuple[bytes, dict[str, Any]]:
    """Encrypt a reply vector under the job key named in the request; ``dealer``: the
    spec's ``privacy.key_dealer`` (the only partner the job key is accepted from).
    ``limbs``: only :func:`encrypt_masked` may use the masked mode's integer set."""
    he = request.as_(DataRequest).he
    if he is None:
        raise CiphertextError(
            "an encrypted job's request carries no encryption parameters",
            hint="refusing to reply in plaintext; the coordinator runs another version?",
        )
    if _integer_set(he.params) and not limbs:
        raise CiphertextError(
            f"the {he.params!r} CKKS parameters carry only a 'ckks+masked' job's limbs",
            hint="the coordinator named the masked mode's parameters for another reply; "
            "refused (they are decrypted without a rounding grid)",
        )
    keys = _job_keys(config, partner=partner, run=run, he=he, dealer=dealer)
    params = he.params
    blob = keys.encrypt(vector, params=params)
    return blob, {"key_digest": keys.public().digest, "params": params, "length": int(vector.size)}


def _integer_set(params: str) -> bool:
    known = PARAMETER_SETS.get(params)
    return known is not None and known.integers


def decrypt(
    config: Mapping[str, str],
    *,
    partner: str,
    run: str,
    payload: Payload,
    spec: JobSpec | None = None,
    replies: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """Decrypt one aggregate (once per step) that this node sums itself.

    ``replies``: each contributor's signed reply digest (:func:`compliance.contribution.
    check_bindings`); ``payload.parts`` must hold exactly those contributors'
    ciphertexts, each hashing to its signed digest. The sum needs at least
    ``max(2, min_partners)`` distinct contributors (under client-level DP each
    carries 1/min_partners of the noise variance). Returns the meta (with the
    digests of what was decrypted, for the trail) and the sum: flooded in "ckks", exact
    limb sums in "ckks+masked".
    """
    he = payload.as_(DecryptParams).he
    step = he.step
    contributors = list(he.contributors)
    least = 2 if spec is None else max(2, spec.min_partners)
    if len(contributors) < least or len(set(contributors)) != len(contributors):
        raise CiphertextError(
            f"refusing to decrypt an aggregate of {len(set(contributors))} distinct partner(s) "
            f"(at least {least} needed)",
            hint="an aggregate of one partner would reveal that partner's vector; under "
            "client-level DP fewer than min_partners carry too little noise",
        )
    if replies is None or set(replies) != set(contributors):
        raise CiphertextError(
            "the decryption request's contributors are not the signed contributions",
            hint="every contributor's signed statement must come with the request; refused",
        )
    if set(payload.parts) != set(contributors):
        raise CiphertextError(
            f"the decryption request carries ciphertexts of {sorted(payload.parts)}, "
            f"not of each claimed contributor {sorted(contributors)}",
            hint="this node sums the contributors' signed ciphertexts itself and never "
            "decrypts a sum it cannot recompute (a forged aggregate); refused",
        )
    inputs = {name: digest_bytes(payload.parts[name]) for name in sorted(contributors)}
    if len(set(inputs.values())) != len(inputs):
        raise CiphertextError(
            "one ciphertext is claimed as the contribution of several partners",
            hint="fresh encryptions never repeat: this is one partner's vector counted twice; "
            "refused",
        )
    for name, digest in inputs.items():
        if digest != replies[name]:
            raise CiphertextError(
                f"the ciphertext sent as {name!r}'s is not the one {name!r} signed",
                hint="a ciphertext substituted or altered on the way; refused",
            )
    masked = spec is not None and spec.privacy.aggregation == "ckks+masked"
    if masked != (he.params == MASKED_PARAMS):  # limbs, the one integer set, only here
        raise CiphertextError(
            f"a {'ckks+masked' if masked else 'ckks'} job's sums are not decrypted under "
            f"the {he.params!r} CKKS parameters",
            hint="the masked mode's limbs, and nothing else, use "
            f"{MASKED_PARAMS!r}; refused before decrypting",
        )
    if not masked and he.params != FLOODED_PARAMS:
        raise CiphertextError(
            f"a 'ckks' job's sums are decrypted under {FLOODED_PARAMS!r} only, not {he.params!r}",
            hint="its flooding noise is sized for that set's scale; refused before decrypting",
        )
    if masked and len(contributors) > MAX_CKKS_PARTNERS:  # before the step is used up
        raise CiphertextError(
            f"{len(contributors)} contributions to a 'ckks+masked' sum, at most "
            f"{MAX_CKKS_PARTNERS} fit its limbs"
        )
    store = NodeKeyStore.from_config(config)
    if not masked and not store.dealt(run):
        # Two key holders decrypting {a, b, c} and {b, c} of one step would give a's
        # vector by difference, each within its own once-per-step rule: one decryptor.
        raise CiphertextError(
            "in a 'ckks' job only the partner that dealt the job key decrypts",
            hint="sums of different subsets of one step decrypted by two partners reveal a "
            "partner's vector by difference; 'ckks+masked' tolerates a lost key holder",
        )
    dealer = spec.privacy.key_dealer if spec is not None else ""
    keys = _job_keys(config, partner=partner, run=run, he=he, dealer=dealer)
    params, length = he.params, he.length
    total = EncryptedSum(keys.public(), params=params, length=length)
    for name in sorted(contributors):
        total.add(payload.parts[name])  # shape and freshness checked per ciphertext
    summed = total.serialize()
    if payload.ciphertext is not None and digest_bytes(payload.ciphertext) != digest_bytes(summed):
        raise CiphertextError(
            "the aggregate sent for decryption is not the sum of the signed contributions",
            hint="a forged aggregate (e.g. one partner's ciphertext plus an offset) would "
            "reveal that partner's vector; refused",
        )
    if masked:
        store.claim_decryption(run, step)
        values = keys.decrypt(summed, params=params, length=length, contributors=len(contributors))
        # Limb sums of one-time-padded words: exact integers, or refused.
        values = exact_limb_sums(values, summands=len(contributors))
    else:
        planned = _planned_decryptions(spec, partner=partner)
        store.claim_decryption(run, step)
        values = keys.decrypt(
            summed, params=params, length=length, contributors=len(contributors),
            flooding=planned,
        )  # fmt: skip
    meta = {"step": step, "contributors": contributors}
    return {**meta, "decrypted": {"sum": digest_bytes(summed), "inputs": inputs}}, values


def _planned_decryptions(spec: JobSpec | None, *, partner: str) -> int:
    """``Q`` of a plain "ckks" decryptor's flooding (:mod:`privacy.flooding`): the
    aggregates of the plan this node derives from the pinned spec, never the request."""
    if spec is None:
        raise CiphertextError(
            "a 'ckks' sum is decrypted only against the job's pinned spec",
            hint="the spec's plan bounds the decryptions that size the flooding noise; refused",
        )
    from fedcollab.client.run_contract import RequestPlan

    return max(1, len(RequestPlan.for_job(spec, partner=partner).aggregates))


def encrypt_masked(
    config: Mapping[str, str],
    *,
    partner: str,
    run: str,
    request: Payload,
    limbs: np.ndarray,
    dealer: str = "",
) -> tuple[bytes, dict[str, Any]]:
    """ "ckks+masked": encrypt the masked words' limbs (privacy.secagg_ckks) under the job
    key, always with the ``limbs`` parameters (exact integers up to 128 partners)."""
    he = request.as_(DataRequest).he
    if he is None or he.params != MASKED_PARAMS:
        raise CiphertextError(
            f"a 'ckks+masked' request must name the {MASKED_PARAMS!r} CKKS parameters",
            hint="other parameters cannot carry 32-bit limbs exactly; refused",
        )
    return encrypt_reply(
        config, partner=partner, run=run, request=request, vector=limbs, dealer=dealer,
        limbs=True,
    )  # fmt: skip


def erase(config: Mapping[str, str], *, run: str) -> None:
    NodeKeyStore.from_config(config).erase(run)
