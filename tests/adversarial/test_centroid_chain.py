"""A malicious coordinator chooses k-means centroids: every partner derives them itself.

Issue 13, "differencing by centroids": within the planned Lloyd steps a coordinator
that picks each step's centroids sweeps a boundary so that one row at a time crosses
it, and the difference of two steps' sums is that row (an audit of 2026-12-07 read 5 of
5 rows in 35 planned steps, every cluster of >= 5 rows). Now, in a segmentation job
without DP, each partner derives every step's centroids from the spec's seed and the
previous step's sum, which it verifies itself (client.centroid_chain).

These run the real coordinator (``coordinator.job.run_job``) against the real partner
ClientApp over an in-memory Grid, with the coordinator's own code altered as an
attacker would alter it. On the code before the chain every partner answered the
chosen centroids (the job completed); now each refuses the step, logs the refusal and
nothing about the chosen step leaves.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedcollab.common.errors import FedcollabError
from fedcollab.common.jobspec import JobSpec
from fedcollab.compliance.trail import Trail
from fedcollab.coordinator import job as job_module
from fedcollab.coordinator import segmentation
from fedcollab.coordinator.job import run_job
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.coordinator.roster import Roster
from fedcollab.coordinator.secagg import MaskedSum
from fedcollab.federation.inmemory import InMemoryGrid, in_memory_federation, task_identity
from fedcollab.protocols import kmeans
from tests.support.adversarial import Attacker, job
from tests.support.jobs import run_in_memory
from tests.support.partners import SCHEMA, make_partner

warnings.filterwarnings("ignore", message=".*does not fit in a single ciphertext.*")

NAMES = ("p0", "p1", "p2")


def _spec(aggregation: str, names: tuple[str, ...] = NAMES, **segmentation_fields: Any) -> JobSpec:
    return JobSpec.model_validate(
        {"name": "chain", "task": "segmentation", "purpose": "user-segmentation",
         "schema": SCHEMA, "participants": list(names), "min_partners": 2,
         "privacy": {"aggregation": aggregation,
                     "encryption": "ckks" if aggregation.startswith("ckks") else "none"},
         "segmentation": {"k": 3, "lloyd_iterations": 3, "seeding": "summed",
                          "seed_steps": 1, "seed_candidates": 6, **segmentation_fields}},
        strict=False,
    )  # fmt: skip


def _run(
    tmp_path: Path, spec: JobSpec, names: tuple[str, ...] = NAMES
) -> tuple[dict[str, Any] | None, str | None]:
    """The job's metrics, or the error class it stopped with."""
    sources = [make_partner(tmp_path / "data", n, seed=i, n=300) for i, n in enumerate(names)]
    grid, audit, policy = in_memory_federation(spec, sources, tmp_path)
    try:
        metrics = run_in_memory(grid, spec, tmp_path / "out", audit, policy)
    except FedcollabError as exc:
        return None, type(exc).__name__
    return metrics, None


def _refusals(tmp_path: Path, names: tuple[str, ...] = NAMES) -> dict[str, list[tuple[str, str]]]:
    """Each partner's logged refusals: (step, error class)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for name in names:
        db = tmp_path / "audit" / "partners" / name / "audit.db"
        with Trail.open(db, db.parent / "audit.key", actor=name) as trail:
            events = [json.loads(raw) for raw in trail.log.entries()]
        out[name] = [
            (str(e["body"].get("step")), str(e["body"]["error"]))
            for e in events
            if e["type"] == "request.refused"
        ]
    return out


def _evil_kmeans(shift_at: int) -> types.SimpleNamespace:
    """The coordinator's k-means module, with the ``shift_at``-th centroid update moved:
    one centroid nudged along one axis, as a boundary sweep moves it step by step."""
    calls = [0]

    def update_centroids(summed: Any, previous: Any) -> tuple[np.ndarray, float, np.ndarray]:
        new, objective, counts = kmeans.update_centroids(summed, previous)
        calls[0] += 1
        if calls[0] == shift_at:
            new = new.copy()
            new[0, 0] += 1e-3
        return new, objective, counts

    names = {n: getattr(kmeans, n) for n in kmeans.__all__}
    return types.SimpleNamespace(**{**names, "update_centroids": update_centroids})


@pytest.mark.parametrize("aggregation", ["masked", "ckks+masked", "ckks"])
def test_chosen_centroids_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aggregation: str
) -> None:
    """Attack: the coordinator moves one centroid of lloyd-2 by 1e-3 (the first step of
    a boundary sweep). Old code: every partner answered, the job completed. Now: every
    partner refuses lloyd-2 (ProtocolError, logged) and the job stops."""
    # Update 1 turns the seeding step into lloyd-1's seeds' cells; update 2 is lloyd-1's.
    monkeypatch.setattr(segmentation, "kmeans", _evil_kmeans(shift_at=2))
    metrics, error = _run(tmp_path, _spec(aggregation))
    assert metrics is None and error == "NotEnoughPartnersError"
    refusals = _refusals(tmp_path)
    for name in NAMES:
        assert refusals[name] == [("lloyd-2", "ProtocolError")], (name, refusals[name])


class _NoShift:
    """numpy for the coordinator's module, except that every centroid shift looks large."""

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    @staticmethod
    def max(_a: Any) -> float:
        return float(np.inf)


@pytest.mark.parametrize("aggregation", ["masked", "ckks"])
def test_steps_past_convergence_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aggregation: str
) -> None:
    """Attack: the coordinator ignores convergence and asks more Lloyd steps on the same
    centroids, to sum them over other sets of partners and difference the sums. The
    first step that repeats its predecessor's centroids is refused by every partner
    (old code: every step up to lloyd_iterations was answered). In "ckks" the sums are
    flooded (privacy.flooding), so converged centroids never repeat exactly: "repeats"
    is within the flooding noise's reach (a first version refused only exact repeats,
    and answered every step)."""
    calls = [0]

    def update_centroids(summed: Any, previous: Any) -> tuple[np.ndarray, float, np.ndarray]:
        new, objective, counts = kmeans.update_centroids(summed, previous)
        calls[0] += 1
        return new, objective - 1e9 * calls[0], counts  # "still improving"

    names = {n: getattr(kmeans, n) for n in kmeans.__all__}
    monkeypatch.setattr(
        segmentation, "kmeans",
        types.SimpleNamespace(**{**names, "update_centroids": update_centroids}),
    )  # fmt: skip
    monkeypatch.setattr(segmentation, "np", _NoShift())  # never sees convergence
    metrics, error = _run(tmp_path, _spec(aggregation, lloyd_iterations=60))
    assert metrics is None and error == "NotEnoughPartnersError"
    refusals = _refusals(tmp_path)
    step = refusals["p0"][0][0]
    assert step.startswith("lloyd-") and int(step.split("-")[1]) < 60
    for name in NAMES:
        assert refusals[name] == [(step, "ProtocolError")], (name, refusals[name])


class _NeverEqual(_NoShift):
    """numpy for the coordinator's module, except that no two arrays look equal."""

    @staticmethod
    def array_equal(_a: Any, _b: Any) -> bool:
        return False


def test_seeding_steps_past_convergence_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack (red team of 2026-12-07): the seeding's few candidates stop moving, and
    the coordinator asks more seeding steps on the same candidates, leaving one partner
    out of one of them: the two sums gave that partner's cell counts and sums. Now the
    coordinator's seeding stops when its candidates stop moving, and every partner
    refuses a seeding step that repeats its predecessor's candidates."""
    monkeypatch.setattr(segmentation, "np", _NeverEqual())
    metrics, error = _run(tmp_path, _spec("ckks", seed_steps=20, seed_candidates=4))
    assert metrics is None and error == "NotEnoughPartnersError"
    refusals = _refusals(tmp_path)
    step = refusals["p0"][0][0]
    assert step.startswith("kmeans-seed-") and int(step.split("-")[2]) <= 20
    for name in NAMES:
        assert refusals[name] == [(step, "ProtocolError")], (name, refusals[name])


def test_a_chosen_preprocessor_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Attack (red team of 2026-12-07): the coordinator chooses the standardisation, so it
    places the data under the spec's seeded candidates as it likes; two runs whose
    preprocessors differed in one mean moved one row across a cell boundary and the two
    runs' sums gave that row. Now every partner derives the first step's preprocessor
    from the verified moments (the key holder's receipt, or the unmasking it repeats)
    and refuses another one."""
    real = job_module.run_segmentation

    def shifted(grid: Any, roster: Any, spec: Any, schema: Any, pre: Any, outputs: Any) -> Any:
        means = (pre.means[0] + 1e-3, *pre.means[1:])
        return real(grid, roster, spec, schema, dataclasses.replace(pre, means=means), outputs)

    monkeypatch.setattr(job_module, "run_segmentation", shifted)
    metrics, error = _run(tmp_path, _spec("masked"))
    assert metrics is None and error == "NotEnoughPartnersError"
    for name, refused in _refusals(tmp_path).items():
        assert refused == [("kmeans-seed-1", "ProtocolError")], (name, refused)


def test_a_sum_without_the_partner_is_not_built_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack (red team of 2026-12-07): the coordinator leaves p3's moments out of the sum
    (declares its masked input lost) but keeps p3 in the job, so the preprocessor comes
    from the others' rows; across runs, choosing whose moments count moved one row
    across a seeding cell and the two runs' sums gave it. Now a partner builds only on
    sums with its own answer in them: p3 refuses kmeans-seed-1, the others go on."""
    names = ("p0", "p1", "p2", "p3")
    real = Roster.reveal

    def reveal(self: Roster, grid: Any, acc: Any, *, step: str, then: Any = None) -> Any:
        if step == "moments" and isinstance(acc, MaskedSum):
            acc.masked.pop("p3")  # "its input never arrived"
            acc.bindings.pop("p3", None)
        return real(self, grid, acc, step=step, then=then)

    monkeypatch.setattr(Roster, "reveal", reveal)
    metrics, error = _run(tmp_path, _spec("masked", names), names)
    assert error is None and metrics is not None  # three partners are enough
    refusals = _refusals(tmp_path, names)
    assert refusals["p3"] == [("kmeans-seed-1", "CiphertextError")], refusals
    assert all(refusals[n] == [] for n in names[:3]), refusals


def test_a_second_run_from_the_same_candidates_is_refused(tmp_path: Path) -> None:
    """Attack (red team of 2026-12-07): two runs of one spec start from the same
    candidates; under another cohort (hence another verified preprocessor), or leaving
    a partner out of the second run, the two runs' sums gave a row, and a partner's
    cluster sums, by difference. Now a node answers a set of seeding candidates in one
    run only: the second run is refused at kmeans-seed-1, one with another seed runs."""
    spec = _spec("ckks")
    sources = [make_partner(tmp_path / "data", n, seed=i, n=300) for i, n in enumerate(NAMES)]
    grid, audit, policy = in_memory_federation(spec, sources, tmp_path)

    def run(job: JobSpec, out: str) -> str | None:
        again = InMemoryGrid(grid.overrides, list(NAMES))  # a Flower run of its own
        try:
            with task_identity():
                run_job(again, job, JobOutputs(tmp_path / out), mode="simulation",  # type: ignore[arg-type]
                        audit_config=audit, policy=policy)  # fmt: skip
        except FedcollabError as exc:
            return type(exc).__name__
        return None

    assert run(spec, "first") is None
    assert run(spec, "second") == "NotEnoughPartnersError"
    for name, refused in _refusals(tmp_path).items():
        assert refused == [("kmeans-seed-1", "ProtocolError")], (name, refused)
    other = spec.model_copy(
        update={"segmentation": spec.segmentation.model_copy(update={"seed": 7})}
    )
    assert run(other, "third") is None


def test_the_honest_chain_is_answered_in_every_verified_mode(tmp_path: Path) -> None:
    """The control: the same job without the attack completes in "ckks" too (the masked
    modes are compared with the plaintext job in tests/coordinator/test_coordinator_masked.py),
    with no refusal, and every step after the first carried its predecessor's sum."""
    metrics, error = _run(tmp_path, _spec("ckks"))
    assert error is None and metrics is not None
    assert _refusals(tmp_path) == {name: [] for name in NAMES}


def _tamper(previous: dict[str, Any], forgery: str) -> None:
    """Change the evidence of the previous step's sum as a coordinator would to make a
    sum of its own choosing look verified."""
    if forgery == "statement":  # a sum over answers to another request: no statement
        previous["masks"]["bindings"][0] = None
        return
    if forgery == "ckks":
        values = np.frombuffer(base64.b64decode(previous["values"]), dtype="<f8").copy()
        values[0] += 1.0  # one coordinate of one cluster's sum
        previous["values"] = base64.b64encode(values.tobytes()).decode()
        return
    masked = previous["masks"]["masked"]
    name = sorted(masked)[0]
    raw = bytearray(base64.b64decode(masked[name]))
    raw[-9] ^= 1  # one masked word near the end
    masked[name] = base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    ("aggregation", "forgery"),
    [("ckks", "ckks"), ("masked", "masked"), ("masked", "statement")],
)
def test_a_forged_sum_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aggregation: str, forgery: str
) -> None:
    """Attack: the coordinator alters the evidence of lloyd-1's sum (the decrypted values
    in "ckks", a masked input in "masked", or a survivor's statement of the request it
    answered) so that a sum of its choice would pass. The key holder's receipt (ckks),
    the sender's signature on its masked input or its signed statement (masked) no
    longer verifies: every partner refuses lloyd-2."""
    real = segmentation._previous

    def forged(roster: Any, derived_from: Any) -> dict[str, Any]:
        out = real(roster, derived_from)
        if out and out["previous"]["step"] == "lloyd-1":
            _tamper(out["previous"], forgery)
        return out

    monkeypatch.setattr(segmentation, "_previous", forged)
    metrics, error = _run(tmp_path, _spec(aggregation))
    assert metrics is None and error == "NotEnoughPartnersError"
    refusals = _refusals(tmp_path)
    for name in NAMES:
        assert refusals[name] == [("lloyd-2", "CiphertextError")], (name, refusals[name])


@pytest.mark.parametrize(
    ("aggregation", "seeding"), [("plaintext", "summed"), ("plaintext", "kfed")]
)
def test_jobs_whose_centroids_a_partner_cannot_derive_are_refused(
    tmp_path: Path, aggregation: str, seeding: str
) -> None:
    """Plaintext aggregation (the only one k-FED seeding goes with) shows the coordinator
    each partner's cluster sums and gives no partner the others': the coordinator would
    choose the centroids. Without DP such a job is refused at the handshake unless
    the node allows it (a simulation, where the user is every partner, does)."""
    spec = job(
        name="seg", task="segmentation", purpose="user-segmentation",
        privacy={"aggregation": aggregation},
        segmentation={"k": 2, "lloyd_iterations": 3, "seeding": seeding},
    )  # fmt: skip
    refused = Attacker.against(tmp_path / "refuse", spec, **{"allow-unverified-centroids": "false"})
    assert refused.handshake("a").refused == "PolicyRefusal"
    assert [r["error"] for r in refused.refusals("a")] == ["PolicyRefusal"]
    allowed = Attacker.against(tmp_path / "allow", spec)
    assert allowed.handshake("a").refused is None
