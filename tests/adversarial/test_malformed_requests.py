"""A malicious coordinator sends requests with fields of the wrong type (issue 17).

Through the real partner code path (``client.client_app._serve``, real keys, grants and
trails), each request is refused as a ProtocolError, logged in the partner's trail as
``request.refused``, and its reply carries no data (no vector, ciphertext or parts);
nothing of the step is logged as sent.

On main before common.messages, the cases marked ``answered before`` were answered:
``round: "1"`` passed the round check (``f"round-{'1'}"``) and int("1"), and a category
list sent as the string ``"web"`` was counted as the values "w", "e" and "b".
The others were refused already, by a later check: ``round: [1]`` (the step names
another round) and ``bindings: "..."`` (a CiphertextError of compliance.contribution);
they are kept here so the refusal stays whichever check makes it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from fedcollab.common.messages.base import RequestHead
from fedcollab.common.messages.protection import DecryptRequest
from fedcollab.common.messages.statistics import FedAvgRequest, MomentsRequest
from fedcollab.common.serde import Payload
from fedcollab.protocols import models
from tests.support.adversarial import (
    CHANNELS,
    ENCRYPTED_REPLIES,
    Attacker,
    encrypted_job,
    encrypted_moments,
    job,
    layout_meta,
    preprocessor_dict,
)


def _send(
    atk: Attacker,
    caplog: pytest.LogCaptureFixture,
    model: type[BaseModel],
    action: str,
    step: str,
    **kw: Any,
) -> Payload:
    """Send as ``atk``; the node log says which request model refused it."""
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="fedcollab.client"):
        reply = atk.send("a", action, step=step, **kw)
    assert f"malformed {model.__name__}" in caplog.text
    _assert_refused_without_data(atk, reply, action, step)
    return reply


def _assert_refused_without_data(atk: Attacker, reply: Payload, action: str, step: str) -> None:
    assert reply.refused == "ProtocolError", reply.meta
    assert reply.vector is None and reply.ciphertext is None and not reply.parts
    assert set(reply.meta) == {"refused", "reason"}  # the reason names the class only
    refusal = atk.refusals("a")[-1]
    assert (refusal["action"], refusal["step"], refusal["error"]) == (action, step, "ProtocolError")
    sent = [e["body"] for e in atk.trail("a") if e["type"] == "data.sent"]
    assert not [b for b in sent if b["step"] == step]


def _model() -> Any:
    return models.flatten(
        models.get_weights(models.build_model("logreg", n_features=5, hidden_sizes=(), seed=0))
    )


@pytest.mark.parametrize(
    "rnd",
    [
        pytest.param("1", id="round-as-string-answered-before"),
        pytest.param([1], id="round-as-list-refused-before"),
    ],
)
def test_a_round_of_the_wrong_type_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, rnd: Any
) -> None:
    atk = Attacker.against(tmp_path, job(rounds=3), names=("a", "b"))
    assert atk.handshake("a").refused is None
    meta = {"round": rnd, "preprocessor": preprocessor_dict(tmp_path)}
    _send(atk, caplog, FedAvgRequest, "train.fedavg", "round-1", meta=meta, vector=_model())
    # The step was not claimed: the well-formed request is still answered, once.
    meta["round"] = 1
    with caplog.at_level(logging.DEBUG, logger="fedcollab.client.client_app"):
        ok = atk.send("a", "train.fedavg", step="round-1", meta=meta, vector=_model())
    assert ok.refused is None and ok.vector is not None
    # The node log (`fedcollab -v`, the SuperNode's log) names what was answered.
    assert "answered train.fedavg step round-1 of job" in caplog.text


def test_a_category_list_sent_as_a_string_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Answered before: ``tuple("web")`` made three one-letter categories."""
    atk = Attacker.against(tmp_path, job(), names=("a", "b"))
    assert atk.handshake("a").refused is None
    meta = layout_meta(channel=CHANNELS)
    meta["layout"]["categorical"]["channel"] = "web"
    _send(atk, caplog, MomentsRequest, "query.moments", "moments", meta=meta)
    ok = atk.send("a", "query.moments", step="moments", meta=layout_meta(channel=CHANNELS))
    assert ok.refused is None and ok.vector is not None


def test_bindings_sent_as_a_string_are_refused_before_any_decryption(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused before too (as a CiphertextError, by compliance.contribution); now the request
    does not fit DecryptRequest and is refused before the contribution check."""
    atk, session = encrypted_job(tmp_path)
    total, bindings = encrypted_moments(atk, session, {"a": CHANNELS, "b": CHANNELS})
    he = {**session.request_meta("a", params="wide"), "step": "moments",
          "contributors": ["a", "b"], "length": total.length}  # fmt: skip
    _send(
        atk, caplog, DecryptRequest, "query.he_decrypt", "moments.decrypt",
        meta={"he": he, "bindings": str(bindings)}, ciphertext=total.serialize(),
        parts=ENCRYPTED_REPLIES,
    )  # fmt: skip
    assert not [e for e in atk.trail("a") if e["type"] == "he.decrypted"]
    # The same aggregate with the statements as sent is decrypted (the step was not used up).
    ok = atk.send(
        "a", "query.he_decrypt", step="moments.decrypt",
        meta={"he": he, "bindings": bindings}, ciphertext=total.serialize(),
        parts=ENCRYPTED_REPLIES,
    )  # fmt: skip
    assert ok.refused is None and ok.vector is not None


def test_a_run_of_the_wrong_type_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``run: 5`` was read as the run "5" on a123289 and the handshake answered; the head
    (common.messages.base.RequestHead) refuses it. Decoded before the trail is bound (like
    a missing or invalid ``job``), it is refused in the node log only. An empty run (what
    a missing one reads as) still reaches the run contract, which refuses it after the
    request is logged."""
    atk = Attacker.against(tmp_path, job(), names=("a", "b"))
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="fedcollab.client"):
        reply = atk.handshake("a", run=5)
    assert reply.refused == "ProtocolError" and reply.vector is None and not reply.parts
    assert set(reply.meta) == {"refused", "reason"}
    assert f"malformed {RequestHead.__name__}" in caplog.text
    reply = atk.handshake("a", run="")
    assert reply.refused == "ProtocolError" and reply.vector is None
    refusal = atk.refusals("a")[-1]
    assert (refusal["action"], refusal["run"], refusal["error"]) == (
        "query.handshake",
        "",
        "ProtocolError",
    )
