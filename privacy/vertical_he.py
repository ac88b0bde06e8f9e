"""CKKS under the label holder's key: masked encrypted gradients for vertical training.

In vertical logistic regression (:mod:`protocols.vertical_lr`) the label holder
L encrypts the residual vector ``d`` under its own CKKS key (Cheon, Kim, Kim,
Song 2017, ASIACRYPT) and sends it to every feature party; a feature party
computes, per feature ``j``, ``sum_i X[i, j] * d[i] + r_j`` homomorphically,
with a fresh uniform mask ``r_j`` only it knows; L decrypts and returns the
masked value; the party removes ``r_j``. This is the Paillier-based pattern of
Hardy et al. 2017 (arXiv:1711.10677) and FATE's hetero-LR, with CKKS so one
ciphertext carries 4096 residuals.

Roles:

- :class:`LabelKeys` (at L): the secret context. :meth:`LabelKeys.public_bytes`
  is what feature parties get: public key and Galois keys (rotations for the
  slot sum), never the secret key.
- :class:`PublicContext` (at a feature party) refuses a context that holds a
  secret key or has other parameters.
- :func:`encrypt_residuals` (L), :func:`encrypted_gradient` (feature party),
  :func:`decrypt_masked` (L).

Example
-------
>>> keys = LabelKeys.generate()
>>> public = PublicContext.from_bytes(keys.public_bytes())
>>> enc = encrypt_residuals(keys, np.array([0.5, -0.25]))
>>> cts = encrypted_gradient(public, enc, np.array([[1.0], [2.0]]), np.array([1000.0]))
>>> float(decrypt_masked(keys, cts)[0] - 1000.0)
0.0

Notes
-----
*Parameters.* N = 8192, primes (60, 40, 60), scale 2^40, Galois keys. The
total modulus (160 bits) is inside the 218 bits the homomorphic encryption
standard (Albrecht et al. 2018) allows for 128-bit security at N = 8192. One
multiplication (residual x plaintext column) consumes the 40-bit prime; the
result lives modulo the first 60-bit prime, so a slot value must satisfy
``|v| * 2^40 < 2^59``: ``|v| < 2^19`` (:data:`MAX_ABS_SLOT`).

*Every slot masked.* Residuals are zero-padded to whole ciphertexts, so the
rotate-and-sum leaves the same gradient in all 4096 slots (with short,
replicated vectors TenSEAL's sum leaves *partial* sums in the other slots,
from which L could read single products ``X[i, j] d[i]``). The mask is then
added to every slot as an encryption of the constant ``r_j`` under the public
key, which also re-randomises the ciphertext: without it the ciphertext is a
deterministic function of L's own ciphertext and the column, which L, who
knows every key, could solve for ``X[:, j]``. L checks that all slots agree
(to :data:`SLOT_TOLERANCE`); a foreign or altered ciphertext decrypts to
noise of magnitude ~2^19 and is refused.

*Mask size.* ``r_j`` is uniform on ``[-2^18, 2^18]`` (:data:`MASK_BOUND`) and a
feature party refuses features with ``|x| > 2^10`` (:data:`MAX_ABS_FEATURE`);
L keeps ``|d_i| <= 1/n``, so ``|g_j| <= 2^10`` and ``|g_j + r_j| < 2^19``. The
mask hides ``g_j`` statistically: L's view of ``g_j + r_j`` is within
``|g_j| / 2^19`` in statistical distance of a view without ``g_j`` (about
2^-19 for standardised data, where ``|g_j| < 1``). A larger mask would need a
wider first prime; this is the budget the parameter set allows.

*Decryption leakage.* L returns the masked value rounded to a grid of 2^-14
(:data:`ROUNDING_GRID`, 6e-5), more than 10x the measured decryption error
(5e-6 absolute for 16,000 rows with 2^18 masks, 8e-6 spread across slots),
so the released value carries almost none of the noise bits that enable key
recovery from exact CKKS decryptions (Li & Micciancio 2021, EUROCRYPT). The
grid is far below what the optimizer needs (gradients of order 1e-3..1).

*Residual risk.* CKKS gives no circuit privacy: the decryption noise depends
weakly on ``X[:, j]`` (at about 2^-32 of a slot). It is not flooded (that
would need ~40 more bits of modulus); parties are assumed semi-honest.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import tenseal as ts
import tenseal.sealapi as sealapi

from fedcollab.common.errors import CiphertextError, PrivacyError

__all__ = [
    "COEFF_MOD_BIT_SIZES",
    "MASK_BOUND",
    "MAX_ABS_FEATURE",
    "MAX_ABS_SLOT",
    "POLY_MODULUS_DEGREE",
    "ROUNDING_GRID",
    "SCALE_BITS",
    "SLOTS",
    "SLOT_TOLERANCE",
    "LabelKeys",
    "PublicContext",
    "decrypt_masked",
    "draw_masks",
    "encrypt_residuals",
    "encrypted_gradient",
    "raw_slots_unsafe",
]

POLY_MODULUS_DEGREE = 8192
COEFF_MOD_BIT_SIZES = (60, 40, 60)
SCALE_BITS = 40
SLOTS = POLY_MODULUS_DEGREE // 2
MAX_ABS_SLOT = float(2**19)
MASK_BOUND = float(2**18)
MAX_ABS_FEATURE = float(2**10)
ROUNDING_GRID = float(2.0**-14)
SLOT_TOLERANCE = 1e-3


_RESIDUAL_MAGIC = b"FCVHE1\n"


def _frame(chunks: Sequence[bytes]) -> bytes:
    parts = [_RESIDUAL_MAGIC, struct.pack(">I", len(chunks))]
    for chunk in chunks:
        parts += [struct.pack(">Q", len(chunk)), chunk]
    return b"".join(parts)


def _unframe(blob: bytes) -> list[bytes]:
    bad = CiphertextError(
        "the encrypted residuals are malformed (bad header, truncated or trailing bytes)",
        hint="the message was corrupted on the way; rerun the step",
    )
    if not blob.startswith(_RESIDUAL_MAGIC):
        raise bad
    pos = len(_RESIDUAL_MAGIC)
    try:
        (count,) = struct.unpack_from(">I", blob, pos)
        pos += 4
        chunks = []
        for _ in range(count):
            (size,) = struct.unpack_from(">Q", blob, pos)
            pos += 8
            chunks.append(blob[pos : pos + size])
            pos += size
    except struct.error as exc:
        raise bad from exc
    if pos != len(blob) or count == 0:
        raise bad
    return chunks


def _check_params(ctx: ts.Context, what: str) -> None:
    parms = ctx.data.seal_context().key_context_data().parms()
    bits = tuple(q.bit_count() for q in parms.coeff_modulus())
    if (
        parms.poly_modulus_degree() != POLY_MODULUS_DEGREE
        or bits != COEFF_MOD_BIT_SIZES
        or ctx.global_scale != float(2**SCALE_BITS)
    ):
        raise CiphertextError(
            f"{what} has CKKS parameters N={parms.poly_modulus_degree()}, primes {bits}, "
            f"scale 2^{math.log2(ctx.global_scale):g}; expected N={POLY_MODULUS_DEGREE}, "
            f"primes {COEFF_MOD_BIT_SIZES}, scale 2^{SCALE_BITS}",
            hint="the label holder runs another fedcollab version; regenerate its keys",
        )


def _load_context(raw: bytes, what: str) -> ts.Context:
    try:
        ctx = ts.context_from(raw)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise CiphertextError(
            f"{what} does not load: {exc}", hint="the key material was truncated or altered"
        ) from exc
    _check_params(ctx, what)
    return ctx


class PublicContext:
    """What a feature party holds: L's public and Galois keys, never its secret key."""

    def __init__(self, ctx: ts.Context, raw: bytes) -> None:
        self._ctx = ctx
        self._raw = raw

    @classmethod
    def from_bytes(cls, raw: bytes) -> PublicContext:
        ctx = _load_context(raw, "the label holder's public CKKS context")
        if ctx.has_secret_key() or ctx.is_private():
            raise CiphertextError(
                "the label holder's public CKKS context holds a secret key",
                hint="send only LabelKeys.public_bytes() to feature parties; refusing to load it",
            )
        if not ctx.has_public_key() or not ctx.has_galois_keys():
            raise CiphertextError(
                "the label holder's public CKKS context lacks its public or Galois keys",
                hint="send LabelKeys.public_bytes(), which includes both",
            )
        return cls(ctx, raw)

    @property
    def context(self) -> ts.Context:
        return self._ctx

    @property
    def digest(self) -> str:
        """Names the label holder's key on the wire and in the audit log."""
        return "sha256:" + hashlib.sha256(self._raw).hexdigest()


class LabelKeys:
    """The label holder's CKKS keys for one job (secret: never leaves L)."""

    def __init__(self, ctx: ts.Context) -> None:
        self._ctx = ctx
        public = ctx.copy()
        public.make_context_public()
        self._public_raw: bytes = public.serialize(
            save_public_key=True,
            save_secret_key=False,
            save_galois_keys=True,
            save_relin_keys=False,
        )

    @classmethod
    def generate(cls) -> LabelKeys:
        ctx = ts.context(
            ts.SCHEME_TYPE.CKKS,
            POLY_MODULUS_DEGREE,
            coeff_mod_bit_sizes=list(COEFF_MOD_BIT_SIZES),
        )
        ctx.global_scale = float(2**SCALE_BITS)
        ctx.generate_galois_keys()
        return cls(ctx)

    @classmethod
    def from_bytes(cls, raw: bytes) -> LabelKeys:
        ctx = _load_context(raw, "the label holder's secret CKKS context")
        if not ctx.has_secret_key() or not ctx.has_galois_keys():
            raise CiphertextError(
                "the label holder's stored CKKS context lacks its secret or Galois keys",
                hint="restore the state saved by LabelKeys.to_bytes()",
            )
        return cls(ctx)

    def to_bytes(self) -> bytes:
        """Secret: only ever stored on the label holder's disk."""
        data: bytes = self._ctx.serialize(
            save_public_key=True,
            save_secret_key=True,
            save_galois_keys=True,
            save_relin_keys=False,
        )
        return data

    def public_bytes(self) -> bytes:
        """Public and Galois keys (about 18 MB), sent once per job to each feature party."""
        return self._public_raw

    def public(self) -> PublicContext:
        return PublicContext.from_bytes(self._public_raw)

    @property
    def context(self) -> ts.Context:
        return self._ctx


def _padded(n: int) -> int:
    return max(1, math.ceil(n / SLOTS)) * SLOTS


def encrypt_residuals(keys: LabelKeys, d: np.ndarray) -> bytes:
    """Encrypt the residual vector (zero-padded to whole ciphertexts); ``|d_i| <= 1`` required."""
    arr = np.asarray(d, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise PrivacyError("residuals must be a non-empty, finite, flat vector")
    if float(np.max(np.abs(arr))) > 1.0:
        raise PrivacyError(
            "a residual exceeds 1 in magnitude",
            hint="residuals are (sigmoid(z) - y) / n; the gradient bound needs |d_i| <= 1/n",
        )
    padded = np.zeros(_padded(arr.size))
    padded[: arr.size] = arr
    # One TenSEAL vector per ciphertext: full slots, so the slot sum covers exactly our rows.
    chunks = [
        ts.ckks_vector(keys.context, padded[i : i + SLOTS].tolist()).serialize()
        for i in range(0, padded.size, SLOTS)
    ]
    return _frame(chunks)


def _load_vector(ctx: ts.Context, blob: bytes, *, size: int, primes: int, what: str) -> Any:
    try:
        vec = ts.ckks_vector_from(ctx, blob)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise CiphertextError(
            f"{what} does not parse under the label holder's CKKS context ({exc})",
            hint="it was made under another key or parameters, or corrupted on the way",
        ) from exc
    parts = vec.ciphertext()
    if vec.size() != size or len(parts) != 1:
        raise CiphertextError(
            f"{what} holds {vec.size()} values in {len(parts)} ciphertexts, expected {size}",
            hint="the peer encrypted another step's vector or another row set",
        )
    for ct in parts:
        if ct.size() != 2 or ct.coeff_modulus_size() != primes:
            raise CiphertextError(
                f"{what} is not the expected CKKS ciphertext "
                f"(size {ct.size()}, {ct.coeff_modulus_size()} primes, expected {primes})",
                hint="the peer used other CKKS parameters",
            )
    return vec


def draw_masks(count: int) -> np.ndarray:
    """Fresh uniform masks on ``[-MASK_BOUND, MASK_BOUND]`` from the OS CSPRNG."""
    rng = np.random.default_rng(secrets.randbits(128))
    masks: np.ndarray = rng.uniform(-MASK_BOUND, MASK_BOUND, size=count)
    return masks


def encrypted_gradient(
    public: PublicContext, enc_residuals: bytes, X: np.ndarray, masks: np.ndarray
) -> list[bytes]:
    """One ciphertext per column ``j``: ``X[:, j] . d + masks[j]`` in every slot."""
    x = np.asarray(X, dtype=np.float64)
    r = np.asarray(masks, dtype=np.float64)
    if x.ndim != 2 or r.shape != (x.shape[1],):
        raise PrivacyError(f"need a 2-D feature matrix and one mask per column, got {r.shape}")
    if not np.all(np.isfinite(x)) or float(np.max(np.abs(x), initial=0.0)) > MAX_ABS_FEATURE:
        raise PrivacyError(
            f"a feature is non-finite or exceeds {MAX_ABS_FEATURE:g} in magnitude",
            hint="standardise the features: the gradient must stay well inside the mask range",
        )
    if not np.all(np.abs(r) <= MASK_BOUND):
        raise PrivacyError("masks must come from draw_masks()")
    chunks = _unframe(enc_residuals)
    if len(chunks) != _padded(x.shape[0]) // SLOTS:
        raise CiphertextError(
            f"the encrypted residuals cover {len(chunks) * SLOTS} slots, not {x.shape[0]} rows",
            hint="the label holder encrypted another row set",
        )
    enc = [
        _load_vector(public.context, c, size=SLOTS, primes=2, what="the encrypted residuals")
        for c in chunks
    ]
    column = np.zeros(len(chunks) * SLOTS)
    out: list[bytes] = []
    for j in range(x.shape[1]):
        column[: x.shape[0]] = x[:, j]
        total = enc[0] * column[:SLOTS].tolist()
        for c in range(1, len(enc)):
            total.add_(enc[c] * column[c * SLOTS : (c + 1) * SLOTS].tolist())
        total = total.sum()
        # A size-1 vector is replicated to every slot: the mask covers them all and the
        # fresh public-key encryption re-randomises the ciphertext (see Notes).
        total.add_(ts.ckks_vector(public.context, [float(r[j])]))
        out.append(total.serialize())
    return out


def _slots(keys: LabelKeys, vec: ts.CKKSVector) -> np.ndarray:
    ctx = keys.context.data
    plain = sealapi.Plaintext()
    ctx.decryptor().decrypt(vec.ciphertext()[0], plain)
    encoder = sealapi.CKKSEncoder(ctx.seal_context())
    return np.asarray(encoder.decode_double(plain), dtype=np.float64)


def decrypt_masked(keys: LabelKeys, cts: Sequence[bytes]) -> np.ndarray:
    """Decrypt one party's masked gradient, check every slot agrees, round to the grid."""
    out = np.empty(len(cts))
    for j, blob in enumerate(cts):
        vec = _load_vector(
            keys.context, blob, size=1, primes=1, what=f"masked gradient ciphertext #{j + 1}"
        )
        values = _slots(keys, vec)
        spread = float(np.max(values) - np.min(values))
        if not spread <= SLOT_TOLERANCE or not abs(values[0]) < MAX_ABS_SLOT:
            raise CiphertextError(
                f"masked gradient ciphertext #{j + 1} does not decrypt to one value in every "
                f"slot (spread {spread:.3g})",
                hint="it was made under another key, for another residual, or altered; "
                "the step is refused",
            )
        out[j] = np.round(values[0] / ROUNDING_GRID) * ROUNDING_GRID
    return out


def raw_slots_unsafe(keys: LabelKeys, blob: bytes) -> np.ndarray:
    """Every slot of a masked gradient ciphertext, unrounded (tests and audits only)."""
    return _slots(keys, _load_vector(keys.context, blob, size=1, primes=1, what="ciphertext"))
