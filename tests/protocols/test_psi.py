"""protocols.psi: ring ECDH-PSI on X25519 is correct, unlinkable and fails closed."""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcollab.common.errors import DataValidationError, ProtocolError
from fedcollab.protocols import psi
from fedcollab.protocols.psi import (
    TAG_BYTES,
    PsiConfig,
    PsiParty,
    aligned_rows,
    intersect,
    ring_route,
    run_psi_local,
)

# Small-order u-coordinates of Curve25519 and its twist (little-endian, RFC 7748 encoding).
U0 = bytes(32)
U1 = (1).to_bytes(32, "little")
P = 2**255 - 19
LOW_ORDER = [U0, U1, (P - 1).to_bytes(32, "little"), P.to_bytes(32, "little")]


def _config(parties: tuple[str, ...] = ("a", "b", "c"), run: str = "r1") -> PsiConfig:
    return PsiConfig(run=run, parties=parties, label_holder=parties[0])


def _values(blob: bytes) -> list[bytes]:
    return [blob[i : i + TAG_BYTES] for i in range(0, len(blob), TAG_BYTES)]


def test_public_surface() -> None:
    assert set(psi.__all__) == {
        "DOMAIN",
        "POOL_THRESHOLD",
        "SALTED_DOMAIN",
        "SALT_BYTES",
        "TAG_BYTES",
        "PsiConfig",
        "PsiParty",
        "aligned_rows",
        "check_ids",
        "intersect",
        "ring_route",
        "run_psi_local",
    }
    for name in psi.__all__:
        assert hasattr(psi, name)


def test_docstring_examples() -> None:
    result = doctest.testmod(psi, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


_ids = st.lists(st.text(alphabet="abcdé", max_size=3), unique=True, max_size=12)


@settings(max_examples=15)
@given(
    sets=st.lists(_ids, min_size=2, max_size=3), holder=st.integers(0, 2), seed=st.integers(0, 9)
)
def test_aligned_rows_are_the_true_intersection_in_one_order(
    sets: list[list[str]], holder: int, seed: int
) -> None:
    names = [f"p{i}" for i in range(len(sets))]
    given_sets = dict(zip(names, sets, strict=True))
    rows = run_psi_local(given_sets, label_holder=names[holder % len(names)], seed=seed)

    truth = set.intersection(*(set(s) for s in sets))
    aligned = {name: [given_sets[name][i] for i in rows[name]] for name in names}
    first = aligned[names[0]]
    assert sorted(first) == sorted(truth)
    assert all(aligned[name] == first for name in names)  # same ids, same order, every party


def test_empty_set_gives_empty_intersection() -> None:
    rows = run_psi_local({"a": [], "b": ["x", "y"]}, label_holder="b")
    assert rows["a"].size == 0
    assert rows["b"].size == 0
    assert rows["a"].dtype == np.int64


def test_blinding_commutes() -> None:
    config = _config(("a", "b"))
    a, b = PsiParty("a", config), PsiParty("b", config)
    blob, _ = PsiParty("a", config).blind_own(["x", "y", "z"])
    assert a.blind(b.blind(blob)) == b.blind(a.blind(blob))
    assert a.blind(blob) != b.blind(blob)


def test_restored_party_blinds_the_same() -> None:
    config = _config(("a", "b"))
    party = PsiParty("a", config)
    again = PsiParty("a", config, key=party.key_bytes)
    assert party.blind_own(["x", "y"], seed=3)[0] == again.blind_own(["x", "y"], seed=3)[0]
    assert party.blind_own(["x"])[0] != PsiParty("a", config).blind_own(["x"])[0]


def test_blind_own_shuffles_and_maps_back() -> None:
    ids = [f"id{i}" for i in range(50)]
    party = PsiParty("a", _config())
    blob, permutation = party.blind_own(ids)  # OS-random shuffle
    assert sorted(permutation.tolist()) == list(range(50))
    assert permutation.tolist() != list(range(50))
    values = _values(blob)
    for position in (0, 17, 49):
        (single, _) = party.blind_own([ids[permutation[position]]])
        assert values[position] == single


def test_runs_are_unlinkable() -> None:
    key = bytes(range(32))
    ids = ["ann", "bob", "cy"]
    one = PsiParty("a", _config(run="job-1"), key=key).blind_own(ids, seed=0)[0]
    two = PsiParty("a", _config(run="job-2"), key=key).blind_own(ids, seed=0)[0]
    assert not set(_values(one)) & set(_values(two))
    # The length prefixes keep the run/id boundary unambiguous.
    ab_c = PsiParty("a", _config(run="ab"), key=key).blind_own(["c"])[0]
    a_bc = PsiParty("a", _config(run="a"), key=key).blind_own(["bc"])[0]
    assert ab_c != a_bc


def test_intermediate_sets_share_no_value_and_full_sets_match() -> None:
    config = _config(("a", "b", "c"))
    parties = {name: PsiParty(name, config) for name in config.parties}
    ids = ["ann", "bob", "cy", "dee"]  # the same ids at every party
    intermediate: dict[tuple[str, ...], set[bytes]] = {}
    full: dict[str, bytes] = {}
    for owner in config.parties:
        route = ring_route(config, owner)
        blob, _ = parties[owner].blind_own(ids)
        for hops in range(1, len(route)):
            intermediate[route[:hops]] = set(_values(blob))
            blob = parties[route[hops]].blind(blob)
        full[owner] = blob
    # Every intermediate set is blinded by a different key subset (a ring arc) ...
    subsets = [frozenset(arc) for arc in intermediate]
    assert len(set(subsets)) == len(subsets) == 6
    for x, y in itertools.combinations(intermediate.values(), 2):
        assert not x & y
    # ... while the fully blinded sets are equal as sets.
    assert len({frozenset(_values(b)) for b in full.values()}) == 1
    assert all(len(p) == 4 for p in intersect(full).values())


def test_ring_route() -> None:
    config = _config(("a", "b", "c", "d"))
    assert ring_route(config, "a") == ("a", "b", "c", "d")
    assert ring_route(config, "c") == ("c", "d", "a", "b")
    with pytest.raises(ProtocolError):
        ring_route(config, "z")


@pytest.mark.parametrize(
    ("parties", "holder"),
    [(("a",), "a"), (("a", "a"), "a"), (("a", "b"), "z"), (("a", ""), "a")],
)
def test_config_refuses_bad_parties(parties: tuple[str, ...], holder: str) -> None:
    with pytest.raises(ProtocolError) as info:
        PsiConfig(run="r", parties=parties, label_holder=holder)
    assert info.value.exit_code == 16


@pytest.mark.parametrize("u", LOW_ORDER)
def test_low_order_point_refused(u: bytes) -> None:
    party = PsiParty("a", _config())
    good, _ = party.blind_own(["x"])
    with pytest.raises(ProtocolError) as info:
        party.blind(good + u + good)
    assert "low-order" in info.value.message
    assert info.value.hint


def test_low_order_point_refused_in_pool() -> None:
    party = PsiParty("a", _config(), workers=2, pool_threshold=100)
    good, _ = party.blind_own([f"id{i}" for i in range(200)])
    with pytest.raises(ProtocolError, match="low-order"):
        party.blind(good + U1)


@pytest.mark.parametrize("blob", [b"x" * 31, b"x" * 33, bytearray(32), "x" * 32])
def test_malformed_blob_refused(blob: bytes) -> None:
    with pytest.raises(ProtocolError, match="32-byte"):
        PsiParty("a", _config()).blind(blob)


def test_duplicate_ids_refused() -> None:
    with pytest.raises(DataValidationError) as info:
        PsiParty("a", _config()).blind_own(["x", "y", "x"])
    assert info.value.row == 4  # 1-based with the header as row 1
    assert "row 2" in info.value.message
    assert "'x'" not in info.value.message  # the id itself stays out of error reports
    assert "deduplicate" in info.value.hint


def test_non_string_id_refused() -> None:
    with pytest.raises(DataValidationError, match="not a string"):
        PsiParty("a", _config()).blind_own(["x", 7])  # type: ignore[list-item]


@pytest.mark.parametrize("key", [b"short", bytes(33)])
def test_bad_key_refused(key: bytes) -> None:
    with pytest.raises(ProtocolError, match="32 bytes"):
        PsiParty("a", _config(), key=key)


def test_pool_and_inline_give_identical_output() -> None:
    config = _config(("a", "b"))
    ids = [f"customer-{i}" for i in range(2000)]
    pooled = PsiParty("a", config, workers=2, pool_threshold=500)
    inline = PsiParty("a", config, key=pooled.key_bytes, workers=1)
    blob, perm = pooled.blind_own(ids, seed=5)
    blob_inline, perm_inline = inline.blind_own(ids, seed=5)
    assert blob == blob_inline
    assert np.array_equal(perm, perm_inline)
    other = PsiParty("b", config, workers=2, pool_threshold=500)
    assert other.blind(blob) == PsiParty("b", config, key=other.key_bytes).blind(blob)


def test_intersect_positions_follow_tag_order() -> None:
    tags = [bytes([i]) * 32 for i in (5, 1, 9, 3)]
    full = {"a": b"".join(tags), "b": b"".join([tags[2], tags[0], bytes([7]) * 32, tags[1]])}
    positions = intersect(full)
    assert positions["a"].tolist() == [1, 0, 2]  # tags 1, 5, 9
    assert positions["b"].tolist() == [3, 1, 0]


def test_intersect_refuses_tampered_sets() -> None:
    tag = bytes([1]) * 32
    with pytest.raises(ProtocolError, match="duplicate"):
        intersect({"a": tag + tag, "b": tag})
    with pytest.raises(ProtocolError, match="32-byte"):
        intersect({"a": tag[:-1], "b": tag})
    with pytest.raises(ProtocolError, match="at least two"):
        intersect({"a": tag})


def test_aligned_rows_checks_positions() -> None:
    permutation = np.array([2, 0, 1])
    assert aligned_rows(np.array([1, 2]), permutation).tolist() == [0, 1]
    assert aligned_rows(np.array([], dtype=np.int64), permutation).tolist() == []
    for bad in (np.array([3]), np.array([-1]), np.array([0, 0]), np.array([0.5]), np.eye(2)):
        with pytest.raises(ProtocolError):
            aligned_rows(bad, permutation)


def test_workers_must_be_positive() -> None:
    with pytest.raises(ProtocolError, match="workers"):
        PsiParty("a", _config(), workers=0)


def test_a_salt_keys_the_id_hash() -> None:
    """Without the parties' salt, hashed candidates do not match a salted set's tags."""
    from fedcollab.protocols.psi import _hash_ids

    ids = ["ann", "bob"]
    salted = _hash_ids(ids, run="r", party="a", salt=b"s" * 32)
    assert salted != _hash_ids(ids, run="r", party="a")
    assert salted != _hash_ids(ids, run="r", party="a", salt=b"t" * 32)
    rows = run_psi_local({"a": ids, "b": ["bob"]}, label_holder="a")
    assert len(rows["a"]) == 1
    with pytest.raises(ProtocolError, match="salt"):
        PsiConfig(run="r", parties=("a", "b"), label_holder="a", salt=b"short")
