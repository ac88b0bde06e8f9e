"""The vertical scenario's parties and jobs, on the shipped credit-default data.

The UCI "Default of Credit Card Clients" data (data/ATTRIBUTION.md) stands in
for the platform + payment + brand scenario: one row per customer, split by
column over three parties that each hold a different random share of the
customers, so the parties must find their common customers by PSI first:

==========  ===============================================  ==========
party       columns                                          customers
==========  ===============================================  ==========
platform    LIMIT_BAL, SEX, EDUCATION, MARRIAGE, AGE; label  100%
payment     PAY_0, PAY_2..PAY_6 (repayment status),          80%
            PAY_AMT1..PAY_AMT6 (amounts paid)
billing     BILL_AMT1..BILL_AMT6 (statement amounts)         70%
==========  ===============================================  ==========
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedcollab.client.partner_data import PartnerSource
from fedcollab.common.jobspec import JobSpec
from fedcollab.common.schema import load_schema
from fedcollab.common.split import VerticalParty, split_vertical

__all__ = ["LABEL_HOLDER", "PARTIES", "prepare_vertical", "vertical_job"]

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
LABEL_HOLDER = "platform"
PARTIES = (
    VerticalParty(
        "platform",
        columns=("LIMIT_BAL", "SEX", "EDUCATION", "MARRIAGE", "AGE"),
        overlap=1.0,
        has_label=True,
    ),
    VerticalParty(
        "payment",
        columns=(
            *("PAY_0", "PAY_2", "PAY_3", "PAY_4", "PAY_5", "PAY_6"),
            *(f"PAY_AMT{i}" for i in range(1, 7)),
        ),
        overlap=0.8,
    ),
    VerticalParty("billing", columns=tuple(f"BILL_AMT{i}" for i in range(1, 7)), overlap=0.7),
)


def prepare_vertical(
    out: Path, *, parties: Sequence[VerticalParty] = PARTIES, seed: int = 0
) -> list[PartnerSource]:
    """Split the credit-default data into one CSV + schema per party (reused if there)."""
    if not all((out / f"{p.name}.schema.json").exists() for p in parties):
        split_vertical(
            DATA_DIR / "uci_credit_card_default.csv",
            load_schema(DATA_DIR / "credit_default.schema.json"),
            out,
            parties=parties,
            seed=seed,
            overwrite=True,
        )
    return [
        PartnerSource(
            partner=p.name, data=out / f"{p.name}.csv", schema=out / f"{p.name}.schema.json"
        )
        for p in parties
    ]


def vertical_job(
    sources: Sequence[PartnerSource],
    *,
    name: str = "payment-risk-vertical",
    model: str = "logreg",
    encrypted: bool = True,
    label_holder: str = LABEL_HOLDER,
    **vertical: Any,
) -> JobSpec:
    """A vertical job over ``sources`` (the label holder first or anywhere)."""
    parties = {
        s.partner: {
            "role": "label_holder" if s.partner == label_holder else "feature_party",
            "schema": load_schema(s.schema).to_json_dict(),
        }
        for s in sources
    }
    doc: dict[str, Any] = {
        "name": name,
        "task": "vertical",
        "purpose": "payment-risk-scoring",
        "schema": parties[label_holder]["schema"],
        "participants": sorted(parties),
        "min_partners": len(parties),
        "round_timeout_s": 300.0,
        "privacy": {"encryption": "ckks" if encrypted else "none"},
        "vertical": {"model": model, "parties": parties, **vertical},
    }
    return JobSpec.model_validate(doc, strict=False)
