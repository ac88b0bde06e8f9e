"""The requests a partner receives, one strict pydantic model per kind (issue 17).

A partner treats every request as hostile: :meth:`common.serde.Payload.as_` checks a
decoded message's meta against its kind's model once, and the partner's code reads
typed attributes instead of re-deciding types at each ``meta[...]``. A request that
does not fit (a wrong type, a missing field, a value out of bounds) raises
:class:`~common.errors.ProtocolError`, which the partner turns into a logged refusal
(client.client_app). The wire format is unchanged: these models only read it. The
other direction, the replies the coordinator receives, is typed in
:mod:`common.messages.replies`.

Every request carries :class:`RequestHead` (``job``, ``run``); its body is the model
:func:`request_model` names for the action (Flower ``message_type``) and step:

=========================  ==============================  ===========================
action                     model                           module (sender, coordinator/)
=========================  ==============================  ===========================
``query.handshake``        :class:`HandshakeRequest`       statistics (membership.py)
``query.moments``          :class:`MomentsRequest`         statistics (preprocess.py)
``train.fedavg``           :class:`FedAvgRequest`          statistics (prediction.py)
``evaluate.fedavg``        :class:`EvaluateRequest`        statistics (prediction.py)
``evaluate.permutation``   :class:`PermutationRequest`     statistics (prediction.py)
``query.kmeans_seed``      :class:`KMeansSeedRequest`      statistics (segmentation.py)
``query.kmeans_step``      :class:`KMeansStepRequest`      statistics (segmentation.py)
``query.segment_profile``  :class:`SegmentProfileRequest`  statistics (segmentation.py)
``query.he_keygen``        :class:`KeygenRequest`          protection (roster.py)
``query.he_decrypt``       :class:`DecryptRequest`         protection (roster.py)
``query.secagg``           one per stage (``SecAgg*``)     protection (roster.py)
``query.cosign``           :class:`CosignRequest`          protection (cosign.py)
``query.vertical``         one per phase                   vertical (vertical.py)
=========================  ==============================  ===========================

Notes
-----
Unknown top-level keys are ignored (``extra="ignore"``), not refused: the coordinator
composes requests from shared parts (roster.py adds ``he`` and ``secagg`` to any data
request; vertical.py's ``_WithOffers`` adds ``offers`` and ``mask_offers`` to every
phase), and tests/adversarial/test_redteam_contract.py replays a handshake carrying
another request's fields and expects the same answer. Ignoring is safe because nothing
is read from an ignored key, and the digests a partner logs and signs for a request
(client.audit, compliance.contribution) cover its whole meta, unknown keys included. A
nested object with a single builder (the preprocessor) refuses unknown keys.
"""

from __future__ import annotations

from pydantic import BaseModel

from fedcollab.common.errors import ProtocolError
from fedcollab.common.messages.base import RequestHead
from fedcollab.common.messages.protection import (
    SECAGG_STAGES,
    ContributionBinding,
    CosignRequest,
    DecryptParams,
    DecryptRequest,
    KeygenRequest,
    SecAggRequest,
    SecAggShareRequest,
    SecAggSignRequest,
    SecAggUnmaskRequest,
)
from fedcollab.common.messages.statistics import (
    DataRequest,
    EvaluateRequest,
    FedAvgRequest,
    HandshakeRequest,
    HeRequest,
    KMeansSeedRequest,
    KMeansStepRequest,
    MomentsRequest,
    PermutationRequest,
    PreprocessedRequest,
    SegmentProfileRequest,
    StepSum,
    StepSumMasks,
    SumReceipt,
)
from fedcollab.common.messages.vertical import VerticalBase, VerticalRequest

__all__ = [
    "ContributionBinding",
    "CosignRequest",
    "DataRequest",
    "DecryptParams",
    "DecryptRequest",
    "EvaluateRequest",
    "FedAvgRequest",
    "HandshakeRequest",
    "HeRequest",
    "KMeansSeedRequest",
    "KMeansStepRequest",
    "KeygenRequest",
    "MomentsRequest",
    "PermutationRequest",
    "PreprocessedRequest",
    "RequestHead",
    "SecAggRequest",
    "SecAggShareRequest",
    "SecAggSignRequest",
    "SecAggUnmaskRequest",
    "SegmentProfileRequest",
    "StepSum",
    "StepSumMasks",
    "SumReceipt",
    "VerticalBase",
    "VerticalRequest",
    "request_model",
]

_BY_ACTION: dict[str, type[BaseModel]] = {
    "query.handshake": HandshakeRequest,
    "query.moments": MomentsRequest,
    "train.fedavg": FedAvgRequest,
    "evaluate.fedavg": EvaluateRequest,
    "evaluate.permutation": PermutationRequest,
    "query.kmeans_seed": KMeansSeedRequest,
    "query.kmeans_step": KMeansStepRequest,
    "query.segment_profile": SegmentProfileRequest,
    "query.he_keygen": KeygenRequest,
    "query.he_decrypt": DecryptRequest,
    "query.cosign": CosignRequest,
    "query.vertical": VerticalRequest,
}


def request_model(action: str, step: str) -> type[BaseModel]:
    """The model of a request ``action`` at ``step`` (``query.secagg``: by the step's
    stage suffix); ProtocolError for a kind no partner answers."""
    if action == "query.secagg":
        stage = step.rpartition(".secagg-")[2]
        if stage in SECAGG_STAGES:
            return SECAGG_STAGES[stage]
    elif action in _BY_ACTION:
        return _BY_ACTION[action]
    raise ProtocolError(
        f"no request of kind {action!r} at step {step!r}",
        hint="the coordinator runs another fedcollab version, or asks for what no partner "
        "answers; refused",
    )
