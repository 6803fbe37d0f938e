"""The dense records: ``flatten`` and ``linear`` (the step from feature maps to the classifier).

The ops: :class:`FlattenSpec`, :class:`LinearSpec`; the functions
:func:`flatten`, :func:`linear`; the layers :class:`Flatten`, :class:`Linear`.
The NumPy kernels are ``cnnkit_numpy.ops.flatten_*`` and ``linear_*``; the
torch kernels ``cnnkit_torch.ops.Flatten`` and ``Linear``.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from cnnkit.conformance.cases import Case, Seeds, error_cases
from cnnkit.dispatch import call
from cnnkit.layer import Layer, ParamSpec
from cnnkit.ops._shared import BackendArg, nan_propagates
from cnnkit.spec import OpSpec, _is_int, as_bool, as_int_tuple, check_ndim

__all__ = ["FUNCTIONS", "LAYERS", "Flatten", "FlattenSpec", "Linear", "LinearSpec", "flatten", "linear"]

rand = Seeds(40000)


@functools.cache
def _flatten_cases() -> tuple[Case, ...]:
    return tuple(_flatten_case_list())


def _flatten_case_list() -> Iterator[Case]:
    for start, end in ((1, -1), (0, -1), (1, 2), (2, 3), (0, 0), (-3, -2), (3, 3)):
        yield Case(
            f"flatten-start{start}-end{end}",
            "flatten",
            (rand(2, 3, 4, 5),),
            {"start_dim": start, "end_dim": end},
            tags=("flatten",),
        )
    yield Case("flatten-2d", "flatten", (rand(3, 4),), tags=("flatten",))
    yield Case(
        "flatten-golden-nan-inf",
        "flatten",
        ([[[np.nan, np.inf], [-np.inf, 1.0]]],),
        expected=[[np.nan, np.inf, -np.inf, 1.0]],
        grad_output=[[1.0, 2.0, 3.0, 4.0]],
        expected_grads=([[[1.0, 2.0], [3.0, 4.0]]],),
        differentiable=False,
        tags=("golden", "flatten", "nan"),
    )
    yield Case("flatten-1d", "flatten", (rand(6),), {"start_dim": 0}, tags=("flatten",))
    yield from error_cases(
        [
            (
                "flatten-error-start-out-of-range",
                "flatten",
                (rand(2, 3),),
                {"start_dim": 2},
                ValueError,
                "out of range",
            ),
            (
                "flatten-error-start-after-end",
                "flatten",
                (rand(2, 3, 4),),
                {"start_dim": 2, "end_dim": 1},
                ValueError,
                "comes after",
            ),
            ("flatten-error-float-dim", "flatten", (rand(2, 3),), {"start_dim": 1.0}, TypeError, "start_dim"),
        ]
    )


@functools.cache
def _linear_cases() -> tuple[Case, ...]:
    return tuple(_linear_case_list())


def _linear_case_list() -> Iterator[Case]:
    for shape in ((3, 5), (2, 3, 5), (5,), (2, 2, 2, 5)):
        sid = "x".join(map(str, shape))
        for bias in (True, False):
            yield Case(
                f"linear-{sid}{'' if bias else '-nobias'}",
                "linear",
                (rand(*shape), rand(4, 5), rand(4) if bias else None),
                tags=("linear",),
            )
    yield Case(
        "linear-golden-nan-inf",
        "linear",
        ([[np.nan, 1.0], [2.0, np.inf]], [[1.0, 2.0]], [0.5]),
        expected=[[np.nan], [np.inf]],
        grad_output=[[1.0], [1.0]],
        expected_grads=([[1.0, 2.0], [1.0, 2.0]], [[np.nan, np.inf]], [2.0]),
        differentiable=False,
        tags=("golden", "linear", "nan"),
    )
    yield Case(
        "linear-golden",
        "linear",
        ([[1.0, 2, 3]], [[1.0, 0, -1], [2, 2, 2]], [0.5, -1.0]),
        expected=[[-1.5, 11.0]],
        tags=("golden", "linear"),
    )
    yield from error_cases(
        [
            (
                "linear-error-feature-mismatch",
                "linear",
                (rand(2, 4), rand(3, 5), None),
                {},
                ValueError,
                "weight has 5 input features but input has 4",
            ),
            (
                "linear-error-bias-shape",
                "linear",
                (rand(2, 5), rand(3, 5), rand(5)),
                {},
                ValueError,
                "bias must have shape",
            ),
            (
                "linear-error-weight-ndim",
                "linear",
                (rand(2, 5), rand(5), None),
                {},
                ValueError,
                "weight must have",
            ),
        ]
    )


class FlattenSpec(OpSpec):
    """Flatten dims ``start_dim..end_dim`` into one (PyTorch's ``flatten``): the step to the dense layer.

    Forward: ``y = reshape(x, (*x.shape[:s], Π x.shape[s:e+1], *x.shape[e+1:]))``.
    Backward: ``δ_prev = reshape(δ, x.shape)``.
    """

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

    def cases(self):
        return _flatten_cases()

    def oracle(self, x, *, start_dim, end_dim):
        if x.ndim == 0:
            return x.reshape(1)
        return x.reshape(*x.shape[:start_dim], -1, *x.shape[end_dim + 1 :])


class LinearSpec(OpSpec):
    """The dense layer: ``a = y Wᵀ + b``, y ``(*, in)``, W ``(out, in)``, b ``(out,)``.

    Backward: ``dE/dW = δᵀ y``, ``dE/db = Σ_n δ``, ``δ_prev = δ W`` (leading axes summed).
    """

    name = "linear"
    inputs = ("input", "weight", "bias")
    optional = frozenset({"bias"})

    def check(self, where, infos, attrs):
        x, w, b = infos
        if x.ndim < 1:
            raise ValueError(f"{where}: input must have at least 1 dimension (*, in_features), got a scalar")
        check_ndim(where, "weight", w, 2, "(out_features, in_features)")
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

    properties = (nan_propagates,)

    def cases(self):
        return _linear_cases()

    def oracle(self, x, w, b):
        y = x @ w.T
        return y if b is None else y + b


# -- the functions ---------------------------------------------------------------------------


def flatten(input: Any, start_dim: int = 1, end_dim: int = -1, *, backend: BackendArg = None) -> Any:
    """Merge dims ``start_dim..end_dim`` into one (the step from feature maps to the dense layer).

    Args:
        input: any shape.
        start_dim: the first dim to merge (negative counts from the end; default 1).
        end_dim: the last dim to merge, inclusive (default -1, the last).
        backend: the backend to run on (default: the active one).

    Shape:
        ``(N, C, H, W)`` -> ``(N, C·H·W)`` with the defaults.

    Returns:
        The input with those dims merged, same dtype and values.

    Raises:
        ValueError: a dim out of range, ``start_dim`` after ``end_dim``.
        TypeError: a non-integer dim, a non-floating input.

    Example:
        >>> import numpy as np
        >>> flatten(np.zeros((2, 3, 4, 5))).shape
        (2, 60)
    """
    return call("flatten", input, backend=backend, where="flatten", start_dim=start_dim, end_dim=end_dim)


def linear(input: Any, weight: Any, bias: Any = None, *, backend: BackendArg = None) -> Any:
    """The dense layer: ``y = x W^T + b``.

    Args:
        input: ``(*, in_features)``.
        weight: ``(out_features, in_features)``.
        bias: ``(out_features,)`` or ``None``.
        backend: the backend to run on (default: the active one).

    Shape:
        output ``(*, out_features)``.

    Returns:
        ``y``, in the input's dtype.

    Raises:
        ValueError: a weight that is not 2-D, feature counts of input and weight
            that differ, a bias of the wrong shape.
        TypeError: non-floating or mismatched dtypes.

    Example:
        >>> import numpy as np
        >>> linear(np.ones((1, 3)), np.ones((2, 3)), np.array([0.0, 1.0])).tolist()
        [[3.0, 4.0]]
    """
    return call("linear", input, weight, bias, backend=backend, where="linear")


# -- the layers ------------------------------------------------------------------------------


def _dim(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Flatten: {name} must be an int, got {value!r}")
    return int(value)


class Flatten(Layer):
    """Merge dims ``start_dim..end_dim`` into one: the step from feature maps to the dense layer.

    Args:
        start_dim: first dim to merge (default 1, keeping the batch).
        end_dim: last dim to merge (default -1).

    Shape:
        ``(N, C, H, W)`` -> ``(N, C·H·W)`` with the defaults.

    Returns:
        ``forward(x)`` returns the flattened array; backward reshapes ``δ`` back.

    Example:
        >>> import numpy as np
        >>> Flatten()(np.zeros((2, 3, 4, 5))).shape
        (2, 60)
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = _dim(start_dim, "start_dim")
        self.end_dim = _dim(end_dim, "end_dim")

    def function(self, x):
        return flatten(x, self.start_dim, self.end_dim)

    def config(self):
        return {"start_dim": self.start_dim, "end_dim": self.end_dim}

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def window(self):
        return ()


class Linear(Layer):
    """The dense layer: ``y = x Wᵀ + b``.

    Backward: ``dE/dW = δᵀ x``, ``dE/db = Σ_n δ``, ``dE/dx = δ W``.

    Args:
        in_features: size of each input row.
        out_features: size of each output row.
        bias: learn a bias (default ``True``).
        seed, rng: where the initial weights come from.
        backend: the backend the parameters live on (default: the active one).

    Attributes:
        weight: ``(out_features, in_features)``, ``U(±1/√in_features)``.
        bias: ``(out_features,)``, ``U(±1/√in_features)``, or ``None``.

    Shape:
        input ``(*, in_features)`` -> output ``(*, out_features)``.

    Returns:
        ``forward(x)`` returns the output.

    Example:
        >>> import numpy as np
        >>> Linear(3, 2, seed=0)(np.ones((4, 3), dtype=np.float32)).shape
        (4, 2)
    """

    param_names = ("weight", "bias")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
        backend: BackendArg = None,
    ) -> None:
        super().__init__()
        (self.in_features,) = as_int_tuple(in_features, 1, "in_features", "Linear")
        (self.out_features,) = as_int_tuple(out_features, 1, "out_features", "Linear")
        self.has_bias = as_bool(bias, "bias", "Linear")
        self.init_parameters(seed=seed, rng=rng, backend=backend)

    def param_specs(self):
        return {
            "weight": ParamSpec((self.out_features, self.in_features), self.in_features, "kaiming_uniform"),
            "bias": ParamSpec((self.out_features,), self.in_features) if self.has_bias else None,
        }

    def function(self, x, weight, bias):
        return linear(x, weight, bias)

    def config(self):
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.has_bias}

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.has_bias}"

    def window(self):
        return ()


#: What :mod:`cnnkit.functional` and :mod:`cnnkit.layers` show of this family.
FUNCTIONS = (flatten, linear)
LAYERS = (Flatten, Linear)
#: The family's op records.
SPECS = (FlattenSpec(), LinearSpec())
