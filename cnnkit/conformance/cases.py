"""Conformance cases as data (the case list grows here; this module registers them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnkit.hookspecs import hookimpl

__all__ = ["Case", "Random"]


@dataclass(frozen=True)
class Random:
    """An input drawn from a seeded generator: ``uniform(low, high)`` floats, or ints in ``[low, high)``."""

    shape: tuple[int, ...]
    seed: int = 0
    low: float = -1.0
    high: float = 1.0
    integer: bool = False

    def make(self, dtype: str = "float64") -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        if self.integer:
            return rng.integers(int(self.low), int(self.high), size=self.shape, dtype=np.int64)
        return rng.uniform(self.low, self.high, size=self.shape).astype(dtype)


@dataclass(frozen=True)
class Case:
    """One conformance case.

    Attributes:
        id: a readable id, e.g. ``conv2d-stride2-pad1-groups2``.
        op: the op kind the case exercises.
        inputs: one entry per op input: a literal array (nested lists are fine),
            a :class:`Random`, or ``None`` for an absent optional input.
        attrs: the attributes, in the form a user passes them.
        expected: the golden output, where it is known.
        raises: for error-contract cases, the exception type every backend must raise.
        tags: free-form labels used for selection (``"golden"``, ``"lecture"``, ...).
    """

    id: str
    op: str
    inputs: tuple[Any, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    expected: Any = None
    raises: type[BaseException] | None = None
    tags: tuple[str, ...] = ()


BUILTIN_CASES: tuple[Case, ...] = ()


@hookimpl
def cnnkit_conformance_cases(register):
    for case in BUILTIN_CASES:
        register(case)
