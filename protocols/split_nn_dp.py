"""Differential-privacy accounting of split-NN embedding releases.

A feature party of :mod:`protocols.split_nn` with ``noise_multiplier > 0``
clips each released row embedding to L2 norm ``clip_norm`` and adds Gaussian
noise of std ``noise_multiplier * clip_norm`` per coordinate (the Gaussian
mechanism, Dwork and Roth 2014, "The Algorithmic Foundations of Differential
Privacy", section 3.5.3).  :func:`embedding_mechanism` counts the releases of
one row in a job; :func:`epsilon_for` and :func:`noise_for` convert through
:mod:`privacy.accounting` (RDP by default, Mironov 2017, arXiv:1702.07476).
All three are re-exported by :mod:`protocols.split_nn`.

Example
-------
>>> from fedcollab.protocols.split_nn import SplitNNConfig
>>> config = SplitNNConfig(steps=20, batch_size=50, noise_multiplier=4.0)
>>> embedding_mechanism(config, 100, inference_releases=1).count  # 10 steps + 1 embed
11

Notes
-----
* *What the epsilon covers.* Record-level DP of one feature party's feature
  values against everything L receives *as embeddings of that record*: the
  training releases of the row plus ``inference_releases`` extra releases.
  A record's ID and membership are known to L (PSI, shared batches), so the
  neighbouring relation is "replace one row's features"; two clipped
  embeddings differ by at most ``2 * clip_norm``, hence each release is a
  Gaussian mechanism with noise multiplier ``noise_multiplier / 2``.
* *No amplification by sampling.* L must know which rows a batch holds (to
  pick the labels), so the sampling is public and
  :class:`privacy.accounting.SampledGaussian` would overstate privacy; a row is
  charged once per step it is in (at most ``ceil(steps / batches_per_epoch)``).
* *Not covered.* (1) The bottom model trains on the raw features without
  DP-SGD, so a record also influences the *other* rows' later embeddings
  through the weights: the epsilon bounds the direct releases, it is not an
  end-to-end guarantee for the trained model (that needs DP-SGD on the bottom
  update too). (2) Label leakage to feature parties through the returned
  gradients (norm and direction attacks, Li et al. 2021, arXiv:2102.08504) is
  not mitigated here. (3) L's own features never leave L and get no noise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedcollab.common.errors import PrivacyError
from fedcollab.privacy.accounting import AccountantKind, Gaussian, epsilon, gaussian_noise_for
from fedcollab.protocols._checks import check_positive_int

if TYPE_CHECKING:
    from fedcollab.protocols.split_nn import SplitNNConfig

__all__ = ["embedding_mechanism", "epsilon_for", "noise_for"]


def _count(config: SplitNNConfig, n_rows: int, inference_releases: int) -> int:
    # Imported here, not at the top: protocols.split_nn re-exports this module.
    from fedcollab.protocols.split_nn import releases_per_row

    extra = check_positive_int(inference_releases, name="inference_releases", minimum=0)
    return releases_per_row(config, n_rows) + extra


def embedding_mechanism(
    config: SplitNNConfig, n_rows: int, *, inference_releases: int = 0
) -> Gaussian:
    """All releases of one feature party's row in a job, as a DP mechanism.

    ``inference_releases`` counts the :meth:`protocols.split_nn.BottomParty.embed` calls a row goes
    through (evaluation, scoring); see the module notes for what is covered.
    """
    if config.noise_multiplier == 0:
        raise PrivacyError(
            "embedding noise is off (noise_multiplier = 0): the embeddings are not DP",
            hint="set noise_multiplier > 0, e.g. from noise_for(...)",
        )
    count = _count(config, n_rows, inference_releases)
    return Gaussian(noise_multiplier=config.noise_multiplier / 2.0, count=count)


def epsilon_for(
    config: SplitNNConfig,
    n_rows: int,
    *,
    target_delta: float,
    inference_releases: int = 0,
    accountant: AccountantKind = "rdp",
) -> float:
    """Epsilon of :func:`embedding_mechanism` at ``target_delta``."""
    mechanism = embedding_mechanism(config, n_rows, inference_releases=inference_releases)
    return epsilon([mechanism], target_delta=target_delta, accountant=accountant)


def noise_for(
    target_epsilon: float,
    *,
    config: SplitNNConfig,
    n_rows: int,
    target_delta: float,
    inference_releases: int = 0,
    accountant: AccountantKind = "rdp",
) -> float:
    """The smallest ``noise_multiplier`` for which ``config`` meets the target."""
    count = _count(config, n_rows, inference_releases)
    # sensitivity 2 * clip_norm: see the module notes
    return 2.0 * gaussian_noise_for(
        target_epsilon, target_delta=target_delta, count=count, accountant=accountant
    )
