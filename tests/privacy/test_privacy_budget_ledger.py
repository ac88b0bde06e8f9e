"""privacy.budget_ledger: spending composes like privacy.accounting, refusals write nothing,
a charge counts exactly once across retries, crashes and concurrent processes."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedcollab.common.errors import BudgetExceededError, PrivacyError
from fedcollab.privacy import budget_ledger
from fedcollab.privacy.accounting import (
    Gaussian,
    Mechanism,
    SampledGaussian,
    epsilon,
    noise_multiplier_for,
)
from fedcollab.privacy.budget_ledger import BudgetLedger, Charge

DELTA = 1e-5
REPO = Path(__file__).resolve().parents[2]
SET_CAP = "fedcollab budget set"

A = SampledGaussian(noise_multiplier=1.0, sample_rate=0.0256, steps=390)  # eps 3.63 alone
B = Gaussian(noise_multiplier=4.0, count=3)
C = SampledGaussian(noise_multiplier=2.0, sample_rate=0.1, steps=50)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[BudgetLedger]:
    with BudgetLedger.open(tmp_path / "node" / "budget.db") as led:
        yield led


def spend(led: BudgetLedger, mech: Mechanism, *, step: str, run: str = "r1") -> Charge:
    return led.charge("orders", job="churn", run=run, step=step, mechanism=mech)


def row_count(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM charges").fetchone()[0])


def test_public_surface_is_what_was_meant() -> None:
    assert set(budget_ledger.__all__) == {"BudgetLedger", "Charge", "DatasetBudget"}


def test_charges_accumulate_as_their_composition(ledger: BudgetLedger) -> None:
    ledger.set_cap("orders", epsilon_cap=20.0, delta=DELTA)
    done: list[Mechanism] = []
    previous = 0.0
    for i, mech in enumerate([A, B, C, A]):
        charge = spend(ledger, mech, step=f"round-{i}")
        done.append(mech)
        assert not charge.replay
        assert charge.mechanism == mech
        assert charge.epsilon_before == previous
        assert abs(charge.epsilon_after - epsilon(done, target_delta=DELTA)) <= 1e-12
        assert (charge.cap_epsilon, charge.delta) == (20.0, DELTA)
        assert charge.recorded_at.endswith("Z")
        previous = charge.epsilon_after
    budget = ledger.budget("orders")
    assert budget.spent_epsilon == epsilon(done, target_delta=DELTA)
    assert budget.remaining_epsilon == pytest.approx(20.0 - budget.spent_epsilon)
    assert budget.charges == 4
    assert [c.step for c in ledger.charges("orders")] == [f"round-{i}" for i in range(4)]
    assert [c.mechanism for c in ledger.charges()] == done


def test_refusal_above_the_cap_writes_nothing(ledger: BudgetLedger) -> None:
    ledger.set_cap("orders", epsilon_cap=5.0, delta=DELTA)
    spend(ledger, A, step="1")
    before = ledger.budget("orders")
    with pytest.raises(BudgetExceededError) as err:
        spend(ledger, A, step="2")
    assert err.value.exit_code == 21
    assert isinstance(err.value, PrivacyError)
    assert "'orders'" in err.value.message and "cap 5" in err.value.message
    assert f"{before.spent_epsilon:.4g}" in err.value.message
    assert f"{epsilon([A, A], target_delta=DELTA):.4g}" in err.value.message
    assert SET_CAP in err.value.hint and "rounds" in err.value.hint
    assert ledger.budget("orders") == before
    assert len(ledger.charges()) == 1
    assert row_count(ledger.path) == 1


def test_two_jobs_of_epsilon_1_5_do_not_fit_a_cap_of_2(ledger: BudgetLedger) -> None:
    q, steps = 256 / 10_000, 390
    noise = noise_multiplier_for(1.5, target_delta=DELTA, sample_rate=q, steps=steps)
    job = SampledGaussian(noise_multiplier=noise, sample_rate=q, steps=steps)
    ledger.set_cap("orders", epsilon_cap=2.0, delta=DELTA)
    first = ledger.charge("orders", job="job-1", run="a", step="train", mechanism=job)
    assert first.epsilon_after == pytest.approx(1.5, abs=1e-4)
    assert first.epsilon_after <= 1.5
    assert ledger.preview("orders", job) > 2.0
    with pytest.raises(BudgetExceededError):
        ledger.charge("orders", job="job-2", run="b", step="train", mechanism=job)
    assert [c.job for c in ledger.charges()] == ["job-1"]


def test_a_charge_exactly_at_the_cap_fits(ledger: BudgetLedger) -> None:
    ledger.set_cap("orders", epsilon_cap=epsilon([A], target_delta=DELTA), delta=DELTA)
    spend(ledger, A, step="1")
    ledger.set_cap("tight", epsilon_cap=epsilon([A], target_delta=DELTA) * (1 - 1e-6), delta=DELTA)
    with pytest.raises(BudgetExceededError):
        ledger.charge("tight", job="churn", run="r1", step="1", mechanism=A)


def test_replaying_a_charge_counts_it_once(ledger: BudgetLedger) -> None:
    ledger.set_cap("orders", epsilon_cap=10.0, delta=DELTA)
    first = spend(ledger, A, step="1")
    again = spend(
        ledger, SampledGaussian(noise_multiplier=1, sample_rate=0.0256, steps=390), step="1"
    )
    assert again.replay and not first.replay
    assert again == Charge(**{**first.__dict__, "replay": True})
    assert ledger.budget("orders").charges == 1
    assert ledger.budget("orders").spent_epsilon == first.epsilon_after


def test_a_replay_is_honoured_even_when_the_cap_is_now_lower(ledger: BudgetLedger) -> None:
    ledger.set_cap("orders", epsilon_cap=10.0, delta=DELTA)
    spend(ledger, A, step="1")
    ledger.set_cap("orders", epsilon_cap=1.0, delta=DELTA)  # below what was spent
    assert spend(ledger, A, step="1").replay  # already spent: telling so is not new spending
    with pytest.raises(BudgetExceededError):
        spend(ledger, B, step="2")
    assert ledger.budget("orders").remaining_epsilon == 0.0


def test_a_conflicting_recharge_is_refused(ledger: BudgetLedger) -> None:
    ledger.set_cap("orders", epsilon_cap=10.0, delta=DELTA)
    spend(ledger, A, step="1")
    with pytest.raises(PrivacyError) as err:
        spend(ledger, B, step="1")
    assert not isinstance(err.value, BudgetExceededError)
    assert "already charged" in err.value.message and err.value.hint
    with pytest.raises(PrivacyError, match="already charged"):
        ledger.charge("orders", job="other", run="r1", step="1", mechanism=A)
    assert [c.mechanism for c in ledger.charges()] == [A]


def test_the_ledger_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "budget.db"
    with BudgetLedger.open(path) as led:
        led.set_cap("orders", epsilon_cap=10.0, delta=DELTA)
        spend(led, A, step="1")
        spend(led, B, step="2")
        expected, charges = led.budget("orders"), led.charges()
    with BudgetLedger.open(path) as led:
        assert led.budget("orders") == expected
        assert led.charges() == charges
        assert led.budget("orders").spent_epsilon == epsilon([A, B], target_delta=DELTA)


def test_no_cap_means_no_spending(ledger: BudgetLedger) -> None:
    for attempt in (
        lambda: ledger.budget("orders"),
        lambda: ledger.preview("orders", A),
        lambda: spend(ledger, A, step="1"),
    ):
        with pytest.raises(PrivacyError) as err:
            attempt()
        assert not isinstance(err.value, BudgetExceededError)
        assert SET_CAP in err.value.hint
    assert ledger.charges() == [] and ledger.datasets() == []


def test_delta_is_fixed_once_charged(ledger: BudgetLedger) -> None:
    ledger.set_cap("orders", epsilon_cap=10.0, delta=1e-6)
    ledger.set_cap("orders", epsilon_cap=10.0, delta=DELTA)  # no charges yet: allowed
    spend(ledger, A, step="1")
    with pytest.raises(PrivacyError) as err:
        ledger.set_cap("orders", epsilon_cap=10.0, delta=1e-6)
    assert "new dataset key" in err.value.hint
    ledger.set_cap("orders", epsilon_cap=12.0, delta=DELTA)  # same delta: the cap may change
    assert ledger.budget("orders").delta == DELTA
    assert ledger.budget("orders").cap_epsilon == 12.0


def test_preview_writes_nothing(ledger: BudgetLedger) -> None:
    ledger.set_cap("orders", epsilon_cap=1.0, delta=DELTA)
    assert ledger.preview("orders", A) == epsilon([A], target_delta=DELTA)
    assert ledger.charges() == [] and row_count(ledger.path) == 0


def test_datasets_are_accounted_apart(ledger: BudgetLedger) -> None:
    ledger.set_cap("orders", epsilon_cap=10.0, delta=DELTA)
    ledger.set_cap("clicks", epsilon_cap=4.0, delta=1e-6)
    spend(ledger, A, step="1")
    ledger.charge("clicks", job="churn", run="r1", step="1", mechanism=B)
    assert [b.dataset for b in ledger.datasets()] == ["clicks", "orders"]
    assert ledger.budget("clicks").spent_epsilon == epsilon([B], target_delta=1e-6)
    assert [c.dataset for c in ledger.charges()] == ["orders", "clicks"]
    assert [c.dataset for c in ledger.charges("clicks")] == ["clicks"]


def test_export_is_json_safe(ledger: BudgetLedger) -> None:
    ledger.set_cap("orders", epsilon_cap=10.0, delta=DELTA)
    ledger.set_cap("empty", epsilon_cap=1.0, delta=DELTA)
    spend(ledger, A, step="1")
    spend(ledger, B, step="2")
    data = json.loads(json.dumps(ledger.export(), allow_nan=False))
    orders = data["datasets"]["orders"]
    assert orders["spent_epsilon"] == ledger.budget("orders").spent_epsilon
    assert orders["remaining_epsilon"] == ledger.budget("orders").remaining_epsilon
    assert (orders["cap_epsilon"], orders["delta"]) == (10.0, DELTA)
    assert [c["mechanism"] for c in orders["charges"]] == [A.to_dict(), B.to_dict()]
    assert data["datasets"]["empty"]["charges"] == []


@pytest.mark.parametrize(
    ("cap", "delta"),
    [
        (0.0, DELTA),
        (-1.0, DELTA),
        (float("nan"), DELTA),
        (float("inf"), DELTA),
        (True, DELTA),
        ("1", DELTA),
        (1.0, 0.0),
        (1.0, 1.0),
        (1.0, float("nan")),
    ],
)
def test_bad_caps_are_refused(ledger: BudgetLedger, cap: float, delta: float) -> None:
    with pytest.raises(PrivacyError):
        ledger.set_cap("orders", epsilon_cap=cap, delta=delta)
    assert ledger.datasets() == []


@pytest.mark.parametrize("field", ["dataset", "job", "run", "step"])
def test_empty_identifiers_are_refused(ledger: BudgetLedger, field: str) -> None:
    ledger.set_cap("orders", epsilon_cap=10.0, delta=DELTA)
    args = {"dataset": "orders", "job": "churn", "run": "r1", "step": "1", field: ""}
    with pytest.raises(PrivacyError):
        ledger.charge(args.pop("dataset"), mechanism=A, **args)
    with pytest.raises(PrivacyError):
        ledger.charge("orders", job="churn", run="r1", step="1", mechanism=A.to_dict())  # type: ignore[arg-type]


def test_an_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "budget.db"
    BudgetLedger.open(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(PrivacyError, match="schema version") as err:
        BudgetLedger.open(path)
    assert err.value.hint


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(PrivacyError):
        BudgetLedger.open(other)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(PrivacyError, match="not a usable budget ledger"):
        BudgetLedger.open(garbage)


# --- crashes and concurrency (real processes) -----------------------------------------------

CHARGER = r"""
import sys
from pathlib import Path
from fedcollab.common.errors import BudgetExceededError
from fedcollab.privacy.accounting import Gaussian
from fedcollab.privacy.budget_ledger import BudgetLedger

path, run, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
mech = Gaussian(noise_multiplier=float(sys.argv[4]), count=1)
ledger = BudgetLedger.open(path)
print("ready", flush=True)
sys.stdin.readline()
for i in range(count):
    try:
        charge = ledger.charge("orders", job="job", run=run, step=str(i), mechanism=mech)
    except BudgetExceededError:
        print(i, "refused", flush=True)
    else:
        print(i, "replay" if charge.replay else "ok", flush=True)
"""


def start_charger(path: Path, run: str, count: int, noise: float) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHARGER, str(path), run, str(count), str(noise)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    return proc


def collect(
    proc: subprocess.Popen[bytes], lines: list[bytes], first: threading.Event | None = None
) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if first is not None:
            first.set()


def go(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    proc.stdin.flush()


def test_sigkill_never_loses_or_doubles_a_charge(tmp_path: Path) -> None:
    path = tmp_path / "budget.db"
    mech = Gaussian(noise_multiplier=200.0, count=1)
    with BudgetLedger.open(path) as led:
        led.set_cap("orders", epsilon_cap=1000.0, delta=DELTA)
    rng = random.Random(7)
    acked: set[int] = set()
    for _ in range(5):  # each restart retries every step from 0, as a restarted round would
        proc = start_charger(path, "crash", 100_000, mech.noise_multiplier)
        lines: list[bytes] = []
        charging = threading.Event()
        reader = threading.Thread(target=collect, args=(proc, lines, charging))
        reader.start()
        go(proc)
        # Killed at a random point while charges flow: after the first answer, however
        # long the first charge takes (it imports the accountant's library, seconds on a
        # loaded machine; a fixed sleep from "go" let some runs die before any charge).
        assert charging.wait(300), "the charger answered nothing"
        time.sleep(rng.uniform(0.05, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        reader.join()
        for line in lines:
            parts = line.split()
            if len(parts) == 2 and parts[1] in (b"ok", b"replay"):  # a cut line was never acked
                acked.add(int(parts[0]))
    assert len(acked) > 5
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with BudgetLedger.open(path) as led:
        steps = [int(c.step) for c in led.charges()]
        assert len(steps) == len(set(steps))  # never counted twice
        assert acked <= set(steps)  # never lost once acknowledged
        assert steps == list(range(len(steps)))  # no gap: nothing half-written
        assert led.budget("orders").spent_epsilon == epsilon(
            [mech] * len(steps), target_delta=DELTA
        )


def test_concurrent_processes_never_overshoot_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "budget.db"
    mech = Gaussian(noise_multiplier=5.0, count=1)
    cap = 3.0
    fits = max(n for n in range(1, 50) if epsilon([mech] * n, target_delta=DELTA) <= cap)
    with BudgetLedger.open(path) as led:
        led.set_cap("orders", epsilon_cap=cap, delta=DELTA)
    procs = [start_charger(path, f"p{i}", fits, mech.noise_multiplier) for i in range(3)]
    for proc in procs:
        go(proc)
    outputs = [proc.communicate(timeout=120)[0].decode().split() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    results = [word for out in outputs for word in out[1::2]]
    assert len(results) == 3 * fits
    assert results.count("ok") == fits and results.count("refused") == 2 * fits
    with BudgetLedger.open(path) as led:
        budget = led.budget("orders")
        assert budget.charges == fits
        assert budget.spent_epsilon <= cap
        assert len({(c.run, c.step) for c in led.charges()}) == fits


def test_charges_and_refusals_are_logged(
    ledger: BudgetLedger, caplog: pytest.LogCaptureFixture
) -> None:
    """`fedcollab -v` shows each charge (INFO) and each refusal (WARNING) with its epsilons."""
    ledger.set_cap("orders", epsilon_cap=5.0, delta=DELTA)
    with caplog.at_level(logging.INFO, logger="fedcollab.privacy.budget_ledger"):
        charge = spend(ledger, A, step="1")
        with pytest.raises(BudgetExceededError):
            spend(ledger, A, step="2")
    records = [r for r in caplog.records if r.name == "fedcollab.privacy.budget_ledger"]
    assert [r.levelno for r in records] == [logging.INFO, logging.WARNING]
    assert "budget charged: dataset orders, job churn, step 1" in records[0].getMessage()
    assert f"{charge.epsilon_after:.4g}, cap 5" in records[0].getMessage()
    assert "budget refused: dataset orders, job churn, step 2" in records[1].getMessage()
