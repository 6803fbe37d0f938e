"""Conformance cases as data: :class:`Case` and :class:`Random`, and helpers to build them.

A :class:`Case` names an op, its inputs (literal arrays or seeded
:class:`Random` specs), its attributes as a user writes them and, where known,
its golden output. Each op's cases live in its record
(:meth:`cnnkit.spec.OpSpec.cases`, the families of :mod:`cnnkit.ops`); a plugin
brings cases with its op's record or through
:func:`cnnkit.hookspecs.cnnkit_conformance_cases`. The suite runs every case
against every backend that implements the op (see
:mod:`cnnkit.conformance.runner`).

Rebuild any case by its id::

    from cnnkit.conformance import get_case
    case = get_case("conv2d-stride2-pad1")
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Case", "Random", "Seeds", "error_cases", "pad_id", "per_axis"]


@dataclass(frozen=True)
class Random:
    """An input drawn from a seeded generator: ``uniform(low, high)`` floats, or ints in ``[low, high)``.

    Attributes:
        shape: the array's shape.
        seed: the generator's seed; the same seed gives the same array everywhere.
        low, high: the range of the values.
        integer: draw int64 class indices instead of floats.
        dtype: a fixed dtype that the suite's float32/float64 sweep does not
            change (for error cases that need mismatched dtypes).
    """

    shape: tuple[int, ...]
    seed: int = 0
    low: float = -1.0
    high: float = 1.0
    integer: bool = False
    dtype: str | None = None

    def make(self, dtype: str = "float64") -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        if self.integer:
            return rng.integers(int(self.low), int(self.high), size=self.shape, dtype=np.int64)
        return rng.uniform(self.low, self.high, size=self.shape).astype(self.dtype or dtype)


@dataclass(frozen=True)
class Case:
    """One conformance case.

    Attributes:
        id: a readable id, e.g. ``conv2d-stride2-pad1-groups2``.
        op: the op kind the case exercises.
        inputs: one entry per op input: a literal array (nested lists are fine),
            a :class:`Random`, or ``None`` for an absent optional input.
            Floating literals follow the suite's dtype; integer NumPy arrays
            keep theirs.
        attrs: the attributes, in the form a user passes them.
        expected: the golden output, where it is known.
        raises: for error-contract cases, the exception type every backend must raise.
        tags: free-form labels used for selection (``"golden"``, ``"lecture"``, ...).
        match: for error cases, a regular expression the message must contain.
        grad_output: the output gradient the backward check feeds (a literal);
            ``None`` draws a seeded random one.
        expected_grads: golden input gradients for ``grad_output``, one per
            input (``None`` where unknown or absent).
        differentiable: ``False`` where the inputs sit on a kink or a tie, so
            finite differences mean nothing; the backward check then compares
            with ``expected_grads`` and the reference backend only.
    """

    id: str
    op: str
    inputs: tuple[Any, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    expected: Any = None
    raises: type[BaseException] | None = None
    tags: tuple[str, ...] = ()
    match: str | None = None
    grad_output: Any = None
    expected_grads: tuple[Any, ...] | None = None
    differentiable: bool = True

    @property
    def rebuild(self) -> str:
        """One line of Python that rebuilds this case."""
        return f'from cnnkit.conformance import get_case; case = get_case("{self.id}")'


class Seeds:
    """Successive seeds for a family's random inputs, so that its cases never share one.

    Example:
        >>> rand = Seeds(1000)
        >>> rand(2, 3).seed, rand(4).seed
        (1000, 1001)
    """

    def __init__(self, start: int) -> None:
        self._next = iter(range(start, start + 1_000_000))

    def __call__(self, *shape: int, low: float = -1.0, high: float = 1.0) -> Random:
        """A :class:`Random` input of ``shape`` with the next seed."""
        return Random(tuple(shape), seed=next(self._next), low=low, high=high)

    def integers(self, *shape: int, high: int) -> Random:
        """Class indices in ``[0, high)`` with the next seed."""
        return Random(tuple(shape), seed=next(self._next), low=0, high=high, integer=True)


def pad_id(padding: Any) -> str:
    """The id fragment of a padding argument: ``pad1``, ``same``, ``pad01x21``."""
    if isinstance(padding, str):
        return padding
    if isinstance(padding, int):
        return f"pad{padding}"
    parts = []
    for p in padding:
        parts.append(f"{p[0]}{p[1]}" if isinstance(p, tuple) else str(p))
    return "pad" + "x".join(parts)


def per_axis(d: int, values: tuple) -> tuple:
    """``values`` cycled to one entry per spatial axis."""
    return tuple(values[i % len(values)] for i in range(d))


def error_cases(bad: list[tuple]) -> Iterator[Case]:
    """Error-contract cases from ``(id, op, inputs, attrs, exception, match)`` rows."""
    for case_id, op, inputs, attrs, exc, match in bad:
        yield Case(case_id, op, inputs, attrs, raises=exc, match=match, tags=("error",))
