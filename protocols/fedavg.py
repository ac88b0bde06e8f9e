"""FedAvg in sum-only form: partners encode, the coordinator adds, then decodes.

Federated Averaging (McMahan et al. 2017, "Communication-Efficient Learning of
Deep Networks from Decentralized Data", arXiv:1602.05629) sets the global
model to the example-weighted mean of the partners' local models,
``sum_i n_i w_i / sum_i n_i``.  Both numerator and denominator are sums, so a
partner sends one vector ``[n_i * flatten(w_i), n_i]`` (:func:`encode_update`),
the coordinator adds the vectors (:class:`protocols.vector_sum.VectorSum`), and
:func:`decode_average` divides the first part by the last slot.

Example
-------
>>> u = encode_update([np.array([1.0, 3.0])], n_examples=2)
>>> v = encode_update([np.array([4.0, 0.0])], n_examples=1)
>>> decode_average(u + v, [(2,)])[0].tolist()
[2.0, 2.0]

Notes
-----
What the coordinator learns is only the sum -- and, through the last slot, the
total number of examples across partners.  Under CKKS the coordinator adds
ciphertexts and the partners (or a key holder) decrypt the sum; the total
count is then visible to whoever decrypts, and it is *not* protected by the
encryption of the individual updates.  A single partner's ``n_i`` is hidden
only if there are at least two partners in the sum.  Under DP, ``n_i`` is
itself a statistic of the data and the weighting must be fixed or noised by
the DP mechanism, not here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedcollab.common.errors import ProtocolError
from fedcollab.protocols._checks import EMPTY_COUNT, as_vector
from fedcollab.protocols.params import flatten, unflatten

__all__ = ["decode_average", "encode_update", "update_length"]


def update_length(shapes: Sequence[tuple[int, ...]]) -> int:
    """Length of an encoded update for weights of ``shapes`` (parameters + 1)."""
    return sum(int(np.prod(s, dtype=np.int64)) for s in shapes) + 1


def encode_update(weights: Sequence[npt.ArrayLike], *, n_examples: int) -> np.ndarray:
    """``concat(n_examples * flatten(weights), [n_examples])``."""
    if isinstance(n_examples, bool) or not isinstance(n_examples, int | np.integer):
        raise ProtocolError(f"n_examples must be an integer, got {n_examples!r}")
    if n_examples < 0:
        raise ProtocolError(f"n_examples must be >= 0, got {n_examples}")
    flat = as_vector(flatten(weights), name="weights")
    return np.concatenate([float(n_examples) * flat, [float(n_examples)]])


def decode_average(summed: npt.ArrayLike, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """The example-weighted average of the partners' weights, shaped as ``shapes``."""
    vec = as_vector(summed, length=update_length(shapes), name="summed update")
    total = vec[-1]
    if total < EMPTY_COUNT:
        raise ProtocolError(
            f"the summed example count is {total}; there is nothing to average",
            hint="at least one partner must train on at least one example",
        )
    return unflatten(vec[:-1] / total, shapes)
