"""The requests of a vertical job (``query.vertical``), one model per phase, chosen by
the meta's ``phase`` (client.vertical; sender: coordinator/vertical.py, whose
``_WithOffers`` adds the parties' signed keys to every phase)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, RootModel

from fedcollab.common.messages.base import MAX_NAME, MAX_PARTNERS, MAX_ROUNDS, Name, Offers, Strict

__all__ = [
    "FinalRequest",
    "IntersectRequest",
    "ModelStepRequest",
    "OprfAnswerRequest",
    "OprfSizeRequest",
    "OprfStartRequest",
    "OprfStepRequest",
    "PhaseRequest",
    "PsiHopRequest",
    "PsiOwnRequest",
    "PsiSaltRequest",
    "VerticalBase",
    "VerticalPhase",
    "VerticalRequest",
]


class VerticalBase(Strict):
    """What every phase carries besides its own fields: the run and the parties' signed
    transport and masking keys (each checked against this node's pins before use)."""

    run: Annotated[str, Field(max_length=MAX_NAME)]
    offers: Offers = {}
    mask_offers: Offers = {}


class PhaseRequest(VerticalBase):
    """A phase's request names its step (``psi-hop-2``, ``step-7``, ...)."""

    step: Name


class PsiSaltRequest(PhaseRequest):
    """The label holder draws the run's PSI salt."""

    phase: Literal["psi_salt"]


class PsiOwnRequest(PhaseRequest):
    """Every party blinds its own ids (a feature party's salt is in the parts)."""

    phase: Literal["psi_own"]


class PsiHopRequest(PhaseRequest):
    """Blind ``owner``'s set at ``hop`` of its ring route."""

    phase: Literal["psi_hop"]
    owner: Name
    hop: Annotated[int, Field(ge=1, le=MAX_PARTNERS)]


class OprfSizeRequest(PhaseRequest):
    """CM20 PSI (``vertical.psi = "cm20"``): a feature party states its set size."""

    phase: Literal["oprf_size"]


#: Set sizes of a CM20 PSI (protocols.psi_oprf supports up to 2^32 ids).
SetSize = Annotated[int, Field(ge=0, le=1 << 32)]


class OprfStartRequest(PhaseRequest):
    """CM20 PSI: the label holder starts one run per feature party of the stated size."""

    phase: Literal["oprf_start"]
    sizes: Annotated[dict[Name, SetSize], Field(max_length=MAX_PARTNERS)]


class OprfAnswerRequest(PhaseRequest):
    """CM20 PSI: a feature party answers the label holder's first message (salt and
    setup in the parts), for a label holder of ``n_receiver`` ids."""

    phase: Literal["oprf_answer"]
    n_receiver: SetSize


class OprfStepRequest(PhaseRequest):
    """CM20 PSI: the label holder's matrices, then each feature party's OPRF values."""

    phase: Literal["oprf_matrix", "oprf_values"]


class IntersectRequest(PhaseRequest):
    """The label holder intersects the fully blinded sets."""

    phase: Literal["intersect"]


class ModelStepRequest(PhaseRequest):
    """A training iteration: a feature party's ``step``, the label holder's ``label_step``."""

    phase: Literal["step", "label_step"]
    #: Checked against the job's iterations by client.vertical_rows.iteration.
    iteration: Annotated[int, Field(ge=0, le=MAX_ROUNDS)]


class FinalRequest(PhaseRequest):
    """Evaluation or joint inference (the label holder's phases are ``label_*``)."""

    phase: Literal["eval", "label_eval", "predict", "label_predict"]


VerticalPhase = (
    PsiSaltRequest
    | PsiOwnRequest
    | PsiHopRequest
    | OprfSizeRequest
    | OprfStartRequest
    | OprfAnswerRequest
    | OprfStepRequest
    | IntersectRequest
    | ModelStepRequest
    | FinalRequest
)


class VerticalRequest(RootModel[Annotated[VerticalPhase, Field(discriminator="phase")]]):
    """``query.vertical``: the phase's model in ``root``."""

    model_config = ConfigDict(strict=True, frozen=True)
