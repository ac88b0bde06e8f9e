"""The examples in the protocol module docstrings run and are correct."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "fedcollab.protocols.vector_sum",
    "fedcollab.protocols.preprocessing",
    "fedcollab.protocols.fedavg",
    "fedcollab.protocols.early_stopping",
    "fedcollab.protocols.attribution",
    "fedcollab.protocols.segment_labels",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
