"""RFC 9162 Merkle proofs: reference vectors, naive cross-check, tampering."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcollab.common.errors import AuditVerificationError
from fedcollab.compliance import merkle
from fedcollab.compliance.merkle import (
    EMPTY_ROOT,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    list_subtree,
    mth,
    node_hash,
    range_hash,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "merkle"

# RFC 6962 section 2.1.3 test data and the reference roots of its prefixes.
RFC6962_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
RFC6962_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def _b64(s: str) -> bytes:
    return base64.b64decode(s)


def _proof(raw: list[str] | None) -> list[bytes]:
    return [_b64(p) for p in raw or []]


# --- naive RFC 9162 recursion, written as literally as the RFC states it -------------


def naive_mth(d: Sequence[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return d[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(naive_mth(d[:k]), naive_mth(d[k:]))


def naive_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*naive_path(m, d[:k]), naive_mth(d[k:])]
    return [*naive_path(m - k, d[k:]), naive_mth(d[:k])]


def naive_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [naive_mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*naive_subproof(m, d[:k], b), naive_mth(d[k:])]
    return [*naive_subproof(m - k, d[k:], False), naive_mth(d[:k])]


def naive_consistency(m: int, d: Sequence[bytes]) -> list[bytes]:
    return naive_subproof(m, d, True)


LEAVES128 = [leaf_hash(i.to_bytes(4, "big")) for i in range(128)]
LEAVES64 = LEAVES128[:64]


# --- reference vectors ----------------------------------------------------------------


def test_rfc6962_reference_roots() -> None:
    hashes = [leaf_hash(x) for x in RFC6962_LEAVES]
    for n in range(1, 9):
        assert mth(hashes[:n]).hex() == RFC6962_ROOTS[n - 1]
        assert naive_mth(hashes[:n]).hex() == RFC6962_ROOTS[n - 1]
    assert mth([]) == EMPTY_ROOT


def _vector_files(kind: str) -> list[Path]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    assert len(files) > 50
    return files


@pytest.mark.parametrize(
    "path", _vector_files("inclusion"), ids=lambda p: str(p.relative_to(VECTORS))
)
def test_inclusion_vectors(path: Path) -> None:
    v = json.loads(path.read_text())
    args = (v["leafIdx"], v["treeSize"], _b64(v["leafHash"]), _proof(v["proof"]), _b64(v["root"]))
    if v["wantErr"]:
        with pytest.raises(AuditVerificationError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize(
    "path", _vector_files("consistency"), ids=lambda p: str(p.relative_to(VECTORS))
)
def test_consistency_vectors(path: Path) -> None:
    v = json.loads(path.read_text())
    args = (v["size1"], v["size2"], _b64(v["root1"]), _b64(v["root2"]), _proof(v["proof"]))
    if v["wantErr"]:
        with pytest.raises(AuditVerificationError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_generated_proofs_match_reference_vectors() -> None:
    hashes = [leaf_hash(x) for x in RFC6962_LEAVES]
    for path in _vector_files("inclusion"):
        v = json.loads(path.read_text())
        if v["desc"] == "happy path" and v["treeSize"] <= 8:
            got = inclusion_proof(v["leafIdx"], v["treeSize"], list_subtree(hashes))
            assert got == _proof(v["proof"])
    for path in _vector_files("consistency"):
        v = json.loads(path.read_text())
        if v["desc"] == "happy path" and v["size2"] <= 8:
            got = consistency_proof(v["size1"], v["size2"], list_subtree(hashes))
            assert got == _proof(v["proof"])


# --- exhaustive cross-check against the naive recursion up to 64 leaves ----------------


def test_inclusion_exhaustive_up_to_64() -> None:
    for n in range(1, 65):
        d = LEAVES64[:n]
        root = naive_mth(d)
        assert mth(d) == root
        sub = list_subtree(d)
        for m in range(n):
            proof = inclusion_proof(m, n, sub)
            assert proof == naive_path(m, d)
            verify_inclusion(m, n, d[m], proof, root)


def test_consistency_exhaustive_up_to_64() -> None:
    roots = [naive_mth(LEAVES64[:n]) for n in range(65)]
    for n in range(1, 65):
        sub = list_subtree(LEAVES64[:n])
        for m in range(1, n + 1):
            proof = consistency_proof(m, n, sub)
            assert proof == naive_consistency(m, LEAVES64[:n])
            verify_consistency(m, n, roots[m], roots[n], proof)


def test_range_hash_uses_only_perfect_subtrees() -> None:
    calls: list[tuple[int, int]] = []

    def perfect(level: int, index: int) -> bytes:
        calls.append((level, index))
        return naive_mth(LEAVES64[index << level : (index + 1) << level])

    for n in range(1, 65):
        assert range_hash(0, n, perfect) == naive_mth(LEAVES64[:n])
    assert all(lvl <= 6 for lvl, _ in calls)
    with pytest.raises(ValueError):
        range_hash(1, 3, perfect)


# --- tampering: every bit of every element, root, sizes and indices -------------------


def _flips(b: bytes) -> list[bytes]:
    out = []
    for i in range(len(b)):
        for bit in range(8):
            x = bytearray(b)
            x[i] ^= 1 << bit
            out.append(bytes(x))
    return out


@pytest.mark.parametrize(("m", "n"), [(0, 1), (3, 7), (5, 13), (0, 16), (31, 33)])
def test_inclusion_rejects_every_tampering(m: int, n: int) -> None:
    d = LEAVES64[:n]
    root = mth(d)
    proof = inclusion_proof(m, n, list_subtree(d))
    verify_inclusion(m, n, d[m], proof, root)
    for i, p in enumerate(proof):
        for bad in _flips(p):
            with pytest.raises(AuditVerificationError):
                verify_inclusion(m, n, d[m], [*proof[:i], bad, *proof[i + 1 :]], root)
    for bad in _flips(root):
        with pytest.raises(AuditVerificationError):
            verify_inclusion(m, n, d[m], proof, bad)
    for bad in _flips(d[m]):
        with pytest.raises(AuditVerificationError):
            verify_inclusion(m, n, bad, proof, root)
    for mm in range(-1, n + 2):
        if mm != m:
            with pytest.raises(AuditVerificationError):
                verify_inclusion(mm, n, d[m], proof, root)
    for nn in range(0, 2 * n + 2):
        # A checkpoint binds size and root, so a changed size comes with that size's root.
        if nn != n:
            with pytest.raises(AuditVerificationError):
                verify_inclusion(m, nn, d[m], proof, mth(LEAVES128[:nn]))
    bad_proofs = [[*proof, root], [root, *proof]] + ([proof[:-1]] if proof else [])
    for bad_proof in bad_proofs:
        with pytest.raises(AuditVerificationError):
            verify_inclusion(m, n, d[m], bad_proof, root)


@pytest.mark.parametrize(("m", "n"), [(1, 2), (3, 7), (4, 13), (6, 8), (17, 33), (32, 64)])
def test_consistency_rejects_every_tampering(m: int, n: int) -> None:
    r1, r2 = mth(LEAVES64[:m]), mth(LEAVES64[:n])
    proof = consistency_proof(m, n, list_subtree(LEAVES64[:n]))
    verify_consistency(m, n, r1, r2, proof)
    for i, p in enumerate(proof):
        for bad in _flips(p):
            with pytest.raises(AuditVerificationError):
                verify_consistency(m, n, r1, r2, [*proof[:i], bad, *proof[i + 1 :]])
    for bad in _flips(r1):
        with pytest.raises(AuditVerificationError):
            verify_consistency(m, n, bad, r2, proof)
    for bad in _flips(r2):
        with pytest.raises(AuditVerificationError):
            verify_consistency(m, n, r1, bad, proof)
    for mm in range(0, n + 2):
        for nn in range(0, 2 * n + 2):
            if (mm, nn) != (m, n):
                # Checkpoints bind sizes to roots: changed sizes come with their roots.
                with pytest.raises(AuditVerificationError):
                    verify_consistency(mm, nn, mth(LEAVES128[:mm]), mth(LEAVES128[:nn]), proof)
    for bad_proof in ([], proof[:-1], [*proof, r2], [r1, *proof]):
        with pytest.raises(AuditVerificationError):
            verify_consistency(m, n, r1, r2, bad_proof)


def test_leaf_and_node_are_domain_separated() -> None:
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert leaf_hash(a + b) != node_hash(a, b)


def test_builders_refuse_out_of_range() -> None:
    sub = list_subtree(LEAVES64[:4])
    for args in [(4, 4), (-1, 4), (0, 0)]:
        with pytest.raises(ValueError):
            inclusion_proof(*args, sub)
    for args in [(0, 4), (5, 4)]:
        with pytest.raises(ValueError):
            consistency_proof(*args, sub)
    assert merkle.HASH_SIZE == 32


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.data())
def test_property_proofs_verify(n: int, data: st.DataObject) -> None:
    d = [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    sub = list_subtree(d)
    m = data.draw(st.integers(0, n - 1))
    verify_inclusion(m, n, d[m], inclusion_proof(m, n, sub), mth(d))
    k = data.draw(st.integers(1, n))
    verify_consistency(k, n, mth(d[:k]), mth(d), consistency_proof(k, n, sub))
