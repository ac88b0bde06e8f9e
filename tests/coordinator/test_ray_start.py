"""Starting Ray for the simulation engine: a real start, and the retry on a timed-out one.

Ray's startup timeout cannot be provoked on demand (it needs a machine too loaded for
its raylet to register within 30 s), so the retry tests pass ``init`` functions that
raise Ray's own message; the first test starts the real Ray.
"""

from __future__ import annotations

from typing import Any

import pytest
import ray

from fedcollab.common.errors import FederationError
from fedcollab.coordinator import ray_start
from fedcollab.coordinator.ray_start import ATTEMPTS, start_ray

RAY_TIMEOUT = (
    "The current node timed out during startup. This could happen because some of the "
    "raylet failed to startup or the GCS has become overloaded."
)


def test_a_real_start_is_reused_and_leaves_nothing_after_shutdown() -> None:
    assert not ray.is_initialized()
    try:
        assert start_ray({"num_cpus": 1, "num_gpus": 0, "log_to_driver": False})
        assert ray.is_initialized() and ray_start._ray_children() != []
        assert not start_ray({"num_cpus": 1})  # already running: Flower's backend reuses it
    finally:
        ray.shutdown()
    assert ray_start._ray_children() == []


class _Init:
    def __init__(self, failures: list[BaseException]) -> None:
        self.failures, self.calls = failures, []  # type: ignore[var-annotated]

    def __call__(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)
        if self.failures:
            raise self.failures.pop(0)


def test_a_timed_out_start_is_retried_with_flowers_arguments() -> None:
    init = _Init([Exception(RAY_TIMEOUT), Exception(RAY_TIMEOUT)])
    assert start_ray({"num_cpus": 2}, init=init)
    assert len(init.calls) == 3
    for call in init.calls:
        assert call["num_cpus"] == 2 and call["include_dashboard"] is False
        assert "PYTHONPATH" in call["runtime_env"]["env_vars"]


def test_it_gives_up_with_a_federation_error_after_the_last_attempt() -> None:
    init = _Init([Exception(RAY_TIMEOUT)] * ATTEMPTS)
    with pytest.raises(FederationError) as info:
        start_ray({"num_cpus": 1}, init=init)
    assert len(init.calls) == ATTEMPTS and "timed out" in str(info.value)
    assert "less busy" in info.value.hint


def test_any_other_failure_is_not_retried() -> None:
    init = _Init([ValueError("bad argument")])
    with pytest.raises(ValueError, match="bad argument"):
        start_ray({"num_cpus": 1}, init=init)
    assert len(init.calls) == 1
