"""Wire form of secure-aggregation messages: every message of a real session round-trips,
and malformed bytes meet a ProtocolError at the door."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedcollab.common.errors import ProtocolError
from fedcollab.privacy import secagg_wire as wire
from fedcollab.privacy.envelope import Envelope
from fedcollab.privacy.secagg_messages import MaskedInput
from fedcollab.privacy.secagg_session import SecAggRefusal
from fedcollab.privacy.secagg_unmask import unmask_request
from fedcollab.privacy.verified_decryption import SignedContribution
from tests.support.secagg import Federation, make_config


def test_every_message_of_a_session_round_trips() -> None:
    config = make_config(4, length=6)
    fed = Federation.start(config)
    everyone = config.cohort
    fed.advertise(everyone)
    for adv in fed.adverts.values():
        assert wire.load_advertisement(wire.dump(adv)) == adv
    fed.share(everyone)
    for inbox in fed.inboxes.values():
        for env in inbox.values():
            assert Envelope.from_bytes(env.to_bytes()) == env
    fed.mask({n: np.ones(6) for n in everyone}, everyone[:3])
    for item in fed.masked.values():
        assert MaskedInput.from_bytes(item.to_bytes()) == item
    fed.sign(everyone[:3], everyone[:3])
    for sig in fed.signatures.values():
        assert wire.load_survivor_signature(wire.dump(sig)) == sig
    request = unmask_request(
        config, list(fed.signatures.values()), survivors=everyone[:3], u2=fed.u2, peers=fed.peers
    )
    assert wire.load_unmask_request(wire.dump(request)) == request
    response = fed.partners["p000"].unmask(request)
    assert response.key_shares  # p003 dropped: key shares present
    assert wire.load_unmask_response(wire.dump(response)) == response
    contribution = SignedContribution("p000", b"\x01\x02", b"\x03" * 64)
    assert wire.load_contribution(wire.dump(contribution)) == contribution


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d | {"extra": 1},
        lambda d: d | {"type": "secagg.survivors"},
        lambda d: d | {"signature": "not base64!"},
        lambda d: d | {"partner": 7},
        lambda d: {k: v for k, v in d.items() if k != "masking_key"},
    ],
)
def test_malformed_advertisement_is_a_protocol_error(mutate) -> None:
    config = make_config(2)
    fed = Federation.start(config)
    fed.advertise(config.cohort)
    body = json.loads(wire.dump(fed.adverts["p000"]))
    with pytest.raises(ProtocolError):
        wire.load_advertisement(json.dumps(mutate(body)).encode())


def test_out_of_field_share_is_a_protocol_error() -> None:
    raw = json.dumps(
        {
            "type": "secagg.unmask-response",
            "partner": "p000",
            "x": 1,
            "self_shares": {"p001": "//" * 22},
            "key_shares": {},
        }
    ).encode()
    with pytest.raises(ProtocolError):
        wire.load_unmask_response(raw)


def test_garbled_masked_input_is_refused() -> None:
    with pytest.raises(SecAggRefusal):
        MaskedInput.from_bytes(b"FCSM1\x00\x02\x00\x00\xff\xfe")
    with pytest.raises(SecAggRefusal):
        MaskedInput.from_bytes(b"nope")
