"""client/key_sweep.py: a node erases an expired run's keys without any request.

Before, the key TTL was applied only at the node's next request: a partner dropped from
a job, or whose coordinator vanished, kept that run's CKKS keys on disk indefinitely
(audit of 2026-12-07)."""

from __future__ import annotations

from pathlib import Path

from fedcollab.client import key_sweep
from tests.adversarial.test_redteam_contract import _age_runs, _encrypted, _state
from tests.support.adversarial import Attacker


def test_an_expired_run_s_keys_are_erased_with_no_request(tmp_path: Path) -> None:
    atk = Attacker.against(tmp_path, _encrypted(), names=("a", "b"))
    assert atk.handshake("a").refused is None
    keys = _state(atk, "a") / "he" / atk.run
    assert keys.exists()
    sweeper = key_sweep.start(atk.configs["a"], every_s=3600.0)
    try:
        assert sweeper.swept.wait(60.0)
        assert keys.exists(), "a run within its TTL keeps its keys"
        _age_runs(atk, "a")
        key_sweep.sweep(atk.configs["a"])  # what the thread does every SWEEP_S
        assert not keys.exists()
    finally:
        sweeper.stop()
    # The run is over: the coordinator cannot bring its keys back with a new handshake.
    assert atk.handshake("a").refused is not None
    assert not keys.exists()


def test_a_sweep_at_start_erases_what_expired_while_the_node_was_down(tmp_path: Path) -> None:
    atk = Attacker.against(tmp_path, _encrypted(), names=("a", "b"))
    assert atk.handshake("a").refused is None
    keys = _state(atk, "a") / "he" / atk.run
    _age_runs(atk, "a")
    sweeper = key_sweep.start(atk.configs["a"], every_s=3600.0)  # the node starts
    try:
        assert sweeper.swept.wait(60.0)
        assert not keys.exists()
    finally:
        sweeper.stop()


def test_a_sweep_that_fails_is_logged_and_the_thread_goes_on(tmp_path: Path) -> None:
    sweeper = key_sweep.start({"partner": "x"}, every_s=0.01)  # no contract configured
    try:
        assert sweeper.swept.wait(60.0)
        sweeper.swept.clear()
        assert sweeper.swept.wait(60.0)  # swept (and failed) again: the thread lives
    finally:
        sweeper.stop()
