"""The partner's side of encrypted jobs, on real keys and files: the ceremony, sealed
keys riding on requests, fail-closed replies, one decryption per step, erasure."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from fedcollab.client import encryption
from fedcollab.client.he_keys import NodeKeyStore
from fedcollab.client.run_contract import RequestPlan
from fedcollab.common.errors import CiphertextError
from fedcollab.common.serde import Payload
from fedcollab.compliance.trail import create_party_key, digest_bytes
from fedcollab.coordinator.encryption import HeSession, session_from_keygen
from fedcollab.privacy.ckks import PARAMETER_SETS, EncryptedSum, SecretKeys
from tests.support.adversarial import job

warnings.filterwarnings("ignore", message=".*does not fit in a single ciphertext.*")

RUN = "0123abcd"
PARTNERS = ("brand-a", "brand-b", "payment-c")
#: A plain "ckks" job over the partners: its key dealer resolves to brand-a.
SPEC = job(participants=list(PARTNERS), privacy={"encryption": "ckks", "aggregation": "ckks"})
DEALER = SPEC.privacy.key_dealer


@pytest.fixture
def configs(tmp_path: Path) -> dict[str, dict[str, str]]:
    peers = {}
    out = {}
    for name in PARTNERS:
        key, pub = create_party_key(tmp_path / name, name)
        peers[name] = pub.read_text().strip()
        out[name] = {
            "audit-key": str(key),
            "audit-db": str(tmp_path / name / "audit.db"),
            "peer-keys": str(tmp_path / "peers.json"),
        }
    (tmp_path / "peers.json").write_text(json.dumps(peers))
    return out


def _ceremony(configs: dict[str, dict[str, str]]) -> HeSession:
    offers = {name: encryption.offer(configs[name], partner=name, run=RUN) for name in PARTNERS}
    reply = encryption.keygen(
        configs["brand-a"], partner="brand-a", run=RUN, payload=Payload({"offers": offers})
    )
    assert reply["rejected"] == {}
    return session_from_keygen(reply, dealer="brand-a")


def _request(session: HeSession, partner: str, params: str = "wide") -> Payload:
    return Payload({"he": session.request_meta(partner, params=params)})


def test_encrypted_round_end_to_end(configs: dict[str, dict[str, str]]) -> None:
    session = _ceremony(configs)
    assert not session.public.has_secret_key()
    total = EncryptedSum(session.public, params="wide", length=4)
    blobs: dict[str, bytes] = {}
    for i, name in enumerate(("brand-b", "payment-c")):
        blob, meta = encryption.encrypt_reply(
            configs[name], partner=name, dealer=DEALER, run=RUN, request=_request(session, name),
            vector=np.full(4, float(i + 1)),
        )  # fmt: skip
        session.check_reply({"he": meta}, params="wide", length=4)
        total.add(blob)
        blobs[name] = blob
        session.installed.add(name)
        # The sealed key is sent once; afterwards the node uses its stored copy.
        assert "sealed" not in session.request_meta(name, params="wide")
    he = {**session.request_meta("brand-a", params="wide"), "step": "moments",
          "contributors": ["brand-b", "payment-c"], "length": 4}  # fmt: skip
    signed = {n: digest_bytes(b) for n, b in blobs.items()}  # what check_bindings returns
    meta, values = encryption.decrypt(
        configs["brand-a"], partner="brand-a", run=RUN, spec=SPEC, replies=signed,
        payload=Payload({"he": he}, ciphertext=total.serialize(), parts=blobs),
    )  # fmt: skip
    # Flooded (privacy.flooding), never the raw decryption: the noise's width follows
    # from the plan's decryption count, and it is far above CKKS's own error (~1e-15).
    planned = len(RequestPlan.for_job(SPEC, partner="brand-a").aggregates)
    assert planned == SPEC.rounds + 3  # moments, 2 final evaluations
    sigma = PARAMETER_SETS["wide"].flooding_width(contributors=2, decryptions=planned)
    assert 1e-6 < sigma < 1e-5
    assert np.all(np.abs(values - 3.0) < 8 * sigma) and np.any(np.abs(values - 3.0) > 1e-9)
    assert meta["contributors"] == ["brand-b", "payment-c"]
    assert meta["decrypted"] == {"sum": digest_bytes(total.serialize()), "inputs": signed}
    # The same step is never decrypted twice (a second request could carry one
    # partner's ciphertext in place of the aggregate).
    with pytest.raises(CiphertextError, match="already decrypted"):
        encryption.decrypt(
            configs["brand-a"], partner="brand-a", run=RUN, spec=SPEC, replies=signed,
            payload=Payload({"he": he}, ciphertext=total.serialize(), parts=blobs),
        )  # fmt: skip
    # Keys are erased at the end of the job.
    encryption.erase(configs["brand-b"], run=RUN)
    assert NodeKeyStore.from_config(configs["brand-b"]).keys(RUN) is None


def test_decryptor_refuses_single_partner_aggregates(configs: dict[str, dict[str, str]]) -> None:
    session = _ceremony(configs)
    blob, _ = encryption.encrypt_reply(
        configs["brand-b"], partner="brand-b", dealer=DEALER, run=RUN,
        request=_request(session, "brand-b"), vector=np.arange(3.0),
    )  # fmt: skip
    for contributors in (["brand-b"], ["brand-b", "brand-b"]):
        he = {**session.request_meta("brand-a", params="wide"), "step": "s",
              "contributors": contributors, "length": 3}  # fmt: skip
        with pytest.raises(CiphertextError, match="distinct partner"):
            encryption.decrypt(configs["brand-a"], partner="brand-a", run=RUN, spec=SPEC,
                               payload=Payload({"he": he}, ciphertext=blob))  # fmt: skip
    he = {**session.request_meta("brand-a", params="wide"), "step": "s2",
          "contributors": ["brand-b", "payment-c"], "length": 3}  # fmt: skip
    # Claiming two contributors for one ciphertext: no contributions to recompute it from.
    with pytest.raises(CiphertextError, match="not of each claimed contributor"):
        encryption.decrypt(configs["brand-a"], partner="brand-a", run=RUN, spec=SPEC,
                           replies={"brand-b": digest_bytes(blob), "payment-c": "x"},
                           payload=Payload({"he": he}, ciphertext=blob))  # fmt: skip
    # ... or with the one ciphertext passed off as both partners' contributions.
    with pytest.raises(CiphertextError, match="several partners"):
        encryption.decrypt(configs["brand-a"], partner="brand-a", run=RUN, spec=SPEC,
                           replies={"brand-b": digest_bytes(blob), "payment-c": digest_bytes(blob)},
                           payload=Payload({"he": he}, ciphertext=blob,
                                           parts={"brand-b": blob, "payment-c": blob}))  # fmt: skip


def test_replies_fail_closed(configs: dict[str, dict[str, str]]) -> None:
    session = _ceremony(configs)
    vec = np.ones(3)
    # No encryption parameters in the request: refuse rather than reply in plaintext.
    with pytest.raises(CiphertextError, match="no encryption parameters"):
        encryption.encrypt_reply(configs["brand-b"], partner="brand-b", dealer=DEALER, run=RUN,
                                 request=Payload({}), vector=vec)  # fmt: skip
    # No key at the node and none forwarded.
    meta = session.request_meta("brand-b", params="wide")
    meta.pop("sealed")
    with pytest.raises(CiphertextError, match="no key for run"):
        encryption.encrypt_reply(configs["brand-b"], partner="brand-b", dealer=DEALER, run=RUN,
                                 request=Payload({"he": meta}), vector=vec)  # fmt: skip
    # Another partner's sealed key.
    stolen = session.request_meta("payment-c", params="wide")
    with pytest.raises(CiphertextError, match="addressed to"):
        encryption.encrypt_reply(configs["brand-b"], partner="brand-b", dealer=DEALER, run=RUN,
                                 request=Payload({"he": stolen}), vector=vec)  # fmt: skip
    # A request naming another key than the one the node holds (stale or substituted).
    encryption.encrypt_reply(configs["brand-b"], partner="brand-b", dealer=DEALER, run=RUN,
                             request=_request(session, "brand-b"), vector=vec)  # fmt: skip
    other = {"key_digest": SecretKeys.generate().public().digest, "params": "wide"}
    with pytest.raises(CiphertextError, match="another encryption key"):
        encryption.encrypt_reply(configs["brand-b"], partner="brand-b", dealer=DEALER, run=RUN,
                                 request=Payload({"he": other}), vector=vec)  # fmt: skip


def test_ceremony_needs_pinned_peers_and_runs_once(
    configs: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    offers = {n: encryption.offer(configs[n], partner=n, run=RUN) for n in PARTNERS}
    no_peers = {k: v for k, v in configs["brand-a"].items() if k != "peer-keys"}
    with pytest.raises(CiphertextError, match="no pinned peer keys"):
        encryption.keygen(no_peers, partner="brand-a", run=RUN, payload=Payload({"offers": offers}))
    # A tampered offer is left out (and reported), the others are served.
    offers["payment-c"] = {**offers["payment-c"], "x25519": offers["brand-b"]["x25519"]}
    reply = encryption.keygen(
        configs["brand-a"], partner="brand-a", run=RUN, payload=Payload({"offers": offers})
    )
    assert sorted(reply["sealed"]) == ["brand-a", "brand-b"]
    assert "payment-c" in reply["rejected"]
    with pytest.raises(CiphertextError, match="already dealt"):
        encryption.keygen(
            configs["brand-a"], partner="brand-a", run=RUN, payload=Payload({"offers": offers})
        )
    # The key files are private to the node's user.
    store = NodeKeyStore.from_config(configs["brand-a"])
    for name in ("ckks.key", "transport.key"):
        mode = (store.root / RUN / name).stat().st_mode & 0o777
        assert mode == 0o600


def test_coordinator_refuses_key_material_with_a_secret(configs: dict[str, dict[str, str]]) -> None:
    import base64

    keys = SecretKeys.generate()
    bad = {
        "public": base64.b64encode(keys.to_bytes()).decode(),
        "key_digest": keys.public().digest,
        "sealed": {},
    }
    with pytest.raises(CiphertextError, match="secret key"):
        session_from_keygen(bad, dealer="brand-a")
    mismatched = {**bad, "public": base64.b64encode(keys.public().to_bytes()).decode(),
                  "key_digest": "sha256:00"}  # fmt: skip
    with pytest.raises(CiphertextError, match="digest"):
        session_from_keygen(mismatched, dealer="brand-a")
    # Not the shape client.encryption.keygen builds (common.messages.replies.KeygenReply).
    for field, value in (("sealed", "brand-a"), ("public", None), ("key_digest", 7)):
        with pytest.raises(CiphertextError, match=f"malformed KeygenReply: {field}"):
            session_from_keygen({**mismatched, field: value}, dealer="brand-a")


def test_loaded_keys_are_reused_only_while_their_file_is_there(
    configs: dict[str, dict[str, str]],
) -> None:
    """The executor keeps a run's loaded CKKS keys in memory (one load, not one per
    message), but never past the file: replaced keys are loaded afresh, and erasing the
    run (job end, TTL, failure) drops them from memory too."""
    from fedcollab.client import he_keys

    _ceremony(configs)
    store = NodeKeyStore.from_config(configs["brand-a"])
    first = store.keys(RUN)
    assert first is not None and store.keys(RUN) is first  # one load for both uses
    path = (store.root / RUN / "ckks.key").resolve()
    assert he_keys._LOADED[path][1] is first
    replaced = SecretKeys.generate()
    store.save_keys(RUN, replaced)  # other bytes under the same name
    again = store.keys(RUN)
    assert again is not None and again is not first
    assert again.public().digest == replaced.public().digest
    encryption.erase(configs["brand-a"], run=RUN)
    assert path not in he_keys._LOADED
    assert store.keys(RUN) is None
    # Removed behind the store's back: the next use finds no file and forgets the keys.
    store.save_keys(RUN, replaced)
    assert store.keys(RUN) is not None and path in he_keys._LOADED
    path.unlink()
    assert store.keys(RUN) is None and path not in he_keys._LOADED
    # Another run's keys, erased behind the store's back, leave memory at the next use.
    store.save_keys(RUN, replaced)
    assert store.keys(RUN) is not None
    store.save_keys("other-run", SecretKeys.generate())
    assert store.keys("other-run") is not None
    path.unlink()
    store.keys("other-run")
    assert path not in he_keys._LOADED


def test_a_segmentation_plan_decrypts_what_the_convergence_rule_assumes() -> None:
    """The convergence rule (client.centroid_chain, coordinator.segmentation) sizes the
    flooding noise with ``summed_decryptions``; the decryptor floods for its plan's
    aggregates. They must agree, or an honest job stops where partners do not."""
    for seeds, lloyds in ((1, 3), (2, 20), (20, 500)):
        spec = job(
            task="segmentation", purpose="user-segmentation", participants=list(PARTNERS),
            privacy={"encryption": "ckks", "aggregation": "ckks"},
            segmentation={"seeding": "summed", "seed_steps": seeds, "lloyd_iterations": lloyds},
        )  # fmt: skip
        plan = RequestPlan.for_job(spec, partner="brand-b")
        assert len(plan.aggregates) == spec.segmentation.summed_decryptions == 2 + seeds + lloyds


def test_a_ckks_sum_is_decrypted_under_the_flooded_set_only(
    configs: dict[str, dict[str, str]],
) -> None:
    """Red team of 2026-12-07: a coordinator naming "compact" for a plain "ckks" sum got
    it decrypted with noise sized for another scale. The decryptor refuses any set but
    "wide" before it decrypts (or uses up the step)."""
    session = _ceremony(configs)
    blobs = {}
    for name in ("brand-b", "payment-c"):
        blobs[name], _ = encryption.encrypt_reply(
            configs[name], partner=name, dealer=DEALER, run=RUN,
            request=_request(session, name, params="compact"), vector=np.ones(4),
        )  # fmt: skip
    he = {**session.request_meta("brand-a", params="compact"), "step": "moments",
          "contributors": sorted(blobs), "length": 4}  # fmt: skip
    signed = {n: digest_bytes(b) for n, b in blobs.items()}
    with pytest.raises(CiphertextError, match="under 'wide' only"):
        encryption.decrypt(
            configs["brand-a"], partner="brand-a", run=RUN, spec=SPEC, replies=signed,
            payload=Payload({"he": he}, parts=blobs),
        )  # fmt: skip
    assert not (NodeKeyStore.from_config(configs["brand-a"])._run(RUN) / "decrypted").exists()
