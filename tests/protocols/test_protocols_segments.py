from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedcollab.common.errors import ProtocolError
from fedcollab.protocols.segments import (
    local_profile_vector,
    profile_vector_length,
    profiles_from_vector,
)
from fedcollab.protocols.vector_sum import VectorSum

NAMES = ["revenue", "pages"]


def test_fixed_example() -> None:
    seg = np.array([0, 0, 1, 2])
    raw = {"revenue": np.array([10.0, np.nan, 30.0, 5.0]), "pages": np.array([1.0, 3.0, 5.0, 7.0])}
    a = local_profile_vector(seg, raw, np.array([1.0, 0.0, 1.0, 0.0]), k=4, numeric_names=NAMES)
    b = local_profile_vector(
        np.array([1]), {"revenue": [50.0], "pages": [1.0]}, None, k=4, numeric_names=NAMES
    )
    assert a.shape == (profile_vector_length(k=4, numeric_names=NAMES),)
    profiles = profiles_from_vector(a + b, k=4, numeric_names=NAMES)
    p0, p1, p2, p3 = profiles
    assert (p0.segment, p0.size, p0.share, p0.purchase_rate) == (0, 2, 0.4, 0.5)
    assert p0.means == {"revenue": 10.0, "pages": 2.0}
    # Partner b has no labels: segment 1's purchase rate is over labelled customers only.
    assert (p1.size, p1.purchase_rate, p1.means) == (2, 1.0, {"revenue": 40.0, "pages": 3.0})
    assert p2.purchase_rate == 0.0
    assert (p3.size, p3.share, p3.purchase_rate, p3.means) == (
        0,
        0.0,
        None,
        {"revenue": None, "pages": None},
    )


@given(st.integers(0, 2**32 - 1), st.integers(1, 5), st.integers(1, 4))
def test_federated_equals_pooled(seed: int, k: int, n_partners: int) -> None:
    rng = np.random.default_rng(seed)
    n = 200
    seg = rng.integers(0, k, size=n)
    revenue = rng.gamma(2.0, 30.0, size=n)
    revenue[rng.random(n) < 0.2] = np.nan
    raw = {"revenue": revenue, "pages": rng.poisson(5, size=n).astype(float)}
    y = (rng.random(n) < 0.3).astype(np.float32)
    acc = VectorSum(profile_vector_length(k=k, numeric_names=NAMES))
    for idx in np.array_split(rng.permutation(n), n_partners):
        acc.add(
            local_profile_vector(
                seg[idx], {c: v[idx] for c, v in raw.items()}, y[idx], k=k, numeric_names=NAMES
            )
        )
    for p in profiles_from_vector(acc.total, k=k, numeric_names=NAMES):
        members = seg == p.segment
        assert p.size == members.sum()
        assert p.share == pytest.approx(members.mean())
        if p.size:
            assert p.purchase_rate == pytest.approx(y[members].mean())
            assert p.means["pages"] == pytest.approx(raw["pages"][members].mean())
        present = members & ~np.isnan(revenue)
        if present.any():
            assert p.means["revenue"] == pytest.approx(revenue[present].mean())
        else:
            assert p.means["revenue"] is None


def test_errors() -> None:
    raw = {"revenue": np.zeros(3), "pages": np.zeros(3)}
    with pytest.raises(ProtocolError, match=r"\[0, 2\)"):
        local_profile_vector(np.array([0, 1, 2]), raw, None, k=2, numeric_names=NAMES)
    with pytest.raises(ProtocolError, match="integer"):
        local_profile_vector(np.array([0.0, 1.0, 1.0]), raw, None, k=2, numeric_names=NAMES)
    with pytest.raises(ProtocolError, match="missing"):
        local_profile_vector(
            np.array([0, 1, 1]), {"revenue": np.zeros(3)}, None, k=2, numeric_names=NAMES
        )
    with pytest.raises(ProtocolError, match="rows"):
        local_profile_vector(np.array([0, 1]), raw, None, k=2, numeric_names=NAMES)
    with pytest.raises(ProtocolError, match="labels"):
        local_profile_vector(np.array([0, 1, 1]), raw, np.zeros(2), k=2, numeric_names=NAMES)
    with pytest.raises(ProtocolError, match="length"):
        profiles_from_vector(np.zeros(5), k=2, numeric_names=NAMES)
    with pytest.raises(ProtocolError, match="no customers"):
        profiles_from_vector(np.zeros(14), k=2, numeric_names=NAMES)
    bad = np.zeros(14)
    bad[0], bad[1] = 3.0, -2.0
    with pytest.raises(ProtocolError, match="negative"):
        profiles_from_vector(bad, k=2, numeric_names=NAMES)
