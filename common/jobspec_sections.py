"""The job spec's task sections: model, training, evaluation, segmentation.

Parts of :class:`common.jobspec.JobSpec` (``[model]``, ``[training]``, ``[evaluation]``,
``[segmentation]``), with the bounds every section shares: strict pydantic models
(unknown keys, wrong types, NaN and infinities refused), every number bounded so a
partner can afford what a spec asks (:func:`check_hidden`), every timeout finite
(:data:`MAX_TIMEOUT_S`). The privacy section is :mod:`common.jobspec_privacy`, the
vertical one :mod:`common.jobspec_vertical`.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = [
    "MAX_HIDDEN_WEIGHTS",
    "MAX_LAYERS",
    "MAX_LAYER_WIDTH",
    "MAX_TIMEOUT_S",
    "SEED",
    "STRICT",
    "EvaluationSpec",
    "ModelSpec",
    "SegmentationSpec",
    "TrainingSpec",
    "check_hidden",
]

STRICT = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

#: Bounds on what one job may ask of a partner's machine (see :func:`check_hidden`).
MAX_LAYERS = 8
MAX_LAYER_WIDTH = 4096
MAX_HIDDEN_WEIGHTS = 4_000_000
#: A day: no wait of a job may be longer (a finite timeout also bounds key lifetimes).
MAX_TIMEOUT_S = 86_400.0
SEED = Field(default=0, ge=0, le=2**31 - 1)


def check_hidden(sizes: tuple[int, ...]) -> tuple[int, ...]:
    """Hidden layer sizes a partner can afford: at most 8 layers of at most 4,096 units
    and 4 million weights between hidden layers (a spec like ``[2e9, 2e9]`` is refused
    before any partner allocates it)."""
    if len(sizes) > MAX_LAYERS or any(not 1 <= h <= MAX_LAYER_WIDTH for h in sizes):
        raise ValueError(
            f"hidden_sizes must be at most {MAX_LAYERS} layers of 1..{MAX_LAYER_WIDTH} units"
        )
    if sum(a * b for a, b in itertools.pairwise(sizes)) > MAX_HIDDEN_WEIGHTS:
        raise ValueError(f"hidden_sizes make more than {MAX_HIDDEN_WEIGHTS:,} hidden weights")
    return sizes


class ModelSpec(BaseModel):
    model_config = STRICT
    kind: Literal["logreg", "mlp"] = "logreg"
    hidden_sizes: Annotated[tuple[int, ...], AfterValidator(check_hidden)] = (32, 16)


class TrainingSpec(BaseModel):
    model_config = STRICT
    local_epochs: int = Field(default=1, ge=1, le=100)
    batch_size: int = Field(default=64, ge=1, le=65536)
    learning_rate: float = Field(default=0.01, gt=0.0, le=10.0)
    optimizer: Literal["sgd", "adam"] = "adam"
    #: FedProx proximal weight mu (Li et al. 2020); 0 is plain FedAvg.
    proximal_mu: float = Field(default=0.0, ge=0.0, le=100.0)
    seed: int = SEED


class EvaluationSpec(BaseModel):
    model_config = STRICT
    validation_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(default=0.2, gt=0.0, lt=0.5)
    #: Early stopping on the federated validation AUC; 0 disables it.
    early_stopping_patience: int = Field(default=5, ge=0, le=10_000)
    early_stopping_min_delta: float = Field(default=1e-4, ge=0.0, le=1.0)
    split_seed: int = SEED
    #: Which model a DP purchase-prediction job releases. "last_round": the last model,
    #: unvalidated; "validation": every round validates the model it starts from on
    #: Gaussian-noised histograms (charged to the partners' ledgers like the other
    #: statistics, privacy.dp_plan) and the job keeps the best, as a job without DP
    #: does. The default is measured (docs/privacy.md, "Measured"): selection costs the
    #: statistics' share of the budget (noisier moments) and picked worse models.
    dp_model_selection: Literal["last_round", "validation"] = "last_round"


class SegmentationSpec(BaseModel):
    model_config = STRICT
    k: int = Field(default=5, ge=2, le=100)
    k_local: int = Field(default=10, ge=2, le=200)
    #: Local clusters smaller than this are never reported at seeding.
    min_cluster_size: int = Field(default=10, ge=2, le=1_000_000)
    lloyd_iterations: int = Field(default=20, ge=1, le=500)
    tolerance: float = Field(default=1e-6, ge=0.0, le=1e6)
    seed: int = SEED
    #: "kfed": partners report local clusters (per-partner, plaintext); "summed":
    #: Lloyd steps from random candidates, summed over partners (works under
    #: encryption); "auto": kfed in plaintext jobs, summed in encrypted ones.
    seeding: Literal["auto", "kfed", "summed"] = "auto"
    seed_candidates: int = Field(default=100, ge=2, le=1000)
    seed_steps: int = Field(default=2, ge=1, le=20)

    def seeding_for(self, *, encrypted: bool, dp: bool = False) -> Literal["kfed", "summed"]:
        if self.seeding == "auto":
            return "summed" if encrypted or dp else "kfed"
        return self.seeding

    def partners_derive(self, *, aggregation: str, dp: str) -> bool:
        """Whether each partner derives every step's centroids itself (client.centroid_chain):
        in a job without DP whose sums a partner can verify (a key holder's signed receipt,
        a masked step's signed unmasking; seeding is then summed from candidates the spec's
        seed draws, as k-FED seeding goes with plaintext aggregation only). Plaintext
        aggregation gives no partner the sums, so the coordinator would choose the
        centroids: refused unless the node allows it (``allow-unverified-centroids``)."""
        return dp == "none" and aggregation not in ("", "plaintext")

    @property
    def summed_decryptions(self) -> int:
        """The aggregates an encrypted job with summed seeding decrypts: the moments,
        each seeding step, each Lloyd step and the profiles (client.run_contract's plan;
        the ``Q`` a "ckks" decryptor floods for, privacy.flooding)."""
        return 2 + self.seed_steps + self.lloyd_iterations
