"""CKKS homomorphic aggregation of partner vectors (TenSEAL).

CKKS (Cheon, Kim, Kim, Song 2017, "Homomorphic Encryption for Arithmetic of
Approximate Numbers", ASIACRYPT) encrypts a vector of reals so that the sum of
ciphertexts decrypts to the sum of the vectors. The partners hold the secret
key (made at a partner's key ceremony, :mod:`privacy.key_transport`); the
coordinator holds :class:`PublicKeys` (the parameters and a key id, no key
material at all) and only adds ciphertexts (:class:`EncryptedSum`). One
partner then decrypts the aggregate (:meth:`SecretKeys.decrypt`).

Long module: the key bundle's wire format and both sides' operations on it (load,
encrypt, sum, decrypt), which share the format checks.

Every encrypted vector carries one extra slot holding 1.0. In an aggregate it
holds the number of contributions; a contribution under another key (or altered)
turns the decryption into noise of magnitude ~2^27 ("compact") or ~2^59 ("wide") or
more, so :meth:`SecretKeys.decrypt` checks that slot and refuses the aggregate (within
1e-3, 2^-45 of the largest value for the float64 FFTs' rounding and the flooding).

Example
-------
>>> keys = SecretKeys.generate()
>>> total = EncryptedSum(keys.public(), params="wide", length=2)
>>> total.add(keys.encrypt([1.0, 2.0], params="wide"))
>>> total.add(keys.encrypt([0.5, 0.5], params="wide"))
>>> keys.decrypt(total.serialize(), params="wide", length=2, contributors=2).tolist()
[1.5, 2.5]

Notes
-----
*Parameter sets* (:mod:`privacy.ckks_params`): ``wide`` for every plain "ckks" sum,
``limbs`` for "ckks+masked", ``compact`` for the benchmarks only.

*Symmetric encryption.* Every encrypting partner holds the secret key, so
ciphertexts are made with it (SEAL's symmetric mode): about 3x faster and less
noisy than public-key encryption (measured), and sent seeded, at half the bytes
(:mod:`privacy.ckks_wire`; a sum travels at full size). The coordinator's contexts carry no
key at all; :meth:`PublicKeys.from_bytes` refuses any that carries a secret key.

*Decryption leakage.* Exact CKKS decryptions returned to a party holding the
ciphertexts give away the key (Li & Micciancio 2021, EUROCRYPT): a plain "ckks"
decryptor floods (:mod:`privacy.flooding`, ``decrypt(flooding=A)``, A the plan's
aggregates); rounding
to ``2^-(scale_bits - 20)`` is left for tests and benchmarks.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal as ts
import tenseal.sealapi as sealapi

from fedcollab.common.errors import CiphertextError
from fedcollab.privacy.ckks_params import PARAMETER_SETS, CkksParameters, params_named
from fedcollab.privacy.ckks_wire import encrypt_seeded, layout
from fedcollab.privacy.flooding import gaussian, noise_key

__all__ = [
    "PARAMETER_SETS",
    "CkksParameters",
    "EncryptedSum",
    "PublicKeys",
    "SecretKeys",
]


_MAGIC = b"FCCKKS1\n"
_KEY_ID_BYTES = 16


def _pack(key_id: bytes, parts: Mapping[str, bytes]) -> bytes:
    out = [_MAGIC, key_id, struct.pack(">I", len(parts))]
    for name in sorted(parts):
        raw = name.encode()
        out += [struct.pack(">I", len(raw)), raw, struct.pack(">Q", len(parts[name])), parts[name]]
    return b"".join(out)


def _unpack(blob: bytes, what: str) -> tuple[bytes, dict[str, bytes]]:
    def fail(reason: str) -> CiphertextError:
        return CiphertextError(
            f"{what} is malformed: {reason}",
            hint="the key material was truncated or altered; run a new key ceremony",
        )

    if not blob.startswith(_MAGIC):
        raise fail("bad header")
    pos = len(_MAGIC)
    key_id = blob[pos : pos + _KEY_ID_BYTES]
    pos += _KEY_ID_BYTES
    try:
        (count,) = struct.unpack_from(">I", blob, pos)
        pos += 4
        parts: dict[str, bytes] = {}
        for _ in range(count):
            (n,) = struct.unpack_from(">I", blob, pos)
            pos += 4
            name = blob[pos : pos + n].decode()
            pos += n
            (m,) = struct.unpack_from(">Q", blob, pos)
            pos += 8
            if pos + m > len(blob):
                raise fail("truncated")
            parts[name] = blob[pos : pos + m]
            pos += m
    except (struct.error, UnicodeDecodeError) as exc:
        raise fail(str(exc)) from exc
    if pos != len(blob) or len(key_id) != _KEY_ID_BYTES:
        raise fail("trailing or missing bytes")
    if set(parts) != set(PARAMETER_SETS):
        raise fail(f"parameter sets {sorted(parts)}, expected {sorted(PARAMETER_SETS)}")
    return key_id, parts


def _public_bytes(ctx: ts.Context) -> bytes:
    data: bytes = ctx.serialize(
        save_public_key=False, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
    )
    return data


class PublicKeys:
    """What the coordinator holds: CKKS parameters and the key id, no key at all."""

    def __init__(self, key_id: bytes, contexts: Mapping[str, ts.Context], raw: bytes) -> None:
        self._key_id = key_id
        self._contexts = dict(contexts)
        self._raw = raw

    @classmethod
    def from_bytes(cls, blob: bytes) -> PublicKeys:
        key_id, parts = _unpack(blob, "public CKKS keys")
        contexts: dict[str, ts.Context] = {}
        for name, raw in parts.items():
            try:
                ctx = ts.context_from(raw)
            except (ValueError, RuntimeError) as exc:
                raise CiphertextError(
                    f"public CKKS context {name!r} does not load: {exc}",
                    hint="run a new key ceremony",
                ) from exc
            if ctx.has_secret_key() or ctx.is_private():
                raise CiphertextError(
                    "the coordinator was handed a CKKS context holding a secret key",
                    hint="partners must send only PublicKeys.to_bytes(); refusing to load it",
                )
            contexts[name] = ctx
        return cls(key_id, contexts, blob)

    def to_bytes(self) -> bytes:
        return self._raw

    @property
    def key_id(self) -> str:
        return self._key_id.hex()

    @property
    def digest(self) -> str:
        """Names this key set on the wire and in the audit log."""
        return "sha256:" + hashlib.sha256(self._raw).hexdigest()

    def has_secret_key(self) -> bool:
        return any(c.has_secret_key() or c.is_private() for c in self._contexts.values())

    def load(self, blob: bytes, *, params: str, length: int) -> ts.CKKSVector:
        """Deserialise one encrypted vector and check it has exactly the expected shape.

        The layout (chunk sizes, number and byte length of the ciphertexts) is checked
        before TenSEAL parses anything, so a message cannot make SEAL expand more than
        the expected number of ciphertexts: a compressed one can still declare up to
        SEAL's 16 polynomials, at most 8x a whole sum's memory before it is refused."""
        p = params_named(params)
        ctx = self._contexts[p.name]

        def unparsable(exc: Exception) -> CiphertextError:
            return CiphertextError(
                f"ciphertext does not parse under the job's {p.name} CKKS parameters ({exc})",
                hint="the partner used other parameters or sent a corrupted message",
            )

        try:
            sizes, lengths = layout(blob)
        except ValueError as exc:
            raise unparsable(exc) from exc
        expected = p.chunk_sizes(length)
        if sizes != expected or len(lengths) != len(expected):
            raise CiphertextError(
                f"{len(lengths)} ciphertexts whose chunks hold {sizes[:3]}... slots, expected "
                f"{len(expected)} holding {expected[:3]}...",
                hint="the partner packed its vector differently (another fedcollab version?)",
            )
        if max(lengths, default=0) > p.max_ciphertext_bytes:
            raise CiphertextError(
                f"a ciphertext of {max(lengths)} bytes, at most {p.max_ciphertext_bytes} "
                f"in the {p.name} set",
                hint="the partner sent something other than a CKKS vector; refused",
            )
        try:
            vec = ts.ckks_vector_from(ctx, blob)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise unparsable(exc) from exc
        scale = float(2**p.scale_bits)
        for ct in vec.ciphertext():
            if (
                ct.size() != 2
                or ct.coeff_modulus_size() != p.data_primes
                or ct.scale != scale
                or not ct.is_ntt_form()
            ):
                raise CiphertextError(
                    f"ciphertext is not a fresh {p.name} CKKS encryption (size {ct.size()}, "
                    f"{ct.coeff_modulus_size()} primes, scale {ct.scale:g}, "
                    f"NTT form {ct.is_ntt_form()})",
                    hint="the partner used other CKKS parameters",
                )
        return vec


class SecretKeys:
    """A partner's CKKS secret keys for one job (every parameter set)."""

    def __init__(self, key_id: bytes, contexts: Mapping[str, ts.Context]) -> None:
        self._key_id = key_id
        self._contexts = dict(contexts)
        self._public = PublicKeys.from_bytes(
            _pack(key_id, {n: _public_bytes(c) for n, c in contexts.items()})
        )

    @classmethod
    def generate(cls) -> SecretKeys:
        """Fresh keys (the key ceremony runs this once per job)."""
        key_id = secrets.token_bytes(_KEY_ID_BYTES)
        return cls(key_id, {name: p.new_context() for name, p in PARAMETER_SETS.items()})

    def to_bytes(self) -> bytes:
        """Secret: only ever stored on a partner's disk or sealed to another partner."""
        return _pack(
            self._key_id, {n: c.serialize(save_secret_key=True) for n, c in self._contexts.items()}
        )

    @classmethod
    def from_bytes(cls, blob: bytes) -> SecretKeys:
        key_id, parts = _unpack(blob, "secret CKKS keys")
        contexts = {}
        for name, raw in parts.items():
            try:
                ctx = ts.context_from(raw)
            except (ValueError, RuntimeError) as exc:
                raise CiphertextError(f"secret CKKS context {name!r} does not load: {exc}") from exc
            if not ctx.has_secret_key():
                raise CiphertextError(f"secret CKKS context {name!r} holds no secret key")
            contexts[name] = ctx
        return cls(key_id, contexts)

    def public(self) -> PublicKeys:
        return self._public

    def encrypt(self, vector: npt.ArrayLike, *, params: str) -> bytes:
        """Encrypt ``vector`` plus the contribution slot (1.0)."""
        p = params_named(params)
        vec = np.asarray(vector, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(vec)):
            raise CiphertextError("refusing to encrypt NaN or infinite values")
        peak = float(np.max(np.abs(vec))) if vec.size else 0.0
        if peak > p.max_abs_value:
            raise CiphertextError(
                f"a value of magnitude {peak:.3g} exceeds the {p.name} CKKS range "
                f"({p.max_abs_value:.3g} per partner)",
                hint="the update is out of range for encrypted aggregation; "
                "lower the learning rate or standardise the data",
            )
        values: list[float] | list[complex] = [*vec.tolist(), 1.0]
        if p.complex_pairs:
            if vec.size % 2:
                raise CiphertextError(
                    f"the {p.name} CKKS set packs values in pairs; got {vec.size} values",
                    hint="encrypt an even number of values (privacy.secagg_ckks limbs are)",
                )
            half = vec.size // 2
            values = [*(vec[:half] + 1j * vec[half:]).tolist(), 1.0 + 0.0j]
        return encrypt_seeded(self._contexts[p.name], values, scale=float(2**p.scale_bits))

    def decrypt(
        self,
        blob: bytes,
        *,
        params: str,
        length: int,
        contributors: int,
        flooding: int = 0,
        noise_key: bytes | None = None,
    ) -> np.ndarray:
        """Decrypt an aggregate of ``contributors`` vectors, rounded (see Notes); with
        ``flooding`` = Q >= 1, flooded instead for Q decryptions under this key
        (:mod:`privacy.flooding`; ``noise_key`` fixes the noise, else it is fresh).

        Raises :class:`CiphertextError` when the contribution slot does not
        hold ``contributors``: some contribution was made under another key,
        another job's key, or was altered.
        """
        p = params_named(params)
        vec = self._public.load(blob, params=params, length=length)
        vec.link_context(self._contexts[p.name])
        tolerance = 0.25 if p.integers else 1e-3
        if flooding > 0 and not p.integers:
            values = self._flooded(vec, p, contributors=contributors, decryptions=flooding,
                                   key=noise_key)  # fmt: skip
            # The slot is flooded too: 10 widths (a wrong key gives noise of ~2^60).
            queries = flooding * p.ciphertexts_for(length)
            tolerance += 10 * p.flooding_width(contributors=contributors, decryptions=queries)
        elif p.complex_pairs:
            values = self._pairs(vec, p)
        else:
            values = np.asarray(vec.decrypt(), dtype=np.float64)
        if not p.integers:
            # Encoding and decoding are float64 FFTs: their rounding (about 2^-53 of the
            # largest value) spreads into every slot, the count's included (a red team
            # of 2026-12-07: moments of balances, sums of squares ~1e15, were refused
            # as "another key"). A wrong key's noise (~2^60 at scale 2^60) stays far out.
            tolerance += 2.0**-45 * float(np.max(np.abs(values)))
        if not abs(values[-1] - contributors) <= tolerance:
            raise CiphertextError(
                f"aggregate does not decrypt to {contributors} contributions "
                f"(contribution slot holds {values[-1]:.4g})",
                hint="a partner encrypted under another key or the aggregate was altered; "
                "the round's result is refused",
            )
        if p.integers:  # never raw (Li & Micciancio): integers, or refused
            rounded: np.ndarray = np.rint(values[:-1])
            if values.size > 1 and float(np.max(np.abs(values[:-1] - rounded))) > 0.25:
                raise CiphertextError(f"the decrypted {p.name} sum is not close to integers")
            return rounded
        if flooding > 0:  # never the raw decryption (Li, Micciancio, Schultz & Sorrell)
            return values[:-1]
        grid = p.rounding_grid
        result: np.ndarray = np.round(values[:-1] / grid) * grid
        return result

    def _pairs(self, vec: ts.CKKSVector, p: CkksParameters) -> np.ndarray:
        """A ``complex_pairs`` vector decrypted: real parts, imaginary parts, then the
        contribution slot's real part (its imaginary part must hold 0)."""
        z = self._slots(vec, p)
        if not abs(z[-1].imag) <= 0.25:  # a fresh contribution slot is 1 + 0i
            raise CiphertextError(
                f"the contribution slot's imaginary part holds {z[-1].imag:.4g}, not 0",
                hint="a contribution was not made by fedcollab's encryption; refused",
            )
        return np.concatenate([z[:-1].real, z[:-1].imag, z[-1:].real])

    def _flooded(
        self, vec: ts.CKKSVector, p: CkksParameters, *, contributors: int, decryptions: int,
        key: bytes | None,
    ) -> np.ndarray:  # fmt: skip
        """Each ciphertext plus a plaintext of Gaussian coefficients, then decrypted and
        decoded (:mod:`privacy.flooding`, "Where the noise goes")."""
        parts = len(vec.ciphertext())
        # Q = the plan's decryptions x this decryption's ciphertexts (privacy.flooding).
        width = p.flooding_width(contributors=contributors, decryptions=decryptions * parts)
        z = (gaussian(noise_key(key), 2 * p.slots * parts) * width).reshape(parts, 2, p.slots)
        noise = (z[:, 0, :] + 1j * z[:, 1, :]).reshape(-1)  # ciphertext i: 2 x slots draws
        return self._slots(vec, p, noise=noise).real

    def _slots(
        self, vec: ts.CKKSVector, p: CkksParameters, *, noise: np.ndarray | None = None
    ) -> np.ndarray:
        """Every slot of ``vec`` decrypted through SEAL (complex), each ciphertext first
        plus the plaintext encoding its share of ``noise`` (one complex value per slot)."""
        ctx = self._contexts[p.name]
        seal = ctx.seal_context().data
        encoder, evaluator = sealapi.CKKSEncoder(seal), sealapi.Evaluator(seal)
        decryptor = sealapi.Decryptor(seal, ctx.secret_key().data)
        out = []
        for i, ct in enumerate(vec.ciphertext()):
            if noise is not None:
                plain = sealapi.Plaintext()
                chunk = noise[i * p.slots : (i + 1) * p.slots]
                encoder.encode(chunk.tolist(), ct.parms_id(), ct.scale, plain)
                evaluator.add_plain_inplace(ct, plain)
            plain = sealapi.Plaintext()
            decryptor.decrypt(ct, plain)
            out.append(np.asarray(encoder.decode_complex(plain), dtype=np.complex128))
        return np.concatenate(out)[: vec.size()]


class EncryptedSum:
    """Running homomorphic sum at the coordinator; one ciphertext set in memory."""

    def __init__(self, public: PublicKeys, *, params: str, length: int) -> None:
        self._public = public
        self._params = params_named(params).name
        self._length = length
        self._total: Any = None
        self._count = 0

    @property
    def params(self) -> str:
        return self._params

    @property
    def length(self) -> int:
        return self._length

    @property
    def count(self) -> int:
        return self._count

    def add(self, blob: bytes) -> None:
        """Validate and add one partner's ciphertext; a refused one adds nothing."""
        vec = self._public.load(blob, params=self._params, length=self._length)
        try:  # into a new vector, kept only if the whole sum succeeded
            total = vec if self._total is None else self._total + vec
        except (ValueError, RuntimeError, TypeError) as exc:
            raise CiphertextError(
                f"ciphertext does not add to the {self._params} sum ({exc})",
                hint="the partner sent a ciphertext of other parameters; refused",
            ) from exc
        self._total = total
        self._count += 1

    def serialize(self) -> bytes:
        if self._total is None:
            raise CiphertextError("no contribution was added to this encrypted sum")
        data: bytes = self._total.serialize()
        return data

    def __repr__(self) -> str:
        return f"EncryptedSum({self._params!r}, length={self._length}, count={self._count})"
