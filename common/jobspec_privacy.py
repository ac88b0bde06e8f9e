"""The job spec's ``[privacy]`` section: encryption, aggregation, differential privacy.

Part of :class:`common.jobspec.JobSpec`. Which aggregation goes with which encryption
(:data:`DEFAULT_AGGREGATION`, resolved at validation so the spec digest pins it), and
the DP settings that must come together (exactly one of ``target_epsilon`` and
``noise_multiplier``; partner-level DP only where the coordinator sees sums).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from fedcollab.common.jobspec_sections import STRICT

__all__ = [
    "DEFAULT_AGGREGATION",
    "NO_KEY_DEALER",
    "PrivacySpec",
    "resolve_key_dealer",
    "resolve_vertical_aggregation",
]

#: The aggregation a horizontal job gets when its spec names none, by
#: ``privacy.encryption`` (issue 14). Vertical jobs mask and encrypt in their own
#: protocol (client.vertical): their encrypted aggregation is always "ckks".
DEFAULT_AGGREGATION: dict[str, str] = {"none": "plaintext", "ckks": "ckks+masked"}
#: What each ``privacy.encryption`` allows.
_AGGREGATIONS: dict[str, tuple[str, ...]] = {
    "none": ("plaintext", "masked"),
    "ckks": ("ckks+masked", "ckks"),
}


class PrivacySpec(BaseModel):
    model_config = STRICT
    #: "ckks": every aggregate is summed under CKKS homomorphic encryption, so the
    #: coordinator never sees one partner's update or statistics (privacy.ckks).
    encryption: Literal["none", "ckks"] = "none"
    #: How every horizontal aggregate is formed (issue 14, docs/secure_aggregation.md):
    #: "plaintext" (tests and comparisons only: the coordinator sees each reply),
    #: "masked" (pairwise masks with dropout recovery, Bonawitz et al. 2017; no HE),
    #: "ckks+masked" (the masked words inside the CKKS plaintext) or "ckks" (CKKS
    #: alone, the measured baseline). Empty: the default for the job's encryption
    #: (:data:`DEFAULT_AGGREGATION`), resolved at validation so the spec digest pins it.
    aggregation: Literal["", "plaintext", "masked", "ckks+masked", "ckks"] = ""
    #: The partner that runs the job's key ceremony, the only one partners accept the job
    #: key from. Empty: the first participant by name (resolved at validation); an
    #: encrypted horizontal job without participants must name it.
    key_dealer: str = ""
    #: Differential privacy: "sample" (record-level: DP-SGD at each partner for
    #: purchase prediction, Gaussian noise on k-means sums and counts for
    #: segmentation) or "client" (partner-level DP-FedAvg; needs encryption or masks).
    dp: Literal["none", "sample", "client"] = "none"
    #: Give exactly one: the job's epsilon (noise derived from it) or the noise
    #: multiplier (epsilon reported).
    target_epsilon: float | None = Field(default=None, gt=0.0, le=1000.0)
    noise_multiplier: float | None = Field(default=None, gt=0.0, le=1000.0)
    target_delta: float = Field(default=1e-5, gt=0.0, lt=0.01)
    #: DP-SGD: per-example gradient clipping norm and Poisson sampling rate.
    max_grad_norm: float = Field(default=1.0, gt=0.0, le=1000.0)
    sample_rate: float = Field(default=0.02, gt=0.0, le=1.0)
    #: DP-FedAvg: a partner's model update is clipped to this L2 norm.
    clip_norm: float = Field(default=1.0, gt=0.0, le=1000.0)
    #: DP-FedAvg: each partner takes part in a round with this probability.
    client_sample_rate: float = Field(default=1.0, gt=0.0, le=1.0)
    #: Segmentation with DP: each standardised row is clipped to this L2 norm.
    row_clip_norm: float = Field(default=5.0, gt=0.0, le=1000.0)
    #: DP jobs: each numeric column's values are clipped to [low, high] before the
    #: noisy moments (protocols.dp_statistics), which bounds one row's effect on them.
    #: Public domain knowledge (never read off the data); required for every numeric
    #: column of a DP job.
    value_bounds: dict[str, list[float]] = Field(default_factory=dict, max_length=1000)

    @property
    def encrypted(self) -> bool:
        return self.encryption == "ckks"

    @property
    def masked(self) -> bool:
        """Partners mask their replies (alone or inside the CKKS plaintext)."""
        return self.aggregation in ("masked", "ckks+masked")

    @model_validator(mode="before")
    @classmethod
    def _default_aggregation(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("aggregation"):
            mode = DEFAULT_AGGREGATION.get(str(data.get("encryption", "none")), "plaintext")
            return {**data, "aggregation": mode}
        return data

    @model_validator(mode="after")
    def _check_aggregation(self) -> PrivacySpec:
        allowed = _AGGREGATIONS[self.encryption]  # the Literal refused any other
        if self.aggregation not in allowed:
            raise ValueError(
                f"privacy.aggregation = {self.aggregation!r} does not go with encryption = "
                f"{self.encryption!r}: use one of {', '.join(map(repr, allowed))}"
                + (" (or encryption = 'ckks')" if self.aggregation.startswith("ckks") else "")
            )
        return self

    @model_validator(mode="after")
    def _check_dp(self) -> PrivacySpec:
        for col, pair in self.value_bounds.items():
            if len(pair) != 2 or not pair[0] < pair[1] or max(map(abs, pair)) > 1e12:
                raise ValueError(
                    f"privacy.value_bounds.{col} must be [low, high] with low < high, "
                    f"|values| <= 1e12; got {pair!r}"
                )
        if self.dp == "none":
            if self.target_epsilon is not None or self.noise_multiplier is not None:
                raise ValueError("target_epsilon / noise_multiplier need privacy.dp set")
            return self
        if (self.target_epsilon is None) == (self.noise_multiplier is None):
            raise ValueError(
                f"privacy.dp = {self.dp!r} needs exactly one of target_epsilon "
                "(noise derived from it) or noise_multiplier (epsilon reported)"
            )
        if self.dp == "client" and not (self.encrypted or self.masked):
            raise ValueError(
                "privacy.dp = 'client' adds noise shares at each partner that only protect "
                "in the sum: it needs encryption = 'ckks' or aggregation = 'masked' so the "
                "coordinator sees only the sum"
            )
        if self.dp == "client" and self.aggregation == "ckks" and self.client_sample_rate < 1:
            raise ValueError(
                "privacy.client_sample_rate < 1 needs a decryptor in every sampled round: "
                "plain aggregation = 'ckks' has one, the key dealer, which is not in every "
                "sample; use aggregation = 'ckks+masked' (the default with encryption)"
            )
        return self


NO_KEY_DEALER = (
    "an encrypted job names the partner that deals its CKKS key: set privacy.key_dealer, "
    "or list participants (the first by name deals); partners accept the job key from "
    "that partner only"
)


def resolve_key_dealer(data: Any) -> Any:
    """A job spec's raw fields with an encrypted horizontal job's empty
    ``privacy.key_dealer`` set to the first participant by name, before validation, so
    the spec digest pins it (issue 14: partners accept the job key from the spec's dealer
    only). Anything else is returned as given; the spec's own validation judges it."""
    if not isinstance(data, dict) or data.get("task") == "vertical":
        return data
    participants = data.get("participants") or ()
    if not isinstance(participants, (list, tuple)) or not participants:
        return data
    if not all(isinstance(p, str) for p in participants):
        return data
    given = data.get("privacy")
    privacy: Any
    if isinstance(given, PrivacySpec):
        if not given.encrypted or given.key_dealer:
            return data
        privacy = given.model_copy(update={"key_dealer": min(participants)})
    elif isinstance(given, dict):
        if given.get("encryption") != "ckks" or given.get("key_dealer"):
            return data
        privacy = {**given, "key_dealer": min(participants)}
    else:
        return data
    return {**data, "privacy": privacy}


def resolve_vertical_aggregation(data: Any) -> Any:
    """A vertical job's raw fields with its sums set to the vertical protocol's: "ckks"
    or "plaintext" (before validation, so the spec digest pins it)."""
    if not isinstance(data, dict) or data.get("task") != "vertical":
        return data
    given = data.get("privacy")
    encryption: str
    if isinstance(given, PrivacySpec):  # built in code: its mode is resolved already
        encryption = given.encryption
        if given.aggregation != DEFAULT_AGGREGATION[encryption]:
            return data
        privacy = given.model_dump()
    elif isinstance(given, dict):
        privacy = dict(given)
        encryption = str(privacy.get("encryption", "none"))
        if privacy.get("aggregation"):
            return data
    else:
        return data
    privacy["aggregation"] = "ckks" if encryption == "ckks" else "plaintext"
    return {**data, "privacy": privacy}
