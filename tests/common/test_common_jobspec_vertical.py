"""Vertical job specs: roles, per-party contracts, defaults and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcollab.common.errors import JobSpecError, SchemaError
from fedcollab.common.jobspec import load_job_spec
from fedcollab.demo.vertical import PARTIES, prepare_vertical, vertical_job


@pytest.fixture(scope="module")
def parties(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vertical")
    prepare_vertical(out)
    return out


def _write(root: Path, body: str) -> Path:
    path = root / "job.toml"
    path.write_text(body)
    return path


LH = 'role = "label_holder"\nschema = '
FP = 'role = "feature_party"\nschema = '
BASE = """
name = "risk"
task = "vertical"
purpose = "payment-risk-scoring"
[privacy]
encryption = "ckks"
[vertical]
iterations = 5
[vertical.parties.platform]
role = "label_holder"
schema = "platform.schema.json"
[vertical.parties.payment]
role = "feature_party"
schema = "payment.schema.json"
"""


def test_toml_embeds_each_party_contract_and_defaults_participants(parties: Path) -> None:
    spec = load_job_spec(_write(parties, BASE))
    assert spec.vertical.label_holder == "platform"
    assert spec.vertical.feature_parties == ["payment"]
    assert set(spec.participants) == {"platform", "payment"}
    assert spec.min_partners == 2
    pay = spec.vertical.parties["payment"].data_schema
    assert pay == json.loads((parties / "payment.schema.json").read_text())
    # The top-level contract is the label holder's.
    assert spec.data_schema["label_column"] == "default_payment_next_month"
    assert spec.from_json(spec.to_json()) == spec
    # Vertical jobs mask in their own protocol: their encrypted aggregation is "ckks".
    assert spec.privacy.aggregation == "ckks"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ((f'{LH}"platform', f'{FP}"platform'), "exactly one party"),
        ((f'{FP}"payment', f'{LH}"payment'), "exactly one party"),
        (("iterations = 5", "iterations = 5\nmodel = \"logreg\"\n[vertical.extra]"), "extra"),
        (('name = "risk"', 'name = "risk"\nmin_partners = 1'), "min_partners"),
        (('name = "risk"', 'name = "risk"\nparticipants = ["platform"]'), "participants"),
        (('encryption = "ckks"', 'encryption = "ckks"\naggregation = "ckks+masked"'),
         "horizontal jobs"),
    ],
)  # fmt: skip
def test_bad_vertical_specs_are_refused(parties: Path, edit: tuple[str, str], message: str) -> None:
    with pytest.raises(JobSpecError, match=message):
        load_job_spec(_write(parties, BASE.replace(*edit)))


def test_missing_party_schema_and_labelless_holder(parties: Path) -> None:
    with pytest.raises(JobSpecError, match="cannot read schema"):
        load_job_spec(_write(parties, BASE.replace("payment.schema.json", "nope.json")))
    with pytest.raises(JobSpecError, match="label_column"):
        load_job_spec(_write(parties, BASE.replace("platform.schema.json", "billing.schema.json")))
    bad = parties / "bad.schema.json"
    bad.write_text('{"version": 1, "dataset": "x", "id_column": "ID", "features": "no"}')
    with pytest.raises(SchemaError, match=r"vertical\.parties\.payment"):
        load_job_spec(_write(parties, BASE.replace("payment.schema.json", "bad.schema.json")))


def test_vertical_dp_needs_split_nn_and_horizontal_jobs_take_no_parties(parties: Path) -> None:
    body = BASE.replace(
        'encryption = "ckks"', 'encryption = "ckks"\ndp = "sample"\nnoise_multiplier = 1.0'
    )
    with pytest.raises(JobSpecError, match="split_nn"):
        load_job_spec(_write(parties, body))
    sources = prepare_vertical(parties)
    spec = vertical_job(sources)
    assert spec.vertical.feature_parties == sorted(p.name for p in PARTIES[1:])
    doc = json.loads(spec.to_json())
    doc["task"] = "purchase_prediction"
    with pytest.raises(ValueError, match="only for task"):
        type(spec).model_validate(doc, strict=False)


def test_joint_inference_serves_logistic_regression_only(parties: Path) -> None:
    spec = load_job_spec(
        _write(parties, BASE.replace("iterations = 5", 'iterations = 5\npredict_with = "risk"'))
    )
    assert spec.vertical.predict_with == "risk"
    with pytest.raises(JobSpecError, match="joint inference"):
        load_job_spec(
            _write(
                parties,
                BASE.replace(
                    "iterations = 5", 'iterations = 5\npredict_with = "risk"\nmodel = "split_nn"'
                ),
            )
        )
    with pytest.raises(JobSpecError, match="predict_with"):
        load_job_spec(
            _write(parties, BASE.replace("iterations = 5", 'iterations = 5\npredict_with = "../x"'))
        )
