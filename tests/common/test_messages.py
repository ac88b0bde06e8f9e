"""The partner's request models (common.messages) through the real wire path.

Each request is built the way its coordinator sender builds it (real specs,
preprocessors, signed contribution statements), encoded and decoded by common.serde,
then read with ``Payload.as_``: it decodes; a wrong type, a missing field and an
out-of-bound value are each a ProtocolError.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict
from pydantic import BaseModel

from fedcollab.common import batch
from fedcollab.common.errors import ProtocolError
from fedcollab.common.keys import Signer
from fedcollab.common.messages import request_model
from fedcollab.common.messages.base import MAX_NAME, MAX_ROUNDS, RequestHead
from fedcollab.common.messages.protection import (
    CosignRequest,
    DecryptParams,
    DecryptRequest,
    KeygenRequest,
    SecAggRequest,
    SecAggShareRequest,
    SecAggSignRequest,
    SecAggUnmaskRequest,
)
from fedcollab.common.messages.statistics import (
    DataRequest,
    EvaluateRequest,
    FedAvgRequest,
    HandshakeRequest,
    KMeansSeedRequest,
    KMeansStepRequest,
    MomentsRequest,
    PermutationRequest,
    PreprocessedRequest,
    SegmentProfileRequest,
)
from fedcollab.common.messages.vertical import (
    FinalRequest,
    ModelStepRequest,
    PsiHopRequest,
    VerticalBase,
    VerticalRequest,
)
from fedcollab.common.serde import Payload, decode, encode
from fedcollab.compliance.contribution import sign_contribution
from fedcollab.protocols.preprocessing import Preprocessor
from tests.support.adversarial import job, layout_meta

SPEC = job()
RUN = "run-msg-1"
B64 = base64.b64encode(b"\x01" * 48).decode()
PRE = Preprocessor(
    numeric_names=("spend", "visits"),
    means=(100.0, 4.0),
    stds=(50.0, 2.0),
    categorical_vocab={"channel": ("app", "web")},
    boolean_names=("member",),
    boolean_means=(0.5,),
)
OFFER = {"x25519": B64, "signature": B64}


def _head() -> dict[str, Any]:
    """coordinator.membership.Membership.job_meta."""
    return {"job": SPEC.to_json(), "run": RUN}


def _binding(partner: str) -> dict[str, Any]:
    """A contribution statement as a partner signs it (compliance.contribution)."""
    return sign_contribution(
        Signer.generate(), partner=partner, run=RUN, action="query.moments", step="moments",
        request="sha256:" + "0" * 64, reply="sha256:" + "1" * 64,
    )  # fmt: skip


def _he() -> dict[str, Any]:
    """coordinator.encryption.HeSession.request_meta, with the sealed key of a first request."""
    sealed = {"dealer": "a", "recipient": "b", "key_digest": "sha256:k", "blob": B64}
    return {"key_digest": "sha256:k", "params": "wide", "sealed": {**sealed, "signature": B64}}


def _vertical(phase: str, step: str, **fields: Any) -> dict[str, Any]:
    """coordinator/vertical.py: the relay's base, the phase meta, _WithOffers' keys."""
    offers = {"a": OFFER, "b": OFFER}
    return {**_head(), "phase": phase, **fields, "offers": offers, "mask_offers": offers,
            "step": step}  # fmt: skip


def _cosign() -> dict[str, Any]:
    """compliance.cosigning.build_request's shape."""
    return {
        "checkpoint": "fedcollab.test/audit\n3\nroot\n\n— sig\n",
        "previous_size": 2,
        "consistency": [B64],
        "aggregates": [{"index": 1, "entry": '{"type": "round.aggregated"}', "proof": [B64]}],
    }


#: (model, the request as its sender builds it, a field path (a wrong type: a list
#: there), a required field path (deleted), a field path and an out-of-bound value).
Path = tuple[str | int, ...]
CASES: list[tuple[type[BaseModel], dict[str, Any], Path, Path, tuple[Path, Any]]] = [
    (RequestHead, _head(), ("run",), ("job",), (("run",), "r" * (MAX_NAME + 1))),
    (MomentsRequest, {**_head(), **layout_meta(channel=["app", "web"]), "he": _he()},
     ("layout", "numeric", 0), ("layout", "boolean"), (("layout", "numeric", 0), "")),
    (FedAvgRequest, {**_head(), "round": 3, "preprocessor": PRE.to_dict()},
     ("round",), ("round",), (("round",), MAX_ROUNDS + 1)),
    (EvaluateRequest, {**_head(), "preprocessor": PRE.to_dict()},
     ("preprocessor", "numeric", 0, "mean"), ("preprocessor",),
     (("preprocessor", "numeric", 0, "std"), float("inf"))),
    (PermutationRequest, {**_head(), "preprocessor": PRE.to_dict()},
     ("preprocessor", "format"), ("preprocessor", "boolean"),
     (("preprocessor", "categorical", 0, "name"), "")),
    (KMeansSeedRequest, {**_head(), "preprocessor": PRE.to_dict()},
     ("preprocessor", "categorical", 0, "vocabulary", 0), ("preprocessor",),
     (("preprocessor", "boolean", 0, "mean"), float("nan"))),
    (KMeansStepRequest,
     {**_head(), "preprocessor": PRE.to_dict(), "centroids": np.zeros((3, 5)).tolist()},
     ("centroids", 0, 0), ("centroids",), (("centroids", 1), [0.0])),
    (SegmentProfileRequest,
     {**_head(), "preprocessor": PRE.to_dict(), "centroids": np.ones((2, 5)).tolist(),
      "secagg": {"inbox": {"b": B64}}},
     ("secagg", "inbox", "b"), ("centroids",), (("centroids",), [])),
    (KeygenRequest, {**_head(), "offers": {"a": OFFER, "b": OFFER}},
     ("offers", "a"), ("offers",), (("offers",), {"": OFFER})),
    (DecryptRequest,
     {**_head(), "he": {"step": "moments", "contributors": ["a", "b"], "params": "wide",
                        "length": 12, "key_digest": "sha256:k"},
      "bindings": [_binding("a"), _binding("b")]},
     ("bindings",), ("he", "contributors"), (("he", "length"), 0)),
    (SecAggRequest, {**_head(), "secagg": {"cohort": ["a", "b", "c"], "length": 8}},
     ("secagg", "length"), ("secagg", "cohort"), (("secagg", "length"), 2**31)),
    (SecAggShareRequest,
     {**_head(), "secagg": {"cohort": ["a", "b"], "length": 8, "adverts": {"a": B64, "b": B64}}},
     ("secagg", "adverts", "a"), ("secagg", "adverts"), (("secagg", "cohort", 0), "")),
    (SecAggSignRequest,
     {**_head(), "secagg": {"cohort": ["a", "b"], "length": 8, "survivors": ["a", "b"]}},
     ("secagg", "survivors"), ("secagg", "survivors"), (("secagg", "survivors", 1), "")),
    (SecAggUnmaskRequest,
     {**_head(), "secagg": {"cohort": ["a", "b"], "length": 8, "request": B64,
                            "bindings": [_binding("a"), _binding("b")]}},
     ("secagg", "request"), ("secagg", "request"), (("secagg", "length"), -1)),
    (CosignRequest, {**_head(), "cosign": _cosign()},
     ("cosign", "checkpoint"), ("cosign", "aggregates"),
     (("cosign", "aggregates", 0, "index"), -1)),
    (VerticalRequest, _vertical("psi_hop", "psi-hop-2", owner="a", hop=2),
     ("hop",), ("owner",), (("hop",), 0)),
    (VerticalRequest, _vertical("step", "step-4", iteration=4),
     ("iteration",), ("iteration",), (("iteration",), -1)),
    (VerticalRequest, _vertical("label_eval", "label-eval"),
     ("step",), ("step",), (("phase",), "label_probe")),
    (VerticalRequest, _vertical("psi_salt", "psi-salt"),
     ("offers",), ("phase",), (("step",), "")),
    (VerticalRequest, _vertical("oprf_start", "psi-setup", sizes={"a": 10, "b": 0}),
     ("sizes",), ("sizes",), (("sizes", "a"), 1 << 33)),
    (VerticalRequest, _vertical("oprf_answer", "psi-answer", n_receiver=12),
     ("n_receiver",), ("n_receiver",), (("n_receiver",), -1)),
    (VerticalRequest, _vertical("oprf_values", "psi-values"),
     ("step",), ("step",), (("phase",), "oprf_other")),
]  # fmt: skip
IDS = [f"{model.__name__}-{i}" for i, (model, *_rest) in enumerate(CASES)]


def _wire(meta: dict[str, Any]) -> Payload:
    return decode(encode(meta))


def _at(meta: dict[str, Any], path: Path, change: Callable[[Any, str | int], None]) -> Any:
    out = copy.deepcopy(meta)
    node: Any = out
    for key in path[:-1]:
        node = node[key]
    change(node, path[-1])
    return out


def _set(meta: dict[str, Any], path: Path, value: Any) -> dict[str, Any]:
    return _at(meta, path, lambda node, key: node.__setitem__(key, value))  # type: ignore[no-any-return]


@pytest.mark.parametrize(("model", "meta", "typed", "required", "bound"), CASES, ids=IDS)
def test_a_request_as_its_sender_builds_it_decodes(
    model: type[BaseModel], meta: dict[str, Any], typed: Path, required: Path, bound: Any
) -> None:
    payload = _wire(meta)
    assert isinstance(payload.as_(model), model)
    assert payload.meta == meta  # the meta as received stays (the digests cover it)


@pytest.mark.parametrize(("model", "meta", "typed", "required", "bound"), CASES, ids=IDS)
def test_a_field_of_the_wrong_type_is_a_protocol_error(
    model: type[BaseModel], meta: dict[str, Any], typed: Path, required: Path, bound: Any
) -> None:
    with pytest.raises(ProtocolError, match=f"malformed {model.__name__}") as info:
        _wire(_set(meta, typed, [["not", "this"]])).as_(model)
    assert info.value.hint  # says what to do


@pytest.mark.parametrize(("model", "meta", "typed", "required", "bound"), CASES, ids=IDS)
def test_a_missing_field_is_a_protocol_error(
    model: type[BaseModel], meta: dict[str, Any], typed: Path, required: Path, bound: Any
) -> None:
    with pytest.raises(ProtocolError, match=r"Field required|does not match|Unable to extract"):
        _wire(_at(meta, required, lambda node, key: node.__delitem__(key))).as_(model)


@pytest.mark.parametrize(("model", "meta", "typed", "required", "bound"), CASES, ids=IDS)
def test_an_out_of_bound_value_is_a_protocol_error(
    model: type[BaseModel], meta: dict[str, Any], typed: Path, required: Path, bound: Any
) -> None:
    path, value = bound
    out = _set(meta, path, value)
    # NaN and infinity do not pass common.serde.encode (allow_nan=False): put them on the
    # wire by hand, as a hostile coordinator can (json.loads accepts them).
    raw = json.dumps(out, sort_keys=True)
    with pytest.raises(ProtocolError, match=f"malformed {model.__name__}"):
        decode(RecordDict({"meta": ConfigRecord({"json": raw})})).as_(model)


def test_the_strict_types_refuse_what_str_and_int_used_to_accept() -> None:
    """The ad hoc reads took ``round: "3"`` (int("3")), ``hop: "2"`` (str == number) and
    ``contributors: "ab"`` (a string iterated as two names); the models refuse them."""
    fedavg = {**_head(), "round": 3, "preprocessor": PRE.to_dict()}
    for wrong in ("3", 3.0, True):
        with pytest.raises(ProtocolError, match="round"):
            _wire({**fedavg, "round": wrong}).as_(FedAvgRequest)
    with pytest.raises(ProtocolError, match="hop"):
        _wire(_vertical("psi_hop", "psi-hop-2", owner="a", hop="2")).as_(VerticalRequest)
    he = {"step": "s", "contributors": "ab", "params": "wide", "length": 3, "key_digest": "k"}
    with pytest.raises(ProtocolError, match="contributors"):
        _wire({**_head(), "he": he, "bindings": []}).as_(DecryptRequest)


def test_a_missing_run_reads_as_empty_for_the_run_contract_to_refuse() -> None:
    """RequestHead: client.client_app reads the head before the trail is bound; an empty
    run reaches the run contract, which refuses it after logging the request."""
    assert _wire({"job": SPEC.to_json()}).as_(RequestHead).run == ""


def test_unknown_top_level_keys_are_ignored_but_not_in_the_preprocessor() -> None:
    """Module Notes: the coordinator composes requests from shared parts; the
    preprocessor has one builder (Preprocessor.to_dict)."""
    meta = {**_head(), "round": 1, "preprocessor": PRE.to_dict(), "layout": "x"}
    assert _wire(meta).as_(FedAvgRequest).round == 1
    meta["preprocessor"] = {**PRE.to_dict(), "extra": 1}
    with pytest.raises(ProtocolError, match=r"preprocessor\.extra"):
        _wire(meta).as_(FedAvgRequest)


def test_a_message_is_validated_once_and_serves_its_bases() -> None:
    payload = _wire({**_head(), "round": 2, "preprocessor": PRE.to_dict(), "he": _he()})
    fedavg = payload.as_(FedAvgRequest)
    assert payload.as_(PreprocessedRequest) is fedavg
    assert payload.as_(DataRequest) is fedavg and fedavg.he is not None
    assert fedavg.he.params == "wide"
    # A vertical request is read as its phase's model, which serves VerticalBase.
    vertical = _wire(_vertical("step", "step-0", iteration=0))
    phase = vertical.as_(VerticalRequest).root
    assert isinstance(phase, ModelStepRequest) and phase.iteration == 0
    assert vertical.as_(VerticalBase) is phase and set(phase.offers) == {"a", "b"}
    # The decryption parameters alone (what client.encryption.decrypt reads).
    he = {"step": "s", "contributors": ["a", "b"], "params": "wide", "length": 3,
          "key_digest": "k"}  # fmt: skip
    assert Payload({"he": he}).as_(DecryptParams).he.contributors == ["a", "b"]


def test_a_contributor_without_a_statement_is_left_to_the_contribution_check() -> None:
    """roster.py sends ``None`` for a contributor that signed nothing; refusing it is
    compliance.contribution's (a CiphertextError the coordinator reports as such)."""
    he = {"step": "s", "contributors": ["a", "b"], "params": "wide", "length": 3,
          "key_digest": "k"}  # fmt: skip
    request = _wire({**_head(), "he": he, "bindings": [_binding("a"), None]}).as_(DecryptRequest)
    assert request.bindings[1] is None


@pytest.mark.parametrize(
    ("action", "step", "model"),
    [
        ("query.handshake", "handshake", HandshakeRequest),
        ("query.moments", "moments", MomentsRequest),
        ("train.fedavg", "round-1", FedAvgRequest),
        ("query.kmeans_step", "lloyd-1", KMeansStepRequest),
        ("query.secagg", "round-1.secagg-advertise", SecAggRequest),
        ("query.secagg", "moments.secagg-share", SecAggShareRequest),
        ("query.secagg", "lloyd-2.secagg-sign", SecAggSignRequest),
        ("query.secagg", "moments.secagg-unmask", SecAggUnmaskRequest),
        ("query.vertical", "psi-salt", VerticalRequest),
    ],
)
def test_request_model_names_each_kind(action: str, step: str, model: type[BaseModel]) -> None:
    assert request_model(action, step) is model


def test_every_action_the_client_app_serves_has_a_model() -> None:
    from fedcollab.client.client_app import make_client_app

    actions = set(make_client_app()._registered_funcs)  # Flower's "<category>.<action>"
    assert len(actions) == 14
    # A batch is an envelope of such requests, each read by its own model; the envelope
    # itself is read strictly by common.batch.unpack (tests/adversarial/test_batch_requests).
    actions.remove(batch.ACTION)
    for action in actions:
        assert request_model(action, "round-1.secagg-advertise")
    with pytest.raises(ProtocolError, match="no request of kind"):
        request_model("query.secagg", "round-1.secagg-probe")
    with pytest.raises(ProtocolError, match="no request of kind"):
        request_model("query.probe", "probe")


def test_a_vertical_phase_reads_its_own_fields() -> None:
    hop = _wire(_vertical("psi_hop", "psi-hop-1", owner="b", hop=1)).as_(VerticalRequest).root
    assert isinstance(hop, PsiHopRequest) and (hop.owner, hop.hop) == ("b", 1)
    final = _wire(_vertical("predict", "predict")).as_(VerticalRequest).root
    assert isinstance(final, FinalRequest) and final.phase == "predict"
