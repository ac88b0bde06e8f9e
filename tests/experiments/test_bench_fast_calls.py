"""experiments/bench_fast_calls.py: the two modes it compares and its ratios."""

from __future__ import annotations

import os

import pytest

from experiments import bench_fast_calls
from experiments.bench_fast_calls import MODES, ratios
from fedcollab.common.protobuf_fast import ENV, enabled


def test_the_modes_are_flower_s_app_layers_and_the_fast_calls() -> None:
    assert MODES == {"app_layers": "0", "fast_calls": None}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_each_mode_runs_its_federation_with_its_setting(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    monkeypatch.setattr(bench_fast_calls, "_deployment", lambda *_a: seen.append(enabled()) or {})
    monkeypatch.setenv(ENV, "1")
    bench_fast_calls._run(mode, None, None, None)  # type: ignore[arg-type]
    assert seen == [mode == "fast_calls"]
    assert os.environ[ENV] == "1"  # restored


def test_the_ratios_are_fast_over_layers() -> None:
    r = ratios({"median_round_s": 1.0, "cpu_per_round_s": {"x": 2.0}},
               {"median_round_s": 0.5, "cpu_per_round_s": {"x": 1.0}})  # fmt: skip
    assert r == {"median_round": 0.5, "cpu_per_round": 0.5}


@pytest.mark.parametrize("mode", ["executor_process", "executor_thread"])
def test_the_executor_comparison_runs_each_mode_with_its_executor(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedcollab.client.runtime_local import EXECUTOR_ENV, in_process

    seen: list[bool] = []
    monkeypatch.setattr(
        bench_fast_calls, "_deployment", lambda *_a: seen.append(in_process()) or {}
    )
    monkeypatch.setenv(EXECUTOR_ENV, "thread")
    bench_fast_calls._run(mode, None, None, None, "executor")  # type: ignore[arg-type]
    assert seen == [mode == "executor_thread"]
    assert os.environ[EXECUTOR_ENV] == "thread"  # restored
