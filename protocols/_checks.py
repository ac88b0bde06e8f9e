"""Input checks shared by the protocol modules (private).

Every check raises :class:`common.errors.ProtocolError`: in a protocol, a
vector of the wrong length or a non-finite value is a malformed message, and it
must stop the step before anything is aggregated or decoded.

Notes
-----
Counts travel as float64 and may be summed approximately (CKKS decrypts
999.9999997 rather than 1000).  True counts are integers, so a summed count
below :data:`EMPTY_COUNT` (0.5) is read as zero and consistency checks between
counts tolerate up to 0.5 of disagreement.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedcollab.common.errors import ProtocolError

__all__ = [
    "EMPTY_COUNT",
    "as_binary_labels",
    "as_column",
    "as_matrix",
    "as_vector",
    "check_positive_int",
]

EMPTY_COUNT = 0.5
"""Summed counts below this are treated as zero (counts are integers)."""


def as_vector(vec: npt.ArrayLike, *, length: int | None = None, name: str) -> np.ndarray:
    """``vec`` as a finite, 1-D float64 array (a copy), optionally of ``length``."""
    try:
        arr = np.array(vec, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"{name}: not a numeric vector ({exc})") from exc
    if arr.ndim != 1:
        raise ProtocolError(f"{name}: expected a flat vector, got shape {arr.shape}")
    if length is not None and arr.shape[0] != length:
        raise ProtocolError(
            f"{name}: expected length {length}, got {arr.shape[0]}",
            hint="partners and coordinator must use the same layout (same schema and job spec)",
        )
    if not np.all(np.isfinite(arr)):
        raise ProtocolError(f"{name}: contains NaN or infinite values")
    return arr


def as_matrix(x: npt.ArrayLike, *, name: str, allow_nan: bool = False) -> np.ndarray:
    """``x`` as a 2-D float64 array; finite unless ``allow_nan`` (then only NaN)."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"{name}: not a numeric matrix ({exc})") from exc
    if arr.ndim != 2:
        raise ProtocolError(f"{name}: expected a 2-D array, got shape {arr.shape}")
    bad = np.isinf(arr) if allow_nan else ~np.isfinite(arr)
    if np.any(bad):
        raise ProtocolError(f"{name}: contains {'infinite' if allow_nan else 'non-finite'} values")
    return arr


def as_column(values: npt.ArrayLike, *, name: str) -> np.ndarray:
    """A numeric column as 1-D float64; NaN (missing) allowed, infinities refused."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"column {name!r}: not numeric ({exc})") from exc
    if arr.ndim != 1:
        raise ProtocolError(f"column {name!r}: expected 1-D, got shape {arr.shape}")
    if np.any(np.isinf(arr)):
        raise ProtocolError(f"column {name!r}: contains infinite values")
    return arr


def as_binary_labels(y: npt.ArrayLike, *, name: str = "labels") -> np.ndarray:
    """Labels as 1-D float64 with every value exactly 0 or 1."""
    arr = np.asarray(y, dtype=np.float64)
    if arr.ndim != 1:
        raise ProtocolError(f"{name}: expected 1-D, got shape {arr.shape}")
    if not np.all((arr == 0.0) | (arr == 1.0)):
        raise ProtocolError(f"{name}: every value must be 0 or 1")
    return arr


def check_positive_int(value: int, *, name: str, minimum: int = 1) -> int:
    """``value`` if it is an int >= ``minimum`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ProtocolError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
