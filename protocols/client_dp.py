"""A partner's DP noise: DP-FedAvg updates, and DP k-means sums and counts.

*DP-FedAvg, client level* (McMahan et al. 2018, "Learning Differentially
Private Recurrent Language Models", arXiv:1710.06963): a partner clips its
model update to L2 norm ``clip_norm`` (:func:`clip_update`) and adds its share
of the Gaussian noise (:func:`noise_share`); under encryption only the sum of
the shares is ever decrypted.  :func:`private_update` does both.

*DP k-means, record level* (Su et al. 2016, "Differentially Private k-Means
Clustering", CODASPY; Blum et al. 2005, "Practical Privacy: the SuLQ
Framework", PODS): a partner clips its standardised rows to L2 norm
``row_clip_norm`` (:func:`clip_rows`) and releases per-cluster sums and
counts with Gaussian noise (:func:`noisy_cluster_vector`,
:func:`private_cluster_vector`); segment profiles likewise, in the bounded
layout of :mod:`protocols.dp_segments` (:func:`private_profile_vector`).

>>> clip_update(np.array([6.0, 8.0]), clip_norm=5.0).tolist()
[3.0, 4.0]

Notes
-----
* *Sensitivities (add or remove one row).* A row lands in one cluster: its
  sums move by the clipped row (norm <= B) and its count by 1, so the Lloyd
  vector has L2 sensitivity ``sqrt(B^2 + 1)``; the bounded profile vector adds
  a labelled count and a label sum, ``sqrt(B^2 + 3)``.  The inertia is a sum of
  unbounded squared distances: it is not released (set to 0).  Small-cluster
  suppression (:func:`protocols.kmeans.suppress_small_clusters`) must not run
  before the noise: a row that lifts a cluster over the threshold would
  release the whole cluster, far beyond these sensitivities.
* *Record level: full noise at each partner.* Each partner adds noise of std
  ``z * sensitivity`` to its own vector, so its guarantee holds even against a
  coordinator that sees that vector alone (no encryption, or a colluding key
  holder); sums over partners are post-processing.
* *Client level: distributed noise.* One partner changes the sum of clipped
  updates by at most ``C``.  Each of ``m >= min_partners`` contributors adds
  ``N(0, (z*C)^2 / min_partners)``, so the sum carries noise of std
  ``z*C*sqrt(m / min_partners) >= z*C``: the Gaussian mechanism of DP-FedAvg.
  A single share is far too small to protect anyone, so this needs
  encryption (nobody sees one noisy update) and an aggregate of at least
  ``min_partners`` contributions; partners who collude can subtract their own
  shares and leave less noise than ``z*C``.
* *Randomness.* Every call draws from ``np.random.default_rng`` seeded with 128
  bits of OS entropy (:mod:`secrets`): never reproducible from a job's seeds.
  PCG64 is not a CSPRNG and floating-point Gaussian samples are open to
  precision attacks (Mironov 2012) -- a residual risk accepted here, as for
  DP-SGD in :mod:`protocols.dp_sgd`.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedcollab.common.errors import PrivacyError, ProtocolError
from fedcollab.privacy.dp_plan import cluster_sensitivity, profile_sensitivity
from fedcollab.protocols import dp_segments, kmeans
from fedcollab.protocols._checks import as_matrix, as_vector
from fedcollab.protocols.params import flatten

__all__ = [
    "clip_rows",
    "clip_update",
    "cluster_sensitivity",
    "noise_share",
    "noise_to_signal",
    "noisy_cluster_vector",
    "private_cluster_vector",
    "private_profile_vector",
    "private_update",
    "profile_sensitivity",
]


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PrivacyError(f"{name} must be a number, got {value!r}", hint=f"set {name} > 0")
    if not (math.isfinite(value) and value > 0):
        raise PrivacyError(f"{name} = {value!r} is not a finite number > 0", hint=f"set {name} > 0")
    return float(value)


def _gaussian(shape: int | tuple[int, ...], std: float) -> np.ndarray:
    """Fresh Gaussian noise from OS entropy (see Notes)."""
    return np.random.default_rng(secrets.randbits(128)).normal(0.0, std, size=shape)


# --- DP-FedAvg (client level) ---------------------------------------------------------


def clip_update(delta: np.ndarray, *, clip_norm: float) -> np.ndarray:
    """``delta * min(1, clip_norm / ||delta||_2)`` (a copy; the L2 norm over all entries)."""
    c = _positive("clip_norm", clip_norm)
    arr = np.array(delta, dtype=np.float64, copy=True)
    if not np.all(np.isfinite(arr)):
        raise ProtocolError("model update: contains NaN or infinite values")
    norm = float(np.linalg.norm(arr.ravel()))
    if norm > c:
        arr *= c / norm
    return arr


def noise_share(
    length: int, *, noise_multiplier: float, clip_norm: float, parties: int
) -> np.ndarray:
    """One partner's share of DP-FedAvg noise: ``N(0, (z*C)^2 / parties)`` per entry.

    ``parties`` is the job's ``min_partners``: a sum of that many shares has std ``z*C``.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ProtocolError(f"noise length must be an integer >= 0, got {length!r}")
    if isinstance(parties, bool) or not isinstance(parties, int) or parties < 1:
        raise PrivacyError(
            f"parties must be an integer >= 1, got {parties!r}", hint="pass the job's min_partners"
        )
    z = _positive("noise_multiplier", noise_multiplier)
    c = _positive("clip_norm", clip_norm)
    return _gaussian(length, z * c / math.sqrt(parties))


def noise_to_signal(
    *, noise_multiplier: float, n_parameters: int, contributors: int, min_partners: int, rounds: int
) -> float:
    """The DP-FedAvg noise on the released model over the largest signal it can carry.

    A round's mean update is the mean of ``m = contributors`` updates of norm <= C
    plus ``m`` noise shares of std ``z*C/sqrt(min_partners)`` per entry: noise of std
    ``z*C*sqrt(m/min_partners)/m`` per entry.  Over ``rounds`` rounds the model moves
    by at most ``rounds * C`` (every partner pushing the same way by the full clip
    norm every round), while the noise adds up to an L2 norm of about
    ``z*C*sqrt(rounds * n_parameters / (m * min_partners))``.  The ratio does not
    depend on C; at a fixed epsilon it hardly depends on the rounds either (``z``
    grows about as ``sqrt(rounds)``).  Above 1 the noise outweighs even that best
    case and the released model is close to random (with 9 partners and 73
    parameters, epsilon 1: about 3.8); more partners, fewer parameters or a larger
    epsilon lower it.

    >>> round(noise_to_signal(noise_multiplier=7.01, n_parameters=73, contributors=9,
    ...                       min_partners=9, rounds=3), 2)
    3.84
    """
    z = _positive("noise_multiplier", noise_multiplier)
    counts = {
        "n_parameters": n_parameters,
        "contributors": contributors,
        "min_partners": min_partners,
        "rounds": rounds,
    }
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PrivacyError(
                f"{name} must be an integer >= 1, got {value!r}",
                hint="pass the model's parameter count and the job's partners and rounds",
            )
    return z * math.sqrt(n_parameters / (contributors * min_partners * rounds))


def private_update(
    new_weights: Sequence[npt.ArrayLike],
    global_weights: Sequence[npt.ArrayLike],
    *,
    clip_norm: float,
    noise_multiplier: float,
    parties: int,
) -> np.ndarray:
    """A partner's DP-FedAvg reply: its clipped flat update plus its noise share.

    The coordinator adds the replies of at least ``parties`` partners and
    divides by a public denominator (McMahan et al. use the expected number of
    partners per round; not the reply count, which depends on who took part).
    """
    new_flat = as_vector(flatten(new_weights), name="new weights")
    old_flat = as_vector(flatten(global_weights), length=new_flat.size, name="global weights")
    clipped = clip_update(new_flat - old_flat, clip_norm=clip_norm)
    noise = noise_share(
        clipped.size, noise_multiplier=noise_multiplier, clip_norm=clip_norm, parties=parties
    )
    out: np.ndarray = clipped + noise
    return out


# --- DP k-means and profiles (record level) -------------------------------------------


def clip_rows(x: npt.ArrayLike, *, max_norm: float) -> np.ndarray:
    """Each row of ``x`` scaled by ``min(1, max_norm / ||row||_2)`` (a float64 copy)."""
    b = _positive("max_norm", max_norm)
    data = np.array(as_matrix(x, name="features"), dtype=np.float64, copy=True)
    norms = np.linalg.norm(data, axis=1)
    over = norms > b
    data[over] *= (b / norms[over])[:, None]
    return data


def noisy_cluster_vector(
    vec: npt.ArrayLike,
    *,
    k: int,
    n_features: int,
    noise_multiplier: float,
    row_clip_norm: float,
) -> np.ndarray:
    """A :func:`protocols.kmeans.local_cluster_vector` with Gaussian noise, inertia 0.

    ``vec`` must come from rows clipped to ``row_clip_norm`` (:func:`clip_rows`;
    :func:`private_cluster_vector` does it all).  Sums and counts get noise of
    std ``z * sqrt(row_clip_norm^2 + 1)``, their L2 sensitivity when one row is
    added or removed; the inertia (unbounded) is replaced by 0.
    """
    length = kmeans.cluster_vector_length(k=k, n_features=n_features)
    out = as_vector(vec, length=length, name="Lloyd vector")
    z = _positive("noise_multiplier", noise_multiplier)
    std = z * cluster_sensitivity(row_clip_norm=row_clip_norm)
    out[:-1] += _gaussian(length - 1, std)
    out[-1] = 0.0
    return out


def private_cluster_vector(
    x: npt.ArrayLike, centroids: npt.ArrayLike, *, noise_multiplier: float, row_clip_norm: float
) -> np.ndarray:
    """A partner's DP Lloyd reply: clip its rows, sum per cluster, add noise."""
    c = as_matrix(centroids, name="centroids")
    clipped = clip_rows(x, max_norm=row_clip_norm)
    return noisy_cluster_vector(
        kmeans.local_cluster_vector(clipped, c),
        k=c.shape[0],
        n_features=c.shape[1],
        noise_multiplier=noise_multiplier,
        row_clip_norm=row_clip_norm,
    )


def private_profile_vector(
    x: npt.ArrayLike,
    centroids: npt.ArrayLike,
    labels: npt.ArrayLike | None,
    *,
    noise_multiplier: float,
    row_clip_norm: float,
) -> np.ndarray:
    """A partner's DP segment-profile reply (layout of :mod:`protocols.dp_segments`).

    Clips the standardised rows ``x``, assigns them to ``centroids``, and adds
    noise of std ``z * sqrt(row_clip_norm^2 + 3)`` to every entry.  The
    coordinator decodes the sum with
    :func:`protocols.dp_segments.profiles_from_bounded_vector`.
    """
    z = _positive("noise_multiplier", noise_multiplier)
    clipped = clip_rows(x, max_norm=row_clip_norm)
    vec = dp_segments.local_bounded_profile_vector(clipped, centroids, labels)
    out: np.ndarray = vec + _gaussian(
        vec.size, z * profile_sensitivity(row_clip_norm=row_clip_norm)
    )
    return out
