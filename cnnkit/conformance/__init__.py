"""The conformance suite: the same cases, run against every registered backend.

- :mod:`cnnkit.conformance.cases`: the cases as data (:class:`Case`, :class:`Random`);
  each op's cases, properties and oracle live in its record (:mod:`cnnkit.ops`).
- :mod:`cnnkit.conformance.runner`: plan, run and report (shared by pytest and the CLI).
- :mod:`cnnkit.conformance.pytest_plugin`: the pytest options and the terminal report.

Point the suite at a backend in one line (see ``README.md`` beside this file)::

    pytest --pyargs cnnkit.conformance --cnnkit-backend mybackend -n 2
"""

from cnnkit.conformance.cases import Case, Random
from cnnkit.conformance.runner import (
    Item,
    Outcome,
    Report,
    Target,
    XfailList,
    all_cases,
    coverage,
    get_case,
    plan,
    run,
    run_case,
    run_item,
)

__all__ = [
    "Case",
    "Item",
    "Outcome",
    "Random",
    "Report",
    "Target",
    "XfailList",
    "all_cases",
    "coverage",
    "get_case",
    "plan",
    "run",
    "run_case",
    "run_item",
]
