"""protocols.segment_labels: lift, distinguishing columns, label and description."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from fedcollab.common.errors import ProtocolError
from fedcollab.protocols.segment_labels import describe_segments, segments_csv

MEANS = {"PageValues": 6.0, "Duration": 1000.0, "BounceRates": 0.02}
STDS = {"PageValues": 10.0, "Duration": 800.0, "BounceRates": 0.02}


def _profiles() -> list[dict[str, Any]]:
    return [
        {"segment": 0, "size": 100, "share": 0.1, "purchase_rate": 0.4,
         "means": {"PageValues": 18.0, "Duration": 4600.0, "BounceRates": 0.01}},
        {"segment": 1, "size": 500, "share": 0.5, "purchase_rate": 0.1,
         "means": {"PageValues": 4.0, "Duration": 900.0, "BounceRates": 0.02}},
        {"segment": 2, "size": 400, "share": 0.4, "purchase_rate": 0.05,
         "means": {"PageValues": 0.0, "Duration": 300.0, "BounceRates": 0.09}},
    ]  # fmt: skip


def test_lift_label_description() -> None:
    out = describe_segments(_profiles(), overall_means=MEANS, overall_stds=STDS)
    overall = (100 * 0.4 + 500 * 0.1 + 400 * 0.05) / 1000  # 0.11
    assert [s["lift"] for s in out] == [pytest.approx(0.4 / overall, abs=1e-4),
                                        pytest.approx(0.1 / overall, abs=1e-4),
                                        pytest.approx(0.05 / overall, abs=1e-4)]  # fmt: skip
    top = out[0]
    assert top["label"] == "High-converting mid-size: high Duration, high PageValues"
    assert top["description"] == (
        "Duration 4.6x the average, PageValues 3.0x, BounceRates 0.5x; "
        "purchase rate 40% vs 11% overall"
    )
    d = top["distinguishing"][0]
    assert d == {"column": "Duration", "segment_mean": 4600.0, "overall_mean": 1000.0,
                 "ratio": 4.6, "z": 4.5}  # fmt: skip
    assert out[1]["label"] == "Average-converting core: typical profile"
    assert out[2]["label"].startswith("Low-converting core: high BounceRates, low Duration")
    for before, after in zip(_profiles(), out, strict=True):
        assert {k: after[k] for k in before} == before  # the original keys are kept


def test_dp_profiles_without_rates_or_means() -> None:
    profiles = _profiles()
    profiles[0]["means"]["PageValues"] = None
    for p in profiles:
        p["purchase_rate"] = None
    out = describe_segments(profiles, overall_means=MEANS, overall_stds=STDS)
    assert out[0]["lift"] is None and out[0]["label"].startswith("Unlabelled mid-size")
    assert "PageValues" not in {d["column"] for d in out[0]["distinguishing"]}
    assert "purchase rate" not in out[0]["description"]
    with pytest.raises(ProtocolError):
        describe_segments([{"segment": 0}], overall_means=MEANS, overall_stds=STDS)


def test_ratio_falls_back_to_z_for_non_positive_means() -> None:
    prof = [{"segment": 0, "size": 10, "share": 1.0, "purchase_rate": 0.5,
             "means": {"Delta": 1.5}}]  # fmt: skip
    out = describe_segments(prof, overall_means={"Delta": -0.5}, overall_stds={"Delta": 1.0})
    assert out[0]["distinguishing"][0]["ratio"] is None
    assert out[0]["description"].startswith("Delta +2.0 SD")
    assert out[0]["lift"] == 1.0


def test_segments_csv() -> None:
    out = describe_segments(_profiles(), overall_means=MEANS, overall_stds=STDS)
    rows = list(csv.DictReader(io.StringIO(segments_csv(out))))
    assert list(rows[0]) == ["segment", "label", "size", "share", "purchase_rate", "lift",
                             "description", "BounceRates", "Duration", "PageValues"]  # fmt: skip
    assert rows[0]["label"] == out[0]["label"] and rows[2]["PageValues"] == "0.0"
