"""The conformance suite as one parametrized test (collected by ``pytest --pyargs cnnkit.conformance``).

The ``cnnkit`` pytest plugin (:mod:`cnnkit.conformance.pytest_plugin`)
parametrizes ``cnnkit_conformance_item`` with every backend x dtype x device x
case x check; each item runs through :func:`cnnkit.conformance.runner.run_item`.
"""

from __future__ import annotations

from typing import Any

from cnnkit.conformance.pytest_plugin import check


def test_conformance(cnnkit_conformance_item: Any, record_property: Any) -> None:
    check(cnnkit_conformance_item, record_property)
