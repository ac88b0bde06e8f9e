"""The coordinator's reply models (common.messages.replies) through the real wire path.

The handshake, key ceremony and encrypted data replies come from the partner's own
code (client.client_app._serve, driven by tests.support.adversarial.Attacker); the
others are built as their partner builder builds them (named per case). Each is
encoded and decoded by common.serde and read with ``Payload.as_``: it decodes; a wrong
type, a missing field and an out-of-bound value are each a ProtocolError.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from flwr.app import ConfigRecord, RecordDict

from fedcollab.common.errors import ProtocolError
from fedcollab.common.keys import Signer
from fedcollab.common.messages.replies import (
    CosignReply,
    DataReply,
    FedAvgReply,
    HandshakeReply,
    KeygenReply,
    PsiSizeReply,
    Reply,
    SecAggAdvertReply,
    SecAggResponseReply,
    SecAggSignatureReply,
    VerticalAlignmentReply,
    VerticalFeatureEvalReply,
    VerticalLabelEvalReply,
    VerticalLabelStepReply,
    VerticalPredictReply,
)
from fedcollab.common.messages.statistics import FedAvgRequest
from fedcollab.common.serde import Payload, decode, encode
from fedcollab.compliance.contribution import sign_contribution
from fedcollab.protocols.vertical_explain import PartyExplanation, redact
from tests.support.adversarial import Attacker, job, layout_meta

Path = tuple[str | int, ...]


def _binding() -> dict[str, Any]:
    """compliance.contribution.sign_contribution, as client.actions.answer adds it."""
    return sign_contribution(
        Signer.generate(), partner="a", run="run-1", action="train.fedavg", step="round-1",
        request="sha256:" + "0" * 64, reply="sha256:" + "1" * 64,
    )  # fmt: skip


def _explanation(*, shared: bool) -> dict[str, Any]:
    """client.vertical_training/_split ``save_results``: redacted unless shared."""
    e = PartyExplanation("a", 0.25, [("spend", 1.5), ("visits", -0.5)])
    return {**redact(e, shared).to_dict(), "shared": shared}


#: Replies built by hand, as the builder named beside each builds them.
HAND: dict[str, dict[str, Any]] = {
    # client.handlers.train (plain job) + client.actions.answer's binding
    "fedavg": {"train_loss": 0.6931, "binding": _binding()},
    # client.actions._cosign (compliance.checkpoint.SignedCheckpoint-like note)
    "cosign": {"cosigned": "fedcollab.test/audit\n3\nroot\n\n— a sig\n"},
    # client.secagg_node.handle: one base64 blob per stage (privacy.secagg dump)
    "advert": {"advert": base64.b64encode(b"\x02" * 96).decode()},
    "signature": {"signature": base64.b64encode(b"\x03" * 64).decode()},
    "response": {"response": base64.b64encode(b"\x04" * 128).decode()},
    # client.vertical._psi_salt (cm20) and client.vertical_oprf (oprf_size)
    "psi_size": {"n_values": 1200},
    # client.vertical_training.label_setup (logistic regression under label DP)
    "alignment_lr": {
        "alignment": {
            "intersection": 90,
            "train_rows": 72,
            "test_rows": 18,
            "label_noise_multiplier": 1.1,
        }
    },
    # client.vertical (joint inference): the intersection only
    "alignment_predict": {"alignment": {"intersection": 90}},
    # client.vertical_split.label_step
    "label_step": {"loss": 0.512345},
    # client.vertical_inference.label_predict
    "predict": {"scored": 90, "queried": 100},
    # client.vertical_training.feature_eval
    "feature_eval": {"explanation": _explanation(shared=False)},
    # client.vertical_split.label_eval
    "label_eval": {
        "metrics": {
            "test_auc": 0.71,
            "test_rows": 18,
            "test_accuracy": 0.66,
            "embedding_noise_multiplier": 0.0,
            "party_importance_auc_drop": {"a": 0.02, "b": 0.1},
        },
        "explanation": _explanation(shared=True),
    },
}


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Replies of the partner's own code: plain and encrypted handshakes, the dealer's key
    ceremony and an encrypted moments reply (``he`` and the signed ``binding``)."""
    from fedcollab.coordinator.encryption import session_from_keygen

    root = tmp_path_factory.mktemp("replies")
    plain = Attacker.against(root / "plain", job(), names=("a", "b"))
    spec = job(privacy={"encryption": "ckks", "aggregation": "ckks", "key_dealer": "a"})
    atk = Attacker.against(root / "he", spec, names=("a", "b"))
    handshakes = {name: atk.handshake(name).meta for name in atk.configs}
    offers = {name: meta["he_offer"] for name, meta in handshakes.items()}
    keygen = atk.send("a", "query.he_keygen", step="he-keygen", meta={"offers": offers})
    session = session_from_keygen(keygen.meta, dealer="a")
    he = session.request_meta("a", params="wide")
    moments = atk.send(
        "a", "query.moments", step="moments", meta={**layout_meta(channel=["app", "web"]), "he": he}
    )
    out = {
        "handshake_plain": dict(plain.handshake("a").meta),
        "handshake_he": dict(handshakes["b"]),
        "keygen": dict(keygen.meta),
        "moments_he": dict(moments.meta),
    }
    for name, meta in out.items():
        assert "refused" not in meta, (name, meta)
    return out


#: (model, the reply (a key of HAND or of the real fixture), a field path (a wrong type:
#: a list of lists there), a required field path (deleted), a field path and an
#: out-of-bound value).
CASES: list[tuple[type[Reply], str, Path, Path, tuple[Path, Any]]] = [
    (HandshakeReply, "handshake_plain", ("vocab",), ("partner",), (("n_rows",), 0)),
    (HandshakeReply, "handshake_he", ("he_offer",), ("dataset_hash",),
     (("partner",), "p" * 257)),
    (KeygenReply, "keygen", ("sealed", "b"), ("public",), (("sealed", ""), {})),
    (DataReply, "moments_he", ("he", "length"), ("he", "key_digest"), (("he", "length"), 0)),
    (DataReply, "moments_he", ("binding", "statement"), ("binding", "signature"),
     (("binding", "statement"), {str(i): i for i in range(65)})),
    (FedAvgReply, "fedavg", ("train_loss",), ("binding", "statement"),
     (("train_loss",), float("nan"))),
    (CosignReply, "cosign", ("cosigned",), ("cosigned",), (("cosigned",), "")),
    (SecAggAdvertReply, "advert", ("advert",), ("advert",), (("advert",), "")),
    (SecAggSignatureReply, "signature", ("signature",), ("signature",),
     (("signature",), "")),
    (SecAggResponseReply, "response", ("response",), ("response",), (("response",), "")),
    (PsiSizeReply, "psi_size", ("n_values",), ("n_values",), (("n_values",), -1)),
    (VerticalAlignmentReply, "alignment_lr", ("alignment", "train_rows"),
     ("alignment", "intersection"), (("alignment", "test_rows"), -1)),
    (VerticalAlignmentReply, "alignment_predict", ("alignment",), ("alignment",),
     (("alignment", "intersection"), 2**31)),
    (VerticalLabelStepReply, "label_step", ("loss",), ("loss",), (("loss",), float("inf"))),
    (VerticalPredictReply, "predict", ("scored",), ("queried",), (("queried",), -1)),
    (VerticalFeatureEvalReply, "feature_eval", ("explanation", "importance"),
     ("explanation", "shared"), (("explanation", "party"), "")),
    (VerticalLabelEvalReply, "label_eval", ("metrics", "test_auc"), ("metrics", "test_rows"),
     (("metrics", "party_importance_auc_drop", "a"), float("nan"))),
    (VerticalLabelEvalReply, "label_eval", ("explanation", "top_features", 0),
     ("explanation", "party"), (("explanation", "top_features", 0), ["", 1.0])),
]  # fmt: skip
IDS = [f"{model.__name__}-{key}-{i}" for i, (model, key, *_rest) in enumerate(CASES)]


def _meta(key: str, real: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return copy.deepcopy(HAND[key] if key in HAND else real[key])


def _wire(meta: dict[str, Any]) -> Payload:
    """Through the wire by hand: NaN and infinity do not pass common.serde.encode, but a
    hostile partner can send them (json.loads accepts them)."""
    return decode(RecordDict({"meta": ConfigRecord({"json": json.dumps(meta)})}))


def _at(meta: dict[str, Any], path: Path, change: Callable[[Any, str | int], None]) -> Any:
    node: Any = meta
    for key in path[:-1]:
        node = node[key]
    change(node, path[-1])
    return meta


def _set(meta: dict[str, Any], path: Path, value: Any) -> dict[str, Any]:
    return _at(meta, path, lambda node, key: node.__setitem__(key, value))  # type: ignore[no-any-return]


@pytest.mark.parametrize(("model", "key", "typed", "required", "bound"), CASES, ids=IDS)
def test_a_reply_as_the_partner_builds_it_decodes(
    real: dict[str, dict[str, Any]], model: type[Reply], key: str, typed: Path,
    required: Path, bound: Any,
) -> None:  # fmt: skip
    meta = _meta(key, real)
    payload = decode(encode(meta))
    assert isinstance(payload.as_(model), model)
    assert payload.meta == meta  # the meta as received stays (the digests cover it)


@pytest.mark.parametrize(("model", "key", "typed", "required", "bound"), CASES, ids=IDS)
def test_a_field_of_the_wrong_type_is_a_protocol_error(
    real: dict[str, dict[str, Any]], model: type[Reply], key: str, typed: Path,
    required: Path, bound: Any,
) -> None:  # fmt: skip
    with pytest.raises(ProtocolError, match=f"malformed {model.__name__}") as info:
        _wire(_set(_meta(key, real), typed, [["not", "this"]])).as_(model)
    assert "the partner runs another fedcollab version" in info.value.hint


@pytest.mark.parametrize(("model", "key", "typed", "required", "bound"), CASES, ids=IDS)
def test_a_missing_field_is_a_protocol_error(
    real: dict[str, dict[str, Any]], model: type[Reply], key: str, typed: Path,
    required: Path, bound: Any,
) -> None:  # fmt: skip
    meta = _at(_meta(key, real), required, lambda node, k: node.__delitem__(k))
    with pytest.raises(ProtocolError, match="Field required"):
        _wire(meta).as_(model)


@pytest.mark.parametrize(("model", "key", "typed", "required", "bound"), CASES, ids=IDS)
def test_an_out_of_bound_value_is_a_protocol_error(
    real: dict[str, dict[str, Any]], model: type[Reply], key: str, typed: Path,
    required: Path, bound: Any,
) -> None:  # fmt: skip
    path, value = bound
    with pytest.raises(ProtocolError, match=f"malformed {model.__name__}"):
        _wire(_set(_meta(key, real), path, value)).as_(model)


def test_the_real_replies_carry_what_the_coordinator_reads(
    real: dict[str, dict[str, Any]],
) -> None:
    plain = _wire(real["handshake_plain"]).as_(HandshakeReply)
    assert plain.partner == "a" and plain.n_rows == 200 and plain.he_offer is None
    assert plain.vocab == {"channel": ["app", "web"]}  # "kiosk" is too rare to leave
    he = _wire(real["handshake_he"]).as_(HandshakeReply)
    assert he.n_rows is None and he.he_offer is not None
    assert set(he.he_offer) == {"x25519", "signature"}
    keygen = _wire(real["keygen"]).as_(KeygenReply)
    assert set(keygen.sealed) == {"a", "b"} and keygen.rejected == {}
    moments = _wire(real["moments_he"]).as_(DataReply)
    assert moments.he is not None and moments.he.params == "wide" and moments.binding


def test_an_offer_that_is_not_an_object_is_refused_at_the_handshake(
    real: dict[str, dict[str, Any]],
) -> None:
    """The known gap of issue 17: such an offer reached the key dealer, whose refusal
    failed the whole ceremony (tests/adversarial/test_malformed_replies.py)."""
    for field, value in (("he_offer", "x25519"), ("mask_offer", ["a"]), ("vocab", "web")):
        with pytest.raises(ProtocolError, match=field):
            _wire({**real["handshake_he"], field: value}).as_(HandshakeReply)


def test_strict_types_refuse_what_the_ad_hoc_reads_took() -> None:
    """``n_rows: "200"`` and ``True`` were dropped silently (``_optional_int``);
    ``train_loss: "0.5"`` was skipped; ``n_values: 3.0`` and ``True`` were refused
    already (vertical._size); a bool is no count in any of them now."""
    base = {"partner": "a", "dataset": "shop", "dataset_hash": "h", "schema_fingerprint": "f"}
    assert _wire(base).as_(HandshakeReply).n_rows is None
    for wrong in ("200", True, 200.0):
        with pytest.raises(ProtocolError, match="n_rows"):
            _wire({**base, "n_rows": wrong}).as_(HandshakeReply)
    with pytest.raises(ProtocolError, match="train_loss"):
        _wire({"train_loss": "0.5"}).as_(FedAvgReply)
    for wrong in (3.0, True, "3"):
        with pytest.raises(ProtocolError, match="n_values"):
            _wire({"n_values": wrong}).as_(PsiSizeReply)


def test_unknown_top_level_keys_are_ignored_but_not_in_nested_objects() -> None:
    """Module Notes: the partner adds ``binding``/``he`` to many replies; an object with
    one builder refuses keys it never writes."""
    assert _wire({"scored": 1, "queried": 2, "extra": 1}).as_(VerticalPredictReply).scored == 1
    with pytest.raises(ProtocolError, match=r"alignment\.rows"):
        _wire({"alignment": {"intersection": 1, "rows": 2}}).as_(VerticalAlignmentReply)
    he = {"key_digest": "k", "params": "wide", "length": 3, "extra": 1}
    with pytest.raises(ProtocolError, match=r"he\.extra"):
        _wire({"he": he}).as_(DataReply)


def test_a_fedavg_reply_serves_its_data_base_and_a_request_model_keeps_its_hint() -> None:
    payload = _wire({"train_loss": 0.5, "binding": _binding()})
    fedavg = payload.as_(FedAvgReply)
    assert payload.as_(DataReply) is fedavg and fedavg.train_loss == 0.5
    with pytest.raises(ProtocolError) as info:
        payload.as_(FedAvgRequest)
    assert "the coordinator runs another fedcollab version" in info.value.hint
