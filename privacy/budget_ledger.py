"""A partner's persistent privacy-budget ledger (one SQLite file per node).

Long module: one ledger, kept whole: its schema, the transaction that makes a
charge atomic (read the spend, compose, compare with the cap, insert) and the
replay rule of a repeated step belong to one another; split, a reader would have
to see several files to know that nothing is half-written.

Per *dataset key* (an opaque string the partner chooses, e.g. the dataset's
name) the ledger stores every DP mechanism ever run on that dataset, across
rounds and jobs.  The spent epsilon is the composition of all of them
(:func:`privacy.accounting.epsilon`, RDP) at the dataset's delta, and a charge
that would take it above the partner's cap is refused before any data leaves::

    with BudgetLedger.open(Path("node/budget.db")) as ledger:
        ledger.set_cap("orders", epsilon_cap=8.0, delta=1e-5)
        ledger.charge("orders", job="churn", run="r1", step="round-1",
                      mechanism=SampledGaussian(noise_multiplier=1.0, sample_rate=0.01, steps=100))

Tables::

    schema_version(version)                         one row: the layout of this file
    caps(dataset, cap_epsilon, delta, updated_at)   the partner's cap per dataset
    charges(seq, dataset, run, step, job, mechanism, epsilon_before, epsilon_after,
            cap_epsilon, delta, recorded_at)        UNIQUE (dataset, run, step)

Notes
-----
* Fail closed: a dataset without a cap cannot be charged (no cap means no DP
  spending), and a cap may be lowered below what was spent, which refuses
  every further charge.
* A charge runs in one ``BEGIN IMMEDIATE`` transaction (read what was spent,
  decide, insert), so concurrent processes -- Flower starts a fresh one per
  message -- are serialised by SQLite and can never jointly overshoot a cap.
* ``(dataset, run, step)`` identifies a charge: charging it again with the same
  job and mechanism replays the stored charge instead of counting it twice, so
  a round retried after a crash is counted exactly once.  That is sound only
  if the retry releases the output of the first attempt (or the first never
  left the node); a freshly noised result sent again is a new step.
* ``journal_mode=WAL`` with ``synchronous=FULL``: a charge is durable once
  :meth:`BudgetLedger.charge` returns, and a process killed at any point leaves
  the last committed state.
* The delta of a dataset is fixed once it has charges: the spent epsilon would
  otherwise be recomputed at another delta.
* Mechanisms are stored as canonical JSON (sorted keys), so a replay compares
  them byte for byte.  The 1e-9 relative tolerance on the cap only absorbs
  floating-point noise of the accountant.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from fedcollab.common.atomic import private_database
from fedcollab.common.errors import BudgetExceededError, PrivacyError
from fedcollab.privacy.accounting import Mechanism, epsilon, mechanism_from_dict

__all__ = ["BudgetLedger", "Charge", "DatasetBudget"]

log = logging.getLogger(__name__)
_LOG_CHARGE = "budget %s: dataset %s, job %s, step %s: epsilon %.4g -> %.4g, cap %.4g"

SCHEMA_VERSION = 1
_CAP_RTOL = 1e-9

_TABLES = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE caps (
        dataset TEXT PRIMARY KEY, cap_epsilon REAL NOT NULL, delta REAL NOT NULL,
        updated_at TEXT NOT NULL)""",
    """CREATE TABLE charges (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        dataset TEXT NOT NULL REFERENCES caps (dataset),
        run TEXT NOT NULL, step TEXT NOT NULL, job TEXT NOT NULL, mechanism TEXT NOT NULL,
        epsilon_before REAL NOT NULL, epsilon_after REAL NOT NULL,
        cap_epsilon REAL NOT NULL, delta REAL NOT NULL, recorded_at TEXT NOT NULL,
        UNIQUE (dataset, run, step))""",
)
_SELECT_CHARGES = """SELECT dataset, run, step, job, mechanism, epsilon_before, epsilon_after,
    cap_epsilon, delta, recorded_at FROM charges
    WHERE (?1 IS NULL OR dataset = ?1) AND (?2 IS NULL OR run = ?2) AND (?3 IS NULL OR step = ?3)
    ORDER BY seq"""
_INSERT_CHARGE = """INSERT INTO charges (dataset, run, step, job, mechanism, epsilon_before,
    epsilon_after, cap_epsilon, delta, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""


@dataclass(frozen=True)
class Charge:
    """One mechanism charged to a dataset; ``replay`` when it had been charged before."""

    dataset: str
    run: str
    step: str
    job: str
    mechanism: Mechanism
    epsilon_before: float
    epsilon_after: float
    cap_epsilon: float
    delta: float
    recorded_at: str
    replay: bool = False


@dataclass(frozen=True)
class DatasetBudget:
    """A dataset's cap and what has been spent of it."""

    dataset: str
    cap_epsilon: float
    delta: float
    spent_epsilon: float
    remaining_epsilon: float
    charges: int


def _canonical(mechanism: Mechanism) -> str:
    return json.dumps(mechanism.to_dict(), sort_keys=True, separators=(",", ":"))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _check_key(name: str, value: object) -> str:
    if not isinstance(value, str) or not value or not value.isprintable():
        raise PrivacyError(
            f"budget ledger: {name} must be a non-empty printable string, got {value!r}",
            hint=f"pass the {name} as plain text",
        )
    return value


def _check_float(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low < value < high:
        raise PrivacyError(
            f"budget ledger: {name} = {value!r} is not a number in ({low}, {high})",
            hint=f"choose a finite {name} in ({low}, {high})",
        )
    return float(value)


class BudgetLedger:
    """The privacy-budget ledger of one node, stored in one SQLite file."""

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self._db = db
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path) -> BudgetLedger:
        """Open the ledger at ``path``, creating the file and its folders if needed."""
        path = Path(path)
        try:
            private_database(path)  # 0600: the partner's charges are its own business
            db = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise PrivacyError(
                f"cannot open the budget ledger {path}: {exc}",
                hint="check that the ledger's folder exists and is writable",
            ) from exc
        ledger = cls(path, db)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            ledger._init_schema()
        except BaseException as exc:
            db.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise PrivacyError(
                    f"{path} is not a usable budget ledger: {exc}",
                    hint="point the node at its budget ledger file, or at a new path",
                ) from exc
            raise
        return ledger

    def _init_schema(self) -> None:
        with self._transaction() as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables:
                for statement in _TABLES:
                    db.execute(statement)
                db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
                return
            rows = []
            if "schema_version" in tables:
                rows = db.execute("SELECT version FROM schema_version").fetchall()
            if [tuple(r) for r in rows] != [(SCHEMA_VERSION,)]:
                raise PrivacyError(
                    f"{self.path} is not a budget ledger of schema version {SCHEMA_VERSION} "
                    f"(found {[r[0] for r in rows] or 'no version'})",
                    hint="open it with the fedcollab version that wrote it, or choose another "
                    "path; never delete a ledger, it is the record of spent privacy",
                )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> BudgetLedger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _transaction(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """One transaction: ``IMMEDIATE`` takes the write lock at once, ``DEFERRED`` reads.

        SQLite failures (a lock held past the 30 s timeout, a full disk) become
        ``PrivacyError``: whatever was being charged counts as refused.
        """
        with self._lock:
            try:
                self._db.execute(f"BEGIN {mode}")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    with suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise PrivacyError(
                    f"budget ledger {self.path} failed: {exc}",
                    hint="nothing was charged; retry, and check that the ledger's disk is "
                    "writable and no process holds the ledger locked",
                ) from exc

    # --- caps -----------------------------------------------------------------------------

    def set_cap(self, dataset: str, *, epsilon_cap: float, delta: float) -> None:
        """Set the epsilon cap and delta of ``dataset`` (its delta is fixed once charged)."""
        _check_key("dataset", dataset)
        cap = _check_float("epsilon_cap", epsilon_cap, 0.0, float("inf"))
        delta = _check_float("delta", delta, 0.0, 1.0)
        with self._transaction() as db:
            row = db.execute("SELECT delta FROM caps WHERE dataset = ?", (dataset,)).fetchone()
            charged = db.execute("SELECT 1 FROM charges WHERE dataset = ?", (dataset,)).fetchone()
            if row is not None and row[0] != delta and charged:
                raise PrivacyError(
                    f"dataset {dataset!r} already has charges at delta {row[0]:g}; its delta "
                    f"cannot change to {delta:g}",
                    hint="keep the delta, or use a new dataset key for accounting at another delta",
                )
            db.execute(
                "INSERT INTO caps VALUES (?, ?, ?, ?) ON CONFLICT (dataset) DO UPDATE SET "
                "cap_epsilon = excluded.cap_epsilon, delta = excluded.delta, "
                "updated_at = excluded.updated_at",
                (dataset, cap, delta, _now()),
            )

    def budget(self, dataset: str) -> DatasetBudget:
        """The cap of ``dataset`` and what was spent; ``PrivacyError`` if it has no cap."""
        with self._transaction("DEFERRED") as db:
            return self._budget(db, dataset)

    def datasets(self) -> list[DatasetBudget]:
        """Every dataset with a cap, by name."""
        with self._transaction("DEFERRED") as db:
            names = [r[0] for r in db.execute("SELECT dataset FROM caps ORDER BY dataset")]
            return [self._budget(db, name) for name in names]

    # --- charges --------------------------------------------------------------------------

    def preview(self, dataset: str, mechanism: Mechanism) -> float:
        """The spent epsilon of ``dataset`` if ``mechanism`` were charged (writes nothing)."""
        with self._transaction("DEFERRED") as db:
            _, delta = self._cap(db, dataset)
            return epsilon([*self._mechanisms(db, dataset), mechanism], target_delta=delta)

    def charge(
        self, dataset: str, *, job: str, run: str, step: str, mechanism: Mechanism
    ) -> Charge:
        """Record ``mechanism`` as step ``step`` of run ``run`` on ``dataset``, or refuse.

        Raises ``BudgetExceededError`` (and records nothing) if the composed epsilon
        would exceed the cap; replays the stored charge if this step was charged with
        the same job and mechanism; raises ``PrivacyError`` if it was charged otherwise.
        """
        for name, value in (("dataset", dataset), ("job", job), ("run", run), ("step", step)):
            _check_key(name, value)
        if not isinstance(mechanism, Mechanism):
            raise PrivacyError(f"not a DP mechanism: {mechanism!r}", hint="pass a Mechanism")
        text = _canonical(mechanism)
        with self._transaction() as db:
            cap, delta = self._cap(db, dataset)
            row = db.execute(_SELECT_CHARGES, (dataset, run, step)).fetchone()
            if row is not None:
                return self._replay(row, job, text)
            spent = self._mechanisms(db, dataset)
            before = epsilon(spent, target_delta=delta)
            after = epsilon([*spent, mechanism], target_delta=delta)
            if not after <= cap * (1 + _CAP_RTOL):
                log.warning(_LOG_CHARGE, "refused", dataset, job, step, before, after, cap)
                raise BudgetExceededError(
                    f"dataset {dataset!r}: job {job!r} (run {run}, step {step}) needs the spent "
                    f"epsilon to go from {before:.4g} to {after:.4g}, above the cap {cap:.4g} "
                    f"(delta {delta:g}); nothing was charged",
                    hint="the partner can raise the cap with `fedcollab budget set` (in a "
                    "simulation: `fedcollab run --budget-cap`), or the operator can lower the "
                    "job's epsilon or number of rounds",
                )
            charge = Charge(dataset, run, step, job, mechanism, before, after, cap, delta, _now())
            db.execute(
                _INSERT_CHARGE,
                (dataset, run, step, job, text, before, after, cap, delta, charge.recorded_at),
            )
        log.info(_LOG_CHARGE, "charged", dataset, job, step, before, after, cap)
        return charge

    def charges(self, dataset: str | None = None) -> list[Charge]:
        """The charges of ``dataset`` (or of every dataset), in the order they were made."""
        with self._transaction("DEFERRED") as db:
            rows = db.execute(_SELECT_CHARGES, (dataset, None, None))
            return [self._charge(row) for row in rows]

    def export(self) -> dict[str, Any]:
        """A JSON-safe summary for reports: per dataset its cap, spending and charges."""
        with self._transaction("DEFERRED") as db:  # one snapshot for budgets and charges
            names = [r[0] for r in db.execute("SELECT dataset FROM caps ORDER BY dataset")]
            budgets = [self._budget(db, name) for name in names]
            charges = [self._charge(row) for row in db.execute(_SELECT_CHARGES, (None,) * 3)]
        return {
            "schema_version": SCHEMA_VERSION,
            "accountant": "rdp",
            "datasets": {
                b.dataset: {
                    "cap_epsilon": b.cap_epsilon,
                    "delta": b.delta,
                    "spent_epsilon": b.spent_epsilon,
                    "remaining_epsilon": b.remaining_epsilon,
                    "charges": [
                        {
                            "job": c.job,
                            "run": c.run,
                            "step": c.step,
                            "mechanism": c.mechanism.to_dict(),
                            "epsilon_before": c.epsilon_before,
                            "epsilon_after": c.epsilon_after,
                            "cap_epsilon": c.cap_epsilon,
                            "recorded_at": c.recorded_at,
                        }
                        for c in charges
                        if c.dataset == b.dataset
                    ],
                }
                for b in budgets
            },
        }

    # --- helpers (called inside a transaction) --------------------------------------------

    @staticmethod
    def _cap(db: sqlite3.Connection, dataset: str) -> tuple[float, float]:
        row = db.execute(
            "SELECT cap_epsilon, delta FROM caps WHERE dataset = ?", (dataset,)
        ).fetchone()
        if row is None:
            raise PrivacyError(
                f"dataset {dataset!r} has no privacy budget: no DP spending is allowed on it",
                hint=f"set a cap for {dataset!r} with `fedcollab budget set` (an epsilon cap "
                "and a delta; in a simulation: `fedcollab run --budget-cap`)",
            )
        return float(row[0]), float(row[1])

    @staticmethod
    def _mechanisms(db: sqlite3.Connection, dataset: str) -> Sequence[Mechanism]:
        rows = db.execute(
            "SELECT mechanism FROM charges WHERE dataset = ? ORDER BY seq", (dataset,)
        )
        return [mechanism_from_dict(json.loads(r[0])) for r in rows]

    def _budget(self, db: sqlite3.Connection, dataset: str) -> DatasetBudget:
        cap, delta = self._cap(db, dataset)
        mechanisms = self._mechanisms(db, dataset)
        spent = epsilon(mechanisms, target_delta=delta)
        return DatasetBudget(dataset, cap, delta, spent, max(cap - spent, 0.0), len(mechanisms))

    @staticmethod
    def _charge(row: Sequence[Any], *, replay: bool = False) -> Charge:
        dataset, run, step, job, text, before, after, cap, delta, at = row
        mechanism = mechanism_from_dict(json.loads(text))
        return Charge(dataset, run, step, job, mechanism, before, after, cap, delta, at, replay)

    def _replay(self, row: Sequence[Any], job: str, text: str) -> Charge:
        stored = self._charge(row, replay=True)
        if stored.job == job and row[4] == text:
            return stored
        raise PrivacyError(
            f"dataset {stored.dataset!r}: run {stored.run} step {stored.step} was already "
            f"charged for job {stored.job!r} with {row[4]}; it cannot be charged again for "
            f"job {job!r} with {text}",
            hint="each (run, step) is charged once; give a new run of a job a new run id",
        )
