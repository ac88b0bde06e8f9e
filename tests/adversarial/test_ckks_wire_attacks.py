"""Crafted CKKS vectors against whoever loads them: the coordinator summing replies
(``EncryptedSum.add``) and a key holder recomputing a sum (``PublicKeys.load``).

A red team of 2026-12-07 (against the seeded wire format, privacy/ckks_wire.py) found:

- **Coefficient-form chunk.** A ciphertext taken out of NTT form loaded, then made
  TenSEAL's add fail with an untyped ``ValueError`` after the chunks before it were
  added (the coordinator's sum then held part of a refused reply), or, sent first, made
  every honest partner's add fail, so each honest partner was dropped as malformed.
- **Decompression bomb.** TenSEAL parsed a message before any layout check: 1,800
  all-zero 16-polynomial ciphertexts, zstd-compressed to 170 bytes each (302 KiB),
  expanded to 3.7 GiB in SEAL before the typed refusal.
- **Oversized ciphertext.** Nothing bounded one ciphertext's size before SEAL loaded it.

Each attack here fails on the code before the fix and is refused with a typed error now;
a refused reply adds nothing to a sum.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tenseal.sealapi as sealapi

from fedcollab.common.errors import CiphertextError
from fedcollab.privacy.ckks import PARAMETER_SETS, EncryptedSum, SecretKeys
from fedcollab.privacy.ckks_wire import _CKKSVectorProto

warnings.filterwarnings("ignore", message=".*does not fit in a single ciphertext.*")

WIDE = PARAMETER_SETS["wide"]
L = WIDE.slots + 10  # two chunks


@pytest.fixture(scope="module")
def keys() -> SecretKeys:
    return SecretKeys.generate()


def _seal_bytes(obj: Any) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "ct")
        obj.save(path)
        return Path(path).read_bytes()


def _rewrite(keys: SecretKeys, blob: bytes, chunks: list[int], change: Any) -> bytes:
    """``blob`` with ciphertexts ``chunks`` loaded through SEAL, changed and saved again."""
    seal = keys._contexts["wide"].seal_context().data
    msg = _CKKSVectorProto()
    msg.ParseFromString(blob)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "ct")
        for i in chunks:
            Path(path).write_bytes(msg.ciphertexts[i])
            ct = sealapi.Ciphertext()
            ct.load(seal, path)
            ct = change(seal, ct)
            msg.ciphertexts[i] = _seal_bytes(ct)
    return bytes(msg.SerializeToString())


def _out_of_ntt(seal: Any, ct: Any) -> Any:
    sealapi.Evaluator(seal).transform_from_ntt_inplace(ct)
    return ct


def _squared(keys: SecretKeys) -> Any:
    """Returns a change that replaces a ciphertext by a size-3 one (a product, not
    relinearized, of an encryption at scale 2^30): 1.5x a sum's bytes."""
    ctx = keys._contexts["wide"]

    def change(seal: Any, ct: Any) -> Any:
        encoder = sealapi.CKKSEncoder(seal)
        plain, fresh, out = sealapi.Plaintext(), sealapi.Ciphertext(), sealapi.Ciphertext()
        encoder.encode([1.0] * 8, 2.0**30, plain)
        sealapi.Encryptor(seal, ctx.secret_key().data).encrypt_symmetric(plain, fresh)
        sealapi.Evaluator(seal).square(fresh, out)
        return out

    return change


@pytest.mark.parametrize("first", [False, True], ids=["after-honest", "first"])
def test_a_coefficient_form_chunk_is_refused_and_adds_nothing(
    keys: SecretKeys, first: bool
) -> None:
    """Chunk 0 genuine, chunk 1 out of NTT form: refused at load with a typed error, before
    or after honest replies, and the honest sum decrypts to the honest values."""
    honest = [keys.encrypt(np.full(L, float(k)), params="wide") for k in (1, 2)]
    bad = _rewrite(keys, keys.encrypt(np.full(L, 1000.0), params="wide"), [1], _out_of_ntt)
    total = EncryptedSum(keys.public(), params="wide", length=L)
    if not first:
        total.add(honest[0])
    with pytest.raises(CiphertextError, match="NTT form False"):
        total.add(bad)
    for blob in honest[1:] if not first else honest:
        total.add(blob)
    assert total.count == 2
    got = keys.decrypt(total.serialize(), params="wide", length=L, contributors=2)
    assert np.allclose(got, 3.0, atol=1e-5)
    with pytest.raises(CiphertextError, match="NTT form False"):
        keys.public().load(bad, params="wide", length=L)  # the key holder's path too


def test_an_oversized_ciphertext_is_refused_before_seal_loads_it(keys: SecretKeys) -> None:
    bad = _rewrite(keys, keys.encrypt(np.ones(L), params="wide"), [0], _squared(keys))
    msg = _CKKSVectorProto()
    msg.ParseFromString(bad)
    assert len(msg.ciphertexts[0]) > WIDE.max_ciphertext_bytes
    with pytest.raises(CiphertextError, match=r"a ciphertext of \d+ bytes, at most"):
        EncryptedSum(keys.public(), params="wide", length=L).add(bad)


_BOMB = textwrap.dedent(
    """
    import resource, sys, tempfile, warnings
    from pathlib import Path
    warnings.filterwarnings("ignore")
    import tenseal.sealapi as sealapi
    from fedcollab.common.errors import CiphertextError
    from fedcollab.privacy.ckks import EncryptedSum, SecretKeys
    from fedcollab.privacy.ckks_wire import _CKKSVectorProto

    keys = SecretKeys.generate()
    seal = keys._contexts["wide"].seal_context().data
    ct = sealapi.Ciphertext(seal)
    ct.resize(seal, seal.first_parms_id(), 16)  # 16 all-zero polynomials
    with tempfile.TemporaryDirectory() as tmp:
        ct.save(str(Path(tmp) / "ct"))
        one = (Path(tmp) / "ct").read_bytes()
    msg = _CKKSVectorProto(scale=2.0**60)
    for _ in range(int(sys.argv[1])):
        msg.ciphertexts.append(one)
        msg.sizes.append(1)
    blob = msg.SerializeToString()
    cap = int(sys.argv[2]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:
        EncryptedSum(keys.public(), params="wide", length=2).add(blob)
    except CiphertextError as exc:
        print("refused:", len(blob), "bytes:", exc)
    """
)


def test_a_decompression_bomb_is_refused_before_anything_expands(tmp_path: Path) -> None:
    """3,000 compressed 16-polynomial ciphertexts (about 500 KiB, 6 GiB expanded), under a
    3 GiB address-space cap: refused from the layout alone; the code before the fix ran out
    of memory in SEAL."""
    script = tmp_path / "bomb.py"
    script.write_text(_BOMB)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run(
        [sys.executable, str(script), "3000", "3072"], env=env, capture_output=True,
        text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "refused:" in run.stdout and "3000 ciphertexts" in run.stdout
    assert int(run.stdout.split()[1]) < 1 << 20  # the bomb itself is small
