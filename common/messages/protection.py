"""The requests around the data requests: the encryption key ceremony and the verified
decryption of an aggregate (client.encryption), the stages of masked aggregation
(client.secagg_node) and the cosigning of the coordinator's audit checkpoint
(client.audit).

Senders: coordinator/roster.py (``query.he_keygen``, ``query.he_decrypt``,
``query.secagg``) and coordinator/cosign.py (``query.cosign``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from fedcollab.common.messages.base import (
    MAX_ITEMS,
    MAX_PARTNERS,
    Blob,
    Length,
    Name,
    Offers,
    Partners,
    Strict,
)
from fedcollab.common.messages.statistics import ContributionBinding, HeRequest

__all__ = [
    "SECAGG_STAGES",
    "ContributionBinding",
    "CosignBody",
    "CosignRequest",
    "DecryptHe",
    "DecryptParams",
    "DecryptRequest",
    "KeygenRequest",
    "SecAggRequest",
    "SecAggShareRequest",
    "SecAggSignRequest",
    "SecAggUnmaskRequest",
]


class KeygenRequest(Strict):
    """``query.he_keygen`` (the key dealer only): every partner's signed transport key."""

    offers: Offers


class DecryptHe(HeRequest):
    """Which aggregate to decrypt: its step, its contributors and its length."""

    step: Name
    contributors: Partners
    length: Length


class DecryptParams(Strict):
    """What client.encryption.decrypt reads of a decryption request."""

    he: DecryptHe


class DecryptRequest(DecryptParams):
    """``query.he_decrypt``: the aggregate's parameters and each contributor's statement;
    a contributor that signed none is ``None`` (roster.py), refused by
    compliance.contribution.check_bindings as a CiphertextError."""

    bindings: Annotated[list[ContributionBinding | None], Field(max_length=MAX_PARTNERS)]


class _Session(Strict):
    cohort: Partners
    length: Length


class _Share(_Session):
    adverts: Annotated[dict[Name, Blob], Field(max_length=MAX_PARTNERS)]


class _Sign(_Session):
    survivors: Partners


class _Unmask(_Session):
    request: Blob
    #: Each survivor's signed statement of what it answered at the step (client.
    #: contribution), in the order of the request's survivors; None: it signed none.
    bindings: Annotated[list[ContributionBinding | None], Field(max_length=MAX_PARTNERS)]


class SecAggRequest(Strict):
    """``<step>.secagg-advertise``: the cohort and the masked length."""

    secagg: _Session


class SecAggShareRequest(SecAggRequest):
    """``<step>.secagg-share``: every cohort member's advertisement."""

    secagg: _Share


class SecAggSignRequest(SecAggRequest):
    """``<step>.secagg-sign``: the survivor set to sign."""

    secagg: _Sign


class SecAggUnmaskRequest(SecAggRequest):
    """``<step>.secagg-unmask``: the unmasking request (signed by t survivors after a
    dropout) and every survivor's signed statement of the request it answered."""

    secagg: _Unmask


#: ``query.secagg``'s model by stage (the suffix of the step: ``<step>.secagg-<stage>``).
SECAGG_STAGES: dict[str, type[SecAggRequest]] = {
    "advertise": SecAggRequest,
    "share": SecAggShareRequest,
    "sign": SecAggSignRequest,
    "unmask": SecAggUnmaskRequest,
}


class _Inclusion(Strict):
    index: Annotated[int, Field(ge=0)]
    entry: Blob
    proof: Annotated[list[Blob], Field(max_length=64)]


class CosignBody(Strict):
    """compliance.cosigning.build_request: a signed checkpoint and the proofs to check."""

    checkpoint: Blob
    previous_size: Annotated[int, Field(ge=0)] | None = None
    consistency: Annotated[list[Blob], Field(max_length=64)] = []
    aggregates: Annotated[list[_Inclusion], Field(max_length=MAX_ITEMS)]


class CosignRequest(Strict):
    """``query.cosign``: this partner's cosign request."""

    cosign: CosignBody
