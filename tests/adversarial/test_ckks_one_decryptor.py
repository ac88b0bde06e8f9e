"""A malicious coordinator differences two key holders' decryptions of one "ckks" step.

Every partner of a plain "ckks" job holds the job key, and each key holder decrypts a
step at most once, in its own store. A coordinator that asks a for the sum of {a, b, c}
and b for the sum of {b, c} of the same step, both genuinely signed and both meeting
``min_partners``, got a's exact moments as the difference (red team, 2026-12-06: max
error 3e-7). Now only the partner that dealt the key decrypts a "ckks" job's sums (one
decryptor, one sum per step); "ckks+masked", whose decryptions are one-time padded,
keeps any key holder as a decryptor. Real partner path (``client.client_app._serve``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedcollab.coordinator.encryption import session_from_keygen
from tests.support import adversarial
from tests.support.adversarial import CHANNELS, MOMENTS_LENGTH, Attacker, job

NAMES = ("a", "b", "c")


def _moments(tmp_path: Path) -> tuple[Attacker, Any, dict[str, bytes], dict[str, Any]]:
    """A plain "ckks" job dealt by a; every partner's encrypted moments, signed."""
    spec = job(privacy={"encryption": "ckks", "aggregation": "ckks", "key_dealer": "a"})
    atk = Attacker.against(tmp_path, spec, names=NAMES)
    offers = {n: atk.handshake(n).meta["he_offer"] for n in NAMES}
    keygen = atk.send("a", "query.he_keygen", step="he-keygen", meta={"offers": offers})
    session = session_from_keygen(keygen.meta, dealer="a")
    _total, bindings = adversarial.encrypted_moments(atk, session, dict.fromkeys(NAMES, CHANNELS))
    return (
        atk,
        session,
        dict(adversarial.ENCRYPTED_REPLIES),
        dict(zip(NAMES, bindings, strict=True)),
    )


def _decrypt(atk: Attacker, session: Any, cts: dict, binds: dict, who: str, sub):  # type: ignore[no-untyped-def]
    he = {**session.request_meta(who, params="wide"), "step": "moments",
          "contributors": list(sub), "length": MOMENTS_LENGTH}  # fmt: skip
    return atk.send(
        who, "query.he_decrypt", step="moments.decrypt",
        meta={"he": he, "bindings": [binds[k] for k in sub]}, parts={k: cts[k] for k in sub},
    )  # fmt: skip


def test_two_key_holders_do_not_decrypt_subsets_of_one_step(tmp_path: Path) -> None:
    atk, session, cts, binds = _moments(tmp_path)
    full = _decrypt(atk, session, cts, binds, "a", NAMES)
    rest = _decrypt(atk, session, cts, binds, "b", ("b", "c"))
    assert full.vector is not None, full.meta  # the dealer decrypts the whole step
    assert rest.vector is None, "a's moments = the two decryptions' difference"
    assert rest.refused == "CiphertextError"
    assert not [e for e in atk.trail("b") if e["type"] == "he.decrypted"]


def test_a_key_holder_that_did_not_deal_never_decrypts_a_ckks_sum(tmp_path: Path) -> None:
    """Even first, and for the whole step: b is not the job's decryptor."""
    atk, session, cts, binds = _moments(tmp_path)
    reply = _decrypt(atk, session, cts, binds, "b", NAMES)
    assert reply.vector is None and reply.refused == "CiphertextError"
