"""Merkle tree hashing and proofs, RFC 9162 section 2.1 (pure functions).

The tree is the one of Certificate Transparency (RFC 6962, restated in RFC 9162
section 2.1.1)::

    MTH({})       = SHA-256()
    MTH({d(0)})   = SHA-256(0x00 || d(0))
    MTH(D[n])     = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))
                    with k the largest power of two smaller than n

Proofs are built from *subtree hashes*: :func:`inclusion_proof` and
:func:`consistency_proof` take a callable ``subtree(start, end) -> bytes`` that
returns ``MTH(D[start:end])``.  The RFC recursion only ever asks for ranges whose
left part is a perfect, aligned subtree, so a store that caches the hash of every
complete subtree of size ``2**level`` at an aligned index answers each call in
``O(log n)`` lookups (see :func:`range_hash`); tests pass a naive list-backed
callable instead.

The verifiers follow RFC 9162 sections 2.1.3.2 (inclusion) and 2.1.4.2
(consistency) step by step, return ``None`` and raise
:class:`~common.errors.AuditVerificationError` on any failure.

Notes
-----
* Hash function: SHA-256, as fixed by RFC 9162 for the v1 tree; every hash
  in a proof must therefore be exactly 32 bytes, anything else is refused.
* The 0x00 / 0x01 domain-separation prefixes stop a leaf from being passed off
  as an interior node (second-preimage attack on plain Merkle trees).
* A consistency proof from the empty tree (``size1 == 0``) proves nothing
  and is refused, as in the transparency-dev reference vectors.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence

from fedcollab.common.errors import AuditVerificationError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "LeafTree",
    "SubtreeHash",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "list_subtree",
    "mth",
    "node_hash",
    "range_hash",
    "root_from_inclusion",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

SubtreeHash = Callable[[int, int], bytes]
"""``subtree(start, end)`` returns ``MTH(D[start:end])``, ``0 <= start < end``."""


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``: the hash of one log entry."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: an interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def mth(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of already-hashed leaves (iterative, O(n))."""
    if not leaf_hashes:
        return EMPTY_ROOT
    frontier: list[tuple[int, bytes]] = []  # (subtree size, hash), sizes strictly decreasing
    for h in leaf_hashes:
        size, cur = 1, h
        while frontier and frontier[-1][0] == size:
            cur = node_hash(frontier.pop()[1], cur)
            size *= 2
        frontier.append((size, cur))
    root = frontier[-1][1]
    for _, h in reversed(frontier[:-1]):
        root = node_hash(h, root)
    return root


def list_subtree(leaf_hashes: Sequence[bytes]) -> SubtreeHash:
    """A :data:`SubtreeHash` over an in-memory list (for tests and verifiers)."""

    def subtree(start: int, end: int) -> bytes:
        return mth(leaf_hashes[start:end])

    return subtree


def range_hash(start: int, end: int, perfect: Callable[[int, int], bytes]) -> bytes:
    """``MTH(D[start:end])`` from perfect-subtree hashes.

    ``perfect(level, index)`` is the hash of the complete subtree covering
    ``D[index * 2**level : (index + 1) * 2**level]``.  ``start`` must be aligned
    on the largest power of two not exceeding ``end - start``, which holds for
    every range the RFC 9162 recursion visits.
    """
    n = end - start
    if n <= 0:
        raise ValueError(f"empty range [{start}, {end})")
    if n & (n - 1) == 0:
        level = n.bit_length() - 1
        if start % n:
            raise ValueError(f"range [{start}, {end}) is not aligned")
        return perfect(level, start >> level)
    k = _split(n)
    return node_hash(range_hash(start, start + k, perfect), range_hash(start + k, end, perfect))


def inclusion_proof(index: int, size: int, subtree: SubtreeHash) -> list[bytes]:
    """``PATH(index, D[size])`` of RFC 9162 section 2.1.3.1."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(subtree(start + k, end))
            end = start + k
        else:
            path.append(subtree(start, start + k))
            start += k
    path.reverse()  # the recursion appends outermost first; the RFC lists leaf-side first
    return path


def consistency_proof(size1: int, size2: int, subtree: SubtreeHash) -> list[bytes]:
    """``PROOF(size1, D[size2])`` of RFC 9162 section 2.1.4.1 (``0 < size1 <= size2``)."""
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    proof: list[bytes] = []
    # SUBPROOF(m, D[start:end], b), unrolled; the RFC appends the sibling after recursing.
    m, start, end, b = size1, 0, size2, True
    while True:
        n = end - start
        if m == n:
            if not b:
                proof.append(subtree(start, end))
            break
        k = _split(n)
        if m <= k:
            proof.append(subtree(start + k, end))
            end = start + k
        else:
            proof.append(subtree(start, start + k))
            m -= k
            start += k
            b = False
    proof.reverse()
    return proof


def _check_hashes(proof: Sequence[bytes], what: str) -> None:
    for i, h in enumerate(proof):
        if len(h) != HASH_SIZE:
            raise AuditVerificationError(
                f"{what}: proof element {i} is {len(h)} bytes, expected {HASH_SIZE}"
            )


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof (RFC 9162 section 2.1.3.2, steps 1-4)."""
    what = f"inclusion proof for leaf {index} in tree of size {size}"
    if not 0 <= index < size:
        raise AuditVerificationError(f"{what}: leaf index is outside the tree")
    if len(leaf) != HASH_SIZE:
        raise AuditVerificationError(
            f"{what}: leaf hash is {len(leaf)} bytes, expected {HASH_SIZE}"
        )
    _check_hashes(proof, what)
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise AuditVerificationError(f"{what}: proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn != 0 and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise AuditVerificationError(f"{what}: proof is shorter than the tree is deep")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` is entry ``index`` of the tree of ``size`` with ``root``."""
    computed = root_from_inclusion(index, size, leaf, proof)
    if len(root) != HASH_SIZE or not hmac.compare_digest(computed, root):
        raise AuditVerificationError(
            f"inclusion proof for leaf {index} in tree of size {size}: "
            "computed root does not match the expected root"
        )


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree ``(size2, root2)`` extends ``(size1, root1)``.

    RFC 9162 section 2.1.4.2, with the trivial cases made explicit: equal sizes
    need an empty proof and equal roots; ``size1 == 0`` is refused.
    """
    what = f"consistency proof from size {size1} to size {size2}"
    if size1 <= 0 or size2 < size1:
        raise AuditVerificationError(f"{what}: sizes must satisfy 0 < size1 <= size2")
    if size1 == size2:
        if proof:
            raise AuditVerificationError(f"{what}: equal sizes need an empty proof")
        if not hmac.compare_digest(root1, root2):
            raise AuditVerificationError(f"{what}: equal sizes but different roots")
        return
    if not proof:
        raise AuditVerificationError(f"{what}: proof is empty")
    _check_hashes(proof, what)
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # step 2: first is an exact power of 2
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:  # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise AuditVerificationError(f"{what}: proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn != 0 and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise AuditVerificationError(f"{what}: proof is too short")
    if not hmac.compare_digest(fr, root1):
        raise AuditVerificationError(f"{what}: proof does not match the old root")
    if not hmac.compare_digest(sr, root2):
        raise AuditVerificationError(f"{what}: proof does not match the new root")


class LeafTree:
    """RFC 9162 roots of a growing sequence of leaf hashes, at chosen sizes.

    Leaves are folded as the largest aligned perfect subtrees that fit, each
    hashed level by level over a list (one ``hashlib`` call per node, no
    per-leaf bookkeeping), then merged into the frontier of perfect subtrees
    covering ``[0, size)``.

    >>> tree = LeafTree(wanted=[3])
    >>> [size for size, _ in tree.extend(b"\\x00" * 32 * 4)]
    [3]
    """

    def __init__(self, wanted: Iterable[int]) -> None:
        self._wanted = sorted(set(wanted))
        self._frontier: list[tuple[int, bytes]] = []  # (level, hash), levels decreasing
        self.size = 0

    def extend(self, leaves: bytes) -> list[tuple[int, bytes]]:
        """Append concatenated 32-byte leaf hashes; return ``(size, root)`` per wanted size."""
        hashes = [leaves[i : i + HASH_SIZE] for i in range(0, len(leaves), HASH_SIZE)]
        base = self.size
        lo = bisect.bisect_right(self._wanted, base)
        hi = bisect.bisect_right(self._wanted, base + len(hashes))
        roots: list[tuple[int, bytes]] = []
        for stop in self._wanted[lo:hi]:
            self._push(hashes[self.size - base : stop - base], pos=self.size)
            self.size = stop
            roots.append((stop, self.root()))
        self._push(hashes[self.size - base :], pos=self.size)
        self.size = base + len(hashes)
        return roots

    def _push(self, hashes: list[bytes], *, pos: int) -> None:
        done = 0
        while done < len(hashes):
            # the largest power of two that is aligned at pos and fits
            level = (len(hashes) - done).bit_length() - 1
            if pos:
                level = min(level, (pos & -pos).bit_length() - 1)
            width = 1 << level
            h = _perfect_root(hashes[done : done + width])
            while self._frontier and self._frontier[-1][0] == level:
                h = node_hash(self._frontier.pop()[1], h)
                level += 1
            self._frontier.append((level, h))
            pos += width
            done += width

    def root(self) -> bytes:
        """The root of the leaves so far (RFC 9162 ``MTH``)."""
        if not self._frontier:
            return hashlib.sha256(b"").digest()
        root = self._frontier[-1][1]
        for _, h in reversed(self._frontier[:-1]):
            root = node_hash(h, root)
        return root


def _perfect_root(hashes: list[bytes]) -> bytes:
    """Root of a perfect tree (``len(hashes)`` a power of two), level by level."""
    sha256 = hashlib.sha256
    level = hashes
    while len(level) > 1:
        level = [
            sha256(b"\x01" + left + right).digest()
            for left, right in zip(level[0::2], level[1::2], strict=True)
        ]
    return level[0]
