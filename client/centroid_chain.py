"""A partner derives every k-means step's centroids itself: the coordinator chooses none.

Long module: one check (the derivation rule and the verification of a sum's evidence
in each aggregation mode), whose docstring states the attacks it answers and what
still leaks.

The run contract (:mod:`client.run_contract`) answers each planned Lloyd step once,
but within the plan a coordinator that chooses each step's centroids can still read
rows: it sweeps a boundary between two centroids so that one row at a time crosses
it, and the difference of two steps' cluster sums is that row (an audit of
2026-12-07 read 5 of 5 rows in 35 planned steps, every cluster of >= 5 rows). The
suppression of small clusters does not stop this; centroids the coordinator cannot
choose stop it (which rows exact sums still show is in the Notes; only DP bounds that).

So in a segmentation job without DP (:meth:`common.jobspec_sections.SegmentationSpec
.partners_derive`) the partner checks, before it computes anything, that the
centroids it is asked about are the ones the job's own rule gives:

* ``kmeans-seed-1``: the spec's seeded random candidates
  (:func:`protocols.kmeans.random_candidates`), drawn without looking at any data, and
  answered in one run only per node (:meth:`client.run_contract.RunContract.claim_once`:
  a red team of 2026-12-07 read a row, and a partner's cluster sums, from two runs of
  one spec over other cohorts; a job is run again with another ``segmentation.seed``), under
  the preprocessor the verified moments give (:meth:`protocols.preprocessing.Preprocessor
  .from_moments` of the layout this node answered, pinned at the moments): otherwise the
  coordinator would place the data under the candidates as it likes (red team of
  2026-12-07: two runs whose preprocessors differed in one mean moved one row across a
  cell boundary, and the two runs' sums gave that row);
* ``kmeans-seed-<i>``, ``lloyd-<t>`` and ``segment-profiles``: the Lloyd update
  (:func:`protocols.kmeans.update_centroids`; ``lloyd-1``:
  :func:`protocols.kmeans.seed_from_cells`) of the previous step's centroids by that
  step's sum, where the previous step is exactly the one before (``lloyd-1``: the last
  seeding step this node answered, as the seeding stops when its candidates stop
  moving; the profiles: the last Lloyd step) and its centroids are the ones this node
  answered it for (their digest is pinned in the contract when it answered);
* a seeding or Lloyd step whose derived centroids equal its predecessor's is refused:
  the steps converged, and an honest coordinator stops there, while a repeated step
  summed over fewer partners would give the missing ones' sums by difference (red team
  of 2026-12-07, for the seeding).

The request carries the previous step and the evidence of its sum
(:class:`common.messages.StepSum`), and the partner takes no sum on the
coordinator's word:

* ``ckks``: the key holder's receipt (:func:`compliance.contribution.sign_sum_receipt`)
  that these values are the sum of the signed answers to the request *this* node
  answered at that step, signed by the spec's ``key_dealer`` (every encrypted
  horizontal spec names one; only the key holder can decrypt).
* ``masked``: the partner repeats the unmasking itself (:func:`privacy.secagg_unmask
  .unmask_sum`) from the survivors' masked inputs, each signed by its sender under the
  step's session, their signed advertisements, the survivor set and the revealed shares,
  which must rebuild seeds and keys matching the signed commitments (Bonawitz et al.
  2017, "Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS).
* ``ckks+masked``: the key holder's receipt for the decrypted limb sums, then the same
  unmasking (:func:`privacy.secagg_unmask.unmask_total`).

A request whose centroids differ, or whose evidence does not verify, is refused
before anything is computed (and, as every refusal, logged in the partner's trail);
the step stays answered, so the coordinator cannot retry it.

Plaintext aggregation (the only one k-FED seeding goes with) gives no partner the other
partners' sums: there the coordinator would choose the centroids, so such a job without
DP is refused at its handshake unless the node was started with
``allow-unverified-centroids`` (:mod:`client.node_settings`; a simulation's partners,
all the user's own, are).

Notes
-----
*What the coordinator still chooses*: the spec (k, seed, candidates, steps: one draw per
run, within the contract's runs per day; another seed draws other candidates everywhere,
no small move); within a run, which partners are in each sum, but not one that leaves
out a partner it asks to build on it (each partner requires its own answer in the
previous sum: the receipt names the contributors, the unmasking the survivors); across
runs, each run's cohort and the vocabulary's values (open vocabularies must be sorted,
declared ones as declared, but a value no row holds still adds a dimension), which a red
team of 2026-12-07 used on two runs from the same candidates (c's exact cluster counts
from runs with and without c; rows moved across the seeding's cells by other cohorts, an
exact row for 85 of 200 seeds in a model of 3 x 300 rows), refused now (candidates once
per node; two runs converging to the same partition still have the same final centroids,
whose profiles over two cohorts differ by the missing partners'); and when to stop (it
may ask the profiles after any Lloyd step). Dropping a partner between two steps still
gives that partner's contribution approximately, by difference of the two sums, and
exactly where the partition repeats: the step whose partition equals its predecessor's
is answered (its centroids still moved), with c dropped it gives c's cluster sums and
counts by difference (red team of 2026-12-07: one step earlier than the repeated
centroids); a step that repeats its predecessor's centroids is refused here, but the
profiles, asked on the converged centroids, are not, so the sum over {a, b, c} at the
last Lloyd step and over {a, b} at the profiles give them too (each cluster >= 5 of c's
rows). This is the multi-round leakage of
secure aggregation (So et al. 2023, "Securing Secure Aggregation: Mitigating Multi-Round
Privacy Leakage in Federated Learning", AAAI), not addressed here. What partners learn
in exchange: each step's summed cluster counts and sums over all partners (before, only
the centroids, which are those sums' quotients).

*With one colluding partner* the coordinator chooses centroids again in every mode: the
colluder's own reply can carry any counts and sums, and a colluding key holder can sign
a receipt for any sum (in "ckks" only the spec's ``key_dealer``).

*What no rule here stops*: exact sums of consecutive Lloyd steps. When, between two
steps, exactly one row leaves one cluster for another (it happens near convergence),
the difference of the two steps' sums is that row's features, read by the
coordinator in every mode and now by every partner too (from the centroids alone,
whose two changed rows give the row and both cluster sizes, it already could).
``experiments/kmeans_modes.py`` counts such steps ("one-row steps"). The attacker
does not choose which row; only DP bounds it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numpy as np

from fedcollab.client import secagg_node
from fedcollab.client.audit import request_digest
from fedcollab.client.he_keys import load_peer_keys
from fedcollab.client.node_settings import NodeOptions
from fedcollab.client.run_contract import RunContract
from fedcollab.common.errors import CiphertextError, PolicyRefusal, ProtocolError
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.messages import KMeansStepRequest, StepSum
from fedcollab.common.schema import DatasetSchema
from fedcollab.common.serde import Payload
from fedcollab.compliance.contribution import check_bindings, check_sum_receipt
from fedcollab.compliance.trail import digest_vector
from fedcollab.privacy.fixed_point import join_high_low
from fedcollab.privacy.flooding import ckks_sum_width, contributors_of
from fedcollab.privacy.key_transport import PeerKeys
from fedcollab.privacy.secagg_ckks import masked_total
from fedcollab.privacy.secagg_messages import MaskedInput
from fedcollab.privacy.secagg_session import SecAggRefusal
from fedcollab.privacy.secagg_unmask import UnmaskedSum, unmask_sum, unmask_total
from fedcollab.privacy.secagg_wire import (
    load_advertisement,
    load_unmask_request,
    load_unmask_response,
)
from fedcollab.protocols import kmeans, preprocessing

__all__ = ["ACTIONS", "check_centroids", "check_derivable"]

#: The requests whose centroids a partner derives itself.
ACTIONS = frozenset({"query.kmeans_step", "query.segment_profile"})
_SEED = re.compile(r"kmeans-seed-([1-9][0-9]*)")
_LLOYD = re.compile(r"lloyd-([1-9][0-9]*)")


def _derives(spec: JobSpec) -> bool:
    return spec.task == "segmentation" and spec.segmentation.partners_derive(
        aggregation=spec.privacy.aggregation, dp=spec.privacy.dp
    )


def check_derivable(config: Mapping[str, str], spec: JobSpec) -> None:
    """Refuse a segmentation job without DP whose centroids this node cannot derive
    (plaintext aggregation, k-FED seeding), unless it allows them."""
    if spec.task != "segmentation" or spec.privacy.dp != "none" or _derives(spec):
        return
    if NodeOptions.of(config).allow_unverified_centroids:
        return
    raise PolicyRefusal(
        f"job {spec.name!r} is a segmentation job without DP in plaintext aggregation: "
        "this node cannot derive its centroids itself (no partner sees the others' sums), "
        "so the coordinator would choose every step's centroids and could read rows by "
        "differencing",
        hint="use privacy.aggregation = 'ckks+masked' (or 'masked', 'ckks'), or privacy.dp; "
        "or start the node with --allow-unverified-centroids",
    )


def check_centroids(
    contract: RunContract,
    config: Mapping[str, str],
    spec: JobSpec,
    *,
    me: str,
    action: str,
    step: str,
    run: str,
    payload: Payload,
) -> None:
    """Refuse a k-means request whose centroids are not the job's own rule applied to
    verified sums (module docstring); pin the accepted centroids' digest for the next
    step. Called after the step was claimed (:func:`client.admission.check_plan`)."""
    if action == "query.handshake":
        check_derivable(config, spec)
        return
    if action not in ACTIONS or spec.task != "segmentation" or spec.privacy.dp != "none":
        return
    if not _derives(spec):
        check_derivable(config, spec)  # a run pinned before the node's setting changed
        return
    body = payload.as_(KMeansStepRequest)
    got = np.asarray(body.centroids, dtype=np.float64)
    pre = preprocessing.Preprocessor.from_dict(body.preprocessor.model_dump())
    expected = _expected(contract, config, spec, me=me, step=step, run=run, body=body, pre=pre)
    if got.shape != expected.shape or not np.array_equal(got, expected):
        raise ProtocolError(
            f"the centroids of step {step!r} are not the ones this node derives from the "
            "job's seed and the previous step's verified sum",
            hint="the coordinator chose its own centroids, which could isolate rows by "
            "differencing; refused and logged",
        )
    contract.pin_value(run, f"centroids:{step}", digest_vector(got.ravel()))


def _predecessor(contract: RunContract, *, step: str, run: str) -> str:
    if (m := _SEED.fullmatch(step)) is not None:
        i = int(m.group(1))
        return "moments" if i == 1 else f"kmeans-seed-{i - 1}"
    if (m := _LLOYD.fullmatch(step)) is not None:
        t = int(m.group(1))
        # The seeding stops early when its candidates stop moving: its last step answered.
        return _last(contract, run, _SEED, "kmeans-seed") if t == 1 else f"lloyd-{t - 1}"
    if step == "segment-profiles":
        return _last(contract, run, _LLOYD, "lloyd")
    raise ProtocolError(f"no k-means step is named {step!r}", hint="refused")


def _last(contract: RunContract, run: str, pattern: re.Pattern[str], kind: str) -> str:
    """The last step of ``kind`` this node answered in ``run``."""
    answered = [
        int(m.group(1))
        for action, done in contract.answered(run)
        if action == "query.kmeans_step" and (m := pattern.fullmatch(done)) is not None
    ]
    if not answered:
        raise ProtocolError(
            f"a k-means step asked before this node answered any {kind} step",
            hint="its centroids come from the last such step; refused",
        )
    return f"{kind}-{max(answered)}"


def _expected(
    contract: RunContract,
    config: Mapping[str, str],
    spec: JobSpec,
    *,
    me: str,
    step: str,
    run: str,
    body: KMeansStepRequest,
    pre: preprocessing.Preprocessor,
) -> np.ndarray:
    s = spec.segmentation
    d = pre.n_features
    previous = _predecessor(contract, step=step, run=run)
    evidence = body.previous
    if evidence is None or evidence.step != previous:
        raise ProtocolError(
            f"step {step!r} must come with the sum of step {previous!r}",
            hint="each step's centroids are derived from the step before it; refused",
        )
    own = contract.request_of(run, previous)
    if own is None:
        raise ProtocolError(f"this node did not answer step {previous!r}", hint="refused")
    if previous == "moments":
        _check_preprocessor(contract, config, spec, evidence, body, me=me, run=run, own=own)
        candidates = kmeans.random_candidates(s.seed_candidates, n_features=d, seed=s.seed)
        # Once per node across runs: two runs from the same candidates under another
        # cohort or preprocessor gave rows, and a partner's sums, by difference.
        contract.claim_once(
            run, f"kmeans-candidates:{digest_vector(candidates.ravel())}:{d}",
            hint="a segmentation job's seeding candidates are answered in one run only: "
            "set another segmentation.seed to run the job again",
        )  # fmt: skip
        return candidates
    before = np.asarray(evidence.centroids, dtype=np.float64)
    pinned = contract.pinned_value(run, f"centroids:{previous}")
    if evidence.centroids is None or pinned != digest_vector(before.ravel()):
        raise ProtocolError(
            f"the centroids sent as step {previous!r}'s are not the ones this node answered",
            hint="refused",
        )
    length = kmeans.cluster_vector_length(k=before.shape[0], n_features=d)
    with _unmasking_of(previous):
        summed = _verified_sum(config, spec, evidence, me=me, run=run, own=own, length=length)
    if step == "lloyd-1":
        return kmeans.seed_from_cells(summed, m=before.shape[0], k=s.k, n_features=d, seed=s.seed)
    after = kmeans.update_centroids(summed, before)[0]
    width = ckks_sum_width(
        aggregation=spec.privacy.aggregation,
        contributors=contributors_of(evidence.receipt),
        decryptions=s.summed_decryptions,
        length=length,
    )
    noise = kmeans.flooded_shift(summed, before, width=width)
    if step != "segment-profiles" and float(np.max(np.abs(after - before))) <= max(
        s.tolerance, noise
    ):
        # Converged: an honest coordinator stops where the centroids move no more than
        # the spec's tolerance (Lloyd steps and seeding alike). Another step on the same
        # partition, summed over fewer partners, would give the missing partners' sums by
        # difference. Within the tolerance, not only exactly: a plain "ckks" sum is
        # flooded (privacy.flooding), so its centroids never repeat exactly.
        raise ProtocolError(
            f"step {step!r} repeats the centroids of {previous!r} within the spec's "
            f"tolerance ({s.tolerance:g}) or the flooding noise ({noise:.3g}): the steps "
            "converged",
            hint="the next stage (Lloyd steps, then the segment profiles) comes next; a "
            "repeated step over another set of partners would single the others out; refused",
        )
    return after


def _check_preprocessor(
    contract: RunContract,
    config: Mapping[str, str],
    spec: JobSpec,
    evidence: StepSum,
    body: KMeansStepRequest,
    *,
    me: str,
    run: str,
    own: str,
) -> None:
    """The first step's preprocessor must be the one the verified moments give: the
    coordinator does not place the data under the spec's candidates (red team of
    2026-12-07: two runs whose preprocessors differed in one mean moved one row across a
    candidate boundary, and the two runs' sums gave that row)."""
    layout = evidence.layout
    pinned = contract.pinned_value(run, "layout")
    if layout is None or pinned != request_digest({"layout": layout.model_dump()}, None):
        raise ProtocolError(
            "the moments layout sent is not the one this node answered", hint="refused"
        )
    # Categorical columns in the data contract's order, as the moments were counted
    # (client.handlers.moments: the wire's JSON object is key-sorted).
    features = DatasetSchema.model_validate(spec.data_schema).categorical_features
    order = [f.name for f in features]
    if set(order) != set(layout.categorical):
        raise ProtocolError("the moments layout's columns are not the schema's", hint="refused")
    for f in features:
        values = layout.categorical[f.name]
        # Declared vocabularies as declared, open ones sorted (protocols.preprocessing
        # .merge_vocabularies): another order embeds the rows otherwise under the same
        # candidates (red team of 2026-12-07).
        declared = None if f.vocabulary is None else [str(v) for v in f.vocabulary]
        if values != (declared if declared is not None else sorted(set(values))):
            raise ProtocolError(
                f"the vocabulary of {f.name!r} is not in its canonical order", hint="refused"
            )
    columns = preprocessing.MomentsLayout(
        numeric_names=tuple(layout.numeric),
        categorical_vocab={k: tuple(layout.categorical[k]) for k in order},
        boolean_names=tuple(layout.boolean),
    )
    with _unmasking_of(evidence.step):
        summed = _verified_sum(
            config, spec, evidence, me=me, run=run, own=own, length=columns.length
        )
    derived = preprocessing.Preprocessor.from_moments(columns, summed).to_dict()
    if _canonical(derived) != _canonical(body.preprocessor.model_dump()):
        raise ProtocolError(
            "the preprocessor is not the one this node derives from the verified moments",
            hint="the coordinator chose its own standardisation, which moves rows across "
            "the seeding's cells; refused",
        )


def _canonical(value: object) -> str:
    return str(json.dumps(value, sort_keys=True, separators=(",", ":")))


def _array(text: str | None, what: str) -> np.ndarray:
    try:
        raw = base64.b64decode(text or "", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"{what} is not base64", hint="refused") from exc
    if not raw or len(raw) % 8:
        raise ProtocolError(f"{what} is not a float64 vector", hint="refused")
    return np.frombuffer(raw, dtype="<f8").astype(np.float64)


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError("a field of the sum's evidence is not base64", hint="refused") from exc


@contextmanager
def _unmasking_of(step: str) -> Iterator[None]:
    """A masked sum's evidence that does not verify, as the CiphertextError it is."""
    try:
        yield
    except SecAggRefusal as exc:
        raise CiphertextError(
            f"the unmasking of step {step!r} does not verify: {exc.message}",
            hint="the coordinator altered the inputs of the sum; refused",
        ) from exc


def _verified_sum(
    config: Mapping[str, str],
    spec: JobSpec,
    evidence: StepSum,
    *,
    me: str,
    run: str,
    own: str,
    length: int,
) -> np.ndarray:
    peers = load_peer_keys(config)
    aggregation = spec.privacy.aggregation
    values = None
    if aggregation in ("ckks", "ckks+masked"):
        values = _array(evidence.values, "the decrypted sum")
        signer = check_sum_receipt(
            evidence.receipt, peers=peers, run=run, step=evidence.step, request=own,
            values=values, member=me,
        )  # fmt: skip
        dealer = spec.privacy.key_dealer
        if aggregation == "ckks" and signer != dealer:
            # Only the dealer decrypts a plain "ckks" job's sums (client/encryption.py).
            raise CiphertextError(
                f"the sum receipt is signed by {signer!r}, not by the job's key dealer {dealer!r}",
                hint="no other partner decrypts a 'ckks' job's sums; refused",
            )
        if aggregation == "ckks":
            if values.size != length:
                raise ProtocolError("the decrypted sum has the wrong length", hint="refused")
            return values
    if evidence.masks is None:
        raise ProtocolError(
            f"a masked step's sum ({evidence.step!r}) came without its unmasking",
            hint="refused",
        )
    # The survivors answered the request this node answered (their signed statements),
    # not another branch of requests the coordinator ran beside it, and this node is one.
    survivors = load_unmask_request(_unb64(evidence.masks.request)).survivors
    if me not in survivors:
        raise CiphertextError(
            f"the sum of step {evidence.step!r} leaves out this node's own answer",
            hint="a sum without this partner, while it is asked to go on from it, lets the "
            "coordinator choose whose data places the next step; refused",
        )
    check_bindings(
        evidence.masks.bindings, peers=peers, run=run, step=evidence.step, request=own,
        contributors=survivors,
    )  # fmt: skip
    result = _unmasked(config, spec, evidence, me=me, run=run, peers=peers, limbs=values)
    words = result.values
    return join_high_low(words) if words.size == 2 * length else words


def _unmasked(
    config: Mapping[str, str],
    spec: JobSpec,
    evidence: StepSum,
    *,
    me: str,
    run: str,
    peers: PeerKeys,
    limbs: np.ndarray | None,
) -> UnmaskedSum:
    masks = evidence.masks
    assert masks is not None  # checked by the caller
    session = secagg_node.pinned_config(config, spec, run=run, step=evidence.step, me=me)
    adverts = {n: load_advertisement(_unb64(a)) for n, a in masks.adverts.items()}
    request = load_unmask_request(_unb64(masks.request))
    responses = {n: load_unmask_response(_unb64(r)) for n, r in masks.responses.items()}
    for name, resp in responses.items():
        if resp.partner != name:
            raise SecAggRefusal(f"{resp.partner!r}'s shares filed under {name!r}")
    u2 = set(masks.u2)
    if not u2 <= set(session.cohort) or not u2 <= set(adverts):
        raise SecAggRefusal("U2 holds partners outside this step's advertised cohort")
    if limbs is not None:
        return unmask_total(
            session, total=masked_total(limbs, length=session.length), adverts=adverts,
            u2=u2, request=request, responses=responses, peers=peers,
        )  # fmt: skip
    masked = {n: MaskedInput.from_bytes(_unb64(m)) for n, m in masks.masked.items()}
    return unmask_sum(
        session, adverts=adverts, u2=u2, masked=masked, request=request,
        responses=responses, peers=peers,
    )  # fmt: skip
