"""client.admission: the checks a partner makes before it computes anything.

The request path that runs them in order (client.client_app._serve) is attacked in
tests/adversarial/ (test_run_contract.py, test_dp_releases.py); here each check is
driven alone, with a real ledger and real run contract, to show what it decides on:
the node's own settings and state, never the request's claims.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedcollab.client.admission import check_contributions, check_dp_policy
from fedcollab.client.run_contract import RunContract
from fedcollab.common.errors import CiphertextError, PolicyRefusal
from fedcollab.common.serde import decode, encode
from fedcollab.privacy.budget_ledger import BudgetLedger
from tests.support.adversarial import job

PLAIN = job()
DP = job(privacy={"dp": "sample", "target_epsilon": 3.0})


def _capped(tmp_path: Path, dataset: str) -> dict[str, str]:
    db = tmp_path / "budget.db"
    with BudgetLedger.open(db) as ledger:
        ledger.set_cap(dataset, epsilon_cap=5.0, delta=1e-5)
    return {"budget-db": str(db)}


def test_dp_only_refuses_a_job_without_dp_and_admits_a_dp_job(tmp_path: Path) -> None:
    config = {"dp-only": "true"}
    with pytest.raises(PolicyRefusal, match="serves only differentially private jobs"):
        check_dp_policy(config, PLAIN, dataset="shop")
    check_dp_policy(config, DP, dataset="shop")


def test_auto_refuses_a_job_without_dp_only_on_a_capped_dataset(tmp_path: Path) -> None:
    config = _capped(tmp_path, "shop")
    with pytest.raises(PolicyRefusal, match="has a privacy-budget cap"):
        check_dp_policy(config, PLAIN, dataset="shop")
    check_dp_policy(config, PLAIN, dataset="other")  # no cap on this one: exact is allowed
    check_dp_policy({}, PLAIN, dataset="shop")  # no ledger at all


def test_a_partner_may_allow_exact_jobs_on_a_capped_dataset(tmp_path: Path) -> None:
    check_dp_policy({**_capped(tmp_path, "shop"), "dp-only": "false"}, PLAIN, dataset="shop")


def test_a_decryption_of_a_step_this_node_did_not_answer_is_refused(tmp_path: Path) -> None:
    contract = RunContract(tmp_path / "contract.db")
    payload = decode(
        encode(
            {
                "he": {
                    "step": "round-1",
                    "contributors": ["a", "b"],
                    "params": "wide",
                    "length": 4,
                    "key_digest": "0" * 64,
                },
                "bindings": [None, None],
            }
        )
    )
    with pytest.raises(CiphertextError, match="did not answer step 'round-1'"):
        check_contributions(contract, {}, run="run-1", payload=payload)
