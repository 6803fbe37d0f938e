"""The op interface: what one op record declares, and the checks records share.

An op kind is declared once, as an :class:`OpSpec` subclass in its family's
module under :mod:`cnnkit.ops` (convolution, pooling, activations, dense
layers, losses). The record holds everything about the op that is not a backend's
kernel:

- its inputs and attributes with defaults, their validation (:meth:`OpSpec.check`)
  and the output shape (:meth:`OpSpec.output_shape`): every backend receives the
  same canonical attributes, so every backend raises the same error, with the
  same message, for the same bad call;
- its documentation: the forward and backward formulas in the lecture's
  symbols, in the class docstring;
- its conformance cases (:meth:`OpSpec.cases`), the properties the lecture
  states for it (:attr:`OpSpec.properties`) and, where the suite needs one, an
  oracle computing the forward pass from the definition (:meth:`OpSpec.oracle`).

The helpers below (:func:`as_int_tuple`, :func:`check_ndim`,
:func:`spatial_dims`, :func:`check_window`, ...) are public so that a plugin's
window op validates exactly as the core's pools do.

Notation (the lecture's): ``y`` a layer's input, ``W`` its kernel, ``a`` its
output (pre-activation), ``δ = dE/da`` the incoming deltas, ``δ_prev = dE/dy``,
``S`` stride, ``P`` padding, ``D`` dilation, ``F`` the kernel size, ``⋆``
cross-correlation.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from cnnkit import geometry

if TYPE_CHECKING:
    from cnnkit.conformance.cases import Case

__all__ = [
    "FLOAT_DTYPES",
    "OpSpec",
    "PropertySkip",
    "TensorInfo",
    "as_bool",
    "as_float",
    "as_int_tuple",
    "check_ndim",
    "check_spatial_nonempty",
    "check_window",
    "layout",
    "spatial_dims",
    "window_output_shape",
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


_is_int = geometry.is_int


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


class PropertySkip(Exception):
    """Raised by a property check that does not apply to a case (the suite records a skip)."""


#: A property check: takes the conformance run of one case (see :mod:`cnnkit.conformance.runner`).
Property = Callable[[Any], None]


class OpSpec:
    """The record of one op kind.

    Subclasses set :attr:`name`, :attr:`inputs` and :attr:`defaults`, and
    implement :meth:`check` and :meth:`output_shape`; the class docstring
    states the forward and backward formulas. A record may also bring its
    conformance cases (:meth:`cases`), properties (:attr:`properties`) and an
    oracle (:meth:`oracle`). Plugins register instances through
    :func:`cnnkit.hookspecs.cnnkit_register_ops`.

    Attributes:
        name: the op kind, the name kernels are registered under.
        inputs: the names of the array inputs, in call order.
        optional: inputs that may be ``None`` (a missing bias).
        integer_inputs: inputs that hold integers (class indices); all others
            are floating and must share one dtype.
        state_inputs: inputs that are state, not data: the kernel may update
            them in place (a batch norm's running statistics, as torch does)
            and returns no gradient for them; the conformance suite neither
            differentiates nor snapshots them.
        constant_inputs: floating inputs the op gives no gradient for (a loss's class
            weights, as torch's); the conformance suite does not differentiate them.
        defaults: every attribute with its default; ``REQUIRED`` marks one
            without a default.
        properties: checks of what the lecture states for the op, each run on
            every case of the op (a check raises :class:`PropertySkip` where
            it does not apply).
    """

    REQUIRED: ClassVar[object] = object()

    name: str = ""
    inputs: tuple[str, ...] = ("input",)
    optional: frozenset[str] = frozenset()
    integer_inputs: frozenset[str] = frozenset()
    state_inputs: frozenset[str] = frozenset()
    constant_inputs: frozenset[str] = frozenset()
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

    def check_values(
        self, where: str, inputs: Sequence[Any], to_numpy: Any, attrs: Mapping[str, Any] | None = None
    ) -> None:
        """Check input *values* (not only shapes) where an op needs it; ``to_numpy`` reads an input,
        ``attrs`` are the canonical attributes (an ``ignore_index``).

        Only ops whose inputs index something (class targets) override this.
        """

    # -- what the conformance suite reads ----------------------------------------------

    properties: tuple[Property, ...] = ()

    def cases(self) -> Iterable[Case]:
        """The op's conformance cases (none by default); the suite runs them on every backend."""
        return ()

    def oracle(self, *inputs: np.ndarray, **attrs: Any) -> np.ndarray:
        """The forward pass from the definition, in float64, on canonical attributes.

        It shares no code with any backend, so it checks the reference backend
        too. Records without one leave this as is; their cases are checked
        against goldens and the reference backend only.
        """
        raise NotImplementedError

    @property
    def has_oracle(self) -> bool:
        return type(self).oracle is not OpSpec.oracle

    def __repr__(self) -> str:
        return f"<OpSpec {self.name}({', '.join(self.inputs)})>"


@functools.cache
def values_take_attrs(cls: type) -> bool:
    """Whether ``cls.check_values`` takes the canonical attributes (a fourth argument; older
    records do not)."""
    try:
        return (
            len(inspect.signature(cls.check_values).parameters) >= 5
        )  # self, where, inputs, to_numpy, attrs
    except (TypeError, ValueError):
        return False


def layout(dims: int, lead: str = "N, C") -> str:
    """``(N, C, H, W)`` for ``dims = 2``: the layout a message names."""
    return f"({lead}, " + ", ".join("DHW"[3 - dims :]) + ")"


def check_ndim(where: str, name: str, info: TensorInfo, ndim: int, layout: str) -> None:
    """Raise ``ValueError`` unless ``info`` has ``ndim`` dimensions (``layout`` names them)."""
    if info.ndim != ndim:
        raise ValueError(
            f"{where}: {name} must have {ndim} dimensions {layout}, got {info.ndim} ({name} {info.shape})"
        )


def spatial_dims(where: str, attrs: dict[str, Any], info: TensorInfo) -> int:
    """Pop ``attrs["dims"]`` (set by the 1-D/2-D/3-D functions); ``None`` infers it from ``info``."""
    dims = attrs.pop("dims", None)
    if dims is None:
        dims = info.ndim - 2
        if not 1 <= dims <= 3:
            raise ValueError(
                f"{where}: input must be batched (N, C, *spatial) with 1 to 3 spatial axes, "
                f"got shape {info.shape}"
            )
    return dims


def check_spatial_nonempty(where: str, info: TensorInfo) -> None:
    """A spatial axis of length 0 has no units to slide a window over (padding alone is not an input)."""
    if 0 in info.shape[2:]:
        raise ValueError(
            f"{where}: input must have at least 1 unit along every spatial axis, got shape {info.shape}"
        )


def check_window(
    where: str,
    x: TensorInfo,
    attrs: Mapping[str, Any],
    dims: int,
    *,
    kernel_name: str = "kernel_size",
) -> dict[str, Any]:
    """Validate a window op's geometry, as every pool does; return it in canonical form.

    Reads ``kernel_size``, ``stride`` (``None``: the kernel), ``padding``, and
    ``dilation`` and ``ceil_mode`` where ``attrs`` has them. Padding follows
    ONNX's pool rule: at most the window's extent ``D·(F-1) + 1`` minus one per
    side, and every window must hold at least one input unit.

    Returns:
        ``{"kernel_size", "stride", "padding", "dilation", "ceil_mode"}``:
        tuples of ints, ``(before, after)`` pairs, and a bool.

    Raises:
        TypeError: non-integer sizes, a ``ceil_mode`` that is not a bool.
        ValueError: sizes < 1, negative or excessive padding, a window larger
            than the padded input, a window that reads padding only.
    """
    check_ndim(where, "input", x, dims + 2, layout(dims))
    check_spatial_nonempty(where, x)
    kernel = as_int_tuple(attrs[kernel_name], dims, kernel_name, where)
    stride = attrs.get("stride")
    stride = kernel if stride is None else as_int_tuple(stride, dims, "stride", where)
    dilation = as_int_tuple(attrs.get("dilation", 1), dims, "dilation", where)
    padding = geometry.resolve_padding(
        attrs.get("padding", 0), kernel, stride, dilation, x.shape[2:], where=where
    )
    for axis, (size, f, p, d) in enumerate(zip(x.shape[2:], kernel, padding, dilation)):
        ext = geometry.effective_kernel(f, d)
        if max(p) > ext - 1:  # ONNX's rule: a window may overhang the input by all but one unit
            raise ValueError(
                f"{where}: padding must be at most the window's extent minus one ({ext - 1} for "
                f"kernel_size {f}, dilation {d}) so that every window holds an input unit, got {p} "
                f"on spatial axis {axis}"
            )
        if size + p[0] + p[1] < ext:
            raise ValueError(
                f"{where}: {kernel_name} (extent {ext}) is larger than the padded input along "
                f"spatial axis {axis} ({size} + padding {p}) (input {x.shape})"
            )
    ceil_mode = as_bool(attrs.get("ceil_mode", False), "ceil_mode", where)
    for axis, (size, f, s, p, d) in enumerate(zip(x.shape[2:], kernel, stride, padding, dilation)):
        # with dilation the taps can step over the whole input: then a window reads padding only
        # (found by arithmetic on the sizes: no table of windows x taps)
        empty = geometry.empty_pool_window(size, f, s, p, d, ceil_mode)
        if empty is not None:
            raise ValueError(
                f"{where}: window {empty} along spatial axis {axis} reads only padding "
                f"(kernel_size {f}, stride {s}, padding {p}, dilation {d}, input length {size}); "
                f"every window must hold an input unit: use less padding or dilation"
            )
    return {
        "kernel_size": kernel,
        "stride": stride,
        "padding": padding,
        "dilation": dilation,
        "ceil_mode": ceil_mode,
    }


def window_output_shape(x: TensorInfo, attrs: Mapping[str, Any], channels: int | None = None) -> tuple:
    """``(N, C, *O)`` of a window op with canonical ``attrs`` (``ceil_mode`` where present)."""
    spatial = tuple(
        geometry.pool_output_size(n, f, s, p, d, attrs.get("ceil_mode", False))
        for n, f, s, p, d in zip(
            x.shape[2:], attrs["kernel_size"], attrs["stride"], attrs["padding"], attrs["dilation"]
        )
    )
    return (x.shape[0], x.shape[1] if channels is None else channels, *spatial)
