"""Differential-privacy mechanisms and their accounting (pure: no I/O, no state).

A :class:`Mechanism` describes one noisy release (or a run of them) by its
privacy parameters only; :func:`epsilon` composes any number of mechanisms with
Google's ``dp_accounting`` library, and :func:`noise_multiplier_for` /
:func:`gaussian_noise_for` calibrate the noise for a target epsilon with
``dp_accounting.calibrate_dp_mechanism``.  No epsilon is computed here by hand.

>>> round(epsilon([SampledGaussian(noise_multiplier=1.0, sample_rate=0.0256, steps=390)],
...                target_delta=1e-5), 2)
3.63

References: DP-SGD, Abadi et al. 2016 (arXiv:1607.00133); Renyi DP, Mironov
2017 (arXiv:1702.07476); client-level DP-FedAvg, McMahan et al. 2018
(arXiv:1710.06963); Google ``dp_accounting`` (github.com/google/differential-privacy).

Notes
-----
* RDP is the default accountant.  It is an upper bound, looser than PLD (3.63
  against 3.21 above), but it composes the mechanisms of different jobs by
  adding RDP curves, is deterministic and cheap (~40 ms per distinct
  mechanism; equal ones compose in one call), and it is what
  :mod:`privacy.budget_ledger` replays against a partner's cap, where a
  pessimistic figure errs on the safe side.  PLD (library default
  discretisation, ~0.6 s per mechanism) is there for tighter reported figures.
* Neighbouring datasets differ by adding or removing one record (the library
  default), which is the relation Poisson sampling (Opacus, DP-FedAvg's partner
  sampling) is analysed under.
* ``target_delta`` has no default on purpose: it must be below 1/n for a
  dataset of n records (1e-5 is the usual choice up to 100,000 records), and the
  budget ledger fixes one delta per dataset so that spent epsilons stay
  comparable.
* Calibration finds the noise to within 1e-6, then checks the achieved epsilon
  and steps the noise up if it lands above the target: the target always holds.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from fedcollab.common.errors import PrivacyError

if TYPE_CHECKING:
    # Imported where used: with its SciPy, dp_accounting takes about a second to import,
    # which every process that only reads a job spec, a DP plan or a ledger would pay
    # (a job's ServerApp, a partner's node, each command line call).
    import dp_accounting

__all__ = [
    "AccountantKind",
    "Gaussian",
    "Mechanism",
    "SampledGaussian",
    "epsilon",
    "gaussian_noise_for",
    "mechanism_from_dict",
    "noise_multiplier_for",
    "register_mechanism",
]

AccountantKind = Literal["rdp", "pld"]

_TOLERANCE = 1e-6  # noise-multiplier precision of the calibration
_MAX_STEP_UPS = 60  # each doubles the step: far beyond any calibration slack

# The RDP accountant drops an order whose series does not converge (large sample rates, low
# orders), which can only raise epsilon, and logs it at every computation: mute just that.
logging.getLogger("absl").addFilter(
    lambda record: not str(record.msg).startswith("_compute_log_a_frac failed to converge")
)


@dataclass(frozen=True, kw_only=True)
class Mechanism:
    """One DP mechanism, by its privacy parameters (base class of a registry)."""

    kind: ClassVar[str]

    def to_dp_event(self) -> dp_accounting.DpEvent:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form; :func:`mechanism_from_dict` reads it back."""
        return {"kind": self.kind, **dataclasses.asdict(self)}


_REGISTRY: dict[str, type[Mechanism]] = {}
_M = TypeVar("_M", bound=type[Mechanism])


def register_mechanism(cls: _M) -> _M:
    """Class decorator registering ``cls`` under ``cls.kind``; a taken kind raises
    ``ValueError`` (a programming error, not a user's): nothing is overwritten."""
    kind = cls.__dict__.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"{cls.__name__} must define a non-empty class attribute `kind`")
    if kind in _REGISTRY and _REGISTRY[kind] is not cls:
        raise ValueError(f"mechanism kind {kind!r} is already registered by {_REGISTRY[kind]}")
    _REGISTRY[kind] = cls
    return cls


def mechanism_from_dict(data: object) -> Mechanism:
    """The mechanism :meth:`Mechanism.to_dict` wrote; ``PrivacyError`` if it is not one."""
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        raise PrivacyError(
            "a DP mechanism must be a mapping with a string 'kind'",
            hint=f"use one of the kinds {sorted(_REGISTRY)}",
        )
    cls = _REGISTRY.get(data["kind"])
    if cls is None:
        raise PrivacyError(
            f"unknown DP mechanism kind {data['kind']!r}",
            hint=f"use one of {sorted(_REGISTRY)}, or the fedcollab version that wrote it",
        )
    names = {f.name for f in dataclasses.fields(cls)}
    given = set(data) - {"kind"}
    if given != names:
        raise PrivacyError(
            f"DP mechanism {data['kind']!r} has fields {sorted(given)}, expected {sorted(names)}",
            hint="write the mechanism with Mechanism.to_dict()",
        )
    return cls(**{name: data[name] for name in names})


def _check_real(
    owner: str, name: str, value: object, ok: Callable[[float], bool], want: str
) -> float:
    """``value`` as a float if it is a finite number with ``ok(value)``, else ``PrivacyError``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PrivacyError(
            f"{owner}: {name} must be a number, got {type(value).__name__}",
            hint=f"pass {name} as a float {want}",
        )
    number = float(value) if abs(value) < 2**1023 else math.inf  # huge ints overflow float()
    if not (math.isfinite(number) and ok(number)):
        raise PrivacyError(
            f"{owner}: {name} = {value!r} is not a finite number {want}",
            hint=f"choose {name} {want}",
        )
    return number


def _check_count(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PrivacyError(
            f"{owner}: {name} must be an integer >= 1, got {value!r}",
            hint=f"count {name} as a whole number of releases",
        )


def _sampled_gaussian_event(noise: float, rate: float, steps: int) -> dp_accounting.DpEvent:
    import dp_accounting

    event = dp_accounting.GaussianDpEvent(noise)
    if rate < 1.0:  # at rate 1 there is no sampling, hence no amplification
        event = dp_accounting.PoissonSampledDpEvent(rate, event)
    return dp_accounting.SelfComposedDpEvent(event, steps)


@register_mechanism
@dataclass(frozen=True, kw_only=True)
class SampledGaussian(Mechanism):
    """``steps`` Gaussian releases, each on a Poisson sample at rate ``sample_rate``.

    DP-SGD at a partner (``sample_rate`` = batch / records, ``steps`` = optimiser
    steps) or client-level DP-FedAvg (``sample_rate`` = partners sampled / all,
    ``steps`` = rounds).  ``noise_multiplier`` = noise std / clipping norm.
    """

    kind: ClassVar[str] = "sampled_gaussian"
    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        owner = "sampled Gaussian mechanism"
        z = _check_real(owner, "noise_multiplier", self.noise_multiplier, lambda x: x > 0, "> 0")
        q = _check_real(owner, "sample_rate", self.sample_rate, lambda x: 0 < x <= 1, "in (0, 1]")
        object.__setattr__(self, "noise_multiplier", z)  # ints become floats: one canonical form
        object.__setattr__(self, "sample_rate", q)
        _check_count(owner, "steps", self.steps)

    def to_dp_event(self) -> dp_accounting.DpEvent:
        return _sampled_gaussian_event(self.noise_multiplier, self.sample_rate, self.steps)


@register_mechanism
@dataclass(frozen=True, kw_only=True)
class Gaussian(Mechanism):
    """``count`` Gaussian releases (noisy sums, counts); noise std / L2 sensitivity."""

    kind: ClassVar[str] = "gaussian"
    noise_multiplier: float
    count: int

    def __post_init__(self) -> None:
        owner = "Gaussian mechanism"
        z = _check_real(owner, "noise_multiplier", self.noise_multiplier, lambda x: x > 0, "> 0")
        object.__setattr__(self, "noise_multiplier", z)
        _check_count(owner, "count", self.count)

    def to_dp_event(self) -> dp_accounting.DpEvent:
        return _sampled_gaussian_event(self.noise_multiplier, 1.0, self.count)


def _accountant_factory(accountant: str) -> Callable[[], Any]:
    if accountant not in ("rdp", "pld"):
        raise PrivacyError(f"unknown DP accountant {accountant!r}", hint="use 'rdp' or 'pld'")
    from dp_accounting.pld import PLDAccountant
    from dp_accounting.rdp import RdpAccountant

    factories: dict[str, Callable[[], Any]] = {"rdp": RdpAccountant, "pld": PLDAccountant}
    return factories[accountant]


def _check_delta(target_delta: object) -> float:
    return _check_real("accounting", "target_delta", target_delta, lambda d: 0 < d < 1, "in (0, 1)")


def epsilon(
    mechanisms: Sequence[Mechanism], *, target_delta: float, accountant: AccountantKind = "rdp"
) -> float:
    """The epsilon, at ``target_delta``, of running all ``mechanisms`` on one dataset."""
    delta = _check_delta(target_delta)
    make = _accountant_factory(accountant)
    counts: dict[Mechanism, int] = {}  # equal mechanisms compose in one library call
    for mechanism in mechanisms:
        if not isinstance(mechanism, Mechanism):
            raise PrivacyError(
                f"not a DP mechanism: {mechanism!r}", hint="pass Mechanism instances"
            )
        counts[mechanism] = counts.get(mechanism, 0) + 1
    if not counts:
        return 0.0
    acc = make()
    for mechanism, count in counts.items():
        acc.compose(mechanism.to_dp_event(), count)
    return float(acc.get_epsilon(delta))


def _calibrate(
    template: Gaussian | SampledGaussian,
    target_epsilon: float,
    target_delta: float,
    accountant: AccountantKind,
    extra: Sequence[Mechanism] = (),
) -> float:
    """The smallest noise multiplier (to ``_TOLERANCE``) giving ``template`` the target,
    composed with the fixed mechanisms ``extra`` (releases the same job also makes)."""
    target = _check_real("calibration", "target_epsilon", target_epsilon, lambda x: x > 0, "> 0")
    delta = _check_delta(target_delta)
    make = _accountant_factory(accountant)
    import dp_accounting
    from dp_accounting import mechanism_calibration

    def build(noise: float) -> Mechanism:
        return dataclasses.replace(template, noise_multiplier=noise)

    fixed = [m.to_dp_event() for m in extra]

    def make_event(noise: float) -> dp_accounting.DpEvent:  # no noise: not private at all
        if noise <= 0:
            return dp_accounting.NonPrivateDpEvent()
        own = build(noise).to_dp_event()
        return dp_accounting.ComposedDpEvent([own, *fixed]) if fixed else own

    impossible = PrivacyError(
        f"no noise multiplier reaches epsilon {target} at delta {delta}",
        hint="raise the target epsilon or delta, or run fewer steps/rounds",
    )
    try:
        bracket = mechanism_calibration.LowerEndpointAndGuess(0.0, 1.0)
        found = dp_accounting.calibrate_dp_mechanism(
            make, make_event, target, delta, bracket, tol=_TOLERANCE
        )
    except (mechanism_calibration.NoBracketIntervalFoundError, ValueError) as exc:
        raise impossible from exc
    noise, step = max(float(found), _TOLERANCE), _TOLERANCE
    for _ in range(_MAX_STEP_UPS):  # the library checks too; this guards our own composition
        if epsilon([build(noise), *extra], target_delta=delta, accountant=accountant) <= target:
            return noise
        noise, step = noise + step, step * 2
    raise impossible


def noise_multiplier_for(
    target_epsilon: float,
    *,
    target_delta: float,
    sample_rate: float,
    steps: int,
    accountant: AccountantKind = "rdp",
    extra: Sequence[Mechanism] = (),
) -> float:
    """Smallest noise multiplier for which :class:`SampledGaussian` meets the target
    (composed with ``extra``, the job's other releases, if given).

    >>> round(noise_multiplier_for(3.0, target_delta=1e-5, sample_rate=0.0256, steps=390), 2)
    1.1
    """
    template = SampledGaussian(noise_multiplier=1.0, sample_rate=sample_rate, steps=steps)
    return _calibrate(template, target_epsilon, target_delta, accountant, extra)


def gaussian_noise_for(
    target_epsilon: float,
    *,
    target_delta: float,
    count: int,
    accountant: AccountantKind = "rdp",
    extra: Sequence[Mechanism] = (),
) -> float:
    """Smallest noise multiplier for which :class:`Gaussian` meets the target (composed
    with ``extra``, if given)."""
    template = Gaussian(noise_multiplier=1.0, count=count)
    return _calibrate(template, target_epsilon, target_delta, accountant, extra)
