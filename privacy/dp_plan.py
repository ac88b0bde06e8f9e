"""What a job's differential privacy costs, derived from the public job spec only.

Long module: the whole DP plan derived from the job spec, with every release's
sensitivity in one place so none is missed.

The coordinator and every partner call :func:`resolve` on the same job spec
and get the same :class:`DpPlan`: the noise multiplier (given, or calibrated
so that the whole job at its maximum length meets ``target_epsilon``), what
one request charges to a partner's budget ledger (:meth:`DpPlan.mechanism_for`),
the job's maximum spend for the budget check at the handshake
(:meth:`DpPlan.planned`) and the epsilon of what the job releases
(:meth:`DpPlan.job_epsilon`)::

    plan = resolve(spec)
    if plan is not None:
        ledger.charge(dataset, job=spec.name, run=run, step=f"round-{r}",
                      mechanism=plan.mechanism_for("train.fedavg"))

Mechanisms, per task and level:

* purchase prediction, ``dp = "sample"``: DP-SGD at each partner (Abadi et al.
  2016, arXiv:1607.00133); a round is ``SampledGaussian(z, sample_rate,
  local_epochs * ceil(1 / sample_rate))``, the job ``rounds`` such rounds;
* purchase prediction, ``dp = "client"``: DP-FedAvg (McMahan et al. 2018,
  arXiv:1710.06963); the released model after ``r`` rounds is
  ``SampledGaussian(z, client_sample_rate, r)`` at the partner level;
* segmentation, ``dp = "sample"``: Gaussian noise on the per-cluster sums and
  counts of clipped rows (Su et al. 2016, "Differentially Private k-Means
  Clustering", CODASPY; Blum et al. 2005, SuLQ): one ``Gaussian(z, 1)`` per
  k-means request, ``seed_steps + lloyd_iterations`` Lloyd requests and one
  profile request.

Notes
-----
* *Sensitivities* (see :mod:`protocols.client_dp`): DP-SGD clips each example's
  gradient to ``max_grad_norm``; DP-FedAvg clips a partner's update to
  ``clip_norm``; a DP Lloyd vector has L2 sensitivity ``sqrt(B^2 + 1)`` and a
  bounded profile vector ``sqrt(B^2 + 3)`` for rows clipped to
  ``B = row_clip_norm``.  Noise is always ``z`` times the sensitivity.
* *Record level: each partner adds its full noise*, so its guarantee holds
  even against a coordinator that sees that partner's vector alone (a plaintext
  job, or a key holder who decrypts one vector).  A record sits at one
  partner, so the released model or segmentation has the same epsilon per
  record as that partner's releases: sums over partners are post-processing.
  (A customer with records at several partners is protected per record; the
  epsilons of those records add up for that person.)
* *Client level: distributed noise.*  Each of ``m >= min_partners``
  contributors adds ``N(0, (z*C)^2 / min_partners)``, so any aggregate of at
  least ``min_partners`` contributions carries noise of std ``>= z*C``, which
  is what DP-FedAvg needs when one partner's clipped update (norm ``<= C``) is
  added or removed.  That requires encryption (nobody may see one noisy
  share), an aggregate of at least ``min_partners`` contributions, and honest
  peers (colluding partners can subtract their own shares).
* *Ledger charge of a client-level round: Gaussian(z / 2, 1).*  The ledger
  counts record-level spend (add or remove one record) for every job on a
  dataset.  One customer can turn a partner's clipped update ``u`` into any
  ``u'`` with ``||u'|| <= C``, so the record-level sensitivity is ``2C``, not
  ``C`` (group privacy of size 2), and the round is a Gaussian mechanism of
  multiplier ``z / 2``.  It is charged for every round the partner takes part
  in, without the amplification of client sampling: whether the partner was
  sampled is known to the coordinator.  That is conservative, and larger than
  the job-level epsilon of the released model, which is the partner-level
  ``SampledGaussian(z, client_sample_rate, rounds)`` (:meth:`DpPlan.job_epsilon`).
* *Statistics are charged too* (issue 13): in a DP job the moments for
  standardisation (``query.moments``), the final evaluation (``evaluate.fedavg``)
  and permutation importance (``evaluate.permutation``) are Gaussian releases of
  bounded statistics (:mod:`protocols.dp_statistics`: values clipped to the spec's
  ``privacy.value_bounds``, counts of sensitivity 1), each charged as
  ``Gaussian(z_stats, 1)`` with ``z_stats = statistics_noise_multiplier``.  With
  ``target_epsilon``, the statistics get :data:`STATISTICS_SHARE` of it
  (``z_stats`` calibrated for all of them together) and the training noise is
  calibrated so that training *and* statistics compose to the target (one RDP
  accountant over both); with a given ``noise_multiplier``, ``z_stats`` is that
  same multiplier.  Model selection (``evaluation.dp_model_selection``,
  :func:`validates_rounds`): a job that selects by validation has every
  ``train.fedavg`` reply carry a noised validation histogram of the model it
  received, charged as one more statistic (``train.validation``, step
  ``round-r/validation``), and may evaluate twice (the last model, then the best
  if it is another); otherwise the slots are zeros (a function of nothing), the
  released model is the last round's and the job is evaluated once.
* *What is not charged*: the handshake (row-count-free; category values held at
  least ten times), the key ceremony, cosigning and the secure-aggregation
  stages (``query.secagg``: session keys, sealed seed shares, the survivor
  signature and the unmasking shares carry no data; the masked vector rides on
  the step's own, charged request).  Exact statistics of the
  training rows (row count, FedAvg weight ``n_i``, training loss, k-means
  inertia) must not ride on a DP reply.  Any other data-bearing request is
  refused by :meth:`DpPlan.mechanism_for` (fail closed), including k-FED
  seeding, which has no DP mechanism.
* *Client level*: the statistics are record-level releases (one customer's row
  moves a bounded statistic; a whole partner's rows do not), so they are charged
  to the ledger but not part of the partner-level epsilon.  That epsilon bounds
  what the training updates say about a whole partner; the preprocessor and the
  choice of the released round are functions of record-level statistics, which
  bound each customer's influence on them, not a whole partner's.
* Epsilons are computed with the RDP accountant of :mod:`privacy.accounting`
  (``dp_accounting``), at ``target_delta``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from fedcollab.common.errors import PrivacyError
from fedcollab.common.jobspec import JobSpec
from fedcollab.privacy.accounting import (
    Gaussian,
    Mechanism,
    SampledGaussian,
    epsilon,
    gaussian_noise_for,
    noise_multiplier_for,
)

__all__ = [
    "CHARGED_ACTIONS",
    "STATISTICS_ACTIONS",
    "STATISTICS_SHARE",
    "UNCHARGED_ACTIONS",
    "VALIDATION_STEP_SUFFIX",
    "DpLevel",
    "DpPlan",
    "cluster_sensitivity",
    "profile_sensitivity",
    "resolve",
    "statistics_requests",
    "steps_per_epoch",
    "validates_rounds",
]

DpLevel = Literal["sample", "client"]
Task = Literal["purchase_prediction", "segmentation"]

#: Flower message types whose replies carry DP-noised statistics, per task.
CHARGED_ACTIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "purchase_prediction": frozenset({"train.fedavg"}),
        "segmentation": frozenset({"query.kmeans_step", "query.segment_profile"}),
    }
)
#: Message types whose replies are Gaussian releases of bounded statistics, charged as
#: ``Gaussian(statistics_noise_multiplier, 1)`` each (see Notes: statistics are charged).
#: ``train.validation`` is the validation histogram riding on a ``train.fedavg`` reply
#: when the job selects its model by validation (:func:`validates_rounds`): the partner
#: charges it beside the round's own release.
STATISTICS_ACTIONS = frozenset(
    {"query.moments", "evaluate.fedavg", "evaluate.permutation", "train.validation"}
)
#: The step suffix under which a round's validation histogram is charged.
VALIDATION_STEP_SUFFIX = "/validation"
#: Message types that carry no data release (see Notes: what is not charged).
UNCHARGED_ACTIONS = frozenset(
    {"query.handshake", "query.cosign", "query.he_keygen", "query.he_decrypt", "query.secagg"}
)
#: Share of a job's ``target_epsilon`` given to its statistics (moments, evaluation,
#: permutation importance); the training gets what composes with it to the target.
#: Measured on the privacy_utility job at epsilon 3 (9 partners, 12 rounds, two seeds;
#: docs/privacy.md, "Measured"): the training noise rises 1.450 -> 1.490, the released
#: model's exact test AUC is 0.8805 -> 0.8825 (within the seed spread), and the job's
#: reported AUC, now a DP estimate, is 0.007-0.015 below the exact one.
STATISTICS_SHARE = 0.25


def _positive_clip(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PrivacyError(f"row_clip_norm must be a number, got {value!r}", hint="set it > 0")
    if not (math.isfinite(value) and value > 0):
        raise PrivacyError(
            f"row_clip_norm = {value!r} is not a finite number > 0", hint="set it > 0"
        )
    return float(value)


def cluster_sensitivity(*, row_clip_norm: float) -> float:
    """L2 sensitivity of a Lloyd vector of rows clipped to ``row_clip_norm``.

    The noise of :mod:`protocols.client_dp` is calibrated to it. Defined here, with
    the plan that uses it, so that ``privacy`` imports no protocol.
    """
    return math.sqrt(_positive_clip(row_clip_norm) ** 2 + 1.0)


def profile_sensitivity(*, row_clip_norm: float) -> float:
    """L2 sensitivity of a bounded profile vector (:mod:`protocols.dp_segments`)."""
    return math.sqrt(_positive_clip(row_clip_norm) ** 2 + 3.0)


def steps_per_epoch(sample_rate: float) -> int:
    """DP-SGD steps per local epoch, ``ceil(1 / sample_rate)`` (one pass in expectation).

    :func:`protocols.dp_sgd.train_local_dp` runs exactly this many; it lives here,
    not there, because the coordinator needs the plan without importing torch.

    >>> steps_per_epoch(0.02), steps_per_epoch(0.3), steps_per_epoch(1.0)
    (50, 4, 1)
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | float):
        raise PrivacyError(f"sample_rate must be a number, got {sample_rate!r}", hint="use (0, 1]")
    if not (math.isfinite(sample_rate) and 0 < sample_rate <= 1):
        raise PrivacyError(
            f"sample_rate = {sample_rate!r} is not in (0, 1]", hint="choose a rate in (0, 1]"
        )
    # Rounded first, so float dust in 1 / q never adds a step.
    return math.ceil(round(1.0 / sample_rate, 9))


def _times(mechanism: Mechanism, n: int) -> Mechanism:
    """``n`` runs of ``mechanism`` as one mechanism (equal under RDP composition)."""
    if isinstance(mechanism, SampledGaussian):
        return dataclasses.replace(mechanism, steps=mechanism.steps * n)
    if isinstance(mechanism, Gaussian):
        return dataclasses.replace(mechanism, count=mechanism.count * n)
    raise PrivacyError(f"cannot repeat mechanism {mechanism!r}", hint="a programming error")


@dataclass(frozen=True, kw_only=True)
class DpPlan:
    """A job's DP parameters, resolved; build it with :func:`resolve`.

    ``requests`` lists the charged message types with their maximum count in
    the job; ``target_epsilon`` is None when the spec gave the noise multiplier.
    """

    level: DpLevel
    task: Task
    noise_multiplier: float
    target_delta: float
    target_epsilon: float | None
    requests: tuple[tuple[str, int], ...]
    #: Statistics requests (message type, maximum count) and their noise multiplier.
    statistics: tuple[tuple[str, int], ...]
    statistics_noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    max_grad_norm: float
    clip_norm: float
    client_sample_rate: float
    min_partners: int
    row_clip_norm: float

    def __post_init__(self) -> None:
        if (self.task, self.level) not in {
            ("purchase_prediction", "sample"),
            ("purchase_prediction", "client"),
            ("segmentation", "sample"),
        }:
            raise PrivacyError(
                f"no DP mechanism for task {self.task!r} at level {self.level!r}",
                hint="client-level DP applies to purchase prediction only",
            )
        charged = CHARGED_ACTIONS[self.task]
        if not self.requests or any(
            a not in charged or isinstance(n, bool) or not isinstance(n, int) or n < 1
            for a, n in self.requests
        ):
            raise PrivacyError(
                f"DP plan requests {self.requests!r} do not fit task {self.task!r}",
                hint=f"list (message type, count >= 1) pairs of {sorted(charged)}",
            )
        if any(
            a not in STATISTICS_ACTIONS or isinstance(n, bool) or not isinstance(n, int) or n < 1
            for a, n in self.statistics
        ):
            raise PrivacyError(
                f"DP plan statistics {self.statistics!r} are not statistics requests",
                hint=f"list (message type, count >= 1) pairs of {sorted(STATISTICS_ACTIONS)}",
            )
        self._release()  # validates the noise and the sampling parameters
        self._job_release()
        if self.statistics:
            self._statistic()

    # --- mechanisms -----------------------------------------------------------------------

    def _release(self) -> Mechanism:
        """What one charged request costs a partner (its ledger's unit: one record)."""
        z = self.noise_multiplier
        if self.task == "segmentation":
            return Gaussian(noise_multiplier=z, count=1)
        if self.level == "client":
            return Gaussian(noise_multiplier=z / 2.0, count=1)  # sensitivity 2C: see Notes
        return SampledGaussian(
            noise_multiplier=z, sample_rate=self.sample_rate, steps=self.steps_per_round
        )

    def _job_release(self) -> Mechanism:
        """One release of the job's output (per record; per partner at client level)."""
        if self.level == "client":
            return SampledGaussian(
                noise_multiplier=self.noise_multiplier,
                sample_rate=self.client_sample_rate,
                steps=1,
            )
        return self._release()

    def _statistic(self) -> Gaussian:
        """What one statistics request costs (noise std = z_stats x its L2 sensitivity)."""
        return Gaussian(noise_multiplier=self.statistics_noise_multiplier, count=1)

    def _statistics_planned(self) -> list[Mechanism]:
        n = sum(c for _, c in self.statistics)
        return [_times(self._statistic(), n)] if n else []

    @property
    def max_releases(self) -> int:
        """Rounds (prediction) or k-means requests (segmentation) of the whole job."""
        return sum(n for _, n in self.requests)

    def mechanism_for(self, action: str) -> Mechanism | None:
        """What one request of message type ``action`` charges to a partner's ledger.

        None for a request that carries no DP release; ``PrivacyError`` for a
        data-bearing request this job's DP plan has no mechanism for (for example
        k-FED seeding, or a Lloyd step in a prediction job): the partner must refuse it.
        """
        if action in CHARGED_ACTIONS[self.task]:
            return self._release()
        if action in dict(self.statistics):
            return self._statistic()
        if action in UNCHARGED_ACTIONS:
            return None
        raise PrivacyError(
            f"a {self.task} job with {self.level}-level DP has no DP mechanism for "
            f"{action!r}; answering it would release data without noise",
            hint="the coordinator must only send the requests of the job's DP plan; "
            "check that coordinator and partner run the same fedcollab version",
        )

    def planned(self, action_counts: Mapping[str, int] | None = None) -> list[Mechanism]:
        """The job's maximum spend at a partner, as few mechanisms as possible.

        ``action_counts`` (message type -> number of requests) defaults to the
        whole job.  Equal per-request mechanisms are merged into one (``n``
        charges of ``Gaussian(z, 1)`` are ``Gaussian(z, n)``), which RDP composes
        to exactly the same epsilon, so ``ledger.preview(dataset, m)`` of the
        single mechanism checks the whole job.
        """
        if action_counts is None:
            counts = dict(self.requests) | dict(self.statistics)
        else:
            counts = dict(action_counts)
        total, stats = 0, 0
        for action, n in counts.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise PrivacyError(
                    f"planned count of {action!r} must be an integer >= 0, got {n!r}",
                    hint="count requests as whole numbers",
                )
            mechanism = self.mechanism_for(action) if n else None
            if mechanism is None:
                continue
            if action in CHARGED_ACTIONS[self.task]:
                total += n
            else:
                stats += n
        out = [_times(self._release(), total)] if total else []
        return out + ([_times(self._statistic(), stats)] if stats else [])

    def job_epsilon(self, releases: int) -> float:
        """Epsilon at ``target_delta`` of the output after ``releases`` rounds or requests."""
        if isinstance(releases, bool) or not isinstance(releases, int) or releases < 0:
            raise PrivacyError(
                f"releases must be an integer >= 0, got {releases!r}",
                hint="count the rounds or k-means requests run so far",
            )
        if releases == 0:
            return 0.0
        # Record level, the job's statistics are releases of the same records: all of
        # them count from the first round on (an upper bound until the job ends).
        stats = self._statistics_planned() if self.level == "sample" else []
        return epsilon(
            [_times(self._job_release(), releases), *stats], target_delta=self.target_delta
        )

    def partner_epsilon(self) -> float:
        """Epsilon of the whole job's charges at one partner, on a fresh ledger."""
        return epsilon(self.planned(), target_delta=self.target_delta)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary for job outputs and reports."""
        out: dict[str, Any] = {
            "level": self.level,
            "task": self.task,
            "accountant": "rdp",
            "noise_multiplier": self.noise_multiplier,
            "target_epsilon": self.target_epsilon,
            "target_delta": self.target_delta,
            "max_releases": self.max_releases,
            "planned_epsilon": self.job_epsilon(self.max_releases),
            "partner_epsilon": self.partner_epsilon(),
            "charge_per_request": self._release().to_dict(),
            "statistics": {
                "requests": dict(self.statistics),
                "noise_multiplier": self.statistics_noise_multiplier,
                "charge_per_request": self._statistic().to_dict(),
                "epsilon": epsilon(self._statistics_planned(), target_delta=self.target_delta),
            },
        }
        z = self.noise_multiplier
        if self.task == "segmentation":
            b = self.row_clip_norm
            out |= {
                "row_clip_norm": b,
                "lloyd_noise_std": z * cluster_sensitivity(row_clip_norm=b),
                "profile_noise_std": z * profile_sensitivity(row_clip_norm=b),
            }
        elif self.level == "sample":
            out |= {
                "sample_rate": self.sample_rate,
                "steps_per_round": self.steps_per_round,
                "max_grad_norm": self.max_grad_norm,
                "gradient_noise_std": z * self.max_grad_norm,
            }
        else:
            out |= {
                "clip_norm": self.clip_norm,
                "client_sample_rate": self.client_sample_rate,
                "min_partners": self.min_partners,
                "aggregate_noise_std": z * self.clip_norm,
                "noise_share_std": z * self.clip_norm / math.sqrt(self.min_partners),
            }
        return out


def resolve(spec: JobSpec) -> DpPlan | None:
    """The DP plan of ``spec``; None if it asks for no DP.

    With ``target_epsilon``, the noise multiplier is the smallest for which
    :meth:`DpPlan.job_epsilon` of the whole job (all rounds, or all k-means
    requests) is at most the target.
    """
    p = spec.privacy
    if p.dp == "none" or spec.task == "vertical":
        return None  # vertical DP (split NN embeddings) is planned in protocols.split_nn
    requests: tuple[tuple[str, int], ...]
    if spec.task == "purchase_prediction":
        requests = (("train.fedavg", spec.rounds),)
    else:
        s = spec.segmentation
        requests = (
            ("query.kmeans_step", s.seed_steps + s.lloyd_iterations),
            ("query.segment_profile", 1),
        )
    statistics = statistics_requests(spec)
    n_stats = sum(n for _, n in statistics)
    per_round = spec.training.local_epochs * steps_per_epoch(p.sample_rate)
    releases = sum(n for _, n in requests)
    if p.noise_multiplier is not None:
        z = z_stats = p.noise_multiplier
    else:
        assert p.target_epsilon is not None  # the spec holds exactly one of the two
        target, delta = p.target_epsilon, p.target_delta
        z_stats = gaussian_noise_for(STATISTICS_SHARE * target, target_delta=delta, count=n_stats)
        # Record level: training and statistics compose to the target (one accountant).
        extra = [Gaussian(noise_multiplier=z_stats, count=n_stats)]
        if spec.task == "segmentation":
            z = gaussian_noise_for(target, target_delta=delta, count=releases, extra=extra)
        elif p.dp == "client":  # partner level: the statistics are not part of it (Notes)
            z = noise_multiplier_for(
                target, target_delta=delta, sample_rate=p.client_sample_rate, steps=releases
            )
        else:
            z = noise_multiplier_for(
                target,
                target_delta=delta,
                sample_rate=p.sample_rate,
                steps=releases * per_round,
                extra=extra,
            )
    level: DpLevel = "client" if p.dp == "client" else "sample"
    return DpPlan(
        level=level,
        task=spec.task,
        noise_multiplier=z,
        target_delta=p.target_delta,
        target_epsilon=p.target_epsilon,
        requests=requests,
        statistics=statistics,
        statistics_noise_multiplier=z_stats,
        sample_rate=p.sample_rate,
        steps_per_round=per_round,
        max_grad_norm=p.max_grad_norm,
        clip_norm=p.clip_norm,
        client_sample_rate=p.client_sample_rate,
        min_partners=spec.min_partners,
        row_clip_norm=p.row_clip_norm,
    )


def validates_rounds(spec: JobSpec) -> bool:
    """Whether a DP purchase-prediction job validates every round's model (charged) and
    releases the best one (``evaluation.dp_model_selection = "validation"``).

    A function of the spec alone: the partner derives its request plan from it.
    """
    if spec.task != "purchase_prediction" or spec.privacy.dp == "none":
        return False
    return spec.evaluation.dp_model_selection == "validation"


def statistics_requests(spec: JobSpec) -> tuple[tuple[str, int], ...]:
    """The statistics requests of a DP job and their maximum counts: the moments, and for
    purchase prediction one final evaluation (plus permutation importance for an MLP).

    A job that selects its model by validation (:func:`validates_rounds`) also releases
    one validation histogram per round (``train.validation``) and may evaluate twice:
    the last model, then the best one if that is another.
    """
    out: list[tuple[str, int]] = [("query.moments", 1)]
    if spec.task == "purchase_prediction":
        if validates_rounds(spec):
            out += [("train.validation", spec.rounds), ("evaluate.fedavg", 2)]
        else:
            out.append(("evaluate.fedavg", 1))
        if spec.model.kind == "mlp":
            out.append(("evaluate.permutation", 1))
    return tuple(out)
