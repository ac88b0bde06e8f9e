"""n-party private set intersection (PSI) by commutative blinding on X25519.

Long module: one protocol (n-party PSI by commutative blinding) with its message checks.

Each party hashes its ids to 32-byte X25519 u-coordinates and every party
raises every set to its own secret scalar.  Scalar multiplication commutes,
``X25519(a, X25519(b, u)) == X25519(b, X25519(a, u))``, so an id held by all
parties ends with the same *fully blinded tag* in every set, whatever the
order in which the keys were applied; under the decisional Diffie-Hellman
assumption a tag blinded by a key one does not hold looks random.  This is
the Diffie-Hellman PSI of Meadows (1986, "A more efficient cryptographic
matchmaking protocol", IEEE S&P) and Huberman, Franklin and Hogg (1999,
"Enhancing privacy and trust in electronic communities", ACM EC), in the
form deployed by Ion et al. (2020, "On Deploying Secure Computing: Private
Intersection-Sum-with-Cardinality", IEEE EuroS&P), on the X25519 function of
RFC 7748 (Bernstein 2006, "Curve25519: new Diffie-Hellman speed records").
Hashing straight to a u-coordinate, rather than to a point of the curve
proper (RFC 9380), is what SecretFlow's ECDH-PSI on Curve25519 does: X25519
is twist-secure and clamps scalars to multiples of the cofactor, so a hashed
value on the curve or on its twist lands in a large prime-order subgroup.

Protocol (``PsiConfig.parties`` in ring order ``P0 .. Pn-1``; one party is
the *label holder* L; :func:`run_psi_local` runs it all in one process):

1. Every party draws a fresh secret scalar ``k_i`` for the run
   (:class:`PsiParty`).
2. Each owner hashes its ids with a domain tag that names the run, shuffles
   them, and blinds them with its own key (:meth:`PsiParty.blind_own`); it
   keeps the permutation (shuffled position -> its original row).
3. The set travels the ring ``owner, owner+1, ..., owner-1`` (mod n,
   :func:`ring_route`); every hop applies its key in place
   (:meth:`PsiParty.blind`), preserving order.  After the last hop the set
   is blinded by all n keys and goes to L only (sealed end-to-end to L by the
   caller; this module does no transport).
4. L intersects the fully blinded sets (:func:`intersect`) and returns to each
   party the positions of the intersection in that party's submitted
   (shuffled) list, all in one canonical order: sorted by the fully blinded
   tag, an order that depends on every key and so says nothing about the ids.
5. Each party maps positions to its own rows (:func:`aligned_rows`): row
   ``j`` of every party's result is the same id.

Who learns what (parties semi-honest, relay honest-but-curious, no collusion):

=====================  ======================================================
who                    learns
=====================  ======================================================
every party            the intersection, as its own rows, aligned with the
                       other parties' rows; every other party's set size
                       (the blobs it blinds); nothing about ids outside the
                       intersection
last hop of a ring     additionally one fully blinded set (the one it
                       completes), with nothing to compare it to
label holder L         additionally every fully blinded set, hence the size
                       of the intersection of *any* subset of the sets
                       (pairwise and partial intersection sizes) and which
                       shuffled positions of each party they are
coordinator / relay    set sizes; every intermediate set, each blinded by a
                       *different* subset of keys (a ring arc: for 3 parties
                       k0, k1, k2, k0k1, k1k2, k2k0), so no two can be
                       compared; the intersection size from the lengths of
                       the position lists unless the caller seals them too.
                       A deployment (``client.vertical``) seals every hop to
                       the next and salts the id hash (:attr:`PsiConfig.salt`),
                       so the relay sees sizes only and cannot hash candidates
=====================  ======================================================

Example (order of the rows is the canonical, key-dependent one):

>>> sets = {"shop": ["ann", "bob", "cy"], "bank": ["cy", "dee", "ann"]}
>>> rows = run_psi_local(sets, label_holder="bank")
>>> [sets["shop"][i] for i in rows["shop"]] == [sets["bank"][i] for i in rows["bank"]]
True
>>> sorted(sets["shop"][i] for i in rows["shop"])
['ann', 'cy']

Notes
-----
*Constants.* Scalars are 32 bytes from the OS CSPRNG; X25519 clamps them to
a multiple of 8 of 255 bits, the ~128-bit security level of RFC 7748.  Ids
are hashed with SHA-256 (:data:`DOMAIN`, then the length-prefixed run id,
then the length-prefixed UTF-8 id) and X25519 ignores the top bit: 255 bits,
so for 10^7 ids a hash collision has probability below 2^-200.  Including
the run in the hash (and fresh keys per run) makes tags of two jobs
unlinkable.  The shuffle sorts the rows by 64-bit keys from ``os.urandom``
(a tie, probability below 3e-8 for a million rows, only keeps two rows in
input order); ``seed`` replaces it by a reproducible, *public* permutation
for tests and benchmarks.  :data:`POOL_THRESHOLD` (20,000 values, ~0.7 s of
one core) is where a process pool's start-up (~0.2-0.5 s) stops dominating.

*Fail closed.* A low-order input (u = 0, 1, ... : the result would be all
zero and reveal nothing of the key, but a malicious relay could use it to
mark values) is refused with :class:`common.errors.ProtocolError`, as are
blobs that are not a whole number of 32-byte values, duplicate tags and
positions out of range.  An active relay can still drop or replace values;
integrity is the sealing layer's job.  A relay colluding with a party can
extend intermediate sets by that party's key and learn pairwise
intersection sizes; this is outside the model above.

*Processes.* Blinding a batch at or above :data:`POOL_THRESHOLD` values
splits it over a process pool started with ``spawn``, never ``fork``:
callers run inside gRPC processes, whose threads do not survive ``fork``
(``forkserver`` would leave a server process behind in the caller and hide
the workers' CPU time from it).  As with any ``spawn`` pool, the caller's
main module must be import-safe (``if __name__ == "__main__":``).  Workers
receive the scalar and a chunk as one ``bytes`` blob and return one blob;
pickling a million small ``bytes`` objects would cost more than it saves.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fedcollab.common.errors import DataValidationError, ProtocolError
from fedcollab.protocols._checks import check_positive_int

__all__ = [
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
]

TAG_BYTES = 32
"""Bytes per hashed or blinded value (an X25519 u-coordinate)."""

DOMAIN = b"fedcollab/psi/x25519-sha256/v1"
"""Domain tag hashed before the run id and every id."""

SALTED_DOMAIN = b"fedcollab/psi/x25519-sha256/v2-salted"
"""Domain tag of the keyed id hash (:attr:`PsiConfig.salt` set)."""

SALT_BYTES = 32
"""Bytes of a PSI salt."""

POOL_THRESHOLD = 20_000
"""Batches of at least this many values are blinded over a process pool."""

_CHUNKS_PER_WORKER = 4  # a little load balancing on a shared machine
_LOW_ORDER = "low-order point"


@dataclass(frozen=True)
class PsiConfig:
    """One PSI run: its id (salt of the id hash), the parties in ring order, the label holder."""

    run: str
    parties: tuple[str, ...]
    label_holder: str
    #: A secret the parties share and the relay does not (32 bytes, or empty: no salt).
    #: With it the id hash is keyed, so whoever lacks it cannot hash candidate ids.
    salt: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.run, str) or not self.run:
            raise ProtocolError("PSI run id must be a non-empty string")
        if not isinstance(self.salt, bytes) or len(self.salt) not in (0, SALT_BYTES):
            raise ProtocolError(f"a PSI salt is {SALT_BYTES} bytes (or empty)")
        if len(self.parties) < 2 or len(set(self.parties)) != len(self.parties):
            raise ProtocolError(
                f"PSI needs at least two distinct parties, got {list(self.parties)!r}",
                hint="list every partner once, in ring order",
            )
        if not all(isinstance(p, str) and p for p in self.parties):
            raise ProtocolError("PSI party names must be non-empty strings")
        if self.label_holder not in self.parties:
            raise ProtocolError(
                f"label holder {self.label_holder!r} is not one of the parties",
                hint="name one of the partners as the label holder",
            )


def ring_route(config: PsiConfig, owner: str) -> tuple[str, ...]:
    """The hops of ``owner``'s set, starting with ``owner`` and going round the ring.

    >>> ring_route(PsiConfig("r", ("a", "b", "c"), "a"), "b")
    ('b', 'c', 'a')
    """
    if owner not in config.parties:
        raise ProtocolError(f"{owner!r} is not a party of PSI run {config.run!r}")
    i = config.parties.index(owner)
    return config.parties[i:] + config.parties[:i]


def _blind_chunk(job: bytes) -> bytes:
    """``job`` = scalar (32 bytes) + values; the values blinded, in order (runs in workers)."""
    exchange = X25519PrivateKey.from_private_bytes(job[:TAG_BYTES]).exchange
    public = X25519PublicKey.from_public_bytes
    try:
        return b"".join(
            [
                exchange(public(job[i : i + TAG_BYTES]))
                for i in range(TAG_BYTES, len(job), TAG_BYTES)
            ]
        )
    except ValueError as exc:  # cryptography refuses an all-zero shared secret
        raise ValueError(_LOW_ORDER) from exc


def _resolve_workers(workers: int | None) -> int:
    if workers is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return os.cpu_count() or 1
    return check_positive_int(workers, name="workers")


def _blind_blob(key: bytes, blob: bytes, *, workers: int, pool_threshold: int) -> bytes:
    count = len(blob) // TAG_BYTES
    if workers == 1 or count < pool_threshold:
        return _blind_chunk(key + blob)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    chunks = min(count, workers * _CHUNKS_PER_WORKER)
    bounds = [TAG_BYTES * (count * c // chunks) for c in range(chunks + 1)]
    jobs = [key + blob[a:b] for a, b in itertools.pairwise(bounds)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, chunks), mp_context=context) as pool:
        return b"".join(pool.map(_blind_chunk, jobs))


def _as_values(blob: bytes, *, what: str) -> bytes:
    if not isinstance(blob, bytes) or len(blob) % TAG_BYTES:
        size = len(blob) if isinstance(blob, bytes | bytearray) else type(blob).__name__
        raise ProtocolError(
            f"{what} is not a whole number of {TAG_BYTES}-byte values ({size})",
            hint="the message was truncated or altered on the way",
        )
    return blob


def check_ids(ids: Sequence[str], *, where: str) -> None:
    """Refuse a PSI id that is not a string or repeats an earlier one (``where`` names the
    party's ids in the error; rows are counted as in its CSV, header first)."""
    first_row: dict[str, int] = {}
    for row, value in enumerate(ids):
        if not isinstance(value, str):
            raise DataValidationError(
                f"id is a {type(value).__name__}, not a string",
                file=where,
                row=row + 2,
                hint="convert the join key column to text before the PSI step",
            )
        if value in first_row:
            raise DataValidationError(
                f"id repeats the id of row {first_row[value] + 2}",
                file=where,
                row=row + 2,
                hint="deduplicate the join key column (one row per customer) before the PSI step",
            )
        first_row[value] = row


def _hash_ids(ids: Sequence[str], *, run: str, party: str, salt: bytes = b"") -> list[bytes]:
    """Domain-separated SHA-256 of each id; refuses non-strings and duplicates."""
    check_ids(ids, where=f"PSI ids of {party!r}")
    encoded = [value.encode("utf-8") for value in ids]
    run_bytes = run.encode("utf-8")
    prefix = DOMAIN + struct.pack(">I", len(run_bytes)) + run_bytes
    if salt:
        prefix = SALTED_DOMAIN + salt + struct.pack(">I", len(run_bytes)) + run_bytes
    length = struct.Struct(">Q").pack
    sha256 = hashlib.sha256
    return [sha256(prefix + length(len(b)) + b).digest() for b in encoded]


def _shuffle(count: int, seed: int | None) -> np.ndarray:
    if seed is not None:
        return np.random.default_rng(seed).permutation(count).astype(np.int64)
    keys = np.frombuffer(secrets.token_bytes(8 * count), dtype=np.uint64)
    return np.argsort(keys, kind="stable").astype(np.int64)


class PsiParty:
    """One party's secret scalar for a run, and the blinding steps it performs.

    ``key`` restores a party saved with :attr:`key_bytes` (e.g. between the
    processes of two protocol steps); ``workers`` caps the blinding processes
    (``None``: the CPUs this process may use).
    """

    def __init__(
        self,
        name: str,
        config: PsiConfig,
        *,
        key: bytes | None = None,
        workers: int | None = None,
        pool_threshold: int = POOL_THRESHOLD,
    ) -> None:
        if name not in config.parties:
            raise ProtocolError(f"{name!r} is not a party of PSI run {config.run!r}")
        if key is None:
            key = secrets.token_bytes(TAG_BYTES)
        if not isinstance(key, bytes) or len(key) != TAG_BYTES:
            raise ProtocolError(
                f"a PSI key is {TAG_BYTES} bytes",
                hint="restore the party from the bytes its key_bytes property returned",
            )
        self.name = name
        self.config = config
        self.workers = _resolve_workers(workers)
        self.pool_threshold = check_positive_int(pool_threshold, name="pool_threshold")
        self._key = key

    @property
    def key_bytes(self) -> bytes:
        """The secret scalar (keep it as secret as the data; erase it after the run)."""
        return self._key

    def blind_own(self, ids: Sequence[str], *, seed: int | None = None) -> tuple[bytes, np.ndarray]:
        """This party's ids hashed, shuffled and blinded, and the permutation.

        Returns ``(blob, permutation)``: ``blob`` holds ``len(ids)`` 32-byte
        values in shuffled order; ``permutation[p]`` is the row of ``ids``
        at shuffled position ``p``.  ``seed`` makes the shuffle reproducible
        and public: for tests and benchmarks only.
        """
        hashed = _hash_ids(ids, run=self.config.run, party=self.name, salt=self.config.salt)
        permutation = _shuffle(len(hashed), seed)
        return self.blind(b"".join([hashed[i] for i in permutation])), permutation

    def blind(self, blob: bytes) -> bytes:
        """Apply this party's key to every 32-byte value of ``blob``, in order."""
        _as_values(blob, what=f"the set {self.name!r} was asked to blind")
        try:
            return _blind_blob(
                self._key, blob, workers=self.workers, pool_threshold=self.pool_threshold
            )
        except ValueError as exc:
            if str(exc) != _LOW_ORDER:
                raise
            raise ProtocolError(
                f"the set {self.name!r} was asked to blind holds a low-order point",
                hint="a relay or peer sent a value that is not a hashed or blinded id; "
                "refusing to blind it",
            ) from None


def _sorted_values(name: str, blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    values = np.frombuffer(_as_values(blob, what=f"the fully blinded set of {name!r}"), "S32")
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    if ordered.size > 1 and bool(np.any(ordered[1:] == ordered[:-1])):
        raise ProtocolError(
            f"the fully blinded set of {name!r} holds duplicate values",
            hint="distinct ids never blind to the same tag: the set was altered on the way",
        )
    return ordered, order


def intersect(full: Mapping[str, bytes]) -> dict[str, np.ndarray]:
    """At the label holder: each party's positions of the intersection, in canonical order.

    ``full`` maps each party to its fully blinded set (in the order it was
    submitted).  Position ``j`` of every party's result points at the same
    tag; the tags are taken in increasing byte order.
    """
    if len(full) < 2:
        raise ProtocolError(
            f"PSI needs the fully blinded sets of at least two parties, got {len(full)}"
        )
    sorted_sets = {name: _sorted_values(name, blob) for name, blob in full.items()}
    common: np.ndarray | None = None
    for ordered, _ in sorted_sets.values():
        common = ordered if common is None else np.intersect1d(common, ordered, assume_unique=True)
    assert common is not None
    return {
        name: order[np.searchsorted(ordered, common)].astype(np.int64)
        for name, (ordered, order) in sorted_sets.items()
    }


def aligned_rows(positions: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    """At each party: its original rows of the intersection, in the canonical order."""
    pos = np.asarray(positions)
    if pos.ndim != 1 or (pos.size and not np.issubdtype(pos.dtype, np.integer)):
        raise ProtocolError(
            f"PSI positions must be a flat integer array, got {pos.dtype}{pos.shape}"
        )
    pos = pos.astype(np.int64)
    if pos.size and (int(pos.min()) < 0 or int(pos.max()) >= len(permutation)):
        raise ProtocolError(
            f"PSI positions fall outside this party's {len(permutation)} submitted values",
            hint="the label holder answered for another run or party",
        )
    if np.unique(pos).size != pos.size:
        raise ProtocolError(
            "PSI positions repeat a value", hint="the answer was altered on the way"
        )
    rows: np.ndarray = np.asarray(permutation, dtype=np.int64)[pos]
    return rows


def run_psi_local(
    sets: Mapping[str, Sequence[str]],
    *,
    label_holder: str,
    run: str = "local",
    workers: int | None = None,
    seed: int | None = None,
    pool_threshold: int = POOL_THRESHOLD,
) -> dict[str, np.ndarray]:
    """The whole ring protocol in this process: each party's original rows, aligned.

    ``sets`` maps each party (in ring order) to its ids; ``seed`` makes every
    shuffle reproducible (tests and benchmarks only).
    """
    config = PsiConfig(run=run, parties=tuple(sets), label_holder=label_holder)
    parties = {
        name: PsiParty(name, config, workers=workers, pool_threshold=pool_threshold)
        for name in config.parties
    }
    permutations: dict[str, np.ndarray] = {}
    full: dict[str, bytes] = {}
    for i, owner in enumerate(config.parties):
        own_seed = None if seed is None else seed + i
        blob, permutations[owner] = parties[owner].blind_own(sets[owner], seed=own_seed)
        for hop in ring_route(config, owner)[1:]:
            blob = parties[hop].blind(blob)
        full[owner] = blob
    positions = intersect(full)  # at the label holder
    return {name: aligned_rows(positions[name], permutations[name]) for name in config.parties}
