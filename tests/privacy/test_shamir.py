"""Shamir sharing: any t shares give the secret, fewer are refused, altered shares are
detected when there is redundancy, and the field is the prime the docstring says."""

from __future__ import annotations

import itertools

import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcollab.common.errors import PrivacyError
from fedcollab.privacy.shamir import (
    PRIME,
    InconsistentSharesError,
    Share,
    combine,
    split,
)


def test_field_is_the_smallest_prime_above_2_256() -> None:
    assert sympy.isprime(PRIME)
    assert sympy.nextprime(2**256) == PRIME


@settings(max_examples=40, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    n=st.integers(1, 9),
    data=st.data(),
)
def test_any_t_shares_reconstruct(secret: bytes, n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n))
    shares = split(secret, threshold=t, xs=list(range(1, n + 1)))
    subset = data.draw(st.permutations(shares)).__getitem__(slice(0, data.draw(st.integers(t, n))))
    assert combine(subset, threshold=t) == secret


def test_fewer_than_t_shares_are_refused() -> None:
    shares = split(b"\x07" * 32, threshold=3, xs=[1, 2, 3, 4])
    with pytest.raises(PrivacyError):
        combine(shares[:2], threshold=3)


def _interpolate(points: list[tuple[int, int]], at: int) -> int:
    total = 0
    for i, (xi, yi) in enumerate(points):
        num = den = 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                num = num * (at - xj) % PRIME
                den = den * (xi - xj) % PRIME
        total += yi * num * pow(den, -1, PRIME)
    return total % PRIME


def test_t_minus_one_shares_fit_every_secret() -> None:
    """Perfect hiding, checked directly: 2 shares of a 3-of-n sharing extend to any secret."""
    shares = split(b"\x01" * 32, threshold=3, xs=[1, 2, 3])
    for other in (b"\x00" * 32, b"\xff" * 32, b"\x01" * 32):
        points = [(0, int.from_bytes(other, "big")), (1, shares[0].y), (2, shares[1].y)]
        forged = [shares[0], shares[1], Share(3, _interpolate(points, 3))]
        assert combine(forged, threshold=3) == other


def test_altered_share_is_detected_with_redundancy() -> None:
    shares = split(bytes(range(32)), threshold=3, xs=[1, 2, 3, 4, 5])
    for i in range(5):
        bad = list(shares)
        bad[i] = Share(bad[i].x, (bad[i].y + 1) % PRIME)
        with pytest.raises(InconsistentSharesError):
            combine(bad, threshold=3)


def test_duplicate_holder_is_refused() -> None:
    shares = split(bytes(32), threshold=2, xs=[1, 2, 3])
    with pytest.raises(InconsistentSharesError):
        combine([shares[0], shares[0], shares[1]], threshold=2)


@pytest.mark.parametrize(
    ("secret", "t", "xs"),
    [
        (b"short", 1, [1]),
        (bytes(32), 0, [1]),
        (bytes(32), 3, [1, 2]),
        (bytes(32), 1, [1, 1]),
        (bytes(32), 1, [0]),
    ],
)
def test_bad_split_arguments_are_refused(secret: bytes, t: int, xs: list[int]) -> None:
    with pytest.raises(PrivacyError):
        split(secret, threshold=t, xs=xs)


def test_share_serialisation_round_trips() -> None:
    for share in split(b"\xaa" * 32, threshold=2, xs=[1, 2]):
        assert Share.from_y_bytes(share.x, share.y_bytes()) == share
    assert len(list(itertools.chain(split(bytes(32), threshold=1, xs=[5])))) == 1
