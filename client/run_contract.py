"""A partner's run contract: the job it accepted, pinned, and the requests that job may make.

Long module: one state machine: the job a partner accepted and the requests it allows,
stored in one SQLite table.

A partner is a state machine, not an oracle. At the first handshake of a run the
node pins the digest of the job spec it accepted; from then on it decides what
to answer from that pinned spec and its own settings, never from what a request
says it may do:

* **One spec per run.** Every later request of the run must carry the pinned
  spec (same digest); a request of a run this node never accepted is refused.
* **A request plan.** From the pinned spec, :class:`RequestPlan` derives which
  actions the job may ask at which steps (``round-1`` ... ``round-R``,
  ``lloyd-1`` ... ``lloyd-L``, one decryption per aggregate step, ...). A request
  outside the plan is refused, so the task bounds the actions (a purchase-
  prediction job never gets a segment profile) and the spec bounds the counts.
* **Each step answered once.** ``(run, action, step)`` is claimed in SQLite
  before anything is computed: a repeat is refused, so the coordinator cannot
  ask the same step again with other centroids, another model or another
  category list and subtract the answers. A repeated handshake with the same
  spec is the one idempotent request: its answer is a function of what was
  already released.
* **The split is the partner's.** Which rows are training, validation and test
  rows is a node-side constant for the dataset (:func:`node_split`): a job
  whose ``[evaluation]`` split differs is refused at the handshake, so no two
  jobs see different training sets and no run can remove one row at a time.
* **One run per Flower run.** The contract's run name is the coordinator's, so
  it is bound at the handshake to the Flower run that carries it
  (``context.run_id``, set by the SuperLink, not by the ServerApp): another run
  name inside the same Flower run is refused and logged, so a coordinator cannot
  mint names to get a fresh plan for every step.
* **A bounded number of runs.** New Flower runs are the coordinator's too, so the
  node accepts at most ``max-runs-per-day`` (:data:`DEFAULT_MAX_RUNS_PER_DAY`)
  runs in any 24 hours, counted in the same SQLite transaction that pins them; in
  DP jobs the budget ledger bounds them as well.
* **One preprocessor per run.** The standardisation a request carries is pinned
  at its first use in the run; a later request with another one is refused.
* **Keys do not outlive their job.** Per-run secrets (CKKS keys, transport and
  mask keys) are erased at the job's cosign, completed or failed; those of a run
  pinned more than :data:`KEY_TTL_S` ago are erased at the next request and by the
  node's own sweep (:mod:`client.key_sweep`, at start and every 10 minutes), whether
  or not the job ever reached its cosigning step.

This is the per-client state that Flower's SecAgg+ workflow keeps for the same
reason (Bell et al. 2020, "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead", CCS): a server that may re-ask a stage learns
differences.

Notes
-----
* State lives in ``contract.db`` in the node's state directory (``state-dir``,
  else beside its audit log): SQLite with ``synchronous=FULL``, one
  ``BEGIN IMMEDIATE`` transaction per claim, so two ClientApp processes serving
  the same node cannot both answer one step. Each thread keeps its connection open
  (:func:`_connection`).
* A claim is never released: a step whose computation failed stays answered
  (fail closed); the coordinator drops the partner for the job, as for any
  refusal.
* ``KEY_TTL_S`` (24 h) bounds how long a crashed or abandoned job's keys stay
  on disk; the longest job the spec bounds allow (:mod:`common.jobspec`) is far
  shorter than a day of wall time at any realistic round time, and a job
  outliving it fails closed (its keys are gone).
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fedcollab.client.node_settings import DEFAULT_MAX_RUNS_PER_DAY, NodeOptions
from fedcollab.common.atomic import private_database
from fedcollab.common.errors import JobSpecError, PolicyRefusal, ProtocolError
from fedcollab.common.jobspec import JobSpec
from fedcollab.privacy.dp_plan import validates_rounds

__all__ = [
    "DEFAULT_MAX_RUNS_PER_DAY",
    "KEY_TTL_S",
    "NodeSplit",
    "RequestPlan",
    "RunContract",
    "RunLimitError",
    "check_split",
    "contract_path",
    "max_runs_per_day",
    "node_split",
    "split_settings",
    "vertical_plan",
]

#: Per-run secrets older than this are erased (next request, node sweep; see Notes).
KEY_TTL_S = 24 * 3600.0

_DAY_S = 24 * 3600.0


class RunLimitError(PolicyRefusal):
    """The node accepted its ``max-runs-per-day`` runs in the last 24 hours."""


def max_runs_per_day(config: Mapping[str, str]) -> int:
    """The node's ``max-runs-per-day`` setting (an integer >= 1: client.node_settings),
    else :data:`DEFAULT_MAX_RUNS_PER_DAY`; SchemaError on a malformed one."""
    return NodeOptions.of(config).max_runs_per_day


#: Actions every horizontal job may ask, with the steps they may name.
_HANDSHAKE = "query.handshake"
_DECRYPT = "query.he_decrypt"
_KEYGEN = "query.he_keygen"
_COSIGN = "query.cosign"
_VERTICAL = "query.vertical"


@dataclass(frozen=True)
class NodeSplit:
    """How this node splits its rows into training, validation and test rows."""

    validation_fraction: float
    test_fraction: float
    split_seed: int


def node_split(config: Mapping[str, str]) -> NodeSplit:
    """The node's split: its own settings (``split-validation``, ``split-test``,
    ``split-seed``, range-checked by client.node_settings), else the job spec's
    defaults; never the coordinator's. SchemaError on a malformed one."""
    options = NodeOptions.of(config)
    return NodeSplit(
        validation_fraction=options.split_validation,
        test_fraction=options.split_test,
        split_seed=options.split_seed,
    )


def split_settings(spec: JobSpec) -> dict[str, str]:
    """Node settings that split rows as ``spec`` asks (for simulations, where the user
    runs every partner, and for `node start` options)."""
    ev = spec.evaluation
    return {
        "split-validation": repr(ev.validation_fraction),
        "split-test": repr(ev.test_fraction),
        "split-seed": str(ev.split_seed),
    }


def check_split(split: NodeSplit, spec: JobSpec) -> None:
    """Refuse a job whose train/validation/test split is not this node's."""
    ev = spec.evaluation
    asked = NodeSplit(ev.validation_fraction, ev.test_fraction, ev.split_seed)
    if asked != split:
        raise JobSpecError(
            f"job {spec.name!r} splits rows as validation {ev.validation_fraction:g}, test "
            f"{ev.test_fraction:g}, seed {ev.split_seed}; this node's split is validation "
            f"{split.validation_fraction:g}, test {split.test_fraction:g}, seed "
            f"{split.split_seed}",
            hint="the split is the partner's constant, so no two jobs see different training "
            "rows: set the job's [evaluation] split to the partners' (the defaults), or ask "
            "the partners to restart their nodes with matching --split-* options",
        )


@dataclass(frozen=True)
class RequestPlan:
    """The requests a job may make of one partner: action -> the steps it may name."""

    steps: Mapping[str, frozenset[str]]
    #: Steps whose aggregate may be decrypted (once each), in encrypted jobs.
    aggregates: frozenset[str]

    @classmethod
    def for_job(cls, spec: JobSpec, *, partner: str) -> RequestPlan:
        """Derive the plan from the pinned spec (and who this partner is)."""
        steps: dict[str, frozenset[str]] = {_HANDSHAKE: frozenset({"handshake"})}
        # As privacy.dp_plan.resolve decides (without its calibration: this runs per request).
        dp = spec.privacy.dp != "none" and spec.task != "vertical"
        aggregates: set[str] = set()
        p = spec.privacy
        if spec.task == "vertical":
            # Each planned step names one phase (vertical_plan); client.vertical checks
            # the phase and claims the step, so each is answered once per run.
            steps[_VERTICAL] = frozenset(vertical_plan(spec, partner=partner)) or frozenset(
                {"(not a party of this job)"}
            )
            steps[_COSIGN] = frozenset({"cosign"})
            return cls(steps=steps, aggregates=frozenset())
        steps["query.moments"] = frozenset({"moments"})
        aggregates.add("moments")
        if spec.task == "purchase_prediction":
            rounds = frozenset(f"round-{r}" for r in range(1, spec.rounds + 1))
            steps["train.fedavg"] = rounds
            # A DP job that releases its last model evaluates it once (privacy.dp_plan).
            once = dp and not validates_rounds(spec)
            final = frozenset(
                {"final-evaluation"} if once else {"final-evaluation", "final-evaluation-best"}
            )
            steps["evaluate.fedavg"] = final
            aggregates |= rounds | final
            if spec.model.kind == "mlp":
                steps["evaluate.permutation"] = frozenset({"permutation-importance"})
                aggregates.add("permutation-importance")
        else:  # segmentation
            s = spec.segmentation
            kmeans: set[str] = {f"lloyd-{i}" for i in range(1, s.lloyd_iterations + 1)}
            if s.seeding_for(encrypted=p.encrypted or p.masked, dp=dp) == "kfed":
                steps["query.kmeans_seed"] = frozenset({"kmeans-seed"})
            else:
                kmeans |= {f"kmeans-seed-{i}" for i in range(1, s.seed_steps + 1)}
            steps["query.kmeans_step"] = frozenset(kmeans)
            steps["query.segment_profile"] = frozenset({"segment-profiles"})
            aggregates |= kmeans | {"segment-profiles"}
        if p.masked:
            from fedcollab.client.secagg_node import ACTION, stage_steps

            steps[ACTION] = stage_steps(frozenset(aggregates))
        if p.encrypted:
            if p.key_dealer == partner:
                steps[_KEYGEN] = frozenset({"he-keygen"})
            steps[_DECRYPT] = frozenset(f"{a}.decrypt" for a in aggregates)
        steps[_COSIGN] = frozenset({"cosign"})
        return cls(steps=steps, aggregates=frozenset(aggregates) if p.encrypted else frozenset())

    def check(self, action: str, step: str) -> None:
        """Refuse an action the job does not make, or a step it does not have."""
        allowed = self.steps.get(action)
        if allowed is None:
            raise ProtocolError(
                f"this job makes no {action!r} requests",
                hint="the partner answers only what its accepted job spec plans "
                "(task, purpose, rounds, iterations); refused and logged",
            )
        if allowed and step not in allowed:
            raise ProtocolError(
                f"step {step!r} is not a step of this job's {action!r} requests",
                hint="the partner answers only the steps its accepted job spec plans; "
                "refused and logged",
            )


def vertical_plan(spec: JobSpec, *, partner: str) -> dict[str, str]:
    """The ``query.vertical`` steps a vertical job may ask of ``partner``: step -> phase.

    Derived from the pinned spec alone: the PSI ring (the label holder's
    ``psi-salt``, ``psi-own``, one
    ``psi-hop-<h>`` per other party) or CM20 (``psi-salt``, then the label holder's
    ``psi-setup`` and ``psi-matrix``, each feature party's ``psi-answer`` and
    ``psi-values``), then for training ``step-<t>`` /
    ``label-step-<t>`` for ``t < iterations`` and one ``eval`` / ``label-eval``;
    for joint inference (``predict_with``) one ``predict`` / ``label-predict``.
    """
    v = spec.vertical
    if partner not in v.parties:
        return {}
    label = v.parties[partner].role == "label_holder"
    if v.psi == "cm20":  # the label holder runs CM20 with each feature party
        plan = (
            {"psi-salt": "psi_salt", "psi-setup": "oprf_start", "psi-matrix": "oprf_matrix"}
            if label
            else {"psi-salt": "oprf_size", "psi-answer": "oprf_answer", "psi-values": "oprf_values"}
        )
    else:
        plan = {"psi-salt": "psi_salt"} if label else {}
        plan["psi-own"] = "psi_own"
        plan.update({f"psi-hop-{h}": "psi_hop" for h in range(1, len(v.parties))})
    if label:
        plan["intersect"] = "intersect"
    if v.predict_with:
        plan["label-predict" if label else "predict"] = "label_predict" if label else "predict"
        return plan
    for t in range(v.iterations):
        plan[f"label-step-{t}" if label else f"step-{t}"] = "label_step" if label else "step"
    plan["label-eval" if label else "eval"] = "label_eval" if label else "eval"
    return plan


def contract_path(config: Mapping[str, str]) -> Path:
    """``contract.db`` in the node's state directory (beside its audit log)."""
    state = config.get("state-dir") or (
        str(Path(config["audit-db"]).parent) if config.get("audit-db") else ""
    )
    if not state:
        raise ProtocolError(
            "this node has no state directory, so it cannot pin the jobs it accepts",
            hint="start it with --audit-key (its state lives beside its audit log)",
        )
    return Path(state) / "contract.db"


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS runs (
        run TEXT PRIMARY KEY, digest TEXT NOT NULL, job TEXT NOT NULL,
        pinned_at REAL NOT NULL, keys_erased INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS pinned_values (
        run TEXT NOT NULL, name TEXT NOT NULL, digest TEXT NOT NULL,
        PRIMARY KEY (run, name))""",
    """CREATE TABLE IF NOT EXISTS flower_runs (
        flower_run TEXT PRIMARY KEY, run TEXT NOT NULL UNIQUE)""",
    """CREATE TABLE IF NOT EXISTS answered (
        run TEXT NOT NULL, action TEXT NOT NULL, step TEXT NOT NULL, at REAL NOT NULL,
        request TEXT NOT NULL DEFAULT '', PRIMARY KEY (run, action, step))""",
    """CREATE TABLE IF NOT EXISTS once_per_node (
        name TEXT PRIMARY KEY, run TEXT NOT NULL, at REAL NOT NULL)""",
)


_OPEN = threading.local()
#: Contracts a thread keeps open at once (a node's executor uses one).
_KEEP_OPEN = 4


def _files(path: Path) -> tuple[tuple[int, int], ...] | None:
    """The identity (device, inode) of the database and its WAL, None if either is gone."""
    try:
        return tuple((st.st_dev, st.st_ino) for st in (os.stat(path), os.stat(f"{path}-wal")))
    except FileNotFoundError:
        return None


def _connection(path: Path) -> sqlite3.Connection:
    """This thread's connection to the contract at ``path``: opened (WAL,
    ``synchronous=FULL``, schema) at its first use, and again once the database or its
    WAL there was removed or replaced. Closing the old connection then checkpoints what
    it wrote (from its still-open WAL) into the database it holds, so no claim is lost
    (a red team's case: a WAL deleted under a running executor, then the executor
    killed, lost its claims). A connection per transaction cost an executor about 8%
    of its CPU in a deployed round, most of it closing: the last connection of a WAL
    database checkpoints and removes the WAL at every close (py-spy, 9 partners)."""
    private_database(path)  # 0600 at every transaction, as before; folders created
    dbs: dict[str, tuple[sqlite3.Connection, object]] = _OPEN.__dict__.setdefault("dbs", {})
    key = str(path)
    now = _files(path)
    held = dbs.pop(key, None)
    if held is not None and now is not None and held[1] == now:
        dbs[key] = held
        return held[0]
    if held is not None:
        held[0].close()
        private_database(path)  # the close may have removed what it had created
    while len(dbs) >= _KEEP_OPEN:  # the least recently used first (dicts keep order)
        dbs.pop(next(iter(dbs)))[0].close()
    db = sqlite3.connect(path, timeout=60.0, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        for statement in _SCHEMA:
            db.execute(statement)
    except BaseException:
        db.close()
        raise
    dbs[key] = (db, _files(path))
    return db


@dataclass(frozen=True)
class RunContract:
    """The node's pinned runs and answered steps (see the module docstring)."""

    path: Path

    @classmethod
    def from_config(cls, config: Mapping[str, str]) -> RunContract:
        return cls(contract_path(config))

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction on this thread's connection."""
        db = _connection(self.path)
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def pin(
        self,
        run: str,
        spec: JobSpec,
        *,
        flower_run: str | None = None,
        max_runs: int = DEFAULT_MAX_RUNS_PER_DAY,
    ) -> None:
        """At the handshake: pin ``spec`` for ``run`` (a repeat with the same spec is fine),
        bound to Flower run ``flower_run`` (when served by Flower), at most ``max_runs``
        new runs in any 24 hours."""
        _check_run(run)
        digest = spec.digest()
        with self._db() as db:
            row = db.execute(
                "SELECT digest, keys_erased FROM runs WHERE run = ?", (run,)
            ).fetchone()
            if flower_run is not None:
                _bind(db, run, flower_run, new=row is None)
            if row is None:
                recent = db.execute(
                    "SELECT COUNT(*) FROM runs WHERE pinned_at > ?", (time.time() - _DAY_S,)
                ).fetchone()[0]
                if recent >= max_runs:
                    raise RunLimitError(
                        f"this node accepted {recent} runs in the last 24 hours, its limit "
                        f"(max-runs-per-day {max_runs}); run {run} is refused",
                        hint="each run is a fresh plan of requests; the partner may raise "
                        "the limit (`fedcollab node start --max-runs-per-day N`), or the "
                        "operator resubmits later",
                    )
                db.execute(
                    "INSERT INTO runs (run, digest, job, pinned_at) VALUES (?, ?, ?, ?)",
                    (run, digest, spec.name, time.time()),
                )
            elif row[1]:
                raise ProtocolError(
                    f"run {run} is over: its keys were erased after {KEY_TTL_S / 3600:g} h",
                    hint="a run lives at most a day at a partner; resubmit the job",
                )
            elif row[0] != digest:
                raise ProtocolError(
                    f"run {run} was accepted with another job spec ({row[0][:19]}...)",
                    hint="a run has one spec; a coordinator changing it mid-run is refused",
                )

    def check_pinned(self, run: str, spec: JobSpec, *, flower_run: str | None = None) -> None:
        """Every request after the handshake: the run was accepted, with this spec (in
        Flower run ``flower_run``, when served by Flower)."""
        _check_run(run)
        with self._db() as db:
            row = db.execute(
                "SELECT digest, keys_erased FROM runs WHERE run = ?", (run,)
            ).fetchone()
            if row is not None and flower_run is not None:
                _bind(db, run, flower_run, new=False)
        if row is None:
            raise ProtocolError(
                f"run {run} was never accepted by this node (no handshake)",
                hint="a partner answers only runs it accepted at their handshake",
            )
        if row[1]:
            raise ProtocolError(
                f"run {run} is over: its keys were erased after {KEY_TTL_S / 3600:g} h",
                hint="a run lives at most a day at a partner; resubmit the job",
            )
        if row[0] != spec.digest():
            raise ProtocolError(
                f"request carries another job spec than the one run {run} was accepted with",
                hint="a run has one spec; a coordinator changing it mid-run is refused",
            )

    def claim(self, run: str, action: str, step: str, *, request: str = "") -> None:
        """Mark ``(run, action, step)`` answered, with the digest of the request's shared
        part (:func:`compliance.contribution.shared_request_digest`); refuse a repeat."""
        with self._db() as db:
            try:
                db.execute(
                    "INSERT INTO answered (run, action, step, at, request) VALUES (?, ?, ?, ?, ?)",
                    (run, action, step, time.time(), request),
                )
            except sqlite3.IntegrityError:
                raise ProtocolError(
                    f"step {step!r} of run {run} ({action}) was already answered",
                    hint="each planned step is answered once: a repeated request could be "
                    "differenced against the first answer; refused and logged",
                ) from None

    def pin_value(self, run: str, name: str, digest: str) -> None:
        """Pin a value every request of ``run`` must share (the preprocessor): the first
        request that carries it fixes it; another value later in the run is refused."""
        with self._db() as db:
            row = db.execute(
                "SELECT digest FROM pinned_values WHERE run = ? AND name = ?", (run, name)
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO pinned_values (run, name, digest) VALUES (?, ?, ?)",
                    (run, name, digest),
                )
            elif row[0] != digest:
                raise ProtocolError(
                    f"this request carries another {name} than earlier requests of run {run}",
                    hint=f"a run has one {name}; switching it between steps would let the "
                    "coordinator difference the answers; refused",
                )

    def claim_once(self, run: str, name: str, *, hint: str) -> None:
        """Claim ``name`` for ``run`` across every run this node ever answers (the k-means
        candidates a run starts from, client.centroid_chain): another run is refused."""
        with self._db() as db:
            row = db.execute("SELECT run FROM once_per_node WHERE name = ?", (name,)).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO once_per_node (name, run, at) VALUES (?, ?, ?)",
                    (name, run, time.time()),
                )
            elif row[0] != run:
                raise ProtocolError(f"run {row[0]} already started from these inputs", hint=hint)

    def pinned_value(self, run: str, name: str) -> str | None:
        """The digest :meth:`pin_value` pinned as ``name`` in ``run`` (None: none yet)."""
        with self._db() as db:
            row = db.execute(
                "SELECT digest FROM pinned_values WHERE run = ? AND name = ?", (run, name)
            ).fetchone()
        return None if row is None else str(row[0])

    def request_of(self, run: str, step: str) -> str | None:
        """The shared-request digest this node answered at ``step`` (None: it did not)."""
        with self._db() as db:
            row = db.execute(
                "SELECT request FROM answered WHERE run = ? AND step = ? AND action != ?",
                (run, step, _DECRYPT),
            ).fetchone()
        return str(row[0]) if row is not None and row[0] else None

    def answered(self, run: str) -> list[tuple[str, str]]:
        """The (action, step) pairs answered in ``run``, in order."""
        with self._db() as db:
            rows = db.execute(
                "SELECT action, step FROM answered WHERE run = ? ORDER BY at, rowid", (run,)
            ).fetchall()
        return [(str(a), str(s)) for a, s in rows]

    def expired(self, *, now: float | None = None) -> list[str]:
        """Runs pinned more than :data:`KEY_TTL_S` ago whose keys were not yet erased;
        marks them erased (the caller erases the files)."""
        cutoff = (time.time() if now is None else now) - KEY_TTL_S
        with self._db() as db:
            rows = db.execute(
                "SELECT run FROM runs WHERE pinned_at < ? AND keys_erased = 0", (cutoff,)
            ).fetchall()
            db.execute(
                "UPDATE runs SET keys_erased = 1 WHERE pinned_at < ? AND keys_erased = 0",
                (cutoff,),
            )
        return [str(r[0]) for r in rows]


def _bind(db: sqlite3.Connection, run: str, flower_run: str, *, new: bool) -> None:
    """Refuse ``run`` unless it is ``flower_run``'s one run; bind a new run to it."""
    row = db.execute("SELECT run FROM flower_runs WHERE flower_run = ?", (flower_run,)).fetchone()
    other = db.execute("SELECT flower_run FROM flower_runs WHERE run = ?", (run,)).fetchone()
    if row is not None and row[0] != run:
        raise ProtocolError(
            f"Flower run {flower_run} already carries run {row[0]}; run {run} is refused",
            hint="one Flower run is one fedcollab run: a coordinator minting run names "
            "inside it would get a fresh plan for every step; refused and logged",
        )
    if other is not None and other[0] != flower_run:
        raise ProtocolError(
            f"run {run} was accepted in another Flower run ({other[0]})",
            hint="a run's requests come from the Flower run that started it; refused",
        )
    if row is None:
        if not new:
            raise ProtocolError(
                f"run {run} was accepted outside Flower run {flower_run}",
                hint="a run's requests come from the Flower run that started it; refused",
            )
        db.execute("INSERT INTO flower_runs (flower_run, run) VALUES (?, ?)", (flower_run, run))


#: A run name: it becomes a folder name under the node's state directory.
_RUN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def _check_run(run: str) -> None:
    if not _RUN.fullmatch(run):
        raise ProtocolError(
            "request names no valid run (letters, digits, '_' and '-', at most 128)",
            hint="every fedcollab request carries the run it belongs to; a name like '..' "
            "would address the node's own state folder; refused",
        )
