"""Early stopping on a per-round validation metric.

The coordinator stops a federated training job when the federated validation
metric has not improved by more than ``min_delta`` for ``patience`` consecutive
rounds (Prechelt 1998, "Early Stopping -- But When?", in Neural Networks:
Tricks of the Trade, LNCS 1524).

Example
-------
>>> es = EarlyStopping(patience=2, min_delta=0.0, mode="max")
>>> [es.update(v) for v in (0.70, 0.75, 0.74, 0.75)]
[False, False, False, True]
>>> es.best_round, es.best_value
(2, 0.75)
"""

from __future__ import annotations

import math
from typing import Literal

from fedcollab.common.errors import ProtocolError
from fedcollab.protocols._checks import check_positive_int

__all__ = ["EarlyStopping"]


class EarlyStopping:
    """Tracks the best value; :meth:`update` says whether to stop.

    Rounds are counted by :meth:`update` calls starting at 1, like Flower's
    ``server_round``.  A NaN value never counts as an improvement.
    """

    def __init__(self, *, patience: int, min_delta: float, mode: Literal["max", "min"]) -> None:
        self.patience = check_positive_int(patience, name="patience")
        if not (math.isfinite(min_delta) and min_delta >= 0):
            raise ProtocolError(f"min_delta must be finite and >= 0, got {min_delta!r}")
        if mode not in ("max", "min"):
            raise ProtocolError(f"mode must be 'max' or 'min', got {mode!r}")
        self.min_delta = float(min_delta)
        self.mode = mode
        self._round = 0
        self._best_round: int | None = None
        self._best_value: float | None = None

    @property
    def best_round(self) -> int | None:
        """The round (1-based) with the best value so far; None before any update."""
        return self._best_round

    @property
    def best_value(self) -> float | None:
        """The best value so far; None before any non-NaN update."""
        return self._best_value

    @property
    def rounds_seen(self) -> int:
        """How many values have been passed to :meth:`update`."""
        return self._round

    @property
    def should_stop(self) -> bool:
        """True once ``patience`` rounds have passed without improvement."""
        return self._round - (self._best_round or 0) >= self.patience

    def _improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self._best_value is None:
            return True
        if self.mode == "max":
            return value > self._best_value + self.min_delta
        return value < self._best_value - self.min_delta

    def update(self, value: float) -> bool:
        """Record this round's value; return True if training should stop now."""
        value = float(value)
        self._round += 1
        if self._improves(value):
            self._best_value = value
            self._best_round = self._round
        return self.should_stop
