"""A malicious coordinator names the CKKS parameter set of the masked mode in a "ckks" job.

The ``limbs`` set (privacy.ckks) carries the 32-bit limbs of "ckks+masked" replies, which
the key holder decrypts to exact integers instead of rounding to a grid (they are one-time
padded). In a plain "ckks" job the key is all that protects the vectors, and exact
decryptions give it away (Li & Micciancio 2021, EUROCRYPT). So a partner decides the set
from the job it pinned: a "ckks" job's reply is never encrypted, nor its sum decrypted,
under ``limbs``, and a "ckks+masked" job's sum only under it. Real partner path
(``client.client_app._serve``), real keys, trails and ledgers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.adversarial import CHANNELS, MOMENTS_LENGTH, encrypted_job, layout_meta


def _moments(atk, session, name: str, params: str):  # type: ignore[no-untyped-def]
    return atk.send(
        name, "query.moments", step="moments",
        meta={**layout_meta(channel=CHANNELS), "he": session.request_meta(name, params=params)},
    )  # fmt: skip


def test_a_ckks_job_s_reply_is_not_encrypted_under_the_masked_mode_s_set(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack: ask the moments of a "ckks" job under ``limbs``, to have the decryptor
    release them unrounded later. Nothing is encrypted, nothing leaves, the refusal is in
    the partner's trail and its log says why."""
    atk, session = encrypted_job(tmp_path)
    reply = _moments(atk, session, "a", "limbs")
    assert reply.ciphertext is None and reply.vector is None
    assert reply.refused == "CiphertextError"
    last = atk.trail("a")[-1]
    assert last["type"] == "request.refused" and last["body"]["step"] == "moments"
    assert "carry only a 'ckks+masked' job's limbs" in caplog.text


def test_no_unrounded_decryption_leaves_through_the_masked_mode_s_set(tmp_path: Path) -> None:
    """Attack chain: ask a and b for the moments under ``limbs``, then ask a to decrypt
    their sum under ``limbs`` (on 8d2a5d6 both were answered, and a released the sum
    unrounded). Now the replies are refused, and a decryption request that names
    ``limbs`` in a "ckks" job is refused before anything is decrypted."""
    atk, session = encrypted_job(tmp_path)
    ciphertexts, bindings = {}, []
    for name in ("a", "b"):
        reply = _moments(atk, session, name, "limbs")
        if reply.ciphertext is not None:
            ciphertexts[name] = reply.ciphertext
            session.installed.add(name)
            bindings.append(reply.meta["binding"])
    he = {**session.request_meta("a", params="limbs"), "step": "moments",
          "contributors": ["a", "b"], "length": MOMENTS_LENGTH}  # fmt: skip
    reply = atk.send(
        "a", "query.he_decrypt", step="moments.decrypt",
        meta={"he": he, "bindings": bindings}, parts=ciphertexts,
    )  # fmt: skip
    assert reply.vector is None, f"moments released without a grid: {reply.vector[:4]}"
    assert reply.refused is not None
    assert not [e for e in atk.trail("a") if e["type"] == "he.decrypted"]
