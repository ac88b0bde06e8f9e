"""The demo's job files load back as exactly the jobs the demo submits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedcollab.common.jobspec import load_job_spec
from fedcollab.demo.horizontal import DATA_DIR
from fedcollab.demo.run import (
    KILL_AFTER_ROUND,
    _demo_jobs,
    _dp_job,
    _vertical_jobs,
    _write_job_file,
    _write_vertical_job_file,
    mid_job_killer,
)
from fedcollab.demo.vertical import prepare_vertical


def test_demo_job_files_round_trip(tmp_path: Path) -> None:
    schema = DATA_DIR / "online_shoppers.schema.json"
    brands = tuple(f"region-{i}" for i in (2, 9, 1, 3, 4, 5, 6, 7, 8))
    prediction, segmentation = _demo_jobs(schema, brands=brands)
    jobs = (prediction, segmentation, _dp_job(prediction))
    for spec in jobs:
        path = tmp_path / f"{spec.name}.toml"
        _write_job_file(spec, schema, path)
        assert load_job_spec(path).to_json() == spec.to_json()
    assert all(spec.privacy.encrypted for spec in jobs)
    assert jobs[2].privacy.dp == "sample" and jobs[2].privacy.target_epsilon == 3.0
    # Issue 14: every encrypted job sums under masks inside CKKS.
    assert [j.privacy.aggregation for j in jobs] == ["ckks+masked"] * 3
    assert prediction.rounds > KILL_AFTER_ROUND + 1  # rounds are left after the kill
    # Issue 14: the spec pins the dealer (the first brand by name), the one the demo kills.
    assert {j.privacy.key_dealer for j in jobs} == {"region-1"}
    plain, _ = _demo_jobs(schema, brands=brands, encrypted=False)
    assert not plain.privacy.encrypted


def test_demo_vertical_job_files_round_trip(tmp_path: Path) -> None:
    sources = prepare_vertical(tmp_path / "parties")
    training, scoring = _vertical_jobs(sources, encrypted=True)
    for spec in (training, scoring):
        path = tmp_path / f"{spec.name}.toml"
        _write_vertical_job_file(spec, sources, path)
        assert load_job_spec(path).to_json() == spec.to_json()
        assert spec.task == "vertical" and spec.privacy.encrypted
        assert spec.vertical.label_holder == "platform"
    assert scoring.vertical.predict_with == training.name


def test_the_demo_kills_one_partner_once_at_its_round() -> None:
    seen: list[Any] = []
    kills: list[str] = []
    on_event, killed = mid_job_killer(
        lambda: kills.append("victim"), after_round=2, on_event=seen.append
    )
    events = [{"event": "partners"}, {"event": "round", "round": 1}]
    events += [{"event": "round", "round": 2}, {"event": "dropout", "partner": "victim"}]
    events += [{"event": "round", "round": 2}, {"event": "round", "round": 3}]
    for i, event in enumerate(events):
        on_event(event)
        assert killed() == (i >= 2)
    assert kills == ["victim"] and seen == events  # every event passed on, one kill
