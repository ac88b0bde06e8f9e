"""Two-party PSI from a lightweight oblivious PRF (Chase and Miao, CRYPTO 2020: "CM20").

Long module: one protocol (CM20) - its parameters, both parties' state machines and checks.

Melissa Chase and Peihan Miao, "Private Set Intersection in the Internet
Setting From Lightweight Oblivious PRF", CRYPTO 2020 (ePrint 2020/729):
Figure 3 (the PSI protocol) with Figure 4's transfer of the matrix (random
base OTs of seeds, expanded by a PRG, the receiver sending a correction).
Unlike the ring ECDH-PSI of :mod:`protocols.psi`, which makes two X25519
multiplications per id and party, it makes ``w`` (~600) base OTs
(:mod:`privacy.base_ot`) and otherwise only AES, hashing and bit operations,
vectorised here with numpy.

Parties: the *sender* P1 holds ``X`` (``n1`` ids) and sends OPRF values; the
*receiver* P2 holds ``Y`` (``n2`` ids) and learns the intersection (in
fedcollab: the label holder). Both know ``n1``, ``n2`` and the run
(:class:`OprfPsiConfig`), hence the parameters (:func:`cm20_params`): the matrix
height ``m = 2^ceil(log2 n2)``, width ``w``, and the H2 output length ``l2``.
``H1(x) = SHA-256(DOMAIN, salt, run, x)`` truncated to ``l1 = 128`` bits;
``F_k: {0,1}^128 -> [m]^w`` is AES-128 under keys ``k_1, k_2, ..`` (the
AES-128-CTR stream of the PRF key ``k``), each block cut into
``floor(64 / log2 m)`` locations per 64-bit half; ``H2`` is BLAKE2b with an
``l2``-byte digest.

Protocol (one message per step, bytes; each party answers each step once):

1. P2 -> P1 (:meth:`OprfPsiReceiver.start`): the parameters ``(n1, n2, log2 m,
   w, l2)`` and the first message ``A`` of ``w`` random OTs in which P2 is the
   OT *sender* (seed pairs ``r_i^0, r_i^1``) and P1 the OT receiver.
2. P1 -> P2 (:meth:`OprfPsiSender.answer`): P1 checks the parameters are its
   own, draws the choice string ``s in {0,1}^w`` and the PRF key ``k`` and sends
   ``k`` and its OT reply; it gets ``r_i^{s[i]}``.
3. P2 -> P1 (:meth:`OprfPsiReceiver.answer`): P2 computes ``v = F_k(H1(y))`` for
   every ``y`` in ``Y``; sets ``D`` (``m x w`` bits) to ones except
   ``D_i[v[i]] = 0``; ``A_i = PRG(r_i^0)``, ``B_i = A_i XOR D_i``; sends
   ``Delta_i = B_i XOR PRG(r_i^1)`` for each column ``i`` (``w m / 8`` bytes).
4. P1 -> P2 (:meth:`OprfPsiSender.evaluate`): P1 forms ``C_i = PRG(r_i^{s[i]})
   XOR s[i] Delta_i`` (so ``C_i = A_i`` if ``s[i] = 0``, ``B_i`` if 1), and sends
   ``psi(x) = H2(C_1[v_1] || .. || C_w[v_w])`` with ``v = F_k(H1(x))`` for every
   ``x`` in ``X``, in a random order (``n1 l2`` bytes).
5. P2 (:meth:`OprfPsiReceiver.finish`): ``y`` is in the intersection iff
   ``H2(A_1[v_1] || .. || A_w[v_w])`` is among the received values: for ``y`` in
   ``Y``, ``A_i[v_i] = B_i[v_i]``, so ``C_i[v_i] = A_i[v_i]`` whatever ``s``.
   The result lists P2's rows and, aligned, the positions of the matches in
   P1's list, sorted by OPRF value (an order that says nothing about ids).
   Sending the positions to P1 (:meth:`OprfPsiSender.rows`) tells P1 its rows
   of the intersection: an optional step that also tells P1 the intersection.

Who learns what (both parties know ``n1`` and ``n2``: they are CM20's public inputs):

=====================  ======================================================
who                    learns
=====================  ======================================================
receiver P2            the intersection, as its rows; ``n1`` (the number of
                       values); for an ``x`` not in ``Y``, a value
                       ``psi(x)`` it cannot compute: ``D_i[v_i] = 1`` in at
                       least ``lambda = 128`` columns except with probability
                       ``2^-40`` over all of ``X`` (how ``w`` is chosen), and
                       there ``C_i[v_i]`` hides a bit of ``s``. A false match
                       (an ``x`` outside ``Y`` taken as in it) has probability
                       at most ``n1 n2 2^-l2 <= 2^-40``
sender P1              ``n2`` (as a parameter, and as ``m``); nothing about
                       ``Y``: each ``Delta_i`` is masked by the PRG of the
                       seed ``r_i^{1-s[i]}`` that the OT keeps from P1 (and
                       the OT keeps ``s`` from P2). With the optional step 5,
                       also its rows of the intersection
relay                  ``n1``, ``n2`` and message sizes; if the messages are
                       not sealed to their recipient also ``k`` and the OT
                       points, which without a party's secrets say nothing
=====================  ======================================================

Security model: CM20 claim "semi-honest security in the plain model and
one-sided malicious security in the random oracle model" (their abstract). The
one side can only be the sender P1: a malicious *receiver* that sends
``Delta`` for ``D = 0`` gets ``C = A`` whatever ``s`` and can compute
``psi(x)`` for any ``x`` it guesses (a dictionary attack on P1's ids). Here the
base OTs are semi-honest only (:mod:`privacy.base_ot`), so this module claims
**semi-honest** security and no more: against an active party or a relay that
alters messages only the message checks hold (lengths, point encodings,
parameters), not privacy or correctness.

Example (the receiver learns its rows of the intersection):

>>> sender_ids, receiver_ids = ["ann", "bob", "cy"], ["cy", "dee", "ann"]
>>> result = run_oprf_psi_local(sender_ids, receiver_ids)
>>> sorted(receiver_ids[i] for i in result.rows)
['ann', 'cy']

Notes
-----
*Parameters* (CM20 Table 1: statistical security ``sigma = 40``,
computational ``lambda = 128``). ``w`` is the least width with ``n1
Pr[Binomial(w, p) < lambda] <= 2^-sigma``, ``p = (1 - 1/m)^n2`` (the chance
that a column's bit of a non-member is still 1), computed exactly
(:func:`cm20_width`); for ``n1 = n2 = m = 2^8 .. 2^24`` it gives Table 1's
``w = 585, 597, 609, 621, 633`` (``2^8, 2^12, .. 2^24``; ``585 + 3 (log2 n - 8)``
in between), the values that Kunlun's and mpc4j's CM20 code tabulate from the
paper (``tests/protocols/test_protocols_psi_oprf.py`` checks all 17).
``l2 = sigma + log2 n1 + log2 n2`` bits, rounded up to bytes (10 bytes for
1M x 1M), so that no pair of the ``n1 n2`` values collides but with
probability ``2^-sigma``. Each size is first rounded up to a power of two, at
least ``2^8``, and ``m`` is the receiver's: a run takes the parameters of the
table's row for its sizes (for ``n1 = n2 = 10^6``: ``m = 2^20``, ``w = 621``),
which only adds width (for ``m > n2`` the bound alone would allow 589), and a
location is a mask of ``log2 m`` bits. ``l1 = 128``: two of ``10^7`` ids share
``H1`` with probability below ``2^-80``, and one AES block is then the PRF
input. OT seeds are 128-bit AES keys.

*Memory and time.* Columns are processed in groups of one AES key (6 columns
for ``m = 2^20``), AES runs over chunks of :data:`CHUNK` ids, so a party holds
its ``n w / 8`` bytes of OPRF input bits, one group's columns and locations
(``8 n`` bytes per column): about 0.2 GB for a million ids a side, plus the
``w m / 8``-byte matrix message (76 MB at ``m = 2^20``).
"""

from __future__ import annotations

import hashlib
import io
import math
import secrets
import struct
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedcollab.common.errors import ProtocolError
from fedcollab.privacy.base_ot import POINT_BYTES, SEED_BYTES, OtReceiver, OtSender
from fedcollab.protocols.psi import check_ids

__all__ = [
    "CHUNK",
    "COMPUTATIONAL_BITS",
    "DOMAIN",
    "KEY_BYTES",
    "MIN_LOG_SIZE",
    "SALT_BYTES",
    "STATISTICAL_BITS",
    "Cm20Params",
    "OprfPsiConfig",
    "OprfPsiReceiver",
    "OprfPsiResult",
    "OprfPsiSender",
    "cm20_params",
    "cm20_width",
    "run_oprf_psi_local",
]

DOMAIN = b"fedcollab/psi-oprf/cm20-aes-blake2b/v1"
"""Domain tag of H1, of the base OTs' context and of the parameter header."""

STATISTICAL_BITS = 40
"""``sigma``: failure and false-match probability at most ``2^-40`` per run."""

COMPUTATIONAL_BITS = 128
"""``lambda``: unknown bits a non-member's OPRF input keeps from the receiver."""

MIN_LOG_SIZE = 8
"""Set sizes below ``2^8`` take the parameters of ``2^8`` (CM20 Table 1's first row)."""

SALT_BYTES = 32
"""Bytes of a PSI salt (a secret both parties share and a relay does not)."""

KEY_BYTES = 16
"""Bytes of the PRF key ``k`` (AES-128)."""

CHUNK = 1 << 20
"""Ids per chunk of the vectorised PRF evaluation."""

_HEADER = struct.Struct(">8sQQBHB")  # magic, n1, n2, log2 m, w, l2 bytes
_MAGIC = b"CM20psi1"
_H2_PERSON = b"fedcollab/H2"
_MAX_LOG_HEIGHT = 32


def _log2_ceil(n: int) -> int:
    return max(MIN_LOG_SIZE, (max(n, 1) - 1).bit_length())


def _log_binomial_cdf(k_max: int, trials: int, p: float) -> float:
    """``ln Pr[Binomial(trials, p) <= k_max]``, summed exactly in log space."""
    if p >= 1.0:
        return 0.0 if k_max >= trials else -math.inf
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(trials + 1) - math.lgamma(k + 1) - math.lgamma(trials - k + 1)
        + k * log_p + (trials - k) * log_q
        for k in range(min(k_max, trials) + 1)
    ]  # fmt: skip
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def cm20_width(
    n_sender: int,
    n_receiver: int,
    log_height: int,
    *,
    statistical_bits: int = STATISTICAL_BITS,
    computational_bits: int = COMPUTATIONAL_BITS,
) -> int:
    """The least ``w`` with ``n1 Pr[Binomial(w, p) < lambda] <= 2^-sigma``, ``p = (1 - 1/m)^n2``.

    >>> [cm20_width(2**k, 2**k, k) for k in (8, 12, 16, 20, 24)]
    [585, 597, 609, 621, 633]
    """
    p = math.exp(n_receiver * math.log1p(-(2.0**-log_height)))
    budget = -statistical_bits * math.log(2) - math.log(max(n_sender, 1))

    def ok(width: int) -> bool:
        return _log_binomial_cdf(computational_bits - 1, width, p) <= budget

    low, high = computational_bits, computational_bits
    while not ok(high):
        low, high = high, 2 * high
    while low < high:  # the tail shrinks as w grows: bisect
        mid = (low + high) // 2
        low, high = (low, mid) if ok(mid) else (mid + 1, high)
    return high


@dataclass(frozen=True)
class Cm20Params:
    """The matrix height ``m = 2^log_height``, its width ``w`` and H2's output bytes."""

    log_height: int
    width: int
    hash_bytes: int

    @property
    def height(self) -> int:
        return 1 << self.log_height

    @property
    def locations_per_key(self) -> int:
        """Locations cut from one AES block (two 64-bit halves)."""
        return 2 * (64 // self.log_height)

    @property
    def keys(self) -> int:
        """AES keys ``k_1 ..`` that ``F_k`` needs for ``w`` locations."""
        return -(-self.width // self.locations_per_key)


def cm20_params(n_sender: int, n_receiver: int) -> Cm20Params:
    """CM20's parameters for these set sizes at ``sigma = 40``, ``lambda = 128``.

    >>> cm20_params(1_000_000, 1_000_000)
    Cm20Params(log_height=20, width=621, hash_bytes=10)
    """
    for name, n in (("sender", n_sender), ("receiver", n_receiver)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ProtocolError(f"the {name}'s set size must be a non-negative integer, got {n!r}")
    # Table 1's rows are powers of two (n1 = n2 = m): round each size up to one.
    log_n1, log_height = _log2_ceil(n_sender), _log2_ceil(n_receiver)
    if log_height > _MAX_LOG_HEIGHT or log_n1 > _MAX_LOG_HEIGHT:
        raise ProtocolError(f"sets of more than 2^{_MAX_LOG_HEIGHT} ids are not supported")
    return Cm20Params(
        log_height=log_height,
        width=cm20_width(1 << log_n1, 1 << log_height, log_height),
        hash_bytes=-(-(STATISTICAL_BITS + log_n1 + log_height) // 8),
    )


@dataclass(frozen=True)
class OprfPsiConfig:
    """One run: its id, both set sizes (public inputs of CM20) and the optional salt."""

    run: str
    n_sender: int
    n_receiver: int
    #: A secret both parties share and the relay does not (32 bytes, or empty).
    salt: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.run, str) or not self.run:
            raise ProtocolError("PSI run id must be a non-empty string")
        if not isinstance(self.salt, bytes) or len(self.salt) not in (0, SALT_BYTES):
            raise ProtocolError(f"a PSI salt is {SALT_BYTES} bytes (or empty)")
        cm20_params(self.n_sender, self.n_receiver)  # checks the sizes

    @cached_property
    def params(self) -> Cm20Params:
        return cm20_params(self.n_sender, self.n_receiver)

    def header(self) -> bytes:
        """The parameters as step 1 states them; both sides must agree on every field."""
        p = self.params
        return _HEADER.pack(
            _MAGIC, self.n_sender, self.n_receiver, p.log_height, p.width, p.hash_bytes
        )

    def context(self) -> bytes:
        """What the base OTs' seeds are bound to: domain, salt, run and parameters."""
        return DOMAIN + self.salted_run() + self.header()

    def salted_run(self) -> bytes:
        """Salt and run, each length-prefixed (hashed into H1 and the OT seeds)."""
        run = self.run.encode("utf-8")
        return struct.pack(">B", len(self.salt)) + self.salt + struct.pack(">I", len(run)) + run


@dataclass(frozen=True)
class OprfPsiResult:
    """At the receiver: its rows of the intersection and, aligned, the sender's positions.

    Both in the order of the OPRF values (increasing bytes): row ``rows[j]`` of
    the receiver's ids matches position ``sender_positions[j]`` of the values the
    sender sent.
    """

    rows: np.ndarray
    sender_positions: np.ndarray


# --- primitives: H1, F_k, PRG, H2 ----------------------------------------------------------


def _hash_ids(ids: Sequence[str], config: OprfPsiConfig, *, party: str) -> np.ndarray:
    """H1 of every id (``n x 16`` uint8); refuses non-strings and duplicates."""
    check_ids(ids, where=f"PSI ids of the {party}")
    prefix = DOMAIN + b"/H1" + config.salted_run()
    length = struct.Struct(">Q").pack
    sha256 = hashlib.sha256
    digests = b"".join(
        [sha256(prefix + length(len(b)) + b).digest()[:16] for b in (v.encode() for v in ids)]
    )
    return np.frombuffer(digests, dtype=np.uint8).reshape(len(ids), 16)


def _aes_ecb(key: bytes, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - a PRF call
    return encryptor.update(data) + encryptor.finalize()


def _prg(seed: bytes, nbytes: int) -> np.ndarray:
    """AES-128-CTR keystream of ``seed`` (counter block 0), as uint8."""
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    return np.frombuffer(encryptor.update(bytes(nbytes)) + encryptor.finalize(), dtype=np.uint8)


def _prf_keys(key: bytes, count: int) -> list[bytes]:
    stream = _prg(key, 16 * count).tobytes()
    return [stream[16 * j : 16 * (j + 1)] for j in range(count)]


def _locations(params: Cm20Params, key: bytes, inputs: bytes) -> list[np.ndarray]:
    """One AES key's share of ``F_k``: ``locations_per_key`` arrays of row indices."""
    words = np.frombuffer(_aes_ecb(key, inputs), dtype="<u8").reshape(-1, 2)
    bits = params.log_height
    mask = np.uint64(params.height - 1)
    return [
        ((words[:, half] >> np.uint64(f * bits)) & mask).astype(np.intp)
        for half in (0, 1)
        for f in range(64 // bits)
    ]


def _columns(
    params: Cm20Params, key: bytes, hashed: np.ndarray
) -> Iterator[tuple[int, list[np.ndarray]]]:
    """``(i, locations)`` for every column ``i``: ``v_i = F_k(H1(id))_i`` of each id, by chunk."""
    chunks = [hashed[low : low + CHUNK].tobytes() for low in range(0, hashed.shape[0], CHUNK)]
    per = params.locations_per_key
    for j, aes_key in enumerate(_prf_keys(key, params.keys)):
        by_chunk = [_locations(params, aes_key, chunk) for chunk in chunks]
        for f in range(min(per, params.width - j * per)):
            yield j * per + f, [locations[f] for locations in by_chunk]


def _gather(bits: np.ndarray, i: int, column: np.ndarray, chunks: list[np.ndarray]) -> None:
    """Bit ``i`` of every id's OPRF input: ``column[v_i]``, ORed into ``bits[i // 8]``."""
    unpacked = np.unpackbits(column, bitorder="little")
    low = 0
    for where in chunks:
        bits[i >> 3, low : low + where.size] |= unpacked[where] << np.uint8(i & 7)
        low += where.size


def _h2(params: Cm20Params, bits: np.ndarray) -> np.ndarray:
    """H2 of every id's ``w`` bits: an ``S{l2}`` array."""
    rows = np.ascontiguousarray(bits.T)
    blob, step = rows.tobytes(), rows.shape[1]
    blake2b, size = hashlib.blake2b, params.hash_bytes
    digests = b"".join(
        [
            blake2b(blob[i : i + step], digest_size=size, person=_H2_PERSON).digest()
            for i in range(0, len(blob), step)
        ]
    )
    return np.frombuffer(digests, dtype=f"S{size}")


def _shuffle(count: int, seed: int | None) -> np.ndarray:
    if seed is not None:  # reproducible and public: tests and benchmarks only
        return np.random.default_rng(seed).permutation(count).astype(np.int64)
    keys = np.frombuffer(secrets.token_bytes(8 * count), dtype=np.uint64)
    return np.argsort(keys, kind="stable").astype(np.int64)


def _check_bytes(blob: bytes, expected: int, *, what: str, hint: str) -> bytes:
    if not isinstance(blob, bytes) or len(blob) != expected:
        size = len(blob) if isinstance(blob, bytes | bytearray) else type(blob).__name__
        raise ProtocolError(f"{what} is {size} bytes, not {expected}", hint=hint)
    return blob


def _describe(header: bytes) -> str:
    magic, n1, n2, log_m, width, l2 = _HEADER.unpack(header)
    if magic != _MAGIC:
        return f"not a CM20 PSI header ({magic!r})"
    return f"n1={n1:,}, n2={n2:,}, m=2^{log_m}, w={width}, l2={l2} bytes"


class _Steps:
    """Each step once, in order (a party is a state machine, not an oracle)."""

    def __init__(self, party: str, names: tuple[str, ...], done: int = 0) -> None:
        self._party, self._names, self._done = party, names, done

    @property
    def done(self) -> int:
        return self._done

    def take(self, name: str) -> None:
        if self._done >= len(self._names) or self._names[self._done] != name:
            done = self._names[: self._done]
            raise ProtocolError(
                f"the PSI {self._party} was asked for step {name!r} after {list(done)!r}",
                hint="each step runs once, in order: "
                + ", ".join(self._names)
                + "; start a new run for a new intersection",
            )
        self._done += 1


_STATE_VERSION = 1


def _state_tag(role: str, config: OprfPsiConfig) -> bytes:
    """The role, the parameter header and a digest of the run's context (domain, salt,
    run id, header): the header alone holds only the sizes, shared by other runs."""
    digest = hashlib.sha256(b"state/" + config.context()).digest()
    return role.encode() + b"/" + config.header() + digest


def _pack_state(role: str, config: OprfPsiConfig, arrays: dict[str, np.ndarray]) -> bytes:
    """A party's state between steps: numpy arrays in an ``.npz`` (no pickle), tagged
    with the role and the run (:func:`_state_tag`), so it restores only for that run."""
    buf = io.BytesIO()
    tag = np.frombuffer(_state_tag(role, config), dtype=np.uint8)
    np.savez(buf, allow_pickle=False, version=np.array([_STATE_VERSION]), tag=tag, **arrays)
    return buf.getvalue()


def _unpack_state(
    role: str, config: OprfPsiConfig, blob: bytes, shapes: dict[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """The arrays of :func:`_pack_state`, each checked against ``shapes`` (-1: any length)."""
    damaged = ProtocolError(
        f"the stored PSI {role} state is damaged or belongs to another run",
        hint="the node's state folder was altered, or the run changed: start a new run",
    )
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise damaged from exc
    tag = _state_tag(role, config)
    if (
        arrays.get("version", np.zeros(1)).tolist() != [_STATE_VERSION]
        or arrays.get("tag", np.zeros(0, np.uint8)).tobytes() != tag
        or set(arrays) != {"version", "tag", *shapes}
    ):
        raise damaged
    for name, shape in shapes.items():
        got = arrays[name].shape
        if len(got) != len(shape) or any(e not in (-1, g) for e, g in zip(shape, got, strict=True)):
            raise damaged
    return arrays


class OprfPsiReceiver:
    """The receiver P2 (the label holder): :meth:`start`, :meth:`answer`, :meth:`finish`.

    Between steps that run in different processes, :meth:`to_bytes` and
    :meth:`restore` carry its state (secret: the OT sender key until step 3).
    """

    def __init__(self, config: OprfPsiConfig, ids: Sequence[str]) -> None:
        if len(ids) != config.n_receiver:
            raise ProtocolError(
                f"the receiver holds {len(ids):,} ids, the run was set up for {config.n_receiver:,}"
            )
        self.config = config
        self.params = config.params
        self._hashed = _hash_ids(ids, config, party="receiver")
        self._ot = OtSender(self.params.width, context=config.context())
        self._steps = _Steps("receiver", ("start", "answer", "finish"))
        self._values = np.empty(0, dtype=f"S{self.params.hash_bytes}")

    def start(self) -> bytes:
        """Step 1: the parameter header and the base OTs' first message."""
        self._steps.take("start")
        return self.config.header() + self._ot.setup()

    def to_bytes(self) -> bytes:
        """This receiver's state: hashed ids, OT key (until used), OPRF values, progress."""
        return _pack_state(
            "receiver",
            self.config,
            {
                "hashed": self._hashed,
                "ot_key": np.frombuffer(
                    self._ot.secret() if self._steps.done == 1 else b"", dtype=np.uint8
                ),
                "values": np.frombuffer(self._values.tobytes(), dtype=np.uint8),
                "steps": np.array([self._steps.done]),
            },
        )

    @classmethod
    def restore(cls, config: OprfPsiConfig, blob: bytes) -> OprfPsiReceiver:
        """The receiver of :meth:`to_bytes` again, for ``config``'s run."""
        p = config.params
        a = _unpack_state(
            "receiver",
            config,
            blob,
            {"hashed": (config.n_receiver, -1), "ot_key": (-1,), "values": (-1,), "steps": (1,)},
        )
        done = int(a["steps"][0])
        key, values = a["ot_key"].tobytes(), a["values"].tobytes()
        if (
            not 1 <= done <= 3
            or (done == 1) != (len(key) == 32)
            or len(values) != (0 if done == 1 else config.n_receiver * p.hash_bytes)
        ):
            raise ProtocolError(
                "the stored PSI receiver state is inconsistent",
                hint="the node's state folder was altered: start a new run",
            )
        receiver = cls.__new__(cls)
        receiver.config, receiver.params = config, p
        receiver._hashed = a["hashed"]
        receiver._ot = (
            OtSender.restore(p.width, context=config.context(), secret=key)
            if done == 1
            else OtSender(p.width, context=config.context())  # used up: never finishes again
        )
        receiver._steps = _Steps("receiver", ("start", "answer", "finish"), done)
        receiver._values = np.frombuffer(values, dtype=f"S{p.hash_bytes}")
        return receiver

    def answer(self, reply: bytes) -> bytes:
        """Step 3: from the sender's ``k`` and OT reply, the matrix ``Delta`` (``w m/8`` bytes)."""
        self._steps.take("answer")
        p = self.params
        _check_bytes(
            reply,
            KEY_BYTES + p.width * POINT_BYTES,
            what="the sender's PRF key and OT reply",
            hint=f"the sender must answer with {KEY_BYTES} + {p.width} x {POINT_BYTES} bytes "
            "(w base OTs): both parties must run with the same set sizes",
        )
        key, pairs = reply[:KEY_BYTES], self._ot.finish(reply[KEY_BYTES:])
        column_bytes = p.height // 8
        delta = np.empty((p.width, column_bytes), dtype=np.uint8)
        bits = np.zeros(((p.width + 7) // 8, self._hashed.shape[0]), dtype=np.uint8)
        for i, chunks in _columns(p, key, self._hashed):
            a = _prg(pairs[i][0], column_bytes)
            d = np.ones(p.height, dtype=bool)
            for where in chunks:
                d[where] = False
            delta[i] = a ^ _prg(pairs[i][1], column_bytes) ^ np.packbits(d, bitorder="little")
            _gather(bits, i, a, chunks)
        self._values = _h2(p, bits)
        return delta.tobytes()

    def finish(self, values: bytes) -> OprfPsiResult:
        """Step 5: this party's rows of the intersection (and the sender's positions)."""
        self._steps.take("finish")
        size = self.params.hash_bytes
        _check_bytes(
            values,
            self.config.n_sender * size,
            what="the sender's OPRF values",
            hint=f"the sender must send {self.config.n_sender:,} values of {size} bytes",
        )
        received = np.frombuffer(values, dtype=f"S{size}")
        if np.unique(received).size != received.size:
            raise ProtocolError(
                "the sender's OPRF values repeat a value",
                hint="distinct ids never share an OPRF value: the message was altered on the way",
            )
        _, positions, rows = np.intersect1d(received, self._values, return_indices=True)
        return OprfPsiResult(
            rows=rows.astype(np.int64), sender_positions=positions.astype(np.int64)
        )


class OprfPsiSender:
    """The sender P1: :meth:`answer`, :meth:`evaluate`, optionally :meth:`rows`.

    ``seed`` makes the order of the sent values reproducible and public: for tests
    and benchmarks only. Between steps that run in different processes,
    :meth:`to_bytes` and :meth:`restore` carry its state (secret: the PRF key, the
    choice bits, the received seeds and the order of the sent values).
    """

    def __init__(
        self, config: OprfPsiConfig, ids: Sequence[str], *, seed: int | None = None
    ) -> None:
        if len(ids) != config.n_sender:
            raise ProtocolError(
                f"the sender holds {len(ids):,} ids, the run was set up for {config.n_sender:,}"
            )
        self.config = config
        self.params = config.params
        self._hashed = _hash_ids(ids, config, party="sender")
        self._choices = [secrets.randbits(1) for _ in range(self.params.width)]
        self._ot = OtReceiver(self._choices, context=config.context())
        self._key = secrets.token_bytes(KEY_BYTES)
        self._seed = seed
        self._permutation: np.ndarray | None = None
        self._steps = _Steps("sender", ("answer", "evaluate", "rows"))

    def answer(self, setup: bytes) -> bytes:
        """Step 2: check the receiver's parameters; the PRF key ``k`` and the OT reply."""
        self._steps.take("answer")
        _check_bytes(
            setup,
            _HEADER.size + POINT_BYTES,
            what="the receiver's first message",
            hint="it holds the parameter header and one point: it was truncated or altered",
        )
        header, mine = setup[: _HEADER.size], self.config.header()
        if header != mine:
            raise ProtocolError(
                f"the receiver runs with {_describe(header)}, this sender with {_describe(mine)}",
                hint="both parties must set the run up with the same set sizes and code version",
            )
        return self._key + self._ot.reply(setup[_HEADER.size :])

    def to_bytes(self) -> bytes:
        """This sender's state: hashed ids, key, choices, seeds, order, progress."""
        seeds = b"".join(self._ot.seeds) if self._steps.done >= 1 else b""
        return _pack_state(
            "sender",
            self.config,
            {
                "hashed": self._hashed,
                "key": np.frombuffer(self._key, dtype=np.uint8),
                "choices": np.array(self._choices, dtype=np.uint8),
                "seeds": np.frombuffer(seeds, dtype=np.uint8),
                "order": np.zeros(0, np.int64) if self._permutation is None else self._permutation,
                "steps": np.array([self._steps.done]),
            },
        )

    @classmethod
    def restore(cls, config: OprfPsiConfig, blob: bytes) -> OprfPsiSender:
        """The sender of :meth:`to_bytes` again, for ``config``'s run."""
        p = config.params
        a = _unpack_state(
            "sender",
            config,
            blob,
            {
                "hashed": (config.n_sender, -1),
                "key": (KEY_BYTES,),
                "choices": (p.width,),
                "seeds": (-1,),
                "order": (-1,),
                "steps": (1,),
            },
        )
        done, choices = int(a["steps"][0]), [int(c) for c in a["choices"]]
        seeds, order = a["seeds"].tobytes(), a["order"]
        if (
            not 0 <= done <= 3
            or any(c not in (0, 1) for c in choices)
            or len(seeds) != (0 if done == 0 else p.width * SEED_BYTES)
            or order.size != (0 if done < 2 else config.n_sender)
            or (order.size and np.unique(order).size != order.size)
        ):
            raise ProtocolError(
                "the stored PSI sender state is inconsistent",
                hint="the node's state folder was altered: start a new run",
            )
        sender = cls.__new__(cls)
        sender.config, sender.params = config, p
        sender._hashed = a["hashed"]
        sender._choices = choices
        if done:
            sender._ot = OtReceiver.restore(
                choices,
                context=config.context(),
                seeds=[seeds[i * SEED_BYTES : (i + 1) * SEED_BYTES] for i in range(p.width)],
            )
        else:
            sender._ot = OtReceiver(choices, context=config.context())
        sender._key = a["key"].tobytes()
        sender._seed = None
        sender._permutation = order.astype(np.int64) if done >= 2 else None
        sender._steps = _Steps("sender", ("answer", "evaluate", "rows"), done)
        return sender

    def evaluate(self, matrix: bytes) -> bytes:
        """Step 4: the OPRF value of every id, in a random order (``n1 l2`` bytes)."""
        self._steps.take("evaluate")
        p = self.params
        column_bytes = p.height // 8
        _check_bytes(
            matrix,
            p.width * column_bytes,
            what="the receiver's matrix",
            hint=f"it holds w = {p.width} columns of m / 8 = {column_bytes:,} bytes",
        )
        delta = np.frombuffer(matrix, dtype=np.uint8).reshape(p.width, column_bytes)
        seeds = self._ot.seeds
        bits = np.zeros(((p.width + 7) // 8, self._hashed.shape[0]), dtype=np.uint8)
        for i, chunks in _columns(p, self._key, self._hashed):
            c = _prg(seeds[i], column_bytes)
            _gather(bits, i, c ^ delta[i] if self._choices[i] else c, chunks)
        values = _h2(p, bits)
        self._permutation = _shuffle(values.size, self._seed)
        out: bytes = values[self._permutation].tobytes()
        return out

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """Optional: this party's rows at the positions the receiver found (tells it the
        intersection too)."""
        self._steps.take("rows")
        assert self._permutation is not None
        pos = np.asarray(positions)
        if pos.ndim != 1 or (pos.size and not np.issubdtype(pos.dtype, np.integer)):
            raise ProtocolError(
                f"PSI positions must be a flat integer array, got {pos.dtype}{pos.shape}"
            )
        pos = pos.astype(np.int64)
        if pos.size and (int(pos.min()) < 0 or int(pos.max()) >= self._permutation.size):
            raise ProtocolError(
                f"PSI positions fall outside this party's {self._permutation.size} values",
                hint="the receiver answered for another run",
            )
        if np.unique(pos).size != pos.size:
            raise ProtocolError("PSI positions repeat a value", hint="the answer was altered")
        rows: np.ndarray = self._permutation[pos]
        return rows


def run_oprf_psi_local(
    sender_ids: Sequence[str],
    receiver_ids: Sequence[str],
    *,
    run: str = "local",
    salt: bytes = b"",
    seed: int | None = None,
) -> OprfPsiResult:
    """The whole protocol in this process; the receiver's result."""
    config = OprfPsiConfig(run, len(sender_ids), len(receiver_ids), salt)
    sender, receiver = (
        OprfPsiSender(config, sender_ids, seed=seed),
        OprfPsiReceiver(config, receiver_ids),
    )
    matrix = receiver.answer(sender.answer(receiver.start()))
    return receiver.finish(sender.evaluate(matrix))
