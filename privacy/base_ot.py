"""Batched random 1-out-of-2 oblivious transfer of 128-bit seeds (base OTs).

The "simplest" OT of Chou and Orlandi (2015, "The Simplest Protocol for
Oblivious Transfer", LATINCRYPT, ePrint 2015/267), batched under one sender
key, in the prime-order subgroup of edwards25519 (RFC 8032's group, order
``L = 2^252 + ...``) through libsodium's ``crypto_core_ed25519_*`` and
``crypto_scalarmult_ed25519_*noclamp`` (PyNaCl's bindings). ``cryptography``
has no point addition, which the receiver's choice needs.

Protocol (``count`` = w transfers; ``g`` the group's base point, ``H`` SHA-256
under :data:`DOMAIN`, the caller's ``context`` and the transfer index):

1. The OT sender draws a scalar ``a`` and sends ``A = a g``
   (:meth:`OtSender.setup`, 32 bytes).
2. The OT receiver, with choice bits ``c_i``, draws scalars ``b_i`` and sends
   ``B_i = b_i g`` if ``c_i = 0``, ``B_i = A + b_i g`` if ``c_i = 1``
   (:meth:`OtReceiver.reply`, 32 w bytes); its seed is
   ``H(context, i, A, B_i, b_i A)``.
3. The OT sender's seeds are ``k_i^0 = H(context, i, A, B_i, a B_i)`` and
   ``k_i^1 = H(context, i, A, B_i, a (B_i - A))`` (:meth:`OtSender.finish`).
   Since ``a B_i = a b_i g + c_i a A``, the receiver's seed is ``k_i^{c_i}``.

These are *random* OTs: the seeds are outputs, not inputs. A caller that must
transfer chosen strings ``(m_0, m_1)`` sends ``m_j XOR PRG(k_i^j)`` (CM20 does
the equivalent with its matrix, :mod:`protocols.psi_oprf`).

Security model: **semi-honest** parties, SHA-256 as a **random oracle**,
computational Diffie-Hellman in the edwards25519 subgroup (~2^126 work, the
128-bit level of RFC 7748/8032). ``B_i`` is a uniform point whatever ``c_i``,
so the receiver's choices are hidden from the sender perfectly; seeing
``k_i^{1-c_i}`` would need ``a (B_i - A)`` or ``a B_i`` for the other bit,
i.e. CDH(A, b_i g +/- A). The original paper's claim of UC security against
active adversaries does not hold as stated (Genc, Iovino and Rial, "'The
Simplest Protocol for Oblivious Transfer' revisited", 2017): nothing here is
claimed against a malicious party. Every point received is checked
(canonical, on the curve, in the prime-order subgroup, not of small order),
and the transcript ``(A, B_i)`` is hashed into every seed as in the paper,
with the index and the caller's context (run, step) besides.

Example:

>>> sender, receiver = OtSender(3, context=b"demo"), OtReceiver([0, 1, 1], context=b"demo")
>>> pairs = sender.finish(receiver.reply(sender.setup()))
>>> [pairs[i][c] for i, c in enumerate([0, 1, 1])] == receiver.seeds
True
>>> pairs[0][1] != receiver.seeds[0]
True

Notes
-----
*Constants.* Seeds are 16 bytes (128-bit keys for AES). Scalars are drawn
as 64 bytes from the OS CSPRNG reduced modulo ``L`` (bias below 2^-250).
Points are 32-byte compressed encodings. One transfer costs the receiver a
fixed-base and a variable-base scalar multiplication (~18 and ~90 us here),
the sender one variable-base multiplication and a subtraction: 600 OTs take
about 0.1 s on each side.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import Sequence

from nacl import bindings as sodium
from nacl.exceptions import RuntimeError as SodiumError

from fedcollab.common.errors import ProtocolError

__all__ = ["DOMAIN", "POINT_BYTES", "SEED_BYTES", "OtReceiver", "OtSender"]

DOMAIN = b"fedcollab/base-ot/chou-orlandi/ed25519-sha256/v1"
"""Domain tag hashed before the caller's context in every seed."""

POINT_BYTES = 32
"""Bytes of a compressed edwards25519 point."""

SEED_BYTES = 16
"""Bytes of each transferred seed (an AES-128 key)."""

_MAX_COUNT = 1 << 16


def _scalar() -> bytes:
    while True:
        scalar: bytes = sodium.crypto_core_ed25519_scalar_reduce(secrets.token_bytes(64))
        if any(scalar):
            return scalar


def _point(blob: bytes, *, what: str) -> bytes:
    if not sodium.crypto_core_ed25519_is_valid_point(blob):
        raise ProtocolError(
            f"{what} is not a valid point of the edwards25519 prime-order subgroup",
            hint="the OT message was altered on the way or comes from another protocol; "
            "refusing to use it",
        )
    return blob


def _check_count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= _MAX_COUNT:
        raise ProtocolError(f"the number of base OTs must be in 1..{_MAX_COUNT}, got {count!r}")
    return count


def _check_context(context: bytes) -> bytes:
    if not isinstance(context, bytes):
        raise ProtocolError("the OT context must be bytes (the run and step it belongs to)")
    return context


class _Kdf:
    """``H(context, i, A, B_i, point)`` truncated to :data:`SEED_BYTES`."""

    def __init__(self, context: bytes, a_point: bytes) -> None:
        self._prefix = DOMAIN + struct.pack(">Q", len(context)) + context + a_point

    def __call__(self, index: int, b_point: bytes, shared: bytes) -> bytes:
        data = self._prefix + struct.pack(">I", index) + b_point + shared
        return hashlib.sha256(data).digest()[:SEED_BYTES]


class OtSender:
    """The OT sender of ``count`` random OTs: learns both seeds of every transfer.

    Answers each step once: :meth:`setup`, then :meth:`finish`.
    """

    def __init__(self, count: int, *, context: bytes) -> None:
        self.count = _check_count(count)
        self._context = _check_context(context)
        self._a = _scalar()
        self._a_point: bytes = sodium.crypto_scalarmult_ed25519_base_noclamp(self._a)
        self._done = False

    def setup(self) -> bytes:
        """The first message: ``A`` (32 bytes)."""
        return self._a_point

    def secret(self) -> bytes:
        """The sender key ``a`` (32 bytes) to keep between :meth:`setup` and :meth:`finish`
        when they run in different processes; as secret as any key (empty once used)."""
        return b"" if self._done else self._a

    @classmethod
    def restore(cls, count: int, *, context: bytes, secret: bytes) -> OtSender:
        """The sender of :meth:`secret` again, before :meth:`finish`."""
        if not isinstance(secret, bytes) or len(secret) != 32 or not any(secret):
            raise ProtocolError(
                "a stored OT sender key must be 32 bytes, not zero",
                hint="the party's stored PSI state is damaged; start a new run",
            )
        sender = cls.__new__(cls)
        sender.count = _check_count(count)
        sender._context = _check_context(context)
        sender._a = secret
        sender._a_point = sodium.crypto_scalarmult_ed25519_base_noclamp(secret)
        sender._done = False
        return sender

    def finish(self, reply: bytes) -> list[tuple[bytes, bytes]]:
        """The seed pairs ``(k_i^0, k_i^1)`` from the receiver's reply (``B_1 .. B_w``)."""
        if self._done:
            raise ProtocolError("this OT sender already answered its receiver's reply")
        expected = self.count * POINT_BYTES
        if not isinstance(reply, bytes) or len(reply) != expected:
            size = len(reply) if isinstance(reply, bytes | bytearray) else type(reply).__name__
            raise ProtocolError(
                f"the OT receiver's reply is {size} bytes, not {expected} "
                f"({self.count} points of {POINT_BYTES} bytes)",
                hint="both sides must agree on the number of base OTs (the PSI width w)",
            )
        self._done = True
        kdf = _Kdf(self._context, self._a_point)
        a_times_a = sodium.crypto_scalarmult_ed25519_noclamp(self._a, self._a_point)
        pairs = []
        for i in range(self.count):
            b_point = _point(reply[i * POINT_BYTES : (i + 1) * POINT_BYTES], what=f"B_{i}")
            try:
                zero = sodium.crypto_scalarmult_ed25519_noclamp(self._a, b_point)
            except SodiumError:  # a B_i - like the identity - that libsodium refuses
                raise ProtocolError(f"B_{i} is a degenerate point") from None
            one = sodium.crypto_core_ed25519_sub(zero, a_times_a)
            pairs.append((kdf(i, b_point, zero), kdf(i, b_point, one)))
        self._a = b""  # the sender key is of no further use: drop it
        return pairs


class OtReceiver:
    """The OT receiver with choice bits ``choices``: learns one seed per transfer.

    :meth:`reply` answers the sender's first message once; :attr:`seeds` then
    holds ``k_i^{c_i}``.
    """

    def __init__(self, choices: Sequence[int], *, context: bytes) -> None:
        bits = list(choices)
        if not all(isinstance(c, int) and not isinstance(c, bool) and c in (0, 1) for c in bits):
            raise ProtocolError("OT choice bits must be the integers 0 and 1")
        self.count = _check_count(len(bits))
        self._choices = bits
        self._context = _check_context(context)
        self._seeds: list[bytes] | None = None

    @classmethod
    def restore(
        cls, choices: Sequence[int], *, context: bytes, seeds: Sequence[bytes]
    ) -> OtReceiver:
        """The receiver after :meth:`reply`, from its choices and received seeds (kept
        between processes as secretly as any key)."""
        receiver = cls(choices, context=context)
        if len(seeds) != receiver.count or any(
            not isinstance(k, bytes) or len(k) != SEED_BYTES for k in seeds
        ):
            raise ProtocolError(
                f"stored OT seeds must be {receiver.count} of {SEED_BYTES} bytes",
                hint="the party's stored PSI state is damaged; start a new run",
            )
        receiver._seeds = list(seeds)
        return receiver

    @property
    def seeds(self) -> list[bytes]:
        """The received seeds ``k_i^{c_i}`` (after :meth:`reply`)."""
        if self._seeds is None:
            raise ProtocolError("the OT receiver has not replied to its sender yet")
        return self._seeds

    def reply(self, setup: bytes) -> bytes:
        """``B_1 .. B_w`` (32 w bytes) for the sender's ``A``; derives :attr:`seeds`."""
        if self._seeds is not None:
            raise ProtocolError("this OT receiver already replied to its sender")
        if not isinstance(setup, bytes) or len(setup) != POINT_BYTES:
            raise ProtocolError(
                f"the OT sender's first message must be one {POINT_BYTES}-byte point",
                hint="the message was truncated or altered on the way",
            )
        a_point = _point(setup, what="the OT sender's A")
        kdf = _Kdf(self._context, a_point)
        points, seeds = [], []
        for i, choice in enumerate(self._choices):
            b = _scalar()
            b_point = sodium.crypto_scalarmult_ed25519_base_noclamp(b)
            if choice:
                b_point = sodium.crypto_core_ed25519_add(a_point, b_point)
            points.append(b_point)
            seeds.append(kdf(i, b_point, sodium.crypto_scalarmult_ed25519_noclamp(b, a_point)))
        self._seeds = seeds
        return b"".join(points)
