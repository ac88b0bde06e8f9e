"""Fresh CKKS encryptions on the wire at half the bytes: SEAL's seeded ciphertexts.

A fresh symmetric (secret-key) CKKS ciphertext is a pair ``(c0, c1)`` where
``c1 = a`` is uniformly random and ``c0 = -a s + m + e``. SEAL (Microsoft SEAL
3.6+, ``Encryptor::encrypt_symmetric`` returning ``Serializable<Ciphertext>``)
serializes ``a`` as the seed of the PRNG that drew it, so a fresh ciphertext takes
one polynomial instead of two; ``Ciphertext::load`` expands the seed again. This
is SEAL's own mechanism, not a format of ours (SEAL documents it under
``Serializable``; lattice schemes send uniform public values as seeds in the same way,
e.g. NewHope, Alkim, Ducas, Poeppelmann & Schwabe 2016). The ciphertext decrypts
exactly as the unseeded one: same encryption, same error distribution, so the noise
bound of :mod:`privacy.flooding` holds unchanged.

TenSEAL 0.3.18 only writes unseeded ciphertexts, but it reads a ``CKKSVectorProto``
(its ``proto/tensors.proto``: chunk sizes, SEAL-serialized ciphertexts, scale)
through SEAL's ``load``, which accepts seeded ones. :func:`encrypt_seeded` writes
that message with the ``protobuf`` runtime, from the ``.proto`` TenSEAL ships (built
here as a descriptor, since TenSEAL ships no generated module), so every reader
(:meth:`privacy.ckks.PublicKeys.load`) and every sum stays TenSEAL's own.

Measured (100k float64 values, "wide" set): 3.28 MB instead of 6.56 MB per
encrypted vector (``experiments/bench_he_deployment.py`` reports the bytes of the
deployed mode).
A homomorphic sum is a new ciphertext, no longer seeded: it travels at full size.
The price is CPU where a fresh ciphertext is loaded, since SEAL expands the seed again:
at 1M values 0.063 s per "compact" vector instead of 0.029 s (docs/secure_aggregation.md).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

import tenseal as ts
import tenseal.sealapi as sealapi
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = ["encrypt_seeded", "layout"]


def _vector_proto() -> Any:
    """The message class of TenSEAL's ``tenseal.CKKSVectorProto`` (tensors.proto)."""
    field = descriptor_pb2.FieldDescriptorProto
    spec = descriptor_pb2.FileDescriptorProto(
        name="fedcollab_tenseal_tensors.proto", package="tenseal", syntax="proto3"
    )
    message = spec.message_type.add(name="CKKSVectorProto")
    message.field.add(name="sizes", number=1, type=field.TYPE_UINT32, label=field.LABEL_REPEATED)
    message.field.add(
        name="ciphertexts", number=2, type=field.TYPE_BYTES, label=field.LABEL_REPEATED
    )
    message.field.add(name="scale", number=3, type=field.TYPE_DOUBLE, label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(spec)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tenseal.CKKSVectorProto"))


_CKKSVectorProto = _vector_proto()


def encrypt_seeded(
    ctx: ts.Context, values: Sequence[float] | Sequence[complex], *, scale: float
) -> bytes:
    """``values`` encrypted under ``ctx``'s secret key, in chunks of one ciphertext's
    slots, as a TenSEAL ``CKKSVector`` whose ciphertexts are SEAL-seeded.

    ``ts.ckks_vector_from(ctx, result)`` loads it; it decrypts as
    ``ts.ckks_vector(ctx, values)`` does.
    """
    if not ctx.has_secret_key():
        raise ValueError("seeded encryption needs the secret key (symmetric CKKS)")
    seal = ctx.seal_context().data
    encoder = sealapi.CKKSEncoder(seal)
    encryptor = sealapi.Encryptor(seal, ctx.secret_key().data)
    slots = encoder.slot_count()
    out = _CKKSVectorProto(scale=scale)
    # SEAL's Python binding saves a Serializable only to a path: one private temporary
    # file, rewritten per ciphertext (ciphertexts only; they are sent anyway).
    fd, path = tempfile.mkstemp(prefix="fedcollab-ckks-")
    os.close(fd)
    try:
        for start in range(0, max(len(values), 1), slots):
            chunk = list(values[start : start + slots])
            plain = sealapi.Plaintext()
            encoder.encode(chunk, scale, plain)
            encryptor.encrypt_symmetric(plain).save(path)
            with open(path, "rb") as f:
                out.ciphertexts.append(f.read())
            out.sizes.append(len(chunk))
    finally:
        os.unlink(path)
    data: bytes = out.SerializeToString()
    return data


def layout(blob: bytes) -> tuple[list[int], list[int]]:
    """The chunk sizes a serialized ``CKKSVector`` declares and the byte length of each of
    its ciphertexts, read without TenSEAL (so nothing is expanded yet).

    TenSEAL decrypts chunk ``i`` into its first ``sizes[i]`` slots; a vector whose
    chunks are not full ciphertexts but the last would put values where fedcollab's
    decoders (:meth:`privacy.ckks.SecretKeys.decrypt`) do not read them, and every extra
    ciphertext costs memory when SEAL loads it, so the loader checks both against the
    layout it expects before TenSEAL parses anything. Raises ``ValueError`` when
    ``blob`` is not such a message."""
    msg = _CKKSVectorProto()
    try:
        msg.ParseFromString(blob)
    except Exception as exc:  # protobuf's DecodeError, from its C or Python backend
        raise ValueError(f"not a CKKSVectorProto: {exc}") from exc
    return [int(n) for n in msg.sizes], [len(c) for c in msg.ciphertexts]
