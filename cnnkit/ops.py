"""Op specs: one per op kind, the single place where calls are validated.

An :class:`OpSpec` declares an op's inputs and attributes, checks a call and
turns its attributes into one canonical form, and computes the output shape.
Every backend receives the same canonical attributes, so every backend
raises the same error, with the same message, for the same bad call.

Canonical attributes, as kernels receive them (``d`` = spatial dimensions):

=================  ==========================================================
op                 attributes
=================  ==========================================================
``conv``           ``stride: (d,) ints``, ``padding: (d,) (before, after)``,
                   ``dilation: (d,) ints``, ``groups: int``, ``flip: bool``
``max_pool``       ``kernel_size, stride, dilation: (d,) ints``,
                   ``padding: (d,) (before, after)``, ``ceil_mode: bool``
``avg_pool``       as ``max_pool`` + ``count_include_pad: bool``
``lp_pool``        as ``max_pool`` + ``norm_type: float`` (p > 0)
``relu``           (none)
``leaky_relu``     ``negative_slope: float``
``sigmoid``        (none)
``tanh``           (none)
``flatten``        ``start_dim: int``, ``end_dim: int`` (both >= 0)
``linear``         (none)
``cross_entropy``  ``reduction: "mean" | "sum" | "none"``
=================  ==========================================================

Pooling ``padding`` is the declared padding; the padding a ceil-mode window
really reads is :func:`cnnkit.geometry.pool_padding`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from cnnkit import geometry
from cnnkit.hookspecs import hookimpl

__all__ = [
    "FLOAT_DTYPES",
    "ActivationSpec",
    "ConvSpec",
    "CrossEntropySpec",
    "FlattenSpec",
    "LinearSpec",
    "OpSpec",
    "PoolSpec",
    "TensorInfo",
    "as_bool",
    "as_float",
    "as_int_tuple",
]

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


@dataclass(frozen=True)
class TensorInfo:
    """What validation knows of an array: its shape and NumPy-style dtype name."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def ndim(self) -> int:
        return len(self.shape)


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def as_int_tuple(value: Any, n: int, name: str, where: str, *, minimum: int = 1) -> tuple[int, ...]:
    """``value`` as ``n`` ints >= ``minimum``: an int is repeated, a sequence must have ``n``.

    Raises:
        TypeError: not an int or a sequence of ints (``2.5``, ``"3"``, ``True``).
        ValueError: wrong length or an entry below ``minimum``.
    """
    if _is_int(value):
        items = [value] * n
    elif isinstance(value, Sequence) and not isinstance(value, str):
        items = list(value)
        if len(items) != n:
            raise ValueError(
                f"{where}: {name} must be an int or {n} ints (one per spatial axis), got {value!r}"
            )
        if not all(_is_int(v) for v in items):
            raise TypeError(f"{where}: {name} must hold ints, got {value!r}")
    else:
        raise TypeError(
            f"{where}: {name} must be an int or a tuple of {n} ints, got {value!r} ({type(value).__name__})"
        )
    out = tuple(int(v) for v in items)
    if any(v < minimum for v in out):
        raise ValueError(f"{where}: {name} must be >= {minimum}, got {value!r}")
    return out


def as_bool(value: Any, name: str, where: str) -> bool:
    """``value`` as a bool (``True``/``False`` or a NumPy bool).

    Raises:
        TypeError: anything else, naming ``where`` and ``name``.
    """
    if isinstance(value, np.bool_):  # np.True_, e.g. read from a saved config
        return bool(value)
    if not isinstance(value, bool):
        raise TypeError(f"{where}: {name} must be True or False, got {value!r}")
    return value


def as_float(value: Any, name: str, where: str) -> float:
    """``value`` (a real number, not a bool) as a float.

    Raises:
        TypeError: anything else, naming ``where`` and ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name} must be a number, got {value!r}")
    return float(value)


class OpSpec:
    """The declaration of one op kind.

    Subclasses set :attr:`name`, :attr:`inputs` and :attr:`defaults`, and
    implement :meth:`check` and :meth:`output_shape`. Plugins register
    instances through :func:`cnnkit.hookspecs.cnnkit_register_ops`.

    Attributes:
        name: the op kind, e.g. ``"conv"``.
        inputs: the names of the array inputs, in call order.
        optional: inputs that may be ``None`` (a missing bias).
        integer_inputs: inputs that hold integers (class indices); all others
            are floating and must share one dtype.
        defaults: every attribute with its default; ``REQUIRED`` marks one
            without a default.
    """

    REQUIRED: ClassVar[object] = object()

    name: str = ""
    inputs: tuple[str, ...] = ("input",)
    optional: frozenset[str] = frozenset()
    integer_inputs: frozenset[str] = frozenset()
    defaults: Mapping[str, Any] = {}

    def bind(
        self, where: str, infos: Sequence[TensorInfo | None], attrs: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Validate a call and return its canonical attributes.

        Args:
            where: the public name of the call, used as the message prefix.
            infos: one :class:`TensorInfo` per input (``None`` for an absent one).
            attrs: the attributes as the user gave them.

        Raises:
            TypeError: wrong number of inputs, unknown attribute, a wrong dtype.
            ValueError: shapes or attribute values that cannot work together.
        """
        if len(infos) != len(self.inputs):
            raise TypeError(
                f"{where}: expected {len(self.inputs)} inputs ({', '.join(self.inputs)}), got {len(infos)}"
            )
        unknown = set(attrs) - set(self.defaults)
        if unknown:
            raise TypeError(
                f"{where}: unexpected attribute(s) {sorted(unknown)}; "
                f"{self.name} takes {sorted(self.defaults) or 'none'}"
            )
        full = {**self.defaults, **attrs}
        missing = [k for k, v in full.items() if v is self.REQUIRED]
        if missing:
            raise TypeError(f"{where}: missing required attribute(s) {missing}")
        self._check_dtypes(where, infos)
        return self.check(where, infos, full)

    def _check_dtypes(self, where: str, infos: Sequence[TensorInfo | None]) -> None:
        float_dtype = None
        for name, info in zip(self.inputs, infos):
            if info is None:
                if name not in self.optional:
                    raise TypeError(f"{where}: {name} is required, got None")
                continue
            if name in self.integer_inputs:
                if info.dtype not in INT_DTYPES:
                    raise TypeError(
                        f"{where}: {name} must hold integers (class indices), got dtype {info.dtype}"
                    )
                continue
            if info.dtype not in FLOAT_DTYPES:
                raise TypeError(
                    f"{where}: {name} must be a floating array ({', '.join(FLOAT_DTYPES)}), "
                    f"got dtype {info.dtype}"
                )
            if float_dtype is None:
                float_dtype = (name, info.dtype)
            elif info.dtype != float_dtype[1]:
                raise TypeError(
                    f"{where}: {name} has dtype {info.dtype} but {float_dtype[0]} has dtype "
                    f"{float_dtype[1]}; cast them to one dtype"
                )

    def check(self, where: str, infos: Sequence[TensorInfo | None], attrs: dict[str, Any]) -> dict[str, Any]:
        """Check shapes and attributes; return the canonical attributes (subclass hook)."""
        return attrs

    def output_shape(self, infos: Sequence[TensorInfo | None], attrs: Mapping[str, Any]) -> tuple:
        """The output shape for validated inputs and canonical attributes."""
        raise NotImplementedError

    def check_values(self, where: str, inputs: Sequence[Any], to_numpy: Any) -> None:
        """Check input *values* (not only shapes) where an op needs it; ``to_numpy`` reads an input.

        Only ops whose inputs index something (class targets) override this.
        """

    def __repr__(self) -> str:
        return f"<OpSpec {self.name}({', '.join(self.inputs)})>"


def _check_ndim(where: str, name: str, info: TensorInfo, ndim: int, layout: str) -> None:
    if info.ndim != ndim:
        raise ValueError(
            f"{where}: {name} must have {ndim} dimensions {layout}, got {info.ndim} ({name} {info.shape})"
        )


def _spatial_dims(where: str, attrs: dict[str, Any], info: TensorInfo) -> int:
    dims = attrs.pop("dims", None)
    if dims is None:
        dims = info.ndim - 2
        if not 1 <= dims <= 3:
            raise ValueError(
                f"{where}: input must be batched (N, C, *spatial) with 1 to 3 spatial axes, "
                f"got shape {info.shape}"
            )
    return dims


def _check_spatial_nonempty(where: str, info: TensorInfo) -> None:
    """A spatial axis of length 0 has no units to slide a window over (padding alone is not an input)."""
    if 0 in info.shape[2:]:
        raise ValueError(
            f"{where}: input must have at least 1 unit along every spatial axis, got shape {info.shape}"
        )


class ConvSpec(OpSpec):
    """Convolution / cross-correlation in 1, 2 or 3 spatial dimensions.

    ``out[n, k] = b[k] + Σ_c Σ_m W[k, c, m] · x_pad[n, g(k)·C/G + c, S·i + D·m]``
    (cross-correlation; ``flip=True`` uses ``rot180(W)``, the lecture's true
    convolution).
    """

    name = "conv"
    inputs = ("input", "weight", "bias")
    optional = frozenset({"bias"})
    defaults: Mapping[str, Any] = {
        "stride": 1,
        "padding": 0,
        "dilation": 1,
        "groups": 1,
        "flip": False,
        "dims": None,
    }

    def check(self, where, infos, attrs):
        x, w, b = infos
        dims = _spatial_dims(where, attrs, x)
        layout = "(N, C, " + ", ".join("DHW"[3 - dims :]) + ")"
        _check_ndim(where, "input", x, dims + 2, layout)
        _check_ndim(where, "weight", w, dims + 2, "(K, C/groups, " + ", ".join("DHW"[3 - dims :]) + ")")
        _check_spatial_nonempty(where, x)
        stride = as_int_tuple(attrs["stride"], dims, "stride", where)
        dilation = as_int_tuple(attrs["dilation"], dims, "dilation", where)
        groups = attrs["groups"]
        if not _is_int(groups):
            raise TypeError(f"{where}: groups must be an int, got {groups!r}")
        if groups < 1:
            raise ValueError(f"{where}: groups must be >= 1, got {groups}")
        flip = as_bool(attrs["flip"], "flip", where)
        _n, c = x.shape[:2]
        k, cg = w.shape[:2]
        kernel = w.shape[2:]
        if k < 1:
            raise ValueError(f"{where}: weight must have at least 1 filter, got weight {w.shape}")
        if c % groups:
            raise ValueError(
                f"{where}: groups={groups} does not divide the {c} input channels (input {x.shape})"
            )
        if k % groups:
            raise ValueError(f"{where}: groups={groups} does not divide the {k} filters (weight {w.shape})")
        if cg * groups != c:
            per_group = "" if groups == 1 else f" per group ({c} in {groups} groups)"
            raise ValueError(
                f"{where}: weight has {cg} input channels but input has {c // groups}{per_group} "
                f"(input {x.shape}, weight {w.shape})"
            )
        if min(kernel) < 1:
            raise ValueError(f"{where}: weight has an empty kernel (weight {w.shape})")
        if b is not None and b.shape != (k,):
            raise ValueError(
                f"{where}: bias must have shape ({k},), one per filter, got {b.shape} (weight {w.shape})"
            )
        padding = geometry.resolve_padding(
            attrs["padding"], kernel, stride, dilation, x.shape[2:], where=where
        )
        for axis, (size, f, _s, p, d) in enumerate(zip(x.shape[2:], kernel, stride, padding, dilation)):
            if size + p[0] + p[1] < geometry.effective_kernel(f, d):
                raise ValueError(
                    f"{where}: weight's kernel (extent {geometry.effective_kernel(f, d)} with "
                    f"dilation {d}) is larger than the padded input along spatial axis {axis} "
                    f"({size} + padding {p}) (input {x.shape}, weight {w.shape})"
                )
        return {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups, "flip": flip}

    def output_shape(self, infos, attrs):
        x, w, _ = infos
        spatial = tuple(
            geometry.conv_output_size(n, f, s, p, d)
            for n, f, s, p, d in zip(
                x.shape[2:], w.shape[2:], attrs["stride"], attrs["padding"], attrs["dilation"]
            )
        )
        return (x.shape[0], w.shape[0], *spatial)


class PoolSpec(OpSpec):
    """Window pooling (max, average, Lp) in 1, 2 or 3 spatial dimensions."""

    inputs = ("input",)

    def __init__(self, name: str, extra: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.defaults = {
            "kernel_size": OpSpec.REQUIRED,
            "stride": None,
            "padding": 0,
            "dilation": 1,
            "ceil_mode": False,
            "dims": None,
            **(extra or {}),
        }

    def check(self, where, infos, attrs):
        (x,) = infos
        dims = _spatial_dims(where, attrs, x)
        _check_ndim(where, "input", x, dims + 2, "(N, C, " + ", ".join("DHW"[3 - dims :]) + ")")
        _check_spatial_nonempty(where, x)
        kernel = as_int_tuple(attrs["kernel_size"], dims, "kernel_size", where)
        stride = kernel if attrs["stride"] is None else as_int_tuple(attrs["stride"], dims, "stride", where)
        dilation = as_int_tuple(attrs["dilation"], dims, "dilation", where)
        padding = geometry.resolve_padding(
            attrs["padding"], kernel, stride, dilation, x.shape[2:], where=where
        )
        for axis, (size, f, p, d) in enumerate(zip(x.shape[2:], kernel, padding, dilation)):
            ext = geometry.effective_kernel(f, d)
            if max(p) > ext // 2:
                raise ValueError(
                    f"{where}: padding must be at most half the window ({ext // 2} for kernel_size "
                    f"{f}, dilation {d}) so that every window holds an input unit, got {p} "
                    f"on spatial axis {axis}"
                )
            if size + p[0] + p[1] < ext:
                raise ValueError(
                    f"{where}: kernel_size (extent {ext}) is larger than the padded input along "
                    f"spatial axis {axis} ({size} + padding {p}) (input {x.shape})"
                )
        ceil_mode = as_bool(attrs["ceil_mode"], "ceil_mode", where)
        for axis, (size, f, s, p, d) in enumerate(zip(x.shape[2:], kernel, stride, padding, dilation)):
            # with dilation the taps can step over the whole input: then a window reads padding only
            o = geometry.pool_output_size(size, f, s, p, d, ceil_mode)
            first = s * np.arange(o)[:, None] + d * np.arange(f)[None, :] - p[0]  # input index of each tap
            empty = ~((first >= 0) & (first < size)).any(axis=1)
            if empty.any():
                raise ValueError(
                    f"{where}: window {int(np.argmax(empty))} along spatial axis {axis} reads only padding "
                    f"(kernel_size {f}, stride {s}, padding {p}, dilation {d}, input length {size}); "
                    f"every window must hold an input unit: use less padding or dilation"
                )
        out = {
            "kernel_size": kernel,
            "stride": stride,
            "padding": padding,
            "dilation": dilation,
            "ceil_mode": ceil_mode,
        }
        if "count_include_pad" in attrs:
            out["count_include_pad"] = as_bool(attrs["count_include_pad"], "count_include_pad", where)
        if "norm_type" in attrs:
            p = as_float(attrs["norm_type"], "norm_type", where)
            if not (p > 0 and math.isfinite(p)):
                raise ValueError(f"{where}: norm_type must be a finite number > 0, got {p}")
            out["norm_type"] = p
        return out

    def output_shape(self, infos, attrs):
        (x,) = infos
        spatial = tuple(
            geometry.pool_output_size(n, f, s, p, d, attrs["ceil_mode"])
            for n, f, s, p, d in zip(
                x.shape[2:], attrs["kernel_size"], attrs["stride"], attrs["padding"], attrs["dilation"]
            )
        )
        return (*x.shape[:2], *spatial)


class ActivationSpec(OpSpec):
    """An element-wise activation: the output has the input's shape."""

    def __init__(self, name: str, defaults: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.defaults = dict(defaults or {})

    def check(self, where, infos, attrs):
        return {k: as_float(v, k, where) for k, v in attrs.items()}

    def output_shape(self, infos, attrs):
        return infos[0].shape


class FlattenSpec(OpSpec):
    """Flatten dims ``start_dim..end_dim`` into one (PyTorch's ``flatten``)."""

    name = "flatten"
    defaults: Mapping[str, Any] = {"start_dim": 1, "end_dim": -1}

    def check(self, where, infos, attrs):
        ndim = infos[0].ndim
        out = {}
        for key in ("start_dim", "end_dim"):
            v = attrs[key]
            if not _is_int(v):
                raise TypeError(f"{where}: {key} must be an int, got {v!r}")
            if not -max(ndim, 1) <= v < max(ndim, 1):
                raise ValueError(
                    f"{where}: {key}={v} is out of range for an input with {ndim} dimensions "
                    f"(input {infos[0].shape})"
                )
            out[key] = int(v) % max(ndim, 1)
        if out["start_dim"] > out["end_dim"]:
            raise ValueError(
                f"{where}: start_dim ({attrs['start_dim']}) comes after end_dim ({attrs['end_dim']})"
            )
        return out

    def output_shape(self, infos, attrs):
        shape = infos[0].shape
        s, e = attrs["start_dim"], attrs["end_dim"]
        if not shape:
            return (1,)
        return (*shape[:s], math.prod(shape[s : e + 1]), *shape[e + 1 :])


class LinearSpec(OpSpec):
    """The dense layer: ``y = x W^T + b``, x ``(*, in)``, W ``(out, in)``, b ``(out,)``."""

    name = "linear"
    inputs = ("input", "weight", "bias")
    optional = frozenset({"bias"})

    def check(self, where, infos, attrs):
        x, w, b = infos
        if x.ndim < 1:
            raise ValueError(f"{where}: input must have at least 1 dimension (*, in_features), got a scalar")
        _check_ndim(where, "weight", w, 2, "(out_features, in_features)")
        if x.shape[-1] != w.shape[1]:
            raise ValueError(
                f"{where}: weight has {w.shape[1]} input features but input has {x.shape[-1]} "
                f"(input {x.shape}, weight {w.shape})"
            )
        if b is not None and b.shape != (w.shape[0],):
            raise ValueError(
                f"{where}: bias must have shape ({w.shape[0]},), got {b.shape} (weight {w.shape})"
            )
        return {}

    def output_shape(self, infos, attrs):
        return (*infos[0].shape[:-1], infos[1].shape[0])


class CrossEntropySpec(OpSpec):
    """Softmax cross-entropy of logits ``(N, C)`` against class indices ``(N,)``."""

    name = "cross_entropy"
    inputs = ("input", "target")
    integer_inputs = frozenset({"target"})
    defaults: Mapping[str, Any] = {"reduction": "mean"}

    def check(self, where, infos, attrs):
        logits, target = infos
        _check_ndim(where, "input", logits, 2, "(N, classes)")
        if target.shape != logits.shape[:1]:
            raise ValueError(
                f"{where}: target must have shape ({logits.shape[0]},), one class index per row "
                f"of input, got {target.shape} (input {logits.shape})"
            )
        if logits.shape[1] < 1:
            raise ValueError(f"{where}: input must have at least one class, got {logits.shape}")
        reduction = attrs["reduction"]
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"{where}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        if reduction == "mean" and logits.shape[0] == 0:
            raise ValueError(f"{where}: the mean over an empty batch is undefined (input {logits.shape})")
        return {"reduction": reduction}

    def output_shape(self, infos, attrs):
        return (infos[0].shape[0],) if attrs["reduction"] == "none" else ()

    def check_values(self, where, inputs, to_numpy):
        logits, target = inputs
        t = to_numpy(target)
        classes = logits.shape[1]
        if t.size and (t.min() < 0 or t.max() >= classes):
            bad = t[(t < 0) | (t >= classes)][0]
            raise ValueError(
                f"{where}: target holds class index {int(bad)}, outside [0, {classes}) "
                f"(input {tuple(logits.shape)})"
            )


#: The core's op kinds, registered through the same hook a plugin uses.
BUILTIN_SPECS: tuple[OpSpec, ...] = (
    ConvSpec(),
    PoolSpec("max_pool"),
    PoolSpec("avg_pool", {"count_include_pad": True}),
    PoolSpec("lp_pool", {"norm_type": OpSpec.REQUIRED}),
    ActivationSpec("relu"),
    ActivationSpec("leaky_relu", {"negative_slope": 0.01}),
    ActivationSpec("sigmoid"),
    ActivationSpec("tanh"),
    FlattenSpec(),
    LinearSpec(),
    CrossEntropySpec(),
)


@hookimpl
def cnnkit_register_ops(register):
    for spec in BUILTIN_SPECS:
        register(spec)
