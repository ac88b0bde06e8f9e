"""privacy.base_ot: batched Chou-Orlandi random OT is correct, one-sided and fails closed."""

from __future__ import annotations

import doctest
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl import bindings as sodium

from fedcollab.common.errors import ProtocolError
from fedcollab.privacy import base_ot
from fedcollab.privacy.base_ot import POINT_BYTES, SEED_BYTES, OtReceiver, OtSender

# Small-order points of edwards25519 (the identity and a point of order 2).
IDENTITY = (1).to_bytes(32, "little")
ORDER_TWO = ((2**255 - 19) - 1).to_bytes(32, "little")


Pairs = list[tuple[bytes, bytes]]


def _run(choices: list[int], context: bytes = b"ctx") -> tuple[Pairs, list[bytes]]:
    sender, receiver = OtSender(len(choices), context=context), OtReceiver(choices, context=context)
    pairs = sender.finish(receiver.reply(sender.setup()))
    return pairs, receiver.seeds


def _xor_pad(data: bytes, key: bytes) -> bytes:
    """A test-only PRG pad: the chosen-message layer a caller would put on the random OTs."""
    return bytes(x ^ y for x, y in zip(data, hashlib.shake_128(key).digest(len(data)), strict=True))


def test_public_surface() -> None:
    assert set(base_ot.__all__) == {"DOMAIN", "POINT_BYTES", "SEED_BYTES", "OtReceiver", "OtSender"}


def test_docstring_examples() -> None:
    result = doctest.testmod(base_ot)
    assert result.attempted > 0 and result.failed == 0


@settings(max_examples=10)
@given(st.lists(st.integers(0, 1), min_size=1, max_size=40))
def test_receiver_gets_exactly_the_chosen_seed(choices: list[int]) -> None:
    pairs, seeds = _run(choices)
    assert len(pairs) == len(seeds) == len(choices)
    for (k0, k1), seed, c in zip(pairs, seeds, choices, strict=True):
        assert len(k0) == len(k1) == SEED_BYTES
        assert seed == (k1 if c else k0)
        assert seed != (k0 if c else k1)  # the other seed differs


def test_chosen_messages_only_the_chosen_one_decrypts() -> None:
    m0, m1 = b"message zero....", b"message one....."
    for choice in (0, 1):
        (pair,), (seed,) = _run([choice])
        sent = [_xor_pad(m, k) for m, k in zip((m0, m1), pair, strict=True)]
        opened = [_xor_pad(c, seed) for c in sent]
        assert opened[choice] == (m0, m1)[choice]
        assert opened[1 - choice] not in (m0, m1)


def test_seeds_are_fresh_and_bound_to_context_and_index() -> None:
    pairs_a, _ = _run([0, 0, 1, 1])
    pairs_b, _ = _run([0, 0, 1, 1])
    everything = [k for p in pairs_a + pairs_b for k in p]
    assert len(set(everything)) == len(everything)
    # Same transcript, other context: other seeds (the context is hashed in).
    sender = OtSender(2, context=b"run-1/psi")
    reply = OtReceiver([0, 1], context=b"run-1/psi").reply(sender.setup())
    other = OtReceiver([0, 1], context=b"run-2/psi")
    other.reply(sender.setup())
    pairs = sender.finish(reply)
    assert all(s not in p for s, p in zip(other.seeds, pairs, strict=True))


def test_reply_hides_the_choice_bits() -> None:
    """Every B_i is a valid, fresh point whichever the bit (perfect receiver privacy)."""
    sender = OtSender(64, context=b"c")
    reply = OtReceiver([i % 2 for i in range(64)], context=b"c").reply(sender.setup())
    points = [reply[i : i + POINT_BYTES] for i in range(0, len(reply), POINT_BYTES)]
    assert all(sodium.crypto_core_ed25519_is_valid_point(p) for p in points)
    assert len(set(points)) == 64


@pytest.mark.parametrize("bad", [IDENTITY, ORDER_TWO, b"\xff" * 32, bytes(32)])
def test_receiver_refuses_a_bad_sender_point(bad: bytes) -> None:
    with pytest.raises(ProtocolError, match="not a valid point"):
        OtReceiver([0, 1], context=b"c").reply(bad)


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_receiver_refuses_a_setup_of_the_wrong_length(size: int) -> None:
    with pytest.raises(ProtocolError, match="one 32-byte point"):
        OtReceiver([0, 1], context=b"c").reply(b"\x01" * size)


@pytest.mark.parametrize("bad", [IDENTITY, ORDER_TWO, b"\xff" * 32])
def test_sender_refuses_a_bad_receiver_point(bad: bytes) -> None:
    sender = OtSender(3, context=b"c")
    reply = OtReceiver([0, 1, 0], context=b"c").reply(sender.setup())
    tampered = reply[:POINT_BYTES] + bad + reply[2 * POINT_BYTES :]
    with pytest.raises(ProtocolError, match="B_1 is not a valid point"):
        sender.finish(tampered)


@pytest.mark.parametrize("count", [2, 4])
def test_sender_refuses_a_reply_for_another_width(count: int) -> None:
    sender = OtSender(3, context=b"c")
    reply = OtReceiver([0] * count, context=b"c").reply(sender.setup())
    with pytest.raises(ProtocolError, match=r"not 96 \(3 points"):
        sender.finish(reply)


def test_each_step_answers_once() -> None:
    sender, receiver = OtSender(2, context=b"c"), OtReceiver([1, 0], context=b"c")
    with pytest.raises(ProtocolError, match="not replied"):
        _ = receiver.seeds
    reply = receiver.reply(sender.setup())
    with pytest.raises(ProtocolError, match="already replied"):
        receiver.reply(sender.setup())
    sender.finish(reply)
    with pytest.raises(ProtocolError, match="already answered"):
        sender.finish(reply)


@pytest.mark.parametrize("choices", [[], [2], [True], [0, -1]])
def test_choice_bits_are_checked(choices: list[int]) -> None:
    with pytest.raises(ProtocolError):
        OtReceiver(choices, context=b"c")


@pytest.mark.parametrize("count", [0, -1, True, 1 << 17])
def test_count_is_checked(count: int) -> None:
    with pytest.raises(ProtocolError):
        OtSender(count, context=b"c")
