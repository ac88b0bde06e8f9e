"""A real workspace for console tests: audit logs, ledgers, job folders, users.

Nothing is mocked: the workspace is made by ``Workspace.create``, the logs are
real ``AuditLog`` files with signed checkpoints, the ledgers real
``BudgetLedger`` files and the jobs real ``JobOutputs`` folders.  Only the
argon2 cost is lowered (a ``PasswordHasher`` with small parameters) so the
many logins stay fast; the production defaults are tested separately.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fedcollab.compliance.trail import Trail, digest_bytes
from fedcollab.coordinator.console.app import create_app
from fedcollab.coordinator.console.auth import Role, UserStore
from fedcollab.coordinator.console.settings import (
    ConsoleConfig,
    ConsolePaths,
    add_ledger,
    init_console,
)
from fedcollab.coordinator.outputs import JobOutputs
from fedcollab.coordinator.workspace import Workspace
from fedcollab.privacy.accounting import SampledGaussian
from fedcollab.privacy.budget_ledger import BudgetLedger

PASSWORD = "correct horse battery"
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PARTNERS = ("brand-a", "brand-b")


@dataclass
class Env:
    ws: Workspace
    results: Path
    users: UserStore

    def app(self, **overrides: object) -> FastAPI:
        cfg = ConsoleConfig.load(self.ws.root, jobs_dirs=(self.results,), probe_superlink=False)
        return create_app(dataclasses.replace(cfg, **overrides), users=self.users)


def write_job(out: Path, *, name: str, task: str, partners: list[str], done: bool) -> None:
    jo = JobOutputs(out)
    jo.event("job_start", job=name, task=task, digest="sha256:00", mode="deployment")
    jo.event("waiting", min_partners=len(partners), participants=partners)
    jo.event("partners", partners=partners, missing=[], refused=[])
    for rnd in (1, 2, 3):
        metric = {"val_auc": 0.7 + rnd / 100} if task == "purchase_prediction" else {}
        if task == "segmentation":
            metric = {"objective": 1000.0 - rnd * 50}
        jo.event("round", task=task, round=rnd, total=5, partners=len(partners), epsilon=None,
                 **metric)  # fmt: skip
    if done:
        jo.write_json(
            "model_card.json",
            {
                "job": {"name": name, "digest": "sha256:00"},
                "partners": [{"name": p, "dataset_hash": f"sha256:{p}"} for p in partners],
            },
        )
        jo.write_json(
            "attributions.json",
            {"job": name, "model": "logreg", "method": "coefficients", "metric": "auc",
             "baseline": None, "note": "", "columns": [],
             "features": [{"feature": "PageValues", "importance": 1.2, "direction": "+"},
                          {"feature": "BounceRates", "importance": -0.4, "direction": "-"}]},
        )  # fmt: skip
        jo.write_json("result.json", {"status": "completed"})
        jo.event("job_end", status="completed", final={"test": {"auc": 0.88}}, objective=None,
                 dropouts=[], audit=None)  # fmt: skip


@pytest.fixture(scope="session")
def template_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per session (keys, logs), copied per test."""
    root = tmp_path_factory.mktemp("console-template")
    ws = Workspace.create(root / "ws", name="fed", partners=PARTNERS)
    for p in PARTNERS:  # what `fedcollab federation register` keeps
        dest = ws.root / "partners" / p
        dest.mkdir(parents=True)
        shutil.copy(ws.node_dir(p) / "audit.pub", dest / "audit.pub")
    results = root / "results"
    write_job(results / "purchase", name="purchase", task="purchase_prediction",
              partners=list(PARTNERS), done=True)  # fmt: skip
    write_job(results / "solo-b", name="solo-b", task="segmentation", partners=["brand-b"],
              done=False)  # fmt: skip
    with Trail.open(ws.audit_db, ws.audit_key, actor="coordinator") as trail:
        # The run the results folder holds, as a coordinator records it: a report with
        # an output no run released has an error finding, which the console refuses.
        run = {"job": "purchase", "digest": "sha256:00", "run": "r1"}
        trail.record("job.submitted", {**run, "purpose": "purchase-prediction"})
        trail.record("job.started", run)
        joined = [{"name": p, "dataset_hash": f"sha256:{p}"} for p in PARTNERS]
        trail.record("job.participants", {**run, "partners": joined, "refused": []})
        out = results / "purchase"
        released = {f.name: digest_bytes(f.read_bytes()) for f in sorted(out.glob("*.json"))}
        trail.record("model.released", {**run, "outputs": released})
        trail.record("job.completed", run)
        trail.checkpoint()
        trail.record("job.started", {"job": "solo-b"})
    init_console(ws)
    for p in PARTNERS:
        with BudgetLedger.open(ws.node_dir(p) / "budget.db") as ledger:
            ledger.set_cap(f"{p}-orders", epsilon_cap=8.0, delta=1e-5)
            mech = SampledGaussian(noise_multiplier=1.1, sample_rate=0.02, steps=100)
            ledger.charge(f"{p}-orders", job="purchase", run="r1", step="round-1", mechanism=mech)
        add_ledger(ws, p, ws.node_dir(p) / "budget.db")
    store = UserStore(ConsolePaths.of(ws).users, hasher=FAST)
    store.add("olga", PASSWORD, role=Role.OPERATOR, partner=None)
    store.add("carl", PASSWORD, role=Role.COMPLIANCE, partner=None)
    store.add("anna", PASSWORD, role=Role.PARTNER, partner="brand-a")
    store.add("bert", PASSWORD, role=Role.PARTNER, partner="brand-b")
    return root


@pytest.fixture
def env(template_env: Path, tmp_path: Path) -> Env:
    root = tmp_path / "env"
    shutil.copytree(template_env, root)
    ws = Workspace.open(root / "ws")
    # Ledger paths in config.json point into the template: re-point them to the copy.
    for p in PARTNERS:
        add_ledger(ws, p, ws.node_dir(p) / "budget.db")
    return Env(ws, root / "results", UserStore(ConsolePaths.of(ws).users, hasher=FAST))


@pytest.fixture
def app(env: Env) -> Iterator[FastAPI]:
    """The console app with its lifespan running (its audit log open) for the test."""
    application = env.app()
    with TestClient(application):
        yield application


@pytest.fixture
def anon(app: FastAPI) -> TestClient:
    return TestClient(app, follow_redirects=False)


def login(client: TestClient, user: str, password: str = PASSWORD) -> httpx.Response:
    page = client.get("/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', page.text)
    assert nonce is not None
    return client.post(
        "/login", data={"username": user, "password": password, "nonce": nonce.group(1)}
    )


def csrf_of(client: TestClient) -> str:
    page = client.get("/jobs")
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match is not None
    return match.group(1)


@pytest.fixture
def as_user(app: FastAPI) -> Callable[[str], TestClient]:
    """A signed-in client per user name (one cookie jar each, one app)."""

    def make(user: str) -> TestClient:
        client = TestClient(app, follow_redirects=False)
        resp = login(client, user)
        assert resp.status_code == 303, resp.text
        return client

    return make
