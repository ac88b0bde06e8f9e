from __future__ import annotations

import math

import pytest

from fedcollab.common.errors import ProtocolError
from fedcollab.protocols.early_stopping import EarlyStopping


def test_max_mode() -> None:
    es = EarlyStopping(patience=2, min_delta=0.0, mode="max")
    assert es.best_round is None and not es.should_stop
    assert [es.update(v) for v in (0.70, 0.75, 0.74, 0.75)] == [False, False, False, True]
    assert es.best_round == 2 and es.best_value == 0.75 and es.rounds_seen == 4


def test_min_mode_with_min_delta() -> None:
    es = EarlyStopping(patience=1, min_delta=0.1, mode="min")
    assert not es.update(1.0)
    assert not es.update(0.8)
    assert es.update(0.75)  # improves by less than min_delta
    assert es.best_round == 2


def test_nan_never_improves() -> None:
    es = EarlyStopping(patience=2, min_delta=0.0, mode="max")
    assert not es.update(math.nan)
    assert es.update(math.nan)
    assert es.best_round is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"patience": 0, "min_delta": 0.0, "mode": "max"},
        {"patience": 1, "min_delta": -0.1, "mode": "max"},
        {"patience": 1, "min_delta": 0.0, "mode": "best"},
    ],
)
def test_errors(kwargs: dict) -> None:
    with pytest.raises(ProtocolError):
        EarlyStopping(**kwargs)
