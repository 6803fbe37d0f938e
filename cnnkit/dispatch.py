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

from cnnkit import geometry
from cnnkit.backend import Backend
from cnnkit.registry import Kernel, get_backend, get_registry
from cnnkit.spec import FLOAT_DTYPES, OpSpec, TensorInfo

__all__ = ["call", "vjp"]


@dataclass
class _Record:
    where: str
    backend: Backend
    kernel: Kernel
    ctx: Any
    present: tuple[bool, ...]
    out_shape: tuple[int, ...]
    out_dtype: str
    out_device: str


_TAPE: ContextVar[list[_Record] | None] = ContextVar("cnnkit_vjp_tape", default=None)
#: How many vjp tapes are open (in any thread): while none is, call() reads no ContextVar,
#: which keeps the path traceable by torch.compile.
_OPEN_TAPES = 0


def _real_array(x: Any, what: str, dtype: Any) -> np.ndarray:
    """``x`` (a list, tuple or Python number) as a NumPy array of real numbers in ``dtype``
    (``None``: as NumPy reads it).

    NumPy would turn ``None`` into NaN, ``"1.5"`` into 1.5 and ``True`` into 1.0 once a float
    dtype is asked for; here only real numbers pass, ints too large for a float included.

    Raises:
        TypeError: ``x`` holds something else than real numbers, naming ``what``.
        ValueError: ragged nesting.
    """
    try:
        raw = np.asarray(x) if not isinstance(x, np.ndarray) else x
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"{what} cannot be read as an array ({exc})") from None
    kind = raw.dtype.kind
    if kind == "O":
        for v in raw.reshape(-1):
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise TypeError(f"{what} must hold real numbers, got {type(v).__name__} {v!r} in {_brief(x)}")
    elif kind not in "iuf":
        if isinstance(x, np.ndarray):  # as a backend's own array is described
            raise TypeError(f"{what} must hold real numbers, got dtype {raw.dtype.name}")
        name = {"b": "booleans", "c": "complex numbers", "U": "strings", "S": "bytes"}.get(kind)
        got = name or f"dtype {raw.dtype.name}"
        raise TypeError(f"{what} must hold real numbers, got {got} ({_brief(x)})")
    if dtype is None and kind in "iuf":
        return raw
    target = np.dtype(dtype or np.float64)
    try:
        return raw.astype(target)
    except OverflowError:
        raise TypeError(f"{what} holds a number too large for {target.name} ({_brief(x)})") from None


def _brief(x: Any, limit: int = 60) -> str:
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _convert(backend: Backend, spec: OpSpec, name: str, x: Any, where: str) -> Any:
    if x is None:
        return x
    if isinstance(x, (str, bytes)):
        x = np.asarray(x)  # described by its dtype, as an array of strings is
    if isinstance(x, np.ndarray) and x.dtype.kind not in "biufc":  # strings, objects: on every backend
        if name in spec.integer_inputs:
            raise TypeError(f"{where}: {name} must hold integers (class indices), got dtype {x.dtype.name}")
        raise TypeError(
            f"{where}: {name} must be a floating array ({', '.join(FLOAT_DTYPES)}), got dtype {x.dtype.name}"
        )
    if backend.is_native(x):
        return x
    if isinstance(x, (list, tuple, numbers.Number, dict, set, frozenset)):
        what = f"{where}: {name}"
        if name in spec.integer_inputs:  # class indices: ints stay int64, [0, 1.5] stays float and fails
            x = np.asarray(x)
            if x.dtype.kind not in "biufc":  # None, strings, ints past int64 among them
                raise TypeError(f"{what} must hold class indices (ints), got {_brief(x.tolist())}")
            if x.size == 0 or x.dtype.kind in "iu":
                x = x.astype(np.int64)
        else:
            x = _real_array(x, what, backend.options.get("dtype") or np.float64)
    return backend.asarray(x)


def _size_checks(where: str, spec: OpSpec, infos: list[TensorInfo | None], canonical: dict[str, Any]) -> None:
    """No call may build an array past :data:`cnnkit.geometry.MAX_ELEMENTS`: the padded input a
    windowed op materialises (canonical ``padding`` pairs), and the output."""
    x = infos[0] if infos else None
    padding = canonical.get("padding")
    if (
        x is not None
        and isinstance(padding, tuple)
        and len(padding) == x.ndim - 2
        and all(isinstance(p, tuple) and len(p) == 2 for p in padding)
    ):
        geometry.check_padded_size(where, x.shape, padding)
    try:
        out_shape = spec.output_shape(infos, canonical)
    except NotImplementedError:  # a plugin's spec need not say
        return
    geometry.check_output_size(where, out_shape)


#: The canonical attributes of calls that validated, by :func:`_bound_key`: a training loop
#: repeats a few calls, and validating one (binding, every shape and size check) costs tens of
#: microseconds of Python, as much as a small op. Only successes are kept (a bad call is
#: checked, and refused, every time), and only where the backend says its shapes are static.
_BOUND: dict[tuple, dict[str, Any]] = {}
_BOUND_MAX = 4096


def _frozen(v: Any) -> Any:
    """``v`` as a hashable key that tells types apart (``1``, ``1.0``, ``True`` and ``np.int64(1)``
    validate differently); a ``TypeError`` for a value that cannot be one (a list inside, an array)."""
    if isinstance(v, (tuple, list)):
        return (type(v), tuple(_frozen(e) for e in v))
    hash(v)
    return (type(v), v)


def _bound_key(spec: OpSpec, where: str, infos: list[TensorInfo | None], attrs: dict) -> tuple | None:
    try:
        frozen = tuple(sorted((k, _frozen(v)) for k, v in attrs.items()))
    except TypeError:
        return None
    return (spec, where, tuple(infos), frozen, geometry.MAX_ELEMENTS)


def _validated(
    be: Backend, arrays: list, where: str, spec: OpSpec, infos: list[TensorInfo | None], attrs: dict
) -> dict[str, Any]:
    """``spec.bind`` and the size checks of a call, remembered for a call of the same shapes,
    dtypes and attributes (each call gets its own copy of the canonical attributes)."""
    key = _bound_key(spec, where, infos, attrs) if be.shapes_are_static(arrays) else None
    found = _BOUND.get(key) if key is not None else None
    if found is None:
        found = spec.bind(where, infos, attrs)
        _size_checks(where, spec, infos, found)
        if key is not None:
            if len(_BOUND) >= _BOUND_MAX:
                _BOUND.clear()
            _BOUND[key] = found
    return dict(found)


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
            arrays.append(_convert(be, spec, name, x, where))
        except TypeError as exc:
            if str(exc).startswith(f"{where}: {name}"):
                raise
            raise TypeError(f"{where}: {name} cannot be read as an array ({exc})") from exc
        except (ValueError, OverflowError) as exc:
            raise TypeError(f"{where}: {name} cannot be read as an array ({exc})") from exc
    arrays = be.prepare(spec, arrays)
    infos = [
        None if a is None else TensorInfo(tuple(int(s) for s in a.shape), be.dtype_name(a)) for a in arrays
    ]
    canonical = _validated(be, arrays, where, spec, infos, attrs)
    be.check_values(spec, where, arrays, canonical)
    kernel = registry.kernel(be.name, op)
    tape = _TAPE.get() if _OPEN_TAPES else None
    if tape is None:
        return kernel(*arrays, **canonical)
    out, ctx = kernel.forward(*arrays, **canonical)
    present = tuple(a is not None for a in arrays)
    # the op's dtype: its floating inputs' one (the spec made them agree), which a correct output has
    floating = [i.dtype for n, i in zip(spec.inputs, infos) if i is not None and n not in spec.integer_inputs]
    dtype = floating[0] if floating else be.dtype_name(out)
    tape.append(_Record(where, be, kernel, ctx, present, tuple(out.shape), dtype, be.device_of(out)))
    return out


def _grad_output(rec: _Record, g: Any) -> Any:
    """``grad_output`` as the backend's array in the output's dtype (and on its device)."""
    what = f"{rec.where} pullback: grad_output"
    be = rec.backend
    if g is None:
        raise TypeError(f"{what} must be an array of the output's shape {rec.out_shape}, got None")
    if isinstance(g, np.ndarray) and g.dtype.kind not in "biufc":
        raise TypeError(f"{what} must hold real numbers, got dtype {g.dtype.name}")
    if be.is_native(g):
        dtype = be.dtype_name(g)
        if not (dtype.startswith(("float", "int", "uint")) or dtype == "bfloat16"):
            raise TypeError(f"{what} must hold real numbers, got dtype {dtype}")
        a = g
    elif isinstance(g, (list, tuple, numbers.Number, str, bytes, dict, set, frozenset, np.ndarray)):
        a = _real_array(g, what, None)
    else:
        try:  # another backend's array (a torch tensor handed to NumPy)
            native = be.asarray(g)
        except Exception:
            raise TypeError(
                f"{what} must be an array of real numbers, got {type(g).__module__}.{type(g).__name__}"
            ) from None
        return _grad_output(rec, native)
    if tuple(a.shape) != rec.out_shape:
        return a  # the pullback names the shapes
    return be.cast_like(a, rec.out_dtype, rec.out_device)


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
        TypeError: ``fn`` is neither callable nor an op name; ``grad_output`` is not an
            array of real numbers (None, booleans, complex, strings, objects).
        ValueError: ``fn`` dispatched no op or more than one; ``grad_output``
            does not have the output's shape.

    ``grad_output`` may be a list, a NumPy array or the backend's own array, of any real
    dtype: it is cast to the output's dtype (and device), as the op's own arithmetic would.

    Example:
        >>> import numpy as np, cnnkit
        >>> x, w = np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2))
        >>> y, pullback = cnnkit.vjp(cnnkit.functional.conv2d, x, w)
        >>> dx, dw, db = pullback(np.ones_like(y))
        >>> dx[0, 0].tolist(), db
        ([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], None)
    """
    if not (isinstance(fn, str) or callable(fn)):
        raise TypeError(
            f"vjp: fn must be a cnnkit.functional function or an op name, got {_brief(fn)} "
            f"({type(fn).__name__})"
        )
    global _OPEN_TAPES
    tape: list[_Record] = []
    token = _TAPE.set(tape)
    _OPEN_TAPES += 1
    try:
        out = call(fn, *inputs, **attrs) if isinstance(fn, str) else fn(*inputs, **attrs)
    finally:
        _OPEN_TAPES -= 1
        _TAPE.reset(token)
    if len(tape) != 1:
        name = fn if isinstance(fn, str) else getattr(fn, "__name__", repr(fn))
        raise ValueError(f"vjp: {name} must dispatch exactly one cnnkit op, it dispatched {len(tape)}")
    rec = tape[0]

    def pullback(grad_output: Any) -> tuple[Any, ...]:
        g = _grad_output(rec, grad_output)
        if tuple(g.shape) != rec.out_shape:
            raise ValueError(
                f"{rec.where} pullback: grad_output must have the output's shape {rec.out_shape}, "
                f"got {tuple(g.shape)}"
            )
        grads = tuple(rec.kernel.backward(rec.ctx, g))
        return tuple(gr if present else None for gr, present in zip(grads, rec.present))

    return out, pullback
