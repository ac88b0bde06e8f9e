"""Streaming sum of partner vectors: the coordinator's only aggregation.

Every protocol in :mod:`protocols` is written so that what a partner sends is
a flat float64 vector and what the coordinator does with those vectors is add
them.  Addition is the one operation CKKS homomorphic encryption (Cheon, Kim,
Kim, Song 2017, "Homomorphic Encryption for Arithmetic of Approximate
Numbers", ASIACRYPT) gives us cheaply, so the same protocol code later runs
with the sum taken over ciphertexts.

:class:`VectorSum` adds replies as they arrive, so the coordinator never holds
all partners' vectors at once.

Example
-------
>>> acc = VectorSum(3)
>>> acc.add([1.0, 2.0, 3.0]); acc.add([0.5, 0.5, 0.5])
>>> acc.total.tolist(), acc.count
([1.5, 2.5, 3.5], 2)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedcollab.protocols._checks import as_vector, check_positive_int

__all__ = ["VectorSum"]


class VectorSum:
    """Running sum of flat float64 vectors of a fixed ``length``.

    :meth:`add` refuses (``ProtocolError``) a vector of another length or with
    a NaN/infinite entry; a refused vector leaves the sum unchanged.
    """

    def __init__(self, length: int) -> None:
        self._length = check_positive_int(length, name="length")
        self._total = np.zeros(self._length, dtype=np.float64)
        self._count = 0

    @property
    def length(self) -> int:
        """The length every added vector must have."""
        return self._length

    @property
    def count(self) -> int:
        """How many vectors have been added."""
        return self._count

    @property
    def total(self) -> np.ndarray:
        """The sum so far (a copy; all zeros before the first :meth:`add`)."""
        return self._total.copy()

    def add(self, vec: npt.ArrayLike) -> None:
        """Add one partner's vector to the sum."""
        arr = as_vector(vec, length=self._length, name=f"vector #{self._count + 1}")
        self._total += arr
        self._count += 1

    def __repr__(self) -> str:
        return f"VectorSum(length={self._length}, count={self._count})"
