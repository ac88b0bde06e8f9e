"""Weights as one flat vector, and back: the form FedAvg sums (no torch needed).

Kept apart from :mod:`protocols.models` so that partner processes that only
sum or split vectors do not pay for importing torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedcollab.protocols._checks import as_vector

__all__ = ["flatten", "shapes_of", "unflatten"]


def shapes_of(weights: Sequence[npt.ArrayLike]) -> list[tuple[int, ...]]:
    """The shape of each array in ``weights``."""
    return [tuple(np.shape(w)) for w in weights]


def flatten(weights: Sequence[npt.ArrayLike]) -> np.ndarray:
    """Concatenate ``weights`` into one flat float64 vector."""
    if len(weights) == 0:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate([np.asarray(w, dtype=np.float64).ravel() for w in weights])


def unflatten(vec: npt.ArrayLike, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """Split a flat vector back into arrays of ``shapes`` (inverse of :func:`flatten`)."""
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    arr = as_vector(vec, length=sum(sizes), name="flat weights")
    out: list[np.ndarray] = []
    pos = 0
    for shape, size in zip(shapes, sizes, strict=True):
        out.append(arr[pos : pos + size].reshape(shape))
        pos += size
    return out
