"""protocols.psi_oprf: CM20 PSI is exact, keeps non-members hidden and fails closed."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcollab.common.errors import DataValidationError, ProtocolError
from fedcollab.privacy.base_ot import POINT_BYTES
from fedcollab.protocols import psi_oprf
from fedcollab.protocols.psi_oprf import (
    COMPUTATIONAL_BITS,
    KEY_BYTES,
    OprfPsiConfig,
    OprfPsiReceiver,
    OprfPsiSender,
    cm20_params,
    cm20_width,
    run_oprf_psi_local,
)

# CM20 Table 1 (sigma = 40, lambda = 128, n1 = n2 = m = 2^k): w by k, as Kunlun
# (mpc/oprf/ote_oprf.hpp, rows 2^10 .. 2^24 even) and mpc4j (Cm20MpOprfPtoDesc, every k)
# tabulate it from the paper.
TABLE_1 = {k: 585 + 3 * (k - 8) for k in range(8, 25)}


def _ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i:07d}" for i in range(n)]


def _parties(
    x: list[str], y: list[str], run: str = "r1"
) -> tuple[OprfPsiConfig, OprfPsiSender, OprfPsiReceiver]:
    config = OprfPsiConfig(run, len(x), len(y))
    return config, OprfPsiSender(config, x), OprfPsiReceiver(config, y)


def _check_exact(x: list[str], y: list[str]) -> None:
    _, sender, receiver = _parties(x, y)
    result = receiver.finish(sender.evaluate(receiver.answer(sender.answer(receiver.start()))))
    assert {y[i] for i in result.rows} == set(x) & set(y)
    assert result.rows.size == len(set(x) & set(y))
    sender_rows = sender.rows(result.sender_positions)
    assert [x[i] for i in sender_rows] == [y[i] for i in result.rows]  # aligned


def test_public_surface() -> None:
    assert set(psi_oprf.__all__) == {
        "CHUNK",
        "COMPUTATIONAL_BITS",
        "DOMAIN",
        "KEY_BYTES",
        "MIN_LOG_SIZE",
        "SALT_BYTES",
        "STATISTICAL_BITS",
        "Cm20Params",
        "OprfPsiConfig",
        "OprfPsiReceiver",
        "OprfPsiResult",
        "OprfPsiSender",
        "cm20_params",
        "cm20_width",
        "run_oprf_psi_local",
    }
    for name in psi_oprf.__all__:
        assert hasattr(psi_oprf, name)


def test_docstring_examples() -> None:
    result = doctest.testmod(psi_oprf, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# --- parameters -----------------------------------------------------------------------


@pytest.mark.parametrize("k", sorted(TABLE_1))
def test_width_reproduces_table_1(k: int) -> None:
    assert cm20_width(2**k, 2**k, k) == TABLE_1[k]
    params = cm20_params(2**k, 2**k)
    assert (params.log_height, params.width) == (k, TABLE_1[k])
    assert params.hash_bytes == -(-(40 + 2 * k) // 8)  # l2 = sigma + log n1 + log n2


def test_sizes_take_the_row_of_their_power_of_two() -> None:
    assert cm20_params(1_000_000, 1_000_000) == cm20_params(2**20, 2**20)
    assert cm20_params(1_000_000, 1_000_000).hash_bytes == 10
    for small in (0, 1, 255, 256):
        assert cm20_params(small, small) == cm20_params(256, 256)
    # more sender ids: a larger union bound, never a narrower matrix
    assert cm20_params(2**18, 2**10).width > cm20_params(2**10, 2**10).width


@settings(max_examples=15)
@given(st.integers(0, 24), st.integers(8, 24), st.integers(-2, 2))
def test_width_is_the_least_that_meets_the_bound(log_n1: int, log_m: int, shift: int) -> None:
    n1, n2 = 2**log_n1, max(1, 2 ** (log_m + shift) - 1)
    width = cm20_width(n1, n2, log_m)
    p = (1 - 2.0**-log_m) ** n2
    budget = -40 * np.log(2) - np.log(n1)
    tail = psi_oprf._log_binomial_cdf
    assert tail(COMPUTATIONAL_BITS - 1, width, p) <= budget
    assert width == COMPUTATIONAL_BITS or tail(COMPUTATIONAL_BITS - 1, width - 1, p) > budget


def test_binomial_tail_against_a_direct_sum() -> None:
    from math import comb, log

    for trials, p in ((200, 0.37), (600, 0.3679), (130, 0.9)):
        direct = sum(comb(trials, k) * p**k * (1 - p) ** (trials - k) for k in range(128))
        assert psi_oprf._log_binomial_cdf(127, trials, p) == pytest.approx(log(direct), rel=1e-9)


@pytest.mark.parametrize("sizes", [(-1, 5), (5, -1), (1.5, 5), (True, 5), (2**33, 5)])
def test_bad_sizes_are_refused(sizes: tuple[int, int]) -> None:
    with pytest.raises(ProtocolError):
        cm20_params(*sizes)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"run": ""}, "run id"), ({"salt": b"short"}, "salt"), ({"n_sender": -3}, "set size")],
)
def test_config_is_checked(kwargs: dict[str, object], match: str) -> None:
    base: dict[str, object] = {"run": "r", "n_sender": 3, "n_receiver": 3}
    with pytest.raises(ProtocolError, match=match):
        OprfPsiConfig(**(base | kwargs))  # type: ignore[arg-type]


# --- exactness --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ([], []),
        ([], _ids("a", 50)),
        (_ids("a", 50), []),
        (_ids("a", 300), _ids("a", 300)),  # identical
        (_ids("a", 300), _ids("b", 300)),  # disjoint
        (_ids("a", 1000), _ids("a", 5)),  # unbalanced both ways
        (_ids("a", 5), _ids("a", 1000)),
    ],
    ids=["empty", "empty-sender", "empty-receiver", "identical", "disjoint", "n1>n2", "n1<n2"],
)
def test_exact_on_edge_cases(x: list[str], y: list[str]) -> None:
    _check_exact(x, y)


def test_exact_on_random_sets() -> None:
    rng = np.random.default_rng(7)
    universe = [f"cust-{v:09d}" for v in rng.permutation(60_000).tolist()]
    x = [universe[i] for i in rng.choice(60_000, 20_000, replace=False).tolist()]
    y = [universe[i] for i in rng.choice(60_000, 30_000, replace=False).tolist()]
    _check_exact(x, y)


@settings(max_examples=12)
@given(
    st.sets(st.text(min_size=0, max_size=6), max_size=40),
    st.sets(st.text(min_size=0, max_size=6), max_size=40),
)
def test_exact_property(x: set[str], y: set[str]) -> None:
    _check_exact(sorted(x), sorted(y, reverse=True))


def test_salt_and_run_bind_the_result() -> None:
    x = y = _ids("a", 100)
    assert run_oprf_psi_local(x, y, salt=b"\x01" * 32).rows.size == 100
    # A receiver that hashed with another run (or salt) meets nothing: H1 and the OT
    # seeds are bound to both.
    for mine, theirs in [(("run-a", b""), ("run-b", b"")), (("r", b"\x01" * 32), ("r", b""))]:
        sender = OprfPsiSender(OprfPsiConfig(mine[0], 100, 100, mine[1]), x)
        receiver = OprfPsiReceiver(OprfPsiConfig(theirs[0], 100, 100, theirs[1]), y)
        values = sender.evaluate(receiver.answer(sender.answer(receiver.start())))
        assert receiver.finish(values).rows.size == 0


def test_values_are_fresh_per_run() -> None:
    x = _ids("a", 200)
    sent = []
    for _ in range(2):
        config, sender, receiver = _parties(x, x)
        blob = sender.evaluate(receiver.answer(sender.answer(receiver.start())))
        size = config.params.hash_bytes
        sent.append({blob[i : i + size] for i in range(0, len(blob), size)})
    assert len(sent[0]) == len(sent[1]) == 200
    assert not sent[0] & sent[1]


# --- what the receiver learns about non-members --------------------------------------


def test_no_false_positive_over_200k_non_members() -> None:
    """200,000 sender ids outside the receiver's 1,000, at the real l2 (9 bytes): no match,
    and every non-member keeps at least lambda = 128 columns where D is 1 (CM20's
    condition: there its OPRF input bit is masked by a bit of s the receiver never sees)."""
    x, y = _ids("outside", 200_000), _ids("inside", 1_000)
    config, sender, receiver = _parties(x, y)
    reply = sender.answer(receiver.start())
    result = receiver.finish(sender.evaluate(receiver.answer(reply)))
    assert result.rows.size == 0 and result.sender_positions.size == 0
    assert config.params.hash_bytes == 9

    params, key = config.params, reply[:KEY_BYTES]
    in_y = psi_oprf._columns(params, key, receiver._hashed)
    in_x = psi_oprf._columns(params, key, sender._hashed)
    ones = np.zeros(len(x), dtype=np.int64)
    for (i, y_chunks), (j, x_chunks) in zip(in_y, in_x, strict=True):
        assert i == j
        zero = np.zeros(params.height, dtype=bool)
        for where in y_chunks:
            zero[where] = True
        ones += ~zero[np.concatenate(x_chunks)]
    assert int(ones.min()) >= COMPUTATIONAL_BITS


def test_a_malicious_receiver_is_not_covered() -> None:
    """What the module does not claim: a receiver that sends ``Delta`` for ``D = 0`` gets
    ``C = A`` whatever ``s`` and computes ``psi(x)`` for any id it guesses (a dictionary
    attack on the sender's ids outside the intersection). Semi-honest parties only."""
    x, y = ["secret-1", "secret-2", "shared"], ["shared", "decoy-1", "decoy-2"]
    config, sender, receiver = _parties(x, y)
    reply = sender.answer(receiver.start())
    key, pairs = reply[:KEY_BYTES], receiver._ot.finish(reply[KEY_BYTES:])
    params = config.params
    column_bytes = params.height // 8
    a = [psi_oprf._prg(r0, column_bytes) for r0, _ in pairs]
    delta = b"".join((a_i ^ psi_oprf._prg(r1, column_bytes)).tobytes()
                     for a_i, (_, r1) in zip(a, pairs, strict=True))  # fmt: skip
    values = sender.evaluate(delta)
    sent = {values[i : i + params.hash_bytes] for i in range(0, len(values), params.hash_bytes)}

    guesses = ["secret-1", "secret-9"]
    hashed = psi_oprf._hash_ids(guesses, config, party="attacker")
    bits = np.zeros(((params.width + 7) // 8, len(guesses)), dtype=np.uint8)
    for i, chunks in psi_oprf._columns(params, key, hashed):
        psi_oprf._gather(bits, i, a[i], chunks)
    blob = psi_oprf._h2(params, bits).tobytes()
    found = [blob[j * params.hash_bytes : (j + 1) * params.hash_bytes] in sent for j in (0, 1)]
    assert found == [True, False]  # "secret-1" recovered though outside the receiver's set


# --- malformed messages and steps ----------------------------------------------------


def test_sender_refuses_mismatched_parameters() -> None:
    x = _ids("a", 10)
    receiver = OprfPsiReceiver(OprfPsiConfig("r1", 10, 5_000), _ids("b", 5_000))
    sender = OprfPsiSender(OprfPsiConfig("r1", 10, 10), x)
    with pytest.raises(ProtocolError, match=r"m=2\^13, w=.*this sender with .*m=2\^8, w=585"):
        sender.answer(receiver.start())


@pytest.mark.parametrize("cut", [1, POINT_BYTES])
def test_sender_refuses_a_truncated_first_message(cut: int) -> None:
    _, sender, receiver = _parties(_ids("a", 10), _ids("a", 10))
    with pytest.raises(ProtocolError, match="first message is"):
        sender.answer(receiver.start()[:-cut])


def test_sender_refuses_a_bad_point() -> None:
    _, sender, receiver = _parties(_ids("a", 10), _ids("a", 10))
    first = receiver.start()
    with pytest.raises(ProtocolError, match="not a valid point"):
        sender.answer(first[:-POINT_BYTES] + b"\xff" * POINT_BYTES)


def test_receiver_refuses_a_bad_reply() -> None:
    _, sender, receiver = _parties(_ids("a", 10), _ids("a", 10))
    reply = sender.answer(receiver.start())
    with pytest.raises(ProtocolError, match="PRF key and OT reply is"):
        receiver.answer(reply[:-1])
    _, sender, receiver = _parties(_ids("a", 10), _ids("a", 10))
    reply = sender.answer(receiver.start())
    at = KEY_BYTES + 3 * POINT_BYTES
    with pytest.raises(ProtocolError, match="B_3 is not a valid point"):
        receiver.answer(reply[:at] + bytes(POINT_BYTES) + reply[at + POINT_BYTES :])


def test_sender_refuses_a_matrix_of_another_shape() -> None:
    _, sender, receiver = _parties(_ids("a", 10), _ids("a", 10))
    matrix = receiver.answer(sender.answer(receiver.start()))
    with pytest.raises(ProtocolError, match=r"matrix is .* bytes, not 18720"):  # 585 x 256 / 8
        sender.evaluate(matrix + bytes(32))


def test_receiver_refuses_bad_values() -> None:
    _, sender, receiver = _parties(_ids("a", 10), _ids("a", 10))
    values = sender.evaluate(receiver.answer(sender.answer(receiver.start())))
    with pytest.raises(ProtocolError, match="OPRF values is 69 bytes, not 70"):
        receiver.finish(values[:-1])
    _, sender, receiver = _parties(_ids("a", 10), _ids("a", 10))
    values = sender.evaluate(receiver.answer(sender.answer(receiver.start())))
    with pytest.raises(ProtocolError, match="repeat a value"):
        receiver.finish(values[:7] + values[:7] + values[14:])


def test_each_step_once_and_in_order() -> None:
    _, sender, receiver = _parties(_ids("a", 10), _ids("a", 10))
    with pytest.raises(ProtocolError, match="step 'answer' after \\[\\]"):
        receiver.answer(b"")
    first = receiver.start()
    with pytest.raises(ProtocolError, match="step 'start'"):
        receiver.start()
    with pytest.raises(ProtocolError, match="step 'evaluate'"):
        sender.evaluate(b"")
    matrix = receiver.answer(sender.answer(first))
    sender.evaluate(matrix)
    with pytest.raises(ProtocolError, match="step 'evaluate'"):
        sender.evaluate(matrix)


@pytest.mark.parametrize(
    "positions",
    [np.array([10]), np.array([-1]), np.array([1, 1]), np.array([[0]]), np.array([0.5])],
)
def test_sender_rows_checks_positions(positions: np.ndarray) -> None:
    _, sender, receiver = _parties(_ids("a", 10), _ids("a", 10))
    sender.evaluate(receiver.answer(sender.answer(receiver.start())))
    with pytest.raises(ProtocolError, match="positions"):
        sender.rows(positions)


def test_ids_are_checked() -> None:
    config = OprfPsiConfig("r", 3, 3)
    with pytest.raises(DataValidationError, match="row 4: id repeats the id of row 2"):
        OprfPsiSender(config, ["a", "b", "a"])
    with pytest.raises(DataValidationError, match="not a string"):
        OprfPsiReceiver(config, ["a", "b", 3])  # type: ignore[list-item]
    with pytest.raises(ProtocolError, match="holds 2 ids, the run was set up for 3"):
        OprfPsiReceiver(config, ["a", "b"])


def test_state_survives_a_process_boundary_between_every_step() -> None:
    """A vertical party runs each step in its own process: the state it stores between
    steps (to_bytes / restore) gives the same, exact intersection, aligned."""
    x, y = _ids("c", 900) + _ids("x", 300), _ids("c", 900)[100:] + _ids("y", 500)
    config = OprfPsiConfig("r-state", len(x), len(y), b"s" * 32)
    receiver, sender = OprfPsiReceiver(config, y), OprfPsiSender(config, x)
    setup = receiver.start()
    receiver = OprfPsiReceiver.restore(config, receiver.to_bytes())
    reply = sender.answer(setup)
    sender = OprfPsiSender.restore(config, sender.to_bytes())
    matrix = receiver.answer(reply)
    receiver = OprfPsiReceiver.restore(config, receiver.to_bytes())
    values = sender.evaluate(matrix)
    sender = OprfPsiSender.restore(config, sender.to_bytes())
    result = receiver.finish(values)
    assert {y[i] for i in result.rows} == set(x) & set(y) and result.rows.size == 800
    assert [x[i] for i in sender.rows(result.sender_positions)] == [y[i] for i in result.rows]
    # A restored party still answers each step once, in order.
    with pytest.raises(ProtocolError, match="step 'answer'"):
        OprfPsiReceiver.restore(config, receiver.to_bytes()).answer(reply)


def test_a_stored_state_restores_only_for_its_run_and_role() -> None:
    x, y = _ids("c", 300), _ids("c", 200)
    config = OprfPsiConfig("r-a", len(x), len(y))
    receiver, sender = OprfPsiReceiver(config, y), OprfPsiSender(config, x)
    sender.answer(receiver.start())
    other = OprfPsiConfig("r-a", len(x) + 1, len(y))  # another header: another run's sizes
    for restore, blob in ((OprfPsiReceiver.restore, receiver.to_bytes()),
                          (OprfPsiSender.restore, sender.to_bytes())):  # fmt: skip
        with pytest.raises(ProtocolError, match="damaged or belongs to another run"):
            restore(other, blob)
        with pytest.raises(ProtocolError, match="damaged"):
            restore(config, blob[: len(blob) // 2])
    with pytest.raises(ProtocolError, match="damaged or belongs to another run"):
        OprfPsiSender.restore(config, receiver.to_bytes())  # a receiver's state as a sender's
