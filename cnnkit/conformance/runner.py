"""The conformance runner: plan (backend, dtype, device) x case x check items, run them, report.

Both the pytest plugin (:mod:`cnnkit.conformance.pytest_plugin`) and the
``cnnkit conformance`` command run items through :func:`run_item`; nothing
here depends on pytest.

An item is one check of one case on one *target* (a backend, a dtype and a
device); its id reads ``numpy-float64-cpu-conv2d-stride2-pad1::forward``. The
checks:

``forward``
    the output's shape is the spec's output shape and its dtype the input's;
    its values match the golden output (``Case.expected``), the op record's
    oracle (:meth:`cnnkit.spec.OpSpec.oracle`) and the reference backend's output.
``backward``
    the manual gradients (through :func:`cnnkit.vjp`) have the inputs' shapes
    and dtypes and match central finite differences (float64, along random
    directions, to 1e-6 relative), the golden gradients and the reference
    backend's backward.
``properties``
    what the lecture states, as each op's record lists it
    (:attr:`cnnkit.spec.OpSpec.properties`): linearity of a convolution in x
    and in W, ``flip=True`` equals cross-correlation with ``rot180(W)``,
    translation equivariance at stride 1, pooling invariants, NaN/inf propagation.
``raises``
    an error case raises the expected type, with the same message as on the
    reference backend.

Statuses: ``passed``, ``failed``, ``skipped`` (backend or reference
unavailable, nothing to compare), ``not-implemented`` (the backend has no
kernel for the op: reported, never a failure), and, with a known-failure list,
``xfailed`` and ``xpassed`` (a stale entry, counted as a failure).
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.conformance.cases import Case, Random
from cnnkit.dispatch import call, vjp
from cnnkit.errors import BackendUnavailableError
from cnnkit.registry import Registry, get_registry
from cnnkit.spec import OpSpec, PropertySkip, TensorInfo

__all__ = [
    "CHECKS",
    "DTYPES",
    "REFERENCE_BACKEND",
    "CheckFailure",
    "Item",
    "Outcome",
    "Report",
    "Target",
    "XfailList",
    "all_cases",
    "collect",
    "coverage",
    "get_case",
    "plan",
    "run",
    "run_case",
    "run_item",
]

#: The backend every other backend is compared with.
REFERENCE_BACKEND = "numpy"
DTYPES = ("float32", "float64")
CHECKS = ("forward", "backward", "properties", "memory", "layouts", "raises")
#: The checks that do not depend on the dtype run in float64 only.
DTYPE_FREE_CHECKS = ("memory", "layouts")
#: The views every input and ``grad_output`` are tried as in the ``layouts`` check.
LAYOUTS = ("strided", "transposed", "negative-stride", "broadcast")
#: (rtol, atol): an entry may be off by ``atol * max(1, max|expected|) + rtol * |expected|``.
#: float64 is tight enough to tell float64 arithmetic from float32 rounding (about 6e-8 relative).
TOLERANCES = {"float64": (1e-10, 1e-12), "float32": (1e-4, 1e-5), "float16": (1e-2, 1e-3)}
#: Finite differences: step, and the relative agreement asked of the directional derivatives.
FD_STEP, FD_RTOL, FD_DIRECTIONS = 1e-6, 1e-6, 2

#: The thread pools a conformance run sizes: one thread per process unless the user set them.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

STATUSES = ("passed", "failed", "skipped", "not-implemented", "xfailed", "xpassed")


class CheckFailure(AssertionError):
    """A check found a difference; the message says what, where, and how to rebuild the case."""

    def __init__(self, message: str, max_error: float | None = None) -> None:
        super().__init__(message)
        self.max_error = max_error


_Skip = PropertySkip  # a check that does not apply: the item is skipped


# -- cases -------------------------------------------------------------------------------------


def all_cases(registry: Registry | None = None) -> list[Case]:
    """Every registered case: the core's and every plugin's, in registration order."""
    return list((registry or get_registry()).conformance_cases())


def get_case(case_id: str, registry: Registry | None = None) -> Case:
    """The registered case with id ``case_id``.

    Example:
        >>> from cnnkit.conformance import get_case
        >>> get_case("conv2d-lecture-sobel-flip-same").attrs["padding"]
        'same'
    """
    for case in all_cases(registry):
        if case.id == case_id:
            return case
    raise KeyError(f"no conformance case {case_id!r}; see cnnkit.conformance.all_cases() for the ids")


def _matches(patterns: Sequence[str], *names: str) -> bool:
    return any(fnmatch.fnmatchcase(n, p) for p in patterns for n in names)


def select_cases(
    cases: Iterable[Case], include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> list[Case]:
    """The cases whose id matches some ``include`` pattern (all when none) and no ``exclude`` pattern."""
    return [
        c
        for c in cases
        if (not include or _matches(include, c.id)) and not (exclude and _matches(exclude, c.id))
    ]


# -- plan --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A backend, a dtype and a device: the unit a report's rows are made of."""

    backend: str
    dtype: str
    device: str = "cpu"

    @property
    def id(self) -> str:
        return f"{self.backend}-{self.dtype}-{self.device}"


@dataclass(frozen=True)
class Item:
    """One check of one case on one target."""

    target: Target
    case: Case = field(compare=False)
    check: str
    case_id: str = ""

    @property
    def id(self) -> str:
        return f"{self.target.id}-{self.case.id}::{self.check}"


def checks_for(case: Case, registry: Registry | None = None, dtype: str = "float64") -> tuple[str, ...]:
    """The checks an item list holds for ``case`` in ``dtype``."""
    if case.raises is not None:
        return ("raises",)
    checks: tuple[str, ...] = ("forward", "backward")
    spec = (registry or get_registry()).ops().get(case.op)
    if spec is not None and spec.properties:
        checks += ("properties",)
    return checks + DTYPE_FREE_CHECKS if dtype == "float64" else checks


def _backend_options(registry: Registry, name: str, device: str) -> dict[str, Any]:
    info = registry.backend_infos()[name]
    return {"device": device} if "device" in info.options and device != "cpu" else {}


def _implemented(registry: Registry, name: str) -> set[str] | None:
    """The ops backend ``name`` implements, or ``None`` when it cannot load (its items say so)."""
    try:
        registry.backend(name)
    except (BackendUnavailableError, ImportError):
        return None
    return set(registry.kernels(name))


def _devices(registry: Registry, name: str) -> list[str]:
    try:
        return list(registry.backend(name).devices())
    except (BackendUnavailableError, ImportError):
        return ["cpu"]


def plan(
    backends: Sequence[str] | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    *,
    dtypes: Sequence[str] = DTYPES,
    registry: Registry | None = None,
) -> list[Item]:
    """Every item to run: backend x dtype x device x case x check.

    Args:
        backends: the backends to check (default: every registered one, sorted).
        include, exclude: fnmatch patterns on case ids.
        dtypes: the floating dtypes to sweep.
        registry: the registry to read (default: the process-wide one).

    Raises:
        KeyError: a named backend is not registered (the message lists those that are).
    """
    registry = registry or get_registry()
    infos = registry.backend_infos()
    names = list(backends) if backends else sorted(infos)
    unknown = [n for n in names if n not in infos]
    if unknown:
        raise KeyError(f"unknown backend(s) {unknown}; registered backends: {', '.join(sorted(infos))}")
    cases = select_cases(all_cases(registry), include, exclude)
    items = []
    for name in names:
        implemented = _implemented(registry, name)
        for device in _devices(registry, name):
            for dtype in dtypes:
                target = Target(name, dtype, device)
                for case in cases:
                    if implemented is not None and case.op not in implemented:
                        continue  # the coverage line names what the backend lacks
                    items.extend(
                        Item(target, case, check, case.id) for check in checks_for(case, registry, dtype)
                    )
    return items


# -- known failures --------------------------------------------------------------------------


@dataclass
class XfailList:
    """Known failures: ``pattern  # reason`` per line, matched (fnmatch) against item ids and case ids.

    An entry that matches an item which now passes is *stale*: the item is
    reported ``xpassed`` and counts as a failure, so the list shrinks as
    backends improve.
    """

    entries: list[tuple[str, str]] = field(default_factory=list)
    used: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, path: str | Path) -> XfailList:
        entries = []
        for line in Path(path).read_text().splitlines():
            pattern, _, reason = line.partition("#")
            if pattern.strip():
                entries.append((pattern.strip(), reason.strip() or "known failure"))
        return cls(entries)

    def match(self, item: Item) -> str | None:
        """The reason of the first entry matching ``item``, or ``None``."""
        for pattern, reason in self.entries:
            if _matches([pattern], item.id, item.case.id):
                self.used.add(pattern)
                return f"{reason} [{pattern}]"
        return None

    def unused(self) -> list[str]:
        """Patterns that matched no planned item (typos, or cases that were removed)."""
        return [p for p, _ in self.entries if p not in self.used]


# -- running one item ------------------------------------------------------------------------


@dataclass
class Outcome:
    """What running one item gave: a status, a message for failures and skips, the largest error."""

    status: str
    message: str = ""
    max_error: float | None = None


_REFERENCE_CACHE: dict[tuple, Any] = {}


def _materialize(value: Any, dtype: str) -> Any:
    if value is None:
        return None
    if isinstance(value, Random):
        return value.make(dtype)
    arr = np.asarray(value)
    if arr.dtype.kind in "iub" and not isinstance(value, np.ndarray):
        arr = arr.astype(np.float64)
    if arr.dtype.kind == "f":
        return arr.astype(dtype)
    return arr


def _rng(case: Case, salt: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{case.id}:{salt}".encode()))


class _Run:
    """The state of one item's run: the backend under test, the reference, the case."""

    def __init__(self, item: Item, registry: Registry) -> None:
        self.item, self.registry, self.case = item, registry, item.case
        self.target = item.target
        self.dtype = self.target.dtype
        self.spec: OpSpec = registry.op(self.case.op)
        opts = _backend_options(registry, self.target.backend, self.target.device)
        self.backend = registry.backend(self.target.backend, **opts)
        self.inputs = [_materialize(v, self.dtype) for v in self.case.inputs]
        self.max_error = 0.0
        self.compared = 0

    # helpers ------------------------------------------------------------------------------

    def call(self, inputs: Sequence[Any], attrs: dict | None = None, backend: Any = None) -> Any:
        attrs = dict(self.case.attrs) if attrs is None else attrs
        return call(self.case.op, *inputs, backend=backend or self.backend, **attrs)

    def numpy(self, out: Any, backend: Any = None) -> np.ndarray:
        return np.asarray((backend or self.backend).to_numpy(out), dtype=np.float64)

    def run(self, inputs: Sequence[Any], attrs: dict | None = None) -> np.ndarray:
        return self.numpy(self.call(inputs, attrs))

    def canonical(self, inputs: Sequence[Any] | None = None) -> tuple[list, dict]:
        inputs = self.inputs if inputs is None else inputs
        infos = [None if a is None else TensorInfo(tuple(a.shape), a.dtype.name) for a in inputs]
        return infos, self.spec.bind(self.case.op, infos, dict(self.case.attrs))

    def reference(self) -> Any | None:
        """The reference backend, or ``None`` when it is what is tested (float64, cpu) or lacks the op."""
        ref = REFERENCE_BACKEND
        if ref not in self.registry.backend_infos():
            return None
        if self.target == Target(ref, "float64", "cpu") or self.case.op not in self.registry.kernels(ref):
            return None
        try:
            return self.registry.backend(ref)
        except BackendUnavailableError:
            return None

    def compare(self, what: str, actual: Any, expected: Any, dtype: str | None = None) -> None:
        err = compare(actual, expected, dtype or self.dtype, what=f"{what}", context=self.context())
        self.max_error = max(self.max_error, err)
        self.compared += 1

    def context(self) -> str:
        c = self.case
        return (
            f"case {c.id} (op {c.op}, attrs {dict(c.attrs)}) on {self.target.id}\n"
            f"  rebuild: {c.rebuild}\n"
            f"  rerun:   from cnnkit.conformance import run_case; run_case({c.id!r}, "
            f"backend={self.target.backend!r}, dtype={self.dtype!r}, check={self.item.check!r})"
        )

    def oracle(self, inputs: Sequence[Any], canonical: dict | None = None) -> np.ndarray:
        """The record's oracle on ``inputs`` (float64), with the case's canonical attributes."""
        if not self.spec.has_oracle:
            raise _Skip(f"op {self.case.op!r} has no oracle")
        if canonical is None:
            _, canonical = self.canonical()
        arrays = [None if a is None else np.asarray(a) for a in inputs]
        arrays = [a if a is None or a.dtype.kind in "iu" else a.astype(np.float64) for a in arrays]
        with np.errstate(all="ignore"):
            return np.asarray(self.spec.oracle(*arrays, **canonical), dtype=np.float64)

    def rng(self, purpose: str) -> np.random.Generator:
        """A generator seeded by the case id and ``purpose``: the same numbers on every backend."""
        return _rng(self.case, purpose)

    def has(self, op: str) -> bool:
        """Whether the backend under test implements ``op`` (properties that need a second op)."""
        return op in self.registry.kernels(self.target.backend)

    @property
    def tolerances(self) -> tuple[float, float]:
        """``(rtol, atol)`` of the dtype under test."""
        return TOLERANCES[self.dtype]

    def fail(self, message: str) -> CheckFailure:
        return CheckFailure(f"{message}\n  {self.context()}")

    def float_inputs(self) -> list[int]:
        return [
            i
            for i, (name, a) in enumerate(zip(self.spec.inputs, self.inputs))
            if a is not None
            and name not in self.spec.integer_inputs
            and name not in self.spec.state_inputs  # updated in place, never differentiated
            and name not in self.spec.constant_inputs
            and a.dtype.kind == "f"
        ]

    def grad_output(self, shape: tuple) -> np.ndarray:
        if self.case.grad_output is not None:
            return np.asarray(self.case.grad_output, dtype=self.dtype).reshape(shape)
        return _rng(self.case, "grad").uniform(-1, 1, size=shape).astype(self.dtype)

    # checks ---------------------------------------------------------------------------------

    def check_forward(self) -> None:
        out = self.call(self.inputs)
        infos, canonical = self.canonical()
        want_shape = tuple(self.spec.output_shape(infos, canonical))
        got_shape = tuple(int(s) for s in out.shape)
        if got_shape != want_shape:
            raise self.fail(
                f"forward: output shape {got_shape}, expected {want_shape} (the spec's output_shape)"
            )
        got_dtype = self.backend.dtype_name(out)
        if got_dtype != self.dtype:
            raise self.fail(f"forward: output dtype {got_dtype}, expected {self.dtype} (the input's dtype)")
        actual = self.numpy(out)
        if self.case.expected is not None:
            self.compare("forward vs golden", actual, self.case.expected)
        exact = [
            None if a is None else a.astype(np.float64) if a.dtype.kind == "f" else a for a in self.inputs
        ]
        if self.spec.has_oracle:
            self.compare("forward vs oracle", actual, self.oracle(exact, canonical))
        ref = self.reference()
        if ref is not None:
            ref_out = self._reference_forward(ref)
            self.compare(f"forward vs reference backend {REFERENCE_BACKEND!r}", actual, ref_out)

    def _reference_forward(self, ref: Any) -> np.ndarray:
        key = (id(self.registry), self.case.id, "forward", self.dtype)
        if key not in _REFERENCE_CACHE:
            inputs = [
                None if a is None else a.astype(np.float64) if a.dtype.kind == "f" else a for a in self.inputs
            ]
            _REFERENCE_CACHE[key] = self.numpy(self.call(inputs, backend=ref), ref)
        return _REFERENCE_CACHE[key]

    def check_backward(self) -> None:
        out, pullback = vjp(self.case.op, *self.inputs, backend=self.backend, **self.case.attrs)
        shape = tuple(int(s) for s in out.shape)
        g = self.grad_output(shape)
        grads = pullback(self.backend.asarray(g))
        floats = self.float_inputs()
        if len(grads) != len(self.inputs):
            raise self.fail(f"backward: returned {len(grads)} gradients for {len(self.inputs)} inputs")
        dx = {}
        for i in floats:
            name = self.spec.inputs[i]
            if grads[i] is None:
                raise self.fail(f"backward: the gradient for {name} is None")
            gshape = tuple(int(s) for s in grads[i].shape)
            if gshape != self.inputs[i].shape:
                raise self.fail(f"backward: d{name} has shape {gshape}, expected {self.inputs[i].shape}")
            gdtype = self.backend.dtype_name(grads[i])
            if gdtype != self.dtype:
                raise self.fail(f"backward: d{name} has dtype {gdtype}, expected {self.dtype}")
            dx[i] = self.numpy(grads[i])
        if self.case.expected_grads is not None:
            for i, want in enumerate(self.case.expected_grads):
                if want is not None:
                    self.compare(f"backward d{self.spec.inputs[i]} vs golden", dx[i], want)
        if self.dtype == "float64" and self.case.differentiable:
            self._finite_differences(g, dx)
        ref = self.reference()
        if ref is not None:
            for i, want in self._reference_backward(ref, g).items():
                self.compare(
                    f"backward d{self.spec.inputs[i]} vs reference backend {REFERENCE_BACKEND!r}", dx[i], want
                )
        if not self.compared:
            raise _Skip("nothing to compare the gradients with (float32 needs the reference backend)")

    def _reference_backward(self, ref: Any, g: np.ndarray) -> dict[int, np.ndarray]:
        key = (id(self.registry), self.case.id, "backward", self.dtype)
        if key not in _REFERENCE_CACHE:
            inputs = [
                None if a is None else a.astype(np.float64) if a.dtype.kind == "f" else a for a in self.inputs
            ]
            _, pullback = vjp(self.case.op, *inputs, backend=ref, **self.case.attrs)
            grads = pullback(ref.asarray(g.astype(np.float64)))
            _REFERENCE_CACHE[key] = {i: self.numpy(grads[i], ref) for i in self.float_inputs()}
        return _REFERENCE_CACHE[key]

    def _finite_differences(self, g: np.ndarray, dx: dict[int, np.ndarray]) -> None:
        rng = _rng(self.case, "fd")

        def f(inputs: list) -> float:
            return float((self.run(inputs) * g).sum())

        for i in self.float_inputs():
            name = self.spec.inputs[i]
            for _ in range(FD_DIRECTIONS):
                e = rng.standard_normal(self.inputs[i].shape)
                plus, minus = list(self.inputs), list(self.inputs)
                plus[i] = self.inputs[i] + FD_STEP * e
                minus[i] = self.inputs[i] - FD_STEP * e
                fd = (f(plus) - f(minus)) / (2 * FD_STEP)
                an = float((dx[i] * e).sum())
                scale = max(abs(fd), abs(an), 1e-3)
                err = abs(fd - an) / scale
                self.max_error = max(self.max_error, err)
                self.compared += 1
                if err > FD_RTOL:
                    raise self.fail(
                        f"backward: d{name} disagrees with central finite differences along a random "
                        f"direction e: <d{name}, e> = {an!r}, (E(x+he) - E(x-he))/2h = {fd!r} "
                        f"(relative error {err:.3g} > {FD_RTOL:g}, h = {FD_STEP:g})"
                    )

    # memory: side effects, aliasing, repeatability -----------------------------------------

    def _natives(self, arrays: Sequence[Any]) -> list[Any]:
        return [None if a is None else self.backend.asarray(a) for a in arrays]

    def _snapshot(self, natives: Sequence[Any]) -> list[np.ndarray | None]:
        return [None if a is None else np.array(self.backend.to_numpy(a), dtype=np.float64) for a in natives]

    def _same(self, what: str, got: Sequence[Any], want: Sequence[Any]) -> None:
        for i, (a, b) in enumerate(zip(got, want)):
            if a is None or b is None:
                continue
            a = np.asarray(a, dtype=np.float64)
            if a.shape != b.shape or not np.array_equal(a, b, equal_nan=True):
                raise self.fail(f"memory: {what} (entry {i})")
        self.compared += 1

    def _vjp(self, natives: Sequence[Any], g: Any) -> tuple[Any, tuple]:
        out, pullback = vjp(self.case.op, *natives, backend=self.backend, **self.case.attrs)
        return out, pullback(g) if g is not None else pullback

    def check_memory(self) -> None:
        """The kernel leaves its inputs and ``grad_output`` alone, owns its outputs, repeats itself."""
        natives = self._natives(self.inputs)
        state = self.spec.state_inputs  # updated in place by design (running statistics)

        def data(arrays: Sequence[Any]) -> list[Any]:
            return [None if name in state else a for name, a in zip(self.spec.inputs, arrays)]

        inputs_before = self._snapshot(data(natives))
        out, pullback = vjp(self.case.op, *natives, backend=self.backend, **self.case.attrs)
        g = self.backend.asarray(self.grad_output(tuple(int(s) for s in out.shape)))
        g_before = self._snapshot([g])
        out_before = self._snapshot([out])
        grads = pullback(g)
        floats = self.float_inputs()
        grads_before = self._snapshot([grads[i] for i in floats])
        self._same(
            "an input changed during forward or backward", self._snapshot(data(natives)), inputs_before
        )
        self._same("grad_output changed during backward", self._snapshot([g]), g_before)
        again = pullback(g)
        self._same(
            "backward run twice gave other gradients",
            self._snapshot([again[i] for i in floats]),
            grads_before,
        )
        # a second call with other inputs must not write into the first call's results
        other = [
            None if a is None or i not in floats else (0.5 - a).astype(a.dtype)
            for i, a in enumerate(self.inputs)
        ]
        other = [o if o is not None else a for o, a in zip(other, self.inputs)]
        _, pullback2 = vjp(self.case.op, *self._natives(other), backend=self.backend, **self.case.attrs)
        pullback2(self.backend.asarray(-self.grad_output(tuple(int(s) for s in out.shape))))
        self._same(
            "the output changed when the op ran again (a reused buffer?)", self._snapshot([out]), out_before
        )
        self._same(
            "a gradient changed when the op ran again (a reused buffer?)",
            self._snapshot([grads[i] for i in floats]),
            grads_before,
        )
        # outputs and gradients must not be views of the inputs or of grad_output
        for i in floats:
            natives[i][...] = 0
        g[...] = 0
        self._same(
            "the output is a view of an input (it changed when the input was overwritten)",
            self._snapshot([out]),
            out_before,
        )
        self._same(
            "a gradient is a view of an input or of grad_output (it changed when they were overwritten)",
            self._snapshot([grads[i] for i in floats]),
            grads_before,
        )

    # layouts: the same values as strided, transposed, negative-stride and broadcast views -------

    def _view(self, a: np.ndarray, kind: str) -> tuple[Any, np.ndarray] | None:
        """``(native view, its values)`` of ``a`` as a ``kind`` view, or ``None`` where it has none."""
        be = self.backend
        if a.ndim == 0:
            return None
        if kind == "strided":
            big = np.zeros((*a.shape[:-1], 2 * a.shape[-1]), dtype=a.dtype)
            big[..., ::2] = a
            return be.asarray(big)[..., ::2], a
        if kind == "transposed":
            if a.ndim < 2:
                return None
            return be.asarray(np.ascontiguousarray(np.swapaxes(a, -1, -2))).swapaxes(-1, -2), a
        if kind == "negative-stride":
            try:
                return be.asarray(np.ascontiguousarray(a[..., ::-1]))[..., ::-1], a
            except ValueError:  # the backend's arrays have no negative strides (torch)
                return None
        if a.shape[0] < 2:
            return None
        values = np.broadcast_to(a[:1], a.shape)
        first = be.asarray(np.ascontiguousarray(a[:1]))
        view = first.expand(*a.shape) if hasattr(first, "expand") else np.broadcast_to(first, a.shape)
        return view, np.array(values)

    def check_layouts(self) -> None:
        """Every input and ``grad_output`` as a non-contiguous view: the results of contiguous copies."""
        floats = self.float_inputs()
        out_shape = tuple(int(s) for s in self.call(self.inputs).shape)
        g = self.grad_output(out_shape)
        tried = 0
        for kind in LAYOUTS:
            views, values = list(self.inputs), list(self.inputs)
            for i in floats:
                made = self._view(self.inputs[i], kind)
                if made is not None:
                    views[i], values[i] = made
            made_g = self._view(g, kind)
            g_view, g_values = made_g if made_g is not None else (self.backend.asarray(g), g)
            if all(views[i] is self.inputs[i] for i in floats) and made_g is None:
                continue
            tried += 1
            natives = [
                v if i in floats else None if v is None else self.backend.asarray(v)
                for i, v in enumerate(views)
            ]
            out_v, pullback = vjp(self.case.op, *natives, backend=self.backend, **self.case.attrs)
            grads_v = pullback(g_view)
            out_c, pullback_c = vjp(
                self.case.op, *self._natives(values), backend=self.backend, **self.case.attrs
            )
            grads_c = pullback_c(self.backend.asarray(np.array(g_values, order="C")))
            self.compare(f"layouts: the output with {kind} views", self.numpy(out_v), self.numpy(out_c))
            for i in floats:
                self.compare(
                    f"layouts: d{self.spec.inputs[i]} with {kind} views",
                    self.numpy(grads_v[i]),
                    self.numpy(grads_c[i]),
                )
        if not tried:
            raise _Skip("no input of this case has a non-contiguous view")

    def check_raises(self) -> None:
        expected = self.case.raises
        assert expected is not None
        msg = self._raise_message(self.backend)
        if self.case.match and not re.search(self.case.match, msg):
            raise self.fail(f"raises: the message {msg!r} does not contain {self.case.match!r}")
        ref = self.reference_for_errors()
        if ref is not None:
            want = self._raise_message(ref)
            if msg != want:
                raise self.fail(
                    f"raises: the message differs from the reference backend's\n"
                    f"    actual:   {msg!r}\n    expected: {want!r}"
                )
        self.compared += 1

    def reference_for_errors(self) -> Any | None:
        if self.target.backend == REFERENCE_BACKEND or REFERENCE_BACKEND not in self.registry.backend_infos():
            return None
        try:
            return self.registry.backend(REFERENCE_BACKEND)
        except BackendUnavailableError:
            return None

    def _raise_message(self, backend: Any) -> str:
        expected = self.case.raises
        assert expected is not None
        try:
            self.call(self.inputs, backend=backend)
        except expected as exc:
            return str(exc)
        except Exception as exc:
            raise self.fail(
                f"raises: backend {backend.name!r} raised {type(exc).__name__}: {exc}; "
                f"expected {expected.__name__}"
            ) from exc
        raise self.fail(f"raises: backend {backend.name!r} raised nothing; expected {expected.__name__}")

    def check_properties(self) -> None:
        for prop in self.spec.properties:
            try:
                prop(self)
            except _Skip:
                continue
        if not self.compared:
            raise _Skip("no property applies to this case on this backend")


def compare(actual: Any, expected: Any, dtype: str, what: str = "output", context: str = "") -> float:
    """Compare two arrays within the dtype's tolerance; return the largest error relative to the scale.

    The scale is ``max(1, max|expected|)``; NaN and inf must sit at the same
    places in both.

    Raises:
        CheckFailure: shapes differ or some entry is off; the message shows
            actual vs expected, the largest error and its index, and ``context``.
    """
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    tail = f"\n  {context}" if context else ""
    if a.shape != e.shape:
        raise CheckFailure(f"{what}: shape {a.shape}, expected {e.shape}{tail}")
    rtol, atol = TOLERANCES.get(dtype, TOLERANCES["float32"])
    finite = np.isfinite(e)
    scale = max(1.0, float(np.abs(e[finite]).max())) if finite.any() else 1.0
    with np.errstate(invalid="ignore"):
        special_ok = np.where(finite, np.isfinite(a), (np.isnan(a) & np.isnan(e)) | (a == e))
        err = np.where(finite & np.isfinite(a), np.abs(a - e), 0.0)
    bad = ~special_ok | (err > atol * scale + rtol * np.abs(np.where(finite, e, 0.0)))
    max_error = float(err.max() / scale) if err.size else 0.0
    if bad.any():
        where = np.unravel_index(
            int(np.argmax(np.where(bad, np.where(special_ok, err, np.inf), -1.0))), a.shape
        )
        where = tuple(int(i) for i in where)
        with np.printoptions(precision=6, threshold=60, edgeitems=3, linewidth=100):
            raise CheckFailure(
                f"{what}: {int(bad.sum())} of {a.size} entries differ (rtol {rtol:g}, atol {atol:g} x scale "
                f"{scale:g})\n"
                f"  largest error {float(err[where]) if special_ok[where] else math.inf:.6g} "
                f"at index {where}: "
                f"actual {float(a[where])!r}, expected {float(e[where])!r}\n"
                f"  actual:\n{_indent(a)}\n  expected:\n{_indent(e)}{tail}",
                max_error=max_error,
            )
    return max_error


def _indent(a: np.ndarray) -> str:
    return "\n".join("    " + line for line in np.array2string(a).splitlines())


def run_item(item: Item, registry: Registry | None = None) -> Outcome:
    """Run one item; never raises for a backend's fault (that is a ``failed`` outcome)."""
    registry = registry or get_registry()
    case, target = item.case, item.target
    try:
        if case.op not in registry.ops():
            return Outcome("skipped", f"op {case.op!r} is not registered")
        if case.op not in registry.kernels(target.backend):
            return Outcome("not-implemented", f"backend {target.backend!r} has no kernel for op {case.op!r}")
        run = _Run(item, registry)
    except (BackendUnavailableError, ImportError) as exc:
        return Outcome("skipped", f"backend {target.backend!r} is unavailable: {exc}")
    try:
        getattr(run, f"check_{item.check}")()
    except _Skip as exc:
        return Outcome("skipped", str(exc))
    except CheckFailure as exc:
        return Outcome("failed", str(exc), exc.max_error if exc.max_error is not None else run.max_error)
    except Exception as exc:
        return Outcome(
            "failed",
            f"{item.check}: {type(exc).__name__}: {exc}\n  {run.context()}",
            run.max_error or None,
        )
    return Outcome("passed", max_error=run.max_error)


def run_case(
    case: str | Case,
    backend: str = REFERENCE_BACKEND,
    dtype: str = "float64",
    check: str | None = None,
    device: str = "cpu",
) -> dict[str, Outcome]:
    """Run one case's checks on one backend and return the outcome of each; for a failure, print it.

    Example:
        >>> from cnnkit.conformance import run_case
        >>> sorted(run_case("conv2d-lecture-sobel-flip-same"))  # doctest: +SKIP
        ['backward', 'forward', 'properties']
    """
    case = get_case(case) if isinstance(case, str) else case
    checks = [check] if check else list(checks_for(case))
    outcomes = {}
    for name in checks:
        outcomes[name] = run_item(Item(Target(backend, dtype, device), case, name, case.id))
        if outcomes[name].status == "failed":
            print(outcomes[name].message)
    return outcomes


# -- reports ---------------------------------------------------------------------------------


@dataclass
class Result:
    """One item with its outcome (what reports are built from)."""

    backend: str
    dtype: str
    device: str
    op: str
    case: str
    check: str
    status: str
    max_error: float | None = None
    message: str = ""

    @property
    def id(self) -> str:
        return f"{self.backend}-{self.dtype}-{self.device}-{self.case}::{self.check}"

    @classmethod
    def of(cls, item: Item, outcome: Outcome) -> Result:
        t = item.target
        return cls(
            t.backend,
            t.dtype,
            t.device,
            item.case.op,
            item.case.id,
            item.check,
            outcome.status,
            outcome.max_error,
            outcome.message,
        )


def apply_xfail(outcome: Outcome, reason: str | None) -> Outcome:
    """Turn a failure on the known-failure list into ``xfailed``, a pass on it into ``xpassed`` (stale)."""
    if reason is None:
        return outcome
    if outcome.status == "failed":
        return Outcome("xfailed", f"known failure: {reason}\n{outcome.message}", outcome.max_error)
    if outcome.status == "passed":
        return Outcome(
            "xpassed", f"stale known-failure entry, the item passes now: {reason}", outcome.max_error
        )
    return outcome


@dataclass
class Report:
    """The results of a run, with the op x backend matrix and the coverage."""

    results: list[Result] = field(default_factory=list)
    unused_xfail: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.status in ("failed", "xpassed")]

    def matrix(self) -> dict[tuple[str, str], dict[str, Any]]:
        """``{(op, backend): {status: count, ..., "max_error": float}}``."""
        cells: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {s: 0 for s in STATUSES})
        for r in self.results:
            cell = cells[(r.op, r.backend)]
            cell[r.status] += 1
            if r.max_error is not None and math.isfinite(r.max_error):
                cell["max_error"] = max(cell.get("max_error", 0.0), r.max_error)
        return dict(cells)

    def per_backend(self) -> dict[str, Counter]:
        out: dict[str, Counter] = defaultdict(Counter)
        for r in self.results:
            out[r.backend][r.status] += 1
        return dict(out)

    def format(self, registry: Registry | None = None, failures: int = 5) -> str:
        """The op x backend matrix as text, then the coverage and the first failures."""
        return format_matrix(self, registry, failures)

    def to_json(self, registry: Registry | None = None) -> str:
        matrix = [{"op": op, "backend": be, **cell} for (op, be), cell in sorted(self.matrix().items())]
        return json.dumps(
            {
                "summary": {be: dict(c) for be, c in self.per_backend().items()},
                "matrix": matrix,
                "coverage": coverage(registry, sorted({r.backend for r in self.results})),
                "lacks": {be: lacks(registry, be) for be in sorted({r.backend for r in self.results})},
                "failures": [
                    {"id": r.id, "status": r.status, "max_error": r.max_error, "message": r.message}
                    for r in self.failed
                ],
                "unused_xfail_patterns": self.unused_xfail,
            },
            indent=2,
        )


def run(
    items: Sequence[Item],
    xfail: XfailList | None = None,
    registry: Registry | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Run ``items`` (see :func:`plan`) and return the :class:`Report`."""
    outcomes = []
    for n, item in enumerate(items):
        outcomes.append(run_item(item, registry))
        if progress:
            progress(n + 1, len(items))
    return collect(items, outcomes, xfail)


def collect(items: Sequence[Item], outcomes: Sequence[Outcome], xfail: XfailList | None = None) -> Report:
    """The :class:`Report` of ``items`` and their ``outcomes`` (run anywhere), known failures applied."""
    report = Report()
    for item, outcome in zip(items, outcomes, strict=True):
        if xfail is not None:
            outcome = apply_xfail(outcome, xfail.match(item))
        report.results.append(Result.of(item, outcome))
    if xfail is not None:
        report.unused_xfail = xfail.unused()
    return report


def coverage(registry: Registry | None = None, backends: Sequence[str] | None = None) -> dict[str, dict]:
    """What each backend implements: ``{backend: {op: [attribute names]}}``.

    A backend that cannot load maps to ``None``.
    """
    registry = registry or get_registry()
    names = list(backends) if backends else sorted(registry.backend_infos())
    ops = registry.ops()
    out: dict[str, dict] = {}
    for name in names:
        kernels = registry.kernels(name)
        out[name] = {
            op: sorted(k for k in ops[op].defaults if k != "dims") if op in ops else []
            for op in sorted(kernels)
        }
    return out


def lacks(registry: Registry | None, backend: str) -> list[str]:
    """The registered ops that ``backend`` has no kernel for, sorted."""
    registry = registry or get_registry()
    return sorted(set(registry.ops()) - set(registry.kernels(backend)))


def format_matrix(report: Report, registry: Registry | None = None, failures: int = 5) -> str:
    registry = registry or get_registry()
    matrix = report.matrix()
    backends = sorted({be for _, be in matrix})
    ops = sorted({op for op, _ in matrix})
    head = ["op", *backends]
    rows = []
    for op in ops:
        row = [op]
        for be in backends:
            cell = matrix.get((op, be))
            if cell is None:
                row.append("-")
                continue
            failed = cell["failed"] + cell["xpassed"]
            counts = f"{cell['passed']}/{failed}/{cell['skipped']}/{cell['not-implemented']}"
            if cell["xfailed"]:
                counts += f" xf{cell['xfailed']}"
            err = cell.get("max_error")
            row.append(counts + (f" err {err:.1e}" if err is not None else ""))
        rows.append(row)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["cnnkit conformance: passed/failed/skipped/not-implemented per op and backend, largest error"]
    lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
    lines.append("")
    cov = coverage(registry, backends)
    for be in backends:
        c = report.per_backend().get(be, Counter())
        lines.append(
            f"{be}: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped, "
            f"{c['not-implemented']} not implemented, {c['xfailed']} xfailed, {c['xpassed']} stale xfail; "
            f"implements {len(cov.get(be, {}))} ops: "
            + ", ".join(f"{op}({', '.join(attrs)})" for op, attrs in cov.get(be, {}).items())
            + (f"; lacks {', '.join(missing)} (no items planned)" if (missing := lacks(registry, be)) else "")
        )
    if report.unused_xfail:
        lines.append(f"known-failure patterns that matched nothing: {', '.join(report.unused_xfail)}")
    bad = report.failed
    if bad:
        lines.append("")
        lines.append(f"{len(bad)} failure(s); the first {min(failures, len(bad))}:")
        for r in bad[:failures]:
            lines.append(f"FAILED {r.id}\n{r.message}\n")
    return "\n".join(lines)
