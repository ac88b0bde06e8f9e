"""Pairwise additive masking: secure summation among a fixed set of parties.

Each party adds to its (fixed-point encoded) vector one pseudorandom mask per
peer, with opposite signs on the two sides of every pair, so that the masks
cancel exactly in the sum of all parties' vectors (Bonawitz et al. 2017,
"Practical Secure Aggregation for Privacy-Preserving Machine Learning",
ACM CCS). Whoever adds the masked vectors (here: the label holder of vertical
training, :mod:`protocols.vertical_lr`) learns the sum and nothing else about
any single vector; the relay sees uniformly random ``uint64`` words.

Key agreement. Every party makes a fresh X25519 key pair per run
(:class:`MaskingKey`) and publishes the public half. The pairwise seed is
HKDF-SHA256 (RFC 5869) of the X25519 shared secret (RFC 7748), with ``info``
binding the run and the two party names (sorted), so a seed is never reused
across runs or pairs (:func:`pairwise_seeds`).

Mask stream. The mask of a pair for one vector is the ChaCha20 keystream
(RFC 8439) under the pair's seed, read as little-endian ``uint64`` words; the
96-bit nonce is derived from the step counter and a ``purpose`` string, so
every (pair, step, purpose) gets a fresh stream. The party whose name sorts
first adds the stream, the other subtracts it, all mod 2^64.

One party alone. With a single party there is no peer to mask with:
:func:`mask_vector` then returns the plain fixed-point encoding, i.e. the
summing party sees that party's vector in the clear. Callers must record this
(vertical training with one feature party reports it in its result).

Example
-------
>>> keys = {n: MaskingKey.generate() for n in ("a", "b")}
>>> pubs = {n: k.public_bytes() for n, k in keys.items()}
>>> seeds = {n: pairwise_seeds(k, me=n, peers=pubs, run="r1") for n, k in keys.items()}
>>> va = mask_vector(np.array([1.5, -2.0]), me="a", seeds=seeds["a"], step=0, purpose="x")
>>> vb = mask_vector(np.array([0.25, 1.0]), me="b", seeds=seeds["b"], step=0, purpose="x")
>>> unmask_sum([va, vb]).tolist()
[1.75, -1.0]

Notes
-----
*Fixed point.* Values are encoded as ``round(v * 2^24)`` in int64
(:data:`SCALE_BITS`): the quantisation step 6e-8 is far below what the
logistic-regression scores need. A single value may reach 2^31 in magnitude
(:data:`MAX_ABS_VALUE`), leaving 2^8 = 256 parties of headroom before the
int64 sum could wrap; larger values are refused with :class:`PrivacyError`
instead of silently wrapping.

*Security.* The masks are uniform mod 2^64, so a single masked vector is
independent of the values (one-time pad over Z_2^64) as long as each
(seed, nonce) stream is used once: the caller must never mask two vectors with
the same ``step`` and ``purpose``. Only semi-honest parties are covered, and
there is no dropout recovery (Bonawitz et al.'s secret-shared seeds): in
vertical training every party's features are needed in every step anyway.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedcollab.common.errors import PrivacyError

__all__ = [
    "MAX_ABS_VALUE",
    "MAX_PARTIES",
    "SCALE_BITS",
    "MaskingKey",
    "decode",
    "encode",
    "mask_vector",
    "pairwise_seeds",
    "unmask_sum",
]

SCALE_BITS = 24
"""Fixed-point fraction bits: values travel as ``round(v * 2^24)``."""

MAX_PARTIES = 256
"""At most this many vectors may be summed without int64 overflow."""

MAX_ABS_VALUE = float(2 ** (63 - SCALE_BITS - 8))
"""Largest magnitude one party may encode (2^31), headroom for 256 parties."""

_HKDF_INFO = b"fedcollab/masking/v1"
_NONCE_DOMAIN = b"fedcollab/masking/nonce/v1"


class MaskingKey:
    """A party's X25519 key pair for one run (pairwise masking only)."""

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private

    @classmethod
    def generate(cls) -> MaskingKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, raw: bytes) -> MaskingKey:
        if len(raw) != 32:
            raise PrivacyError(
                f"a masking key is 32 bytes, got {len(raw)}",
                hint="the stored key was truncated; start a new run",
            )
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def to_bytes(self) -> bytes:
        """Secret: store only at this party."""
        return self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def public_bytes(self) -> bytes:
        return self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def exchange(self, peer_public: bytes) -> bytes:
        if len(peer_public) != 32:
            raise PrivacyError(
                f"a peer's masking public key is 32 bytes, got {len(peer_public)}",
                hint="the key exchange message was altered; restart the run's setup",
            )
        try:
            return self._private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError as exc:  # all-zero shared secret: a low-order point
            raise PrivacyError(
                "a peer's masking public key is a low-order point",
                hint="the key exchange message was forged; refuse this peer",
            ) from exc


def _pair_info(run: str, a: str, b: str) -> bytes:
    first, second = sorted((a, b))
    parts = [_HKDF_INFO, run.encode(), first.encode(), second.encode()]
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def pairwise_seeds(
    key: MaskingKey, *, me: str, peers: Mapping[str, bytes], run: str
) -> dict[str, bytes]:
    """One 32-byte seed per peer (``peers`` maps name -> public key; ``me`` is skipped)."""
    if not run:
        raise PrivacyError("pairwise masking needs a run id", hint="pass the job's run id")
    own = key.public_bytes()
    seeds: dict[str, bytes] = {}
    for name, public in sorted(peers.items()):
        if name == me:
            if public != own:
                raise PrivacyError(
                    f"the key published under this party's name {me!r} is not its own",
                    hint="someone substituted a masking key; restart the run's setup",
                )
            continue
        if public == own:
            raise PrivacyError(
                f"peer {name!r} published this party's own masking key",
                hint="a replayed key would make the masks cancel locally; restart the setup",
            )
        shared = key.exchange(public)
        seeds[name] = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=_pair_info(run, me, name)
        ).derive(shared)
    return seeds


def encode(values: np.ndarray) -> np.ndarray:
    """Fixed-point encoding as ``uint64`` (two's complement); refuses out-of-range values."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise PrivacyError(f"only flat vectors can be masked, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise PrivacyError("refusing to mask NaN or infinite values")
    peak = float(np.max(np.abs(arr))) if arr.size else 0.0
    if peak > MAX_ABS_VALUE:
        raise PrivacyError(
            f"a value of magnitude {peak:.3g} exceeds the masking range ({MAX_ABS_VALUE:.3g})",
            hint="the fixed-point sum would overflow; standardise the features or lower the "
            "learning rate",
        )
    return np.rint(arr * float(2**SCALE_BITS)).astype(np.int64).view(np.uint64)


def decode(words: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode` (for a sum whose masks have cancelled)."""
    arr = np.asarray(words, dtype=np.uint64)
    result: np.ndarray = arr.view(np.int64).astype(np.float64) / float(2**SCALE_BITS)
    return result


def _stream(seed: bytes, *, step: int, purpose: str, length: int) -> np.ndarray:
    label = purpose.encode()
    digest = hashlib.sha256(_NONCE_DOMAIN + struct.pack(">QI", step, len(label)) + label).digest()
    # cryptography's 16-byte ChaCha20 nonce is a 32-bit block counter (0) || 96-bit nonce.
    nonce = b"\x00\x00\x00\x00" + digest[:12]
    encryptor = Cipher(algorithms.ChaCha20(seed, nonce), mode=None).encryptor()
    raw = encryptor.update(bytes(8 * length))
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)


def mask_vector(
    values: np.ndarray, *, me: str, seeds: Mapping[str, bytes], step: int, purpose: str
) -> np.ndarray:
    """``values`` encoded and masked for summation with the peers in ``seeds``.

    With no peers the result is the plain encoding (see the module docstring).
    """
    if isinstance(step, bool) or step < 0:
        raise PrivacyError(f"the masking step must be a non-negative integer, got {step!r}")
    out = encode(values).copy()
    for peer, seed in sorted(seeds.items()):
        if peer == me:
            raise PrivacyError(f"party {me!r} holds a masking seed with itself")
        if len(seed) != 32:
            raise PrivacyError(f"the masking seed shared with {peer!r} is not 32 bytes")
        mask = _stream(seed, step=step, purpose=purpose, length=out.size)
        # uint64 arithmetic wraps mod 2^64, which is exactly the group the masks live in.
        if me < peer:
            out += mask
        else:
            out -= mask
    return out


def unmask_sum(masked: Sequence[np.ndarray]) -> np.ndarray:
    """The float64 sum of every party's masked vector (the masks cancel mod 2^64)."""
    if not masked:
        raise PrivacyError("no masked vectors to sum")
    if len(masked) > MAX_PARTIES:
        raise PrivacyError(f"at most {MAX_PARTIES} masked vectors can be summed safely")
    total = np.zeros_like(np.asarray(masked[0]), dtype=np.uint64)
    for i, vec in enumerate(masked):
        arr = np.asarray(vec)
        if arr.dtype != np.uint64 or arr.shape != total.shape or arr.ndim != 1:
            raise PrivacyError(
                f"masked vector #{i + 1} is not a flat uint64 vector of length {total.size}",
                hint="every party must mask the same rows for the same step",
            )
        total += arr
    return decode(total)
