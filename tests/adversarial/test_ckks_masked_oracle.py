"""The decryption-oracle attacks of issue 14 against a "ckks+masked" key holder, and the
honest plain "ckks" k-means job against its plaintext twin.

In "ckks+masked" every partner holds the job key and any of them may decrypt a step's
limb sums (client/encryption.py), so each key holder is a decryption oracle the
coordinator can try. :class:`tests.support.adversarial.Attacker` takes the coordinator's
seat and drives the real partner path (``client.client_app._serve``: admission, run
contract, ``client.encryption.decrypt`` as served for ``query.he_decrypt``) after an
honest key ceremony, masking session and moments step. The attacks modelled:

- **Forged aggregate**: one partner's limb ciphertext plus a plaintext the coordinator
  adds without a key, claimed as a two-partner sum; or contributions that are not what
  the claimed contributors signed (an offset inside b's, a's ciphertext as b's).
- **Offset search** (Li & Micciancio 2021): after the step's one decryption, ask again
  with chosen plaintext offsets, at the same step or under a step name of its own.
- **Too few contributors**: a "sum" of fewer than ``max(2, min_partners)`` partners.

Each attack test names, in its docstring, the check that refuses it, and asserts that
check's refusal (the reason a partner logs), so the test fails if that check goes.

The last test runs the real coordinator (``coordinator.job.run_job``) and the real partner
ClientApp over an in-memory Grid: an honest plain "ckks" k-means job gives the plaintext
job's objective and centroids, up to what the decryptor adds to the values it releases.
"""

from __future__ import annotations

import base64
import json
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tenseal.sealapi as sealapi

from fedcollab.common.jobspec import JobSpec
from fedcollab.common.serde import Payload
from fedcollab.compliance.trail import Trail
from fedcollab.coordinator.encryption import HeSession, session_from_keygen
from fedcollab.federation.inmemory import in_memory_federation
from fedcollab.privacy.ckks import EncryptedSum
from fedcollab.privacy.ckks_wire import _CKKSVectorProto
from fedcollab.privacy.envelope import Envelope
from fedcollab.privacy.secagg_ckks import PARAMS
from fedcollab.privacy.secagg_unmask import route_shares
from tests.support.adversarial import CHANNELS, MOMENTS_LENGTH, Attacker, job, layout_meta
from tests.support.jobs import run_in_memory
from tests.support.partners import SCHEMA, make_partner

warnings.filterwarnings("ignore", message=".*does not fit in a single ciphertext.*")

NAMES = ("a", "b", "c")
#: Values of one "ckks+masked" moments reply: every masked word as two 32-bit limbs (in
#: one complex slot each, privacy.ckks "limbs").
LIMBS = 2 * MOMENTS_LENGTH


def _plus_complex(public: Any, blob: bytes, offset: Sequence[float]) -> bytes:
    """A "limbs" vector plus a plaintext, slot by slot through SEAL: value ``j`` of
    ``offset`` into slot ``j``'s real part, value ``L/2 + j`` into its imaginary part (the
    set's ``complex_pairs``), the last into the contribution slot. Needs no key."""
    half = (len(offset) - 1) // 2
    z = [complex(offset[j], offset[half + j]) for j in range(half)] + [complex(offset[-1])]
    seal = public._contexts[PARAMS].seal_context().data
    encoder, evaluator = sealapi.CKKSEncoder(seal), sealapi.Evaluator(seal)
    msg = _CKKSVectorProto()
    msg.ParseFromString(blob)
    slots = encoder.slot_count()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "ct")
        for i, raw in enumerate(list(msg.ciphertexts)):
            Path(path).write_bytes(raw)
            ct = sealapi.Ciphertext()
            ct.load(seal, path)
            plain = sealapi.Plaintext()
            encoder.encode(z[i * slots : (i + 1) * slots], ct.parms_id(), ct.scale, plain)
            evaluator.add_plain_inplace(ct, plain)
            ct.save(path)
            msg.ciphertexts[i] = Path(path).read_bytes()
    return bytes(msg.SerializeToString())


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@dataclass
class MaskedJob:
    """A "ckks+masked" run after its honest moments step: every partner's limb ciphertext
    and signed contribution statement, as the coordinator holds them."""

    atk: Attacker
    session: HeSession
    ciphertexts: dict[str, bytes]
    bindings: dict[str, Any]

    def plus(self, blob: bytes, offset: Sequence[float]) -> bytes:
        """``blob`` plus a plaintext (``LIMBS`` values and the contribution slot): what
        the coordinator adds without any key."""
        self.session.public.load(blob, params=PARAMS, length=LIMBS)  # the shape checks
        return _plus_complex(self.session.public, blob, offset)

    def sum_of(self, blobs: Iterable[bytes]) -> bytes:
        total = EncryptedSum(self.session.public, params=PARAMS, length=LIMBS)
        for blob in blobs:
            total.add(blob)
        return total.serialize()

    def decrypt(
        self,
        who: str,
        contributors: Sequence[str],
        *,
        step: str = "moments",
        parts: Mapping[str, bytes] | None = None,
        aggregate: bytes | None = None,
    ) -> Payload:
        """``query.he_decrypt`` of ``step`` at ``who``, with each distinct contributor's
        genuine statement; ``parts`` (default: the contributors' genuine ciphertexts) and
        ``aggregate`` (the coordinator's claimed sum, default none) as the attacker likes."""
        he = {**self.session.request_meta(who, params=PARAMS), "step": step,
              "contributors": list(contributors), "length": LIMBS}  # fmt: skip
        signed = [self.bindings[n] for n in dict.fromkeys(contributors)]
        if parts is None:
            parts = {n: self.ciphertexts[n] for n in contributors}
        return self.atk.send(
            who, "query.he_decrypt", step=f"{step}.decrypt",
            meta={"he": he, "bindings": signed}, ciphertext=aggregate, parts=parts,
        )  # fmt: skip

    def decrypted(self, who: str) -> int:
        """How many sums ``who`` logged as decrypted (``he.decrypted``)."""
        return sum(e["type"] == "he.decrypted" for e in self.atk.trail(who))


def _masked_job(tmp_path: Path, *, min_partners: int = 2) -> MaskedJob:
    """Partners a, b, c of a "ckks+masked" job dealt by a, through the key ceremony, the
    moments step's masking session (advertise, share) and its masked, encrypted request."""
    spec = job(
        participants=list(NAMES), min_partners=min_partners,
        privacy={"encryption": "ckks", "aggregation": "ckks+masked", "key_dealer": "a"},
    )  # fmt: skip
    atk = Attacker.against(tmp_path, spec, names=NAMES)
    offers = {n: atk.handshake(n).meta["he_offer"] for n in NAMES}
    keygen = atk.send("a", "query.he_keygen", step="he-keygen", meta={"offers": offers})
    session = session_from_keygen(keygen.meta, dealer="a")
    head = {"cohort": list(NAMES), "length": MOMENTS_LENGTH}

    def stage(name: str, stage: str, secagg: dict[str, Any]) -> Payload:
        step = f"moments.secagg-{stage}"
        return atk.send(name, "query.secagg", step=step, meta={"secagg": secagg})

    adverts = {n: stage(n, "advertise", head).meta["advert"] for n in NAMES}
    sent = {}
    for n in NAMES:
        shares = stage(n, "share", {**head, "adverts": adverts})
        sent[n] = {r: Envelope.from_bytes(b) for r, b in shares.parts.items()}
    inboxes = route_shares(sent)
    ciphertexts, bindings = {}, {}
    for n in NAMES:
        inbox = {s: _b64(e.to_bytes()) for s, e in inboxes[n].items()}
        reply = atk.send(
            n, "query.moments", step="moments",
            meta={**layout_meta(channel=CHANNELS), "secagg": {"inbox": inbox},
                  "he": session.request_meta(n, params=PARAMS)},
        )  # fmt: skip
        assert reply.ciphertext is not None and reply.vector is None, reply.meta
        ciphertexts[n], bindings[n] = reply.ciphertext, reply.meta["binding"]
        session.installed.add(n)
    return MaskedJob(atk, session, ciphertexts, bindings)


def _refused(
    world: MaskedJob,
    who: str,
    reply: Payload,
    caplog: pytest.LogCaptureFixture,
    *,
    kind: str,
    because: str,
    decrypted: int = 0,
) -> None:
    """Refused as ``kind`` by the check whose reason contains ``because``; nothing left
    (no values, no sum receipt) and ``who`` logged no decryption beyond ``decrypted``."""
    assert reply.vector is None and "receipt" not in reply.meta, reply.meta
    assert reply.refused == kind, (reply.refused, caplog.text[-600:])
    assert because in caplog.text, caplog.text[-600:]
    assert world.decrypted(who) == decrypted
    assert world.atk.trail(who)[-1]["type"] == "request.refused"


# ------------------------------------------------------------------ forged aggregates


@pytest.mark.parametrize(
    ("inputs", "because"),
    [
        ("only-a", "not of each claimed contributor"),
        ("genuine", "is not the sum of the signed contributions"),
        ("offset-in-b", "is not the one 'b' signed"),
        ("a-as-b", "claimed as the contribution of several partners"),
    ],
)
def test_a_forged_aggregate_is_refused_before_anything_is_decrypted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, inputs: str, because: str
) -> None:
    """Attack (issue 14, first bullet): a's limb ciphertext plus a plaintext 1 in the
    contribution slot, claimed as the sum of a's and b's contributions, sent to key holder
    b with only a's ciphertext (``only-a``: refused by the check that the request carries
    exactly the claimed contributors' ciphertexts) or with both genuine ones (``genuine``:
    refused by the check that the coordinator's aggregate is the sum b recomputes). Or the
    contributions themselves forged, the aggregate made to match: b's ciphertext plus a
    chosen offset (``offset-in-b``: refused by the check of each ciphertext against the
    digest its contributor signed), a's ciphertext passed off as b's too (``a-as-b``:
    refused by the check that no ciphertext is claimed for two partners)."""
    world = _masked_job(tmp_path)
    a, b = world.ciphertexts["a"], world.ciphertexts["b"]
    forged = world.plus(a, [0.0] * LIMBS + [1.0])  # decrypts as a 2-sum holding a alone
    offset_b = world.plus(b, [1.0] + [0.0] * LIMBS)  # slot 0 moved by 1, still "one" b
    parts, aggregate = {
        "only-a": ({"a": a}, forged),
        "genuine": ({"a": a, "b": b}, forged),
        "offset-in-b": ({"a": a, "b": offset_b}, world.sum_of([a, offset_b])),
        "a-as-b": ({"a": a, "b": a}, world.sum_of([a, a])),
    }[inputs]
    caplog.clear()
    reply = world.decrypt("b", ("a", "b"), parts=parts, aggregate=aggregate)
    _refused(world, "b", reply, caplog, kind="CiphertextError", because=because)


def test_the_genuine_sum_is_decrypted_at_any_key_holder(tmp_path: Path) -> None:
    """The control for every test here: the same request with the genuine contributions
    (no aggregate of the coordinator's) is answered, by a key holder that did not deal,
    with exact limb sums and the key holder's signed receipt."""
    world = _masked_job(tmp_path)
    reply = world.decrypt("b", NAMES)
    assert reply.refused is None and reply.vector is not None, reply.meta
    assert reply.vector.shape == (LIMBS,) and np.array_equal(reply.vector, np.rint(reply.vector))
    assert reply.meta["receipt"]["statement"]["contributors"] == list(NAMES)
    assert world.decrypted("b") == 1


# ---------------------------------------------------------------------- offset search


def test_a_decrypted_step_is_not_decrypted_again_with_offsets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack (issue 14: 35 decryptions with chosen offsets undid the rounding): after
    key holder b decrypted the moments' limb sums, ask b for the same step again, with
    the genuine contributions and chosen plaintext offsets added to their sum, halving
    each time as a binary search does. Refused by the run contract's once-per-step claim
    (``RunContract.claim``, at admission): b answers the step once."""
    world = _masked_job(tmp_path)
    genuine = world.sum_of(world.ciphertexts[n] for n in NAMES)
    assert world.decrypt("b", NAMES).vector is not None  # the step's one decryption
    for offset in (2.0**-1, 2.0**-2, 2.0**-3):
        probe = world.plus(genuine, [offset] * LIMBS + [0.0])
        caplog.clear()
        reply = world.decrypt("b", NAMES, aggregate=probe)
        _refused(world, "b", reply, caplog, kind="ProtocolError",
                 because="was already answered", decrypted=1)  # fmt: skip


@pytest.mark.parametrize(
    ("step", "kind", "because"),
    [
        ("moments-2", "ProtocolError", "is not a step of this job's"),
        ("lloyd-1", "ProtocolError", "is not a step of this job's"),
        ("x", "ProtocolError", "is not a step of this job's"),
        ("round-1", "CiphertextError", "did not answer step 'round-1'"),
    ],
)
def test_a_second_step_name_gets_no_decryption(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, step: str, kind: str, because: str
) -> None:
    """Attack (issue 14: the once-per-step marker was keyed by a step name the
    coordinator chose; one run got 44 decryptions): after b decrypted the moments, ask
    it again for the moments' contributions plus an offset under another step name. A
    name the job does not plan (a 3-round purchase-prediction job has no lloyd-1) is
    refused by the partner's request plan (``RequestPlan.check``); a planned aggregate
    step b never answered (``round-1``) by the check that the decryptor answered the
    step itself (``admission.check_contributions``)."""
    world = _masked_job(tmp_path)
    genuine = world.sum_of(world.ciphertexts[n] for n in NAMES)
    assert world.decrypt("b", NAMES).vector is not None
    probe = world.plus(genuine, [2.0**-1] * LIMBS + [0.0])
    caplog.clear()
    reply = world.decrypt("b", NAMES, step=step, aggregate=probe)
    _refused(world, "b", reply, caplog, kind=kind, because=because, decrypted=1)


# ------------------------------------------------------------------ too few contributors


@pytest.mark.parametrize(
    ("min_partners", "contributors", "because"),
    [
        (3, ("a", "b"), "aggregate of 2 distinct partner(s) (at least 3 needed)"),
        (2, ("a",), "aggregate of 1 distinct partner(s) (at least 2 needed)"),
        (2, ("a", "a"), "aggregate of 1 distinct partner(s) (at least 2 needed)"),
    ],
)
def test_a_sum_of_fewer_than_min_partners_is_not_decrypted(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    min_partners: int,
    contributors: tuple[str, ...],
    because: str,
) -> None:
    """Attack: genuinely signed contributions, but fewer distinct partners than
    ``max(2, min_partners)``: two of three when the job needs three (under client-level
    DP each carries 1/min_partners of the noise), a alone, or a counted twice. Refused
    by the decryptor's contributor floor in ``client.encryption.decrypt``."""
    world = _masked_job(tmp_path, min_partners=min_partners)
    caplog.clear()
    reply = world.decrypt("b", contributors)
    _refused(world, "b", reply, caplog, kind="CiphertextError", because=because)


# ------------------------------------------------------- plain "ckks" k-means, honest


SEG_NAMES = ("p0", "p1", "p2")


def _segmentation(aggregation: str) -> JobSpec:
    privacy: dict[str, Any] = {"aggregation": aggregation}
    if aggregation == "ckks":
        privacy.update(encryption="ckks", key_dealer="p0")
    return JobSpec.model_validate(
        {"name": "seg", "task": "segmentation", "purpose": "user-segmentation",
         "schema": SCHEMA, "participants": list(SEG_NAMES), "min_partners": 2,
         "privacy": privacy,
         "segmentation": {"k": 3, "lloyd_iterations": 3, "seeding": "summed",
                          "seed_steps": 1, "seed_candidates": 6}},
        strict=False,
    )  # fmt: skip


def _run_segmentation(tmp_path: Path, spec: JobSpec) -> tuple[dict[str, Any], Path]:
    sources = [make_partner(tmp_path / "data", n, seed=i, n=300) for i, n in enumerate(SEG_NAMES)]
    grid, audit, policy = in_memory_federation(spec, sources, tmp_path)
    return run_in_memory(grid, spec, tmp_path / "out", audit, policy), tmp_path


def _centroids(root: Path) -> tuple[list[str], np.ndarray]:
    saved = json.loads((root / "out" / "centroids.json").read_text())
    return saved["feature_names"], np.asarray(saved["centroids"])


def _protections(root: Path) -> set[str]:
    db = root / "audit" / "coordinator" / "audit.db"
    with Trail.open(db, db.parent / "audit.key", actor="coordinator") as trail:
        events = [json.loads(raw) for raw in trail.log.entries()]
    return {e["body"]["protection"] for e in events if e["type"] == "round.aggregated"}


def test_an_encrypted_k_means_job_equals_the_plaintext_job(tmp_path: Path) -> None:
    """Plain "ckks" segmentation (summed seeding, 3 Lloyd steps) with the real coordinator
    and partners: it completes with no refusal, every aggregate a CKKS sum decrypted by
    the dealer, and gives the plaintext job's objectives to 1e-3 (relative) and centroids
    to 1e-2 (standardised units). What separates them is only what the dealer adds to each
    value it releases, which reaches the objective directly and through the moments'
    rescaling of every row, and a centroid as its error over the cluster's size plus the
    few rows a moved boundary carries across. Measured on this data: rounding to the
    2^-20 grid moved them by 3e-10 (relative) and 1.4e-9; Gaussian flooding of width
    0.065 per value by up to 3.6e-4 and 3.6e-3 (100 runs): the bounds hold, with room,
    for any release noise up to that width."""
    plain, plain_root = _run_segmentation(tmp_path / "plain", _segmentation("plaintext"))
    ckks, ckks_root = _run_segmentation(tmp_path / "ckks", _segmentation("ckks"))
    assert ckks["refused"] == [] and ckks["dropouts"] == []
    assert _protections(ckks_root) == {"ckks-sum", "ckks-decrypted"}
    assert ckks["iterations"] == plain["iterations"] == 3
    for got, want in zip(ckks["history"], plain["history"], strict=True):
        assert got["objective"] == pytest.approx(want["objective"], rel=1e-3), (got, want)
    assert ckks["objective"] == pytest.approx(plain["objective"], rel=1e-3)
    names, centroids = _centroids(ckks_root)
    plain_names, plain_centroids = _centroids(plain_root)
    assert names == plain_names
    assert np.max(np.abs(centroids - plain_centroids)) <= 1e-2
