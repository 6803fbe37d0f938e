"""The activation records: ``relu``, ``leaky_relu``, ``sigmoid``, ``tanh``; their functions and layers.

Each is element-wise: ``y' = f(a)`` and ``δ_prev = δ ⊙ f'(a)``, so one record
class, :class:`ActivationSpec`, serves all four (and a plugin's). The NumPy
kernels are ``cnnkit_numpy.ops.<name>_forward/backward``; the torch kernels the
``autograd.Function`` of the same name in ``cnnkit_torch.ops``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from cnnkit.conformance.cases import Case, Seeds, error_cases
from cnnkit.dispatch import call
from cnnkit.layer import Layer
from cnnkit.ops._shared import BackendArg, nan_and_inf_propagate
from cnnkit.spec import OpSpec, as_bool, as_float

__all__ = [
    "FUNCTIONS",
    "LAYERS",
    "ActivationSpec",
    "LeakyReLU",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "leaky_relu",
    "relu",
    "sigmoid",
    "tanh",
]

rand = Seeds(30000)


class ActivationSpec(OpSpec):
    """An element-wise activation: the output has the input's shape; attributes are numbers.

    Args:
        name: the op kind.
        defaults: its attributes with their defaults (each a number).
        oracle: ``oracle(x, **attrs)``, the definition in float64 (optional).
        cases: its conformance cases (optional).
        doc: the forward and backward formulas.
    """

    properties = (nan_and_inf_propagate,)

    def __init__(
        self,
        name: str,
        defaults: Mapping[str, Any] | None = None,
        *,
        oracle: Callable[..., np.ndarray] | None = None,
        cases: Iterable[Case] = (),
        doc: str = "",
    ) -> None:
        self.name = name
        self.defaults = dict(defaults or {})
        self._oracle = oracle
        self._cases = tuple(cases)
        self.__doc__ = doc or type(self).__doc__
        if oracle is None:
            self.properties = ()

    def check(self, where, infos, attrs):
        return {k: as_float(v, k, where) for k, v in attrs.items()}

    def output_shape(self, infos, attrs):
        return infos[0].shape

    def cases(self):
        return self._cases

    def oracle(self, x, **attrs):
        if self._oracle is None:
            raise NotImplementedError(f"{self.name} has no oracle")
        return self._oracle(x, **attrs)

    @property
    def has_oracle(self) -> bool:
        return self._oracle is not None


def _nan_inf(op: str, attrs: dict, expected: list, grads: list) -> Case:
    """A golden of NaN, +inf and -inf: the forward and the backward there (no finite differences)."""
    return Case(
        f"{op}-golden-nan-inf",
        op,
        ([np.nan, np.inf, -np.inf, -2.0, 3.0],),
        attrs,
        expected=expected,
        grad_output=[1.0, 1.0, 1.0, 1.0, 1.0],
        expected_grads=(grads,),
        differentiable=False,
        tags=("golden", "activation", "nan"),
    )


def _random(op: str, attrs_list: list[dict]) -> Iterable[Case]:
    for attrs in attrs_list:
        slope = f"-slope{attrs['negative_slope']:g}" if attrs else ""
        for shape in ((7,), (2, 3), (2, 3, 4, 5)):
            sid = "x".join(map(str, shape))
            yield Case(f"{op}{slope}-{sid}", op, (rand(*shape, low=-3, high=3),), attrs, tags=("activation",))


RELU = ActivationSpec(
    "relu",
    oracle=lambda x: np.maximum(x, 0.0),
    doc="ReLU: ``y' = max(0, a)``; backward ``δ_prev = δ ⊙ [a > 0]`` (zero at the kink).",
    cases=(
        *_random("relu", [{}]),
        Case(
            "relu-golden",
            "relu",
            ([-1.0, 0.5, 2.0],),
            expected=[0.0, 0.5, 2.0],
            tags=("golden", "activation"),
        ),
        Case(
            "relu-at-zero",
            "relu",
            ([-1.0, 0.0, 2.0],),
            expected=[0.0, 0.0, 2.0],
            grad_output=[1.0, 1.0, 1.0],
            expected_grads=([0.0, 0.0, 1.0],),
            differentiable=False,
            tags=("golden", "activation", "tie"),
        ),
        # the gradient passes where x > 0 only: NaN > 0 is false, as torch's threshold_backward
        _nan_inf("relu", {}, [np.nan, np.inf, 0.0, 0.0, 3.0], [0.0, 1.0, 0.0, 0.0, 1.0]),
        *error_cases([("relu-error-int-input", "relu", (np.arange(3),), {}, TypeError, "floating")]),
    ),
)
LEAKY_RELU = ActivationSpec(
    "leaky_relu",
    {"negative_slope": 0.01},
    oracle=lambda x, *, negative_slope: np.where(x > 0, x, negative_slope * x),
    doc="Leaky ReLU: ``y' = a`` where ``a > 0``, else ``s·a``; backward ``δ_prev = δ ⊙ (1 or s)``.",
    cases=(
        # the whole valid range of the slope: negative, above 1
        *_random(
            "leaky_relu", [{}, {"negative_slope": 0.2}, {"negative_slope": -0.5}, {"negative_slope": 2.5}]
        ),
        _nan_inf(
            "leaky_relu",
            {"negative_slope": 0.5},
            [np.nan, np.inf, -np.inf, -1.0, 3.0],
            [0.5, 1.0, 0.5, 0.5, 1.0],
        ),
        Case(
            "leaky_relu-golden",
            "leaky_relu",
            ([-2.0, 3.0],),
            {"negative_slope": 0.5},
            expected=[-1.0, 3.0],
            tags=("golden", "activation"),
        ),
        *error_cases(
            [
                (
                    "leaky_relu-error-slope-string",
                    "leaky_relu",
                    (rand(3),),
                    {"negative_slope": "a"},
                    TypeError,
                    "negative_slope",
                )
            ]
        ),
    ),
)
SIGMOID = ActivationSpec(
    "sigmoid",
    oracle=lambda x: 0.5 * (1.0 + np.tanh(0.5 * x)),
    doc="Sigmoid: ``y' = σ(a) = 1 / (1 + e^-a)``; backward ``δ_prev = δ ⊙ y'(1 - y')``.",
    cases=(
        *_random("sigmoid", [{}]),
        Case(
            "sigmoid-golden",
            "sigmoid",
            ([0.0, 1000.0, -1000.0],),
            expected=[0.5, 1.0, 0.0],
            tags=("golden", "activation"),
        ),
        _nan_inf(
            "sigmoid",
            {},
            [np.nan, 1.0, 0.0, 1 / (1 + np.exp(2.0)), 1 / (1 + np.exp(-3.0))],
            [
                np.nan,
                0.0,
                0.0,
                np.exp(-2.0) / (1 + np.exp(-2.0)) ** 2,
                np.exp(-3.0) / (1 + np.exp(-3.0)) ** 2,
            ],
        ),
    ),
)
TANH = ActivationSpec(
    "tanh",
    oracle=np.tanh,
    doc="Hyperbolic tangent: ``y' = tanh(a)``; backward ``δ_prev = δ ⊙ (1 - y'²)``.",
    cases=(
        *_random("tanh", [{}]),
        Case("tanh-golden", "tanh", ([0.0, 50.0],), expected=[0.0, 1.0], tags=("golden", "activation")),
        _nan_inf(
            "tanh",
            {},
            [np.nan, 1.0, -1.0, np.tanh(-2.0), np.tanh(3.0)],
            [np.nan, 0.0, 0.0, 1 - np.tanh(2.0) ** 2, 1 - np.tanh(3.0) ** 2],
        ),
    ),
)


# -- the functions ---------------------------------------------------------------------------


def relu(input: Any, *, backend: BackendArg = None) -> Any:
    """``max(0, x)`` element-wise; the gradient passes where ``x > 0``.

    Args:
        input: any shape.
        backend: the backend to run on (default: the active one).

    Shape:
        output: the input's shape.

    Returns:
        The activation, element-wise, in the input's dtype.

    Raises:
        TypeError: a non-floating input.

    Example:
        >>> import numpy as np
        >>> relu(np.array([-1.0, 0.0, 2.0])).tolist()
        [0.0, 0.0, 2.0]
    """
    return call("relu", input, backend=backend, where="relu")


def leaky_relu(input: Any, negative_slope: float = 0.01, *, backend: BackendArg = None) -> Any:
    """``x`` where ``x > 0``, else ``negative_slope · x``.

    Args:
        input: any shape.
        negative_slope: the slope for ``x <= 0`` (default 0.01).
        backend: the backend to run on (default: the active one).

    Shape:
        output: the input's shape.

    Returns:
        The activation, element-wise, in the input's dtype.

    Raises:
        TypeError: a non-floating input, a non-numeric ``negative_slope``.

    Example:
        >>> import numpy as np
        >>> leaky_relu(np.array([-2.0, 3.0]), 0.5).tolist()
        [-1.0, 3.0]
    """
    return call("leaky_relu", input, backend=backend, where="leaky_relu", negative_slope=negative_slope)


def sigmoid(input: Any, *, backend: BackendArg = None) -> Any:
    """``1 / (1 + e^-x)``; its derivative is ``σ(x)(1 - σ(x))``.

    Args:
        input: any shape.
        backend: the backend to run on (default: the active one).

    Shape:
        output: the input's shape.

    Returns:
        The activation, element-wise, in the input's dtype.

    Raises:
        TypeError: a non-floating input.

    Example:
        >>> import numpy as np
        >>> sigmoid(np.array([0.0])).tolist()
        [0.5]
    """
    return call("sigmoid", input, backend=backend, where="sigmoid")


def tanh(input: Any, *, backend: BackendArg = None) -> Any:
    """``tanh(x)``; its derivative is ``1 - tanh(x)^2``.

    Args:
        input: any shape.
        backend: the backend to run on (default: the active one).

    Shape:
        output: the input's shape.

    Returns:
        The activation, element-wise, in the input's dtype.

    Raises:
        TypeError: a non-floating input.

    Example:
        >>> import numpy as np
        >>> tanh(np.array([0.0])).tolist()
        [0.0]
    """
    return call("tanh", input, backend=backend, where="tanh")


# -- the layers ------------------------------------------------------------------------------


class _Inplace(Layer):
    """An activation layer; ``inplace`` is accepted for ``torch.nn`` compatibility only.

    The result is always a new array (the op keeps its input for backward).
    """

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = as_bool(inplace, "inplace", type(self).__name__)

    def config(self):
        return {"inplace": True} if self.inplace else {}

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class ReLU(_Inplace):
    """``y = max(0, x)`` element-wise; backward ``δ_prev = δ ⊙ [x > 0]``.

    Args:
        inplace: accepted for ``torch.nn.ReLU`` compatibility; the result is always a new array.

    Shape:
        any shape; the output has the input's.

    Returns:
        ``forward(x)`` returns ``max(0, x)``.

    Example:
        >>> import numpy as np
        >>> ReLU()(np.array([-1.0, 2.0])).tolist()
        [0.0, 2.0]
    """

    def function(self, x):
        return relu(x)


class LeakyReLU(_Inplace):
    """``y = x`` where ``x > 0``, else ``negative_slope · x``.

    Args:
        negative_slope: the slope for ``x <= 0`` (default 0.01).
        inplace: accepted for compatibility; the result is always a new array.

    Shape:
        any shape; the output has the input's.

    Returns:
        ``forward(x)`` returns the activation.

    Example:
        >>> import numpy as np
        >>> LeakyReLU(0.5)(np.array([-2.0, 3.0])).tolist()
        [-1.0, 3.0]
    """

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__(inplace)
        self.negative_slope = as_float(negative_slope, "negative_slope", "LeakyReLU")

    def function(self, x):
        return leaky_relu(x, self.negative_slope)

    def config(self):
        return {"negative_slope": self.negative_slope, **super().config()}

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class Sigmoid(Layer):
    """``y = 1 / (1 + e^-x)``; backward ``δ_prev = δ ⊙ y(1 - y)``.

    Shape:
        any shape; the output has the input's.

    Returns:
        ``forward(x)`` returns the activation.

    Example:
        >>> import numpy as np
        >>> Sigmoid()(np.array([0.0])).tolist()
        [0.5]
    """

    def function(self, x):
        return sigmoid(x)


class Tanh(Layer):
    """``y = tanh(x)``; backward ``δ_prev = δ ⊙ (1 - y²)``.

    Shape:
        any shape; the output has the input's.

    Returns:
        ``forward(x)`` returns the activation.

    Example:
        >>> import numpy as np
        >>> Tanh()(np.array([0.0])).tolist()
        [0.0]
    """

    def function(self, x):
        return tanh(x)


#: What :mod:`cnnkit.functional` and :mod:`cnnkit.layers` show of this family.
FUNCTIONS = (relu, leaky_relu, sigmoid, tanh)
LAYERS = (ReLU, LeakyReLU, Sigmoid, Tanh)
#: The family's op records.
SPECS = (RELU, LEAKY_RELU, SIGMOID, TANH)
