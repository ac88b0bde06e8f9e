"""The replies the coordinator receives, one strict pydantic model per kind (issue 17).

The other direction of :mod:`common.messages`: a partner's reply is as untrusted at
the coordinator as a request is at the partner. :meth:`common.serde.Payload.as_`
checks a reply's meta against its kind's model once, and the coordinator reads typed
attributes; a reply that does not fit raises :class:`~common.errors.ProtocolError`
(inside a broadcast's reply callback: that partner is dropped for the step with
"malformed reply", coordinator.broadcast). Each field is bounded as the partner's code
produces it (the builder is named in each model's docstring).

=================================  ==========================  ============================
reply to                           model                       read by (coordinator/)
=================================  ==========================  ============================
``query.handshake``                :class:`HandshakeReply`     membership.py
``train.fedavg``                   :class:`FedAvgReply`        prediction.py
other data requests                :class:`DataReply`          (roster.py: ``he``, ``binding``)
``query.he_keygen``                :class:`KeygenReply`        encryption.py
``query.cosign``                   :class:`CosignReply`        cosign.py
``query.secagg`` (by stage)        ``SecAgg*Reply``            (secagg_round.py: not yet)
``query.vertical`` (by phase)      ``Psi*``, ``Vertical*``     vertical.py
=================================  ==========================  ============================

Notes
-----
Unknown top-level keys are ignored, as in requests: the partner adds ``binding`` to
any reply that carries data and ``he`` to an encrypted one, and the digests the
coordinator logs cover the meta as received. Nested objects with one builder refuse
unknown keys (:class:`~common.messages.base.Closed`). A transport or masking key offer
stays a JSON object of at most :data:`MAX_OFFER_KEYS` keys: its fields are
privacy.key_transport's to check (verify_offer at the key dealer, which rejects that
partner alone); an offer that is not an object is refused here, at the handshake.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, JsonValue, field_validator

from fedcollab.common.messages.base import (
    MAX_ITEMS,
    MAX_NAME,
    MAX_PARTNERS,
    Blob,
    Closed,
    Finite,
    Length,
    Name,
    Strict,
)
from fedcollab.common.messages.protection import ContributionBinding

__all__ = [
    "MAX_OFFER_KEYS",
    "Alignment",
    "CosignReply",
    "DataReply",
    "FedAvgReply",
    "HandshakeReply",
    "HeReply",
    "KeygenReply",
    "Offer",
    "PartyExplanation",
    "PsiSizeReply",
    "Reply",
    "SecAggAdvertReply",
    "SecAggResponseReply",
    "SecAggSignatureReply",
    "VerticalAlignmentReply",
    "VerticalFeatureEvalReply",
    "VerticalLabelEvalReply",
    "VerticalLabelStepReply",
    "VerticalMetrics",
    "VerticalPredictReply",
]

#: A signed key offer's keys (privacy.key_transport.transport_offer: two; the mask
#: offer of client.vertical: as many): room for versions, never a large object.
MAX_OFFER_KEYS = 16
#: A dealer's reason for rejecting one partner's offer (a CiphertextError's message).
MAX_REASON = 4096

Offer = Annotated[dict[str, JsonValue], Field(max_length=MAX_OFFER_KEYS)]
Count = Annotated[int, Field(ge=0, le=2**31 - 1)]


class Reply(Strict):
    """A reply's strict base: what :meth:`common.serde.Payload.as_` says when one does
    not fit (the partner's, not the coordinator's, version or conduct is in question)."""

    refusal_hint: ClassVar[str] = (
        "the partner runs another fedcollab version, or misbehaves; its reply is not used"
    )


class HandshakeReply(Reply):
    """``query.handshake`` (client.handlers.handshake, client.actions
    ._handshake_offers): who the partner is, its dataset, the open vocabularies' values
    it holds (not in vertical jobs), its row count (plain jobs only), the size of the
    checkpoint it last cosigned and its signed per-run key offers."""

    partner: Name
    dataset: Name
    dataset_hash: Name
    schema_fingerprint: Name
    n_rows: Length | None = None
    vocab: Annotated[
        dict[Name, Annotated[list[str], Field(max_length=MAX_ITEMS)]], Field(max_length=MAX_ITEMS)
    ] = {}
    #: None: this partner never cosigned (client.audit.PartnerAudit.cosigned_size).
    cosigned_size: Annotated[int, Field(ge=0)] | None = None
    he_offer: Offer | None = None
    mask_offer: Offer | None = None


class HeReply(Closed):
    """An encrypted reply's parameters (client.encryption.encrypt_reply)."""

    key_digest: Annotated[str, Field(max_length=MAX_NAME)]
    params: Annotated[str, Field(max_length=MAX_NAME)]
    length: Length


class DataReply(Reply):
    """A reply to a data request (client.actions.answer): its vector, ciphertext or
    masked parts travel outside the meta; the meta may add the encryption parameters
    and this partner's signed contribution statement (compliance.contribution)."""

    he: HeReply | None = None
    binding: ContributionBinding | None = None


class FedAvgReply(DataReply):
    """``train.fedavg`` (client.handlers.train): the local training loss, in plain jobs
    only (not under DP or masks)."""

    train_loss: Finite | None = None


class KeygenReply(Reply):
    """``query.he_keygen`` (client.encryption.keygen): the job's public keys, one sealed
    copy of the secret key per accepted partner, and why the others were rejected."""

    public: Blob
    key_digest: Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
    sealed: Annotated[
        dict[Name, Annotated[dict[str, Blob], Field(max_length=MAX_OFFER_KEYS)]],
        Field(max_length=MAX_PARTNERS),
    ]
    rejected: Annotated[
        dict[Name, Annotated[str, Field(max_length=MAX_REASON)]], Field(max_length=MAX_PARTNERS)
    ] = {}


class CosignReply(Reply):
    """``query.cosign`` (client.actions._cosign): the partner's cosignature note."""

    cosigned: Annotated[str, Field(min_length=1, max_length=1 << 20)]


class SecAggAdvertReply(Reply):
    """``<step>.secagg-advertise`` (client.secagg_node.handle): the signed key
    advertisement, base64 (privacy.secagg ``dump``)."""

    advert: Annotated[Blob, Field(min_length=1)]


class SecAggSignatureReply(Reply):
    """``<step>.secagg-sign``: the partner's signature of the survivor set, base64."""

    signature: Annotated[Blob, Field(min_length=1)]


class SecAggResponseReply(Reply):
    """``<step>.secagg-unmask``: the partner's unmasking response, base64. (The
    ``share`` stage replies with envelopes in the parts and an empty meta.)"""

    response: Annotated[Blob, Field(min_length=1)]


# -- vertical jobs (client.vertical and the modules it dispatches to) ---------------


class PsiSizeReply(Reply):
    """CM20 PSI: a party's set size (``psi_salt`` at the label holder,
    ``oprf_size`` at a feature party; client.vertical, client.vertical_oprf)."""

    n_values: Annotated[int, Field(ge=0, le=1 << 32)]


class Alignment(Closed):
    """The intersection's size, and the label holder's split of it (training jobs)."""

    intersection: Count
    train_rows: Count | None = None
    test_rows: Count | None = None
    #: Logistic regression under label DP (client.vertical_training.label_setup).
    label_noise_multiplier: Finite | None = None


class VerticalAlignmentReply(Reply):
    """``intersect`` (client.vertical, vertical_training/vertical_split.label_setup)."""

    alignment: Alignment


class VerticalLabelStepReply(Reply):
    """``label_step``: the split model's training loss (client.vertical_split); a
    logistic regression keeps it at the label holder (None, client.vertical_training)."""

    loss: Finite | None


class VerticalPredictReply(Reply):
    """``label_predict`` (client.vertical_inference.label_predict): how many users were
    scored, of how many queried."""

    scored: Count
    queried: Count


class PartyExplanation(Closed):
    """protocols.vertical_explain.PartyExplanation.to_dict as the party allows it to be
    shared (``top_features`` empty unless ``shared``)."""

    party: Name
    importance: Finite
    top_features: Annotated[list[list[str | Finite]], Field(max_length=MAX_ITEMS)]
    shared: bool

    @field_validator("top_features")
    @classmethod
    def _pairs(cls, pairs: list[list[str | float]]) -> list[list[str | float]]:
        for pair in pairs:
            if (
                len(pair) != 2
                or not isinstance(pair[0], str)
                or not 0 < len(pair[0]) <= MAX_NAME
                or not isinstance(pair[1], float)
            ):
                raise ValueError("top_features must be [feature name, finite score] pairs")
        return pairs


class VerticalFeatureEvalReply(Reply):
    """``eval`` at a feature party (client.vertical_training, client.vertical_split)."""

    explanation: PartyExplanation


class VerticalMetrics(Closed):
    """The label holder's test metrics (client.vertical_training.label_eval; the split
    model adds its embedding noise and each party's AUC drop, client.vertical_split)."""

    #: None when the test rows hold one class only.
    test_auc: Finite | None
    test_rows: Count
    test_accuracy: Finite
    embedding_noise_multiplier: Finite | None = None
    party_importance_auc_drop: Annotated[dict[Name, Finite], Field(max_length=MAX_PARTNERS)] = {}


class VerticalLabelEvalReply(VerticalFeatureEvalReply):
    """``label_eval``: the label holder's explanation and the test metrics."""

    metrics: VerticalMetrics
