"""The data requests of horizontal jobs: what a partner computes statistics, updates and
evaluations for (client.handlers), with the protection fields any of them may carry.

Senders: coordinator/membership.py (handshake), coordinator/preprocess.py (moments),
coordinator/prediction.py (FedAvg rounds, evaluation, permutation importance),
coordinator/segmentation.py (k-means seeding and steps, segment profiles); the
roster (coordinator/roster.py) adds ``he`` under encryption and ``secagg`` under masks.
The model or global weights travel as the message's vector, not in the meta.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, JsonValue, field_validator

from fedcollab.common.messages.base import (
    MAX_ITEMS,
    MAX_NAME,
    MAX_PARTNERS,
    MAX_ROUNDS,
    Blob,
    Closed,
    Finite,
    Name,
    Strict,
)

__all__ = [
    "ContributionBinding",
    "DataRequest",
    "EvaluateRequest",
    "FedAvgRequest",
    "HandshakeRequest",
    "HeRequest",
    "KMeansSeedRequest",
    "KMeansStepRequest",
    "MomentsLayout",
    "MomentsRequest",
    "PermutationRequest",
    "PreprocessedRequest",
    "PreprocessorMeta",
    "SecAggInbox",
    "SegmentProfileRequest",
    "StepSum",
    "StepSumMasks",
    "SumReceipt",
]


class HeRequest(Strict):
    """An encrypted job's parameters (coordinator.encryption.HeSession.request_meta)."""

    key_digest: Annotated[str, Field(max_length=MAX_NAME)]
    params: Annotated[str, Field(max_length=MAX_NAME)]
    #: The job key sealed to this partner, on its first request (privacy.key_transport).
    sealed: Annotated[dict[str, Blob], Field(max_length=16)] | None = None


class SecAggInbox(Strict):
    """A masked job's data request: the share envelopes sealed to this partner."""

    inbox: Annotated[dict[Name, Blob], Field(max_length=MAX_PARTNERS)]


class DataRequest(Strict):
    """What a data request adds under encryption (``he``) or masks (``secagg``)."""

    he: HeRequest | None = None
    secagg: SecAggInbox | None = None


class HandshakeRequest(Strict):
    """``query.handshake``: nothing but the head (the partner answers from the spec)."""


class MomentsLayout(Strict):
    """protocols.preprocessing.MomentsLayout as coordinator/preprocess.py sends it."""

    numeric: Annotated[list[Name], Field(max_length=MAX_ITEMS)]
    categorical: Annotated[
        dict[Name, Annotated[list[str], Field(max_length=MAX_ITEMS)]], Field(max_length=MAX_ITEMS)
    ]
    boolean: Annotated[list[Name], Field(max_length=MAX_ITEMS)]


class MomentsRequest(DataRequest):
    """``query.moments``: the column layout to count over."""

    layout: MomentsLayout


class _Numeric(Closed):
    name: Name
    mean: Finite
    std: Finite


class _Categorical(Closed):
    name: Name
    vocabulary: Annotated[list[str], Field(max_length=MAX_ITEMS)]


class _Boolean(Closed):
    name: Name
    mean: Finite


class PreprocessorMeta(Closed):
    """protocols.preprocessing.Preprocessor.to_dict, typed (``from_dict`` rebuilds it)."""

    format: Annotated[str, Field(max_length=MAX_NAME)]
    numeric: Annotated[list[_Numeric], Field(max_length=MAX_ITEMS)]
    categorical: Annotated[list[_Categorical], Field(max_length=MAX_ITEMS)]
    boolean: Annotated[list[_Boolean], Field(max_length=MAX_ITEMS)]


class PreprocessedRequest(DataRequest):
    """A request that names the coordinator's preprocessor (pinned once per run)."""

    preprocessor: PreprocessorMeta


class FedAvgRequest(PreprocessedRequest):
    """``train.fedavg``: a round (its step is ``round-<round>``); the model is the vector."""

    round: Annotated[int, Field(ge=1, le=MAX_ROUNDS)]


class EvaluateRequest(PreprocessedRequest):
    """``evaluate.fedavg``: the model to evaluate is the vector."""


class PermutationRequest(PreprocessedRequest):
    """``evaluate.permutation``: the released model is the vector."""


class KMeansSeedRequest(PreprocessedRequest):
    """``query.kmeans_seed`` (k-FED seeding)."""


Centroids = Annotated[
    list[Annotated[list[Finite], Field(min_length=1, max_length=MAX_ITEMS)]],
    Field(min_length=1, max_length=MAX_ITEMS),
]


class ContributionBinding(Strict):
    """A contributor's signed statement (compliance.contribution.sign_contribution); its
    statement stays a JSON object: the signature is over its canonical JSON."""

    statement: Annotated[dict[str, JsonValue], Field(max_length=64)]
    signature: Blob


class SumReceipt(Strict):
    """A key holder's signed statement of the sum it decrypted
    (compliance.contribution.sign_sum_receipt)."""

    statement: Annotated[dict[str, JsonValue], Field(max_length=64)]
    signature: Blob


class StepSumMasks(Strict):
    """What the coordinator removed a masked step's masks with (privacy.secagg_unmask):
    every field is signed by the partner it comes from, or checked against a signed
    commitment, so each partner recomputes the unmasked sum itself."""

    u2: Annotated[list[Name], Field(max_length=MAX_PARTNERS)]
    adverts: Annotated[dict[Name, Blob], Field(max_length=MAX_PARTNERS)]
    #: "masked" jobs: each survivor's signed masked input ("ckks+masked": the receipt's
    #: decrypted limb sums instead).
    masked: Annotated[dict[Name, Blob], Field(max_length=MAX_PARTNERS)] = {}
    request: Blob
    responses: Annotated[dict[Name, Blob], Field(max_length=MAX_PARTNERS)]
    #: Each survivor's signed statement of the request it answered (the survivors'
    #: order): the sum is over answers to the request this partner answered.
    bindings: Annotated[list[ContributionBinding | None], Field(max_length=MAX_PARTNERS)]


class StepSum(Strict):
    """The previous step of a k-means chain and the evidence of its sum: the partner
    derives this request's centroids (and, from the moments, the preprocessor of the first
    step) from them itself (client.centroid_chain)."""

    step: Name
    #: That step's centroids (None for the moments).
    centroids: Centroids | None = None
    #: The moments' column layout (the moments only).
    layout: MomentsLayout | None = None
    #: The decrypted values (float64, little-endian, base64): the sum in "ckks" jobs,
    #: the masked limb sums in "ckks+masked" jobs; with the key holder's receipt.
    values: Blob | None = None
    receipt: SumReceipt | None = None
    masks: StepSumMasks | None = None


class KMeansStepRequest(PreprocessedRequest):
    """``query.kmeans_step``: a Lloyd step from these centroids (k rows of d values).

    ``previous``: in a job without DP whose sums partners can verify, the step these
    centroids were derived from, with the evidence of its sum (None at the first step)."""

    centroids: Centroids
    previous: StepSum | None = None

    @field_validator("centroids")
    @classmethod
    def _rectangular(cls, rows: list[list[float]]) -> list[list[float]]:
        if len({len(row) for row in rows}) != 1:
            raise ValueError("centroids must be k rows of the same length")
        return rows


class SegmentProfileRequest(KMeansStepRequest):
    """``query.segment_profile``: profiles of the segments of these final centroids."""
