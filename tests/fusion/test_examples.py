"""The runnable examples in the fusion docstrings must keep working."""

from __future__ import annotations

import doctest
import importlib

import pytest

import fusion

MODULES = [
    "fusion.crowd_staple",
    "fusion.majority_vote",
    "fusion.metrics",
    "fusion.multilabel_staple",
    "fusion.reliability",
    "fusion.staple",
    "fusion.weighted_vote",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"np": pytest.importorskip("numpy")})
    assert result.attempted > 0, f"{name} has no runnable example"
    assert result.failed == 0


def test_public_api() -> None:
    for name in fusion.__all__:
        assert hasattr(fusion, name), name
    for name in ("MajorityVote", "WeightedVote", "Staple", "MultiLabelStaple", "CrowdStaple"):
        assert name in fusion.__all__
