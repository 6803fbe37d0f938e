"""Validate once, then run one backend's kernel: :func:`call` and :func:`vjp`.

Every function of :mod:`cnnkit.functional` is a thin :func:`call`. The call
converts foreign inputs (lists, NumPy arrays handed to another backend) to the
backend's arrays, validates them against the op's spec, and runs the kernel.
Inside :func:`vjp` the same call also records the kernel's context, so the
pullback can run the backend's hand-derived ``backward``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnkit.backend import Backend
from cnnkit.registry import Kernel, get_backend, get_registry
from cnnkit.spec import OpSpec, TensorInfo

__all__ = ["call", "vjp"]


@dataclass
class _Record:
    where: str
    backend: Backend
    kernel: Kernel
    ctx: Any
    present: tuple[bool, ...]
    out_shape: tuple[int, ...]


_TAPE: ContextVar[list[_Record] | None] = ContextVar("cnnkit_vjp_tape", default=None)


def _convert(backend: Backend, spec: OpSpec, name: str, x: Any) -> Any:
    if x is None or backend.is_native(x):
        return x
    if isinstance(x, (list, tuple, numbers.Number)):
        if name in spec.integer_inputs:  # class indices: ints stay int64, [0, 1.5] stays float and fails
            x = np.asarray(x)
            if x.size == 0 or x.dtype.kind in "iu":
                x = x.astype(np.int64)
        else:
            x = np.asarray(x, dtype=backend.options.get("dtype") or np.float64)
    return backend.asarray(x)


def call(
    op: str, *inputs: Any, backend: str | Backend | None = None, where: str | None = None, **attrs: Any
) -> Any:
    """Run op ``op`` on the chosen backend.

    Args:
        op: the op kind: the name of a registered record (a core op or one a plugin added).
        inputs: the op's inputs in its spec's order (``None`` for an absent one).
        backend: a backend name or instance; ``None`` uses the active one.
        where: the public name used in error messages (default: ``op``).
        attrs: the op's attributes.

    Returns:
        The output, as the backend's own array type.

    Raises:
        ValueError, TypeError: the call does not validate (see the op's spec).
        cnnkit.errors.OpNotImplementedError: the backend lacks the op.
    """
    be = get_backend(backend)
    registry = be.registry or get_registry()  # the registry that built the backend knows its kernels
    spec = registry.op(op)
    where = where or op
    if len(inputs) != len(spec.inputs):
        raise TypeError(
            f"{where}: expected {len(spec.inputs)} inputs ({', '.join(spec.inputs)}), got {len(inputs)}"
        )
    arrays = []
    for name, x in zip(spec.inputs, inputs):
        try:
            arrays.append(_convert(be, spec, name, x))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{where}: {name} cannot be read as an array ({exc})") from exc
    infos = [
        None if a is None else TensorInfo(tuple(int(s) for s in a.shape), be.dtype_name(a)) for a in arrays
    ]
    canonical = spec.bind(where, infos, attrs)
    spec.check_values(where, arrays, be.to_numpy)
    kernel = registry.kernel(be.name, op)
    tape = _TAPE.get()
    if tape is None:
        return kernel(*arrays, **canonical)
    out, ctx = kernel.forward(*arrays, **canonical)
    tape.append(_Record(where, be, kernel, ctx, tuple(a is not None for a in arrays), tuple(out.shape)))
    return out


def vjp(fn: Callable[..., Any] | str, *inputs: Any, **attrs: Any) -> tuple[Any, Callable]:
    """Run ``fn`` forward and return its output with a pullback of the manual gradients.

    Args:
        fn: a :mod:`cnnkit.functional` function (or an op name for :func:`call`)
            that dispatches exactly one op.
        inputs, attrs: passed to ``fn``.

    Returns:
        ``(output, pullback)``; ``pullback(grad_output)`` returns one gradient
        per op input, computed by the backend's hand-derived ``backward``
        (``None`` for an absent bias or an integer input).

    Raises:
        ValueError: ``fn`` dispatched no op or more than one; ``grad_output``
            does not have the output's shape.

    Example:
        >>> import numpy as np, cnnkit
        >>> x, w = np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2))
        >>> y, pullback = cnnkit.vjp(cnnkit.functional.conv2d, x, w)
        >>> dx, dw, db = pullback(np.ones_like(y))
        >>> dx[0, 0].tolist(), db
        ([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], None)
    """
    tape: list[_Record] = []
    token = _TAPE.set(tape)
    try:
        out = call(fn, *inputs, **attrs) if isinstance(fn, str) else fn(*inputs, **attrs)
    finally:
        _TAPE.reset(token)
    if len(tape) != 1:
        name = fn if isinstance(fn, str) else getattr(fn, "__name__", repr(fn))
        raise ValueError(f"vjp: {name} must dispatch exactly one cnnkit op, it dispatched {len(tape)}")
    rec = tape[0]

    def pullback(grad_output: Any) -> tuple[Any, ...]:
        g = rec.backend.asarray(grad_output) if not rec.backend.is_native(grad_output) else grad_output
        if tuple(g.shape) != rec.out_shape:
            raise ValueError(
                f"{rec.where} pullback: grad_output must have the output's shape {rec.out_shape}, "
                f"got {tuple(g.shape)}"
            )
        grads = tuple(rec.kernel.backward(rec.ctx, g))
        return tuple(gr if present else None for gr, present in zip(grads, rec.present))

    return out, pullback
