"""Privacy budgets end to end on a real federation: a partner whose cap cannot take a
second job refuses it at the handshake, the job runs without it, the refusal is in its
audit trail, and its ledger survives a restart of its node."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fedcollab.common.jobspec import load_job_spec
from fedcollab.common.keys import Signer
from fedcollab.common.schema import load_schema
from fedcollab.compliance.log import AuditLog
from fedcollab.coordinator.submit import follow, submit_job
from fedcollab.federation.local_federation import LocalFederation
from fedcollab.privacy.budget_ledger import BudgetLedger
from tests.support.integration import BIN, free_port, make_partners, node_port_base

pytestmark = pytest.mark.integration

# DP-SGD with q = 0.5, 2 steps per round, 2 rounds, plus the moments and the final
# evaluation (Gaussian releases, issue 13): each job alone is epsilon 1.5; two of them
# compose (RDP) to more than the cap of 2.
JOB = """
name = "{name}"
task = "purchase_prediction"
purpose = "purchase-prediction"
schema = "{schema}"
participants = {participants}
min_partners = 2
rounds = 2
round_timeout_s = 90.0
startup_timeout_s = {startup_timeout_s}

[evaluation]
early_stopping_patience = 0

[privacy]
dp = "sample"
target_epsilon = 1.5
sample_rate = 0.5

[privacy.value_bounds]
visits = [0.0, 20.0]
basket_value = [0.0, 200.0]
"""


def _job(
    path: Path, name: str, schema: Path, participants: list[str], *, startup_timeout_s: float
) -> Path:
    path.write_text(
        JOB.format(
            name=name,
            schema=schema,
            participants=json.dumps(participants),
            startup_timeout_s=startup_timeout_s,
        )
    )
    return path


def _log(fed: LocalFederation, partner: str) -> list[dict[str, Any]]:
    node = fed.ws.node_dir(partner)
    with AuditLog.open(
        node / "audit.db", origin=partner, signer=Signer.load(node / "audit.key")
    ) as log:
        return [json.loads(e) for e in log.entries()]


def test_budget_refusal_survives_restart(
    tmp_path_factory: pytest.TempPathFactory, tool_path: None, tmp_path: Path
) -> None:
    root = tmp_path_factory.mktemp("fed-budget")
    partners = make_partners(root, 3)
    names = [p.partner for p in partners]
    capped = names[2]
    with LocalFederation(
        root / "federation", partners, port=free_port(), node_port_base=node_port_base()
    ) as fed:
        for src in partners:
            cap = "2" if src.partner == capped else "100"
            subprocess.run(
                [str(BIN / "fedcollab"), "budget", "set", "--dataset",
                 load_schema(src.schema).dataset, "--epsilon", cap,
                 "--ledger", str(fed.budget_db(src.partner))],
                check=True, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
        fed.wait_online()
        first = tmp_path / "first"
        spec_a = load_job_spec(
            _job(tmp_path / "a.toml", "dp-a", partners[0].schema, names, startup_timeout_s=45.0)
        )
        submit_job(fed.ws, spec_a, first)
        end = follow(first, on_event=lambda _e: None, timeout_s=900)
        assert end["status"] == "completed", end
        m1 = json.loads((first / "metrics.json").read_text())
        assert 0 < m1["epsilon"] <= 1.5 + 1e-9
        assert (
            sorted(p for p in json.loads((first / "model_card.json").read_text())["completed_by"])
            == names
        )

        dataset = load_schema(partners[2].schema).dataset
        with BudgetLedger.open(fed.budget_db(capped)) as ledger:
            before = ledger.budget(dataset)
        assert before.charges == 4  # moments, each round, the final evaluation: once each
        assert before.spent_epsilon == pytest.approx(1.5, abs=1e-6)

        fed.restart_node(capped)  # the ledger is on disk; nothing is recreated
        fed.wait_online()

        second = tmp_path / "second"
        # The capped partner refuses at the handshake, so the coordinator waits out the
        # whole start-up timeout for it. Every node is online (waited for above) and the
        # first poll's handshake waits for each reply on its own timeout, so the job
        # needs no margin here for slow start-up.
        spec_b = load_job_spec(
            _job(tmp_path / "b.toml", "dp-b", partners[0].schema, names, startup_timeout_s=10.0)
        )
        submit_job(fed.ws, spec_b, second)
        end = follow(second, on_event=lambda _e: None, timeout_s=900)
        assert end["status"] == "completed", end
        m2 = json.loads((second / "metrics.json").read_text())
        refused = {r["partner"]: r["reason"] for r in m2["refused"]}
        assert "BudgetExceededError" in refused[capped]
        card = json.loads((second / "model_card.json").read_text())
        assert capped not in card["completed_by"]
        assert sorted(card["completed_by"]) == sorted(names[:2])

        with BudgetLedger.open(fed.budget_db(capped)) as ledger:
            after = ledger.budget(dataset)
        assert after == before  # nothing charged for the refused job

        trail = _log(fed, capped)
        spent = [e for e in trail if e["type"] == "privacy.spent"]
        assert [e["body"]["job"] for e in spent] == ["dp-a"] * 4
        assert [e["body"]["step"] for e in spent] == [
            "moments", "round-1", "round-2", "final-evaluation"
        ]  # fmt: skip
        assert spent[-1]["body"]["cumulative_epsilon"] == pytest.approx(1.5, abs=1e-5)
        refusals = [e for e in trail if e["type"] == "request.refused"]
        assert refusals and refusals[-1]["body"]["error"] == "BudgetExceededError"
        assert refusals[-1]["body"]["job"] == "dp-b"
        # The other partners spent both jobs on their own (uncapped) datasets: 4 charges
        # per job (moments, 2 rounds, final evaluation).
        with BudgetLedger.open(fed.budget_db(names[0])) as ledger:
            assert ledger.budget(load_schema(partners[0].schema).dataset).charges == 2 * 4
