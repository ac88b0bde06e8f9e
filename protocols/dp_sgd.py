"""DP-SGD for one partner's local round, with Opacus (record-level DP).

Each optimiser step of DP-SGD (Abadi et al. 2016, "Deep Learning with
Differential Privacy", arXiv:1607.00133) draws a Poisson sample of the rows
(each row independently with probability ``sample_rate``), computes one
gradient per row (Opacus ``GradSampleModule`` hooks), clips each to L2 norm
``max_grad_norm``, sums them, adds Gaussian noise of standard deviation
``noise_multiplier * max_grad_norm`` to every coordinate and divides by the
*expected* batch size ``n * sample_rate`` (Opacus ``DPOptimizer``); SGD or
Adam then takes the noisy gradient, which is post-processing.  An epoch is
:func:`privacy.dp_plan.steps_per_epoch` steps, so a round of ``epochs`` epochs is exactly the
``SampledGaussian(noise_multiplier, sample_rate, epochs * steps_per_epoch)``
that :mod:`privacy.dp_plan` charges to the partner's ledger.

Notes
-----
* *Randomness.* Opacus's ``secure_mode`` needs ``torchcsprng``, which has no
  build for this torch, so ``secure_mode=False``.  Instead, the Poisson sampler
  and the noise draw from a ``torch.Generator`` seeded with 64 bits of OS
  entropy (:mod:`secrets`), fresh at every call -- never from a caller's seed
  and never from torch's global generator, which any ``torch.manual_seed`` in
  the process would make predictable.  Which rows a step used is part of the
  guarantee (amplification by sampling assumes nobody knows the batches), so
  the batches are not reproducible either.  ``seed`` is therefore accepted only
  so that a caller can switch from :func:`protocols.local_training.train_local`
  without changing the call, and fixes nothing: every random choice of DP-SGD
  bears on privacy.  Residual risk: the generator (Mersenne Twister) is not a
  CSPRNG and ``torch.normal`` is open to floating-point attacks on the noise
  (Mironov 2012; Jin et al. 2021, arXiv:2107.10138) that secure mode mitigates;
  no single noise draw leaves the partner, only the model after a whole round
  of steps (and under CKKS only inside a sum over partners).
* *Accounting.* No Opacus accountant or ``PrivacyEngine`` is created: a fresh
  engine per round (each round is a separate request, possibly served by a
  restarted node) would report the epsilon of one round as if it were the job's.  The partner's
  :class:`privacy.budget_ledger.BudgetLedger`, charged before this runs, is the
  record.
* *Denominator.* The noisy sum is divided by the expected batch size
  ``n * sample_rate`` rather than the realised one (which depends on the data
  through the sample), as in the analysis; an empty Poisson batch still takes a
  step, with noise only.
* ``mean_loss`` is the mean per-row loss over the rows the last epoch sampled:
  an exact, non-private statistic of the training rows.  Under DP it must stay
  at the partner (log it locally; do not put it in a reply).
"""

from __future__ import annotations

import math
import secrets
import warnings

import numpy as np
import numpy.typing as npt
import torch
from opacus.grad_sample import GradSampleModule
from opacus.optimizers import DPOptimizer
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from opacus.validators import ModuleValidator
from torch import nn

from fedcollab.common.errors import PrivacyError, ProtocolError
from fedcollab.privacy.dp_plan import steps_per_epoch
from fedcollab.protocols._checks import as_binary_labels, as_matrix, check_positive_int
from fedcollab.protocols.local_training import LocalTrainResult, OptimizerKind
from fedcollab.protocols.models import get_weights

__all__ = ["steps_per_epoch", "train_local_dp"]  # steps_per_epoch: see privacy.dp_plan


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise PrivacyError(
            f"DP-SGD: {name} = {value!r} is not a finite number {'>=' if allow_zero else '>'} 0",
            hint=f"set privacy.{name} in the job spec",
        )
    return float(value)


def _check_rate(sample_rate: float) -> float:
    q = _check_positive("sample_rate", sample_rate)
    if q > 1:
        raise PrivacyError(
            f"DP-SGD: sample_rate = {sample_rate!r} is above 1", hint="choose a rate in (0, 1]"
        )
    return q


def _os_generator() -> torch.Generator:
    return torch.Generator().manual_seed(secrets.randbits(64))


def _check_model(model: nn.Module) -> None:
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise PrivacyError(
            f"the model has layers DP-SGD cannot train: {errors}",
            hint="use a model of protocols.models (Linear and ReLU layers only)",
        )


_LOSS = nn.BCEWithLogitsLoss(reduction="sum")  # summed: an empty batch gives 0, not NaN


def _train(
    wrapped: nn.Module,
    opt: torch.optim.Optimizer,
    sampler: UniformWithReplacementSampler,
    features: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
) -> tuple[float, int]:
    """Run the epochs; the summed loss and the number of rows of the last epoch."""
    epoch_loss, epoch_rows = 0.0, 0
    for _ in range(epochs):
        epoch_loss, epoch_rows = 0.0, 0
        for batch in sampler:
            idx = torch.as_tensor(batch, dtype=torch.long)
            opt.zero_grad(set_to_none=True)
            loss = _LOSS(wrapped(features[idx]).reshape(-1), labels[idx])
            loss.backward()
            opt.step()
            epoch_loss += float(loss.detach())
            epoch_rows += int(idx.numel())
    return epoch_loss, epoch_rows


def train_local_dp(
    model: nn.Module,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    epochs: int,
    sample_rate: float,
    learning_rate: float,
    optimizer: OptimizerKind,
    noise_multiplier: float,
    max_grad_norm: float,
    seed: int | None = None,
) -> LocalTrainResult:
    """Train ``model`` in place with DP-SGD on ``(x, y)`` and return its new weights.

    ``noise_multiplier = 0`` clips without noise (not private: for tests and
    baselines).  ``seed`` fixes nothing (see Notes).  The model comes back a
    plain module: Opacus's hooks and per-sample attributes are removed.
    """
    del seed  # every random choice of DP-SGD bears on privacy: see Notes
    features = torch.from_numpy(np.ascontiguousarray(as_matrix(x, name="features"), np.float32))
    labels_np = as_binary_labels(y)
    n = int(features.shape[0])
    if labels_np.shape[0] != n:
        raise ProtocolError(f"{n} feature rows but {labels_np.shape[0]} labels")
    if n == 0:
        raise ProtocolError("no training examples", hint="a partner needs at least one row")
    check_positive_int(epochs, name="epochs")
    if not (isinstance(learning_rate, int | float) and math.isfinite(learning_rate)):
        raise ProtocolError(f"learning_rate must be finite and > 0, got {learning_rate!r}")
    if learning_rate <= 0:
        raise ProtocolError(f"learning_rate must be finite and > 0, got {learning_rate!r}")
    q = _check_rate(sample_rate)
    z = _check_positive("noise_multiplier", noise_multiplier, allow_zero=True)
    clip = _check_positive("max_grad_norm", max_grad_norm)
    labels = torch.from_numpy(labels_np.astype(np.float32))

    model.train()
    _check_model(model)
    params = [p for p in model.parameters() if p.requires_grad]
    base: torch.optim.Optimizer
    if optimizer == "adam":
        base = torch.optim.Adam(params, lr=learning_rate)
    elif optimizer == "sgd":
        base = torch.optim.SGD(params, lr=learning_rate)
    else:
        raise ProtocolError(f"unknown optimizer {optimizer!r}; expected 'sgd' or 'adam'")

    generator = _os_generator()
    sampler = UniformWithReplacementSampler(
        num_samples=n, sample_rate=q, steps=steps_per_epoch(q), generator=generator
    )
    # The loss is summed over the batch; DPOptimizer divides the noisy sum by n * q.
    wrapped = GradSampleModule(model, loss_reduction="sum", strict=True)
    opt = DPOptimizer(
        base,
        noise_multiplier=z,
        max_grad_norm=clip,
        expected_batch_size=n * q,
        loss_reduction="mean",
        generator=generator,
        secure_mode=False,
    )
    try:
        with warnings.catch_warnings():
            # torch warns that Opacus's full backward hooks fire although the inputs need
            # no gradient: expected, per-sample gradients are taken w.r.t. the parameters.
            warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
            epoch_loss, epoch_rows = _train(wrapped, opt, sampler, features, labels, epochs)
    finally:
        opt.zero_grad(set_to_none=True)
        wrapped.to_standard_module()  # removes the hooks and per-sample attributes
        for p in params:
            if hasattr(p, "summed_grad"):  # set by DPOptimizer, not cleaned by Opacus
                del p.summed_grad
    if epoch_rows == 0:  # the last epoch's Poisson batches were all empty (tiny n * q)
        with torch.no_grad():
            epoch_loss = float(_LOSS(model(features).reshape(-1), labels))
        epoch_rows = n
    return LocalTrainResult(
        weights=get_weights(model), n_examples=n, mean_loss=epoch_loss / epoch_rows
    )
