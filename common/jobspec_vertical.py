"""The job spec's ``[vertical]`` section: the parties, their roles and data contracts.

Part of :class:`common.jobspec.JobSpec` for ``task = "vertical"`` (docs/vertical.md).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from fedcollab.common.jobspec_sections import SEED, STRICT, check_hidden

__all__ = ["VerticalPartySpec", "VerticalSpec"]


class VerticalPartySpec(BaseModel):
    """One party of a vertical job: its role and its data contract (own columns)."""

    model_config = STRICT
    role: Literal["label_holder", "feature_party"]
    #: The party's schema, embedded as a dict (a path in the TOML file): its id
    #: column and its own feature columns; the label holder's also names the label.
    data_schema: dict[str, Any] = Field(alias="schema")


class VerticalSpec(BaseModel):
    """A vertical job: same users, different columns at each party (``task = "vertical"``).

    ::

        [vertical]
        model = "logreg"                       # or "split_nn"
        iterations = 30
        [vertical.parties.platform]
        role = "label_holder"
        schema = "platform.schema.json"
        [vertical.parties.payment]
        role = "feature_party"
        schema = "payment.schema.json"
    """

    model_config = STRICT
    model: Literal["logreg", "split_nn"] = "logreg"
    parties: dict[str, VerticalPartySpec] = Field(default_factory=dict)
    #: Training steps; each costs two relay hops (feature parties, then label holder).
    iterations: int = Field(default=30, ge=1, le=5000)
    #: Step size; default 1.0 for logistic regression (a damped Newton-like step),
    #: 0.05 (Adam) for the split NN.
    learning_rate: float | None = Field(default=None, gt=0.0, le=100.0)
    #: L2 penalty on the weights (logistic regression), as in sklearn's 1/(C n).
    l2: float = Field(default=1e-4, ge=0.0, le=100.0)
    #: Split neural network: bottom MLP per party, top MLP at the label holder.
    hidden_sizes: Annotated[tuple[int, ...], AfterValidator(check_hidden)] = (32,)
    embedding_dim: int = Field(default=8, ge=1, le=256)
    batch_size: int = Field(default=4096, ge=16, le=1_000_000)
    #: Split NN with privacy.dp = "sample": each embedding row is clipped to this norm.
    embedding_clip_norm: float = Field(default=1.0, gt=0.0, le=1000.0)
    seed: int = SEED
    #: Joint inference: the name of a completed vertical training job whose model
    #: shares the parties hold; the job scores the label holder's query ids (its
    #: node's ``vertical-queries`` file, else all its rows) and trains nothing.
    predict_with: str = Field(default="", pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,63})?$")
    #: How the parties align their users (docs/vertical.md, "PSI"): "ecdh-ring", every
    #: party's ids blinded by every party's X25519 key round a ring (protocols.psi);
    #: "cm20", the label holder and each feature party run the OT-based PSI of Chase
    #: and Miao 2020 (protocols.psi_oprf; about 7x faster, 1M x 1M in about 20 s on 2
    #: cores), which a malicious label holder can turn into a test of guessed ids
    #: against a feature party's set (the ring cannot).
    psi: Literal["ecdh-ring", "cm20"] = "ecdh-ring"

    @property
    def step_size(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1.0 if self.model == "logreg" else 0.05

    @property
    def label_holder(self) -> str:
        return next(n for n, p in self.parties.items() if p.role == "label_holder")

    @property
    def feature_parties(self) -> list[str]:
        return sorted(n for n, p in self.parties.items() if p.role == "feature_party")
