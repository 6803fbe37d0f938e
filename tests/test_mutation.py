"""The suite measures its own strength: every mutant of the NumPy backend (one planted bug each) is caught."""

from __future__ import annotations

import pytest
from cnnkit_numpy.mutants import MUTANTS

from cnnkit.conformance.mutation import self_check
from cnnkit.ops import BUILTIN_SPECS


@pytest.fixture(scope="module")
def report():
    return self_check(MUTANTS)


def test_every_mutant_is_caught(report):
    assert report.survivors == [], report.format()
    assert report.kill_rate == 1.0


def test_the_mutants_cover_every_op_and_every_class_of_bug():
    assert len(MUTANTS) >= 40
    # an op whose output is integer indices has error contracts only: no kernel bug to catch
    assert {m.op for m in MUTANTS} == {s.name for s in BUILTIN_SPECS if not getattr(s, "index_output", False)}
    assert {m.kind for m in MUTANTS} >= {"value", "gradient", "layout", "dtype", "aliasing", "size"}
    for op in {m.op for m in MUTANTS}:
        kinds = {m.kind for m in MUTANTS if m.op == op}
        assert {"value", "gradient"} & kinds, op  # every op has a forward or backward bug
    assert len({m.name for m in MUTANTS}) == len(MUTANTS)


def test_each_class_is_caught_by_the_check_written_for_it(report):
    # a layout bug shows in the layouts check, a view or reused buffer in memory or values
    for m in MUTANTS:
        if m.kind == "layout":
            assert report.caught[m.name] == "layouts", (m.name, report.evidence[m.name])
    assert report.caught["flatten-returns-view"] == "memory"
    assert report.caught["max_pool-winner-wraps-at-256"] == "backward"
    assert "65537" in report.evidence["max_pool-winner-wraps-at-256"]
    assert "chunks" in report.evidence["conv-chunk-tail-dropped"]


def test_without_the_new_checks_the_layout_and_aliasing_bugs_survive():
    # the suite as it was: forward, backward and properties only
    old = self_check(
        [m for m in MUTANTS if m.kind in ("layout", "aliasing")], checks=("forward", "backward", "properties")
    )
    survivors = set(old.survivors)
    assert {
        "conv-assumes-contiguous",
        "conv-negative-strides-flipped",
        "linear-assumes-contiguous",
    } <= survivors
    assert {"flatten-returns-view", "flatten-grad-view-of-delta"} <= survivors
