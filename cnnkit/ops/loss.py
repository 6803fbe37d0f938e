"""The loss record: softmax ``cross_entropy``, its function and :class:`CrossEntropyLoss`.

The loss closes the chain of ``backward`` calls: :meth:`CrossEntropyLoss.backward`
returns ``dE/dlogits``, which the last layer of a network takes as its ``δ``.
The NumPy kernel is ``cnnkit_numpy.ops.cross_entropy_*``; the torch kernel
``cnnkit_torch.ops.CrossEntropy``.
"""

from __future__ import annotations

import contextlib
import functools
import numbers
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from cnnkit.conformance.cases import Case, Random, Seeds, error_cases
from cnnkit.dispatch import call, vjp
from cnnkit.layer import BufferSpec, Layer, Parameter, backend_of
from cnnkit.ops._shared import BackendArg
from cnnkit.registry import use_backend
from cnnkit.spec import FLOAT_DTYPES, OpSpec, as_float

__all__ = ["FUNCTIONS", "LOSSES", "CrossEntropyLoss", "CrossEntropySpec", "cross_entropy"]

rand = Seeds(50000)


@functools.cache
def _cases() -> tuple[Case, ...]:
    return tuple(_case_list())


def _case_list() -> Iterator[Case]:
    for reduction in ("mean", "sum", "none"):
        for n, c in ((4, 5), (1, 3), (6, 2)):
            yield Case(
                f"cross_entropy-{reduction}-{n}x{c}",
                "cross_entropy",
                (rand(n, c, low=-3, high=3), rand.integers(n, high=c), None),
                {"reduction": reduction},
                tags=("loss",),
            )
        if reduction != "mean":
            yield Case(
                f"cross_entropy-{reduction}-empty",
                "cross_entropy",
                (np.zeros((0, 3)), np.zeros((0,), dtype=np.int64), None),
                {"reduction": reduction},
                tags=("loss",),
            )
    yield Case(
        "cross_entropy-golden-uniform",
        "cross_entropy",
        ([[0.0, 0, 0, 0]], np.array([2]), None),
        expected=float(np.log(4.0)),
        tags=("golden", "loss"),
        grad_output=1.0,
        expected_grads=([[0.25, 0.25, -0.75, 0.25]], None),
    )
    yield Case(
        "cross_entropy-golden-stable",
        "cross_entropy",
        ([[1000.0, 0.0], [0.0, 1000.0]], np.array([0, 0]), None),
        {"reduction": "none"},
        expected=[0.0, 1000.0],
        tags=("golden", "loss"),
    )
    # rows with different maxima and huge logits: a max over the whole batch instead of per row overflows
    yield Case(
        "cross_entropy-golden-huge-logits-per-row-max",
        "cross_entropy",
        (
            [[1000.0, 0.0, -1000.0], [0.0, 5000.0, 4000.0], [-3000.0, -3001.0, -2999.0]],
            np.array([2, 2, 0]),
            None,
        ),
        {"reduction": "none"},
        expected=[2000.0, 1000.0, 1.0 + np.log(1 + np.exp(-1.0) + np.exp(-2.0))],
        grad_output=[1.0, 1.0, 1.0],
        expected_grads=(
            [
                [1.0, 0.0, -1.0],
                [0.0, 1.0, -1.0],
                [
                    np.exp(-1.0) / (1 + np.exp(-1.0) + np.exp(-2.0)) - 1.0,
                    np.exp(-2.0) / (1 + np.exp(-1.0) + np.exp(-2.0)),
                    1.0 / (1 + np.exp(-1.0) + np.exp(-2.0)),
                ],
            ],
            None,
        ),
        tags=("golden", "loss"),
    )
    yield Case(
        "cross_entropy-golden-nan",
        "cross_entropy",
        ([[np.nan, 0.0], [0.0, 1.0]], np.array([0, 1]), None),
        {"reduction": "none"},
        expected=[np.nan, np.log(1 + np.exp(-1.0))],
        grad_output=[1.0, 1.0],
        expected_grads=([[np.nan, np.nan], [1 / (1 + np.e), -1 / (1 + np.e)]], None),
        differentiable=False,
        tags=("golden", "loss", "nan"),
    )
    x = rand(3, 4)
    yield from error_cases(
        [
            (
                "cross_entropy-error-target-out-of-range",
                "cross_entropy",
                (x, np.array([0, 4, 1]), None),
                {},
                ValueError,
                "outside",
            ),
            (
                "cross_entropy-error-negative-target",
                "cross_entropy",
                (x, np.array([0, -1, 1]), None),
                {},
                ValueError,
                "outside",
            ),
            (
                "cross_entropy-error-float-target",
                "cross_entropy",
                (x, rand(3), None),
                {},
                TypeError,
                "integers",
            ),
            (
                "cross_entropy-error-target-shape",
                "cross_entropy",
                (x, np.array([0, 1]), None),
                {},
                ValueError,
                "target must have shape",
            ),
            (
                "cross_entropy-error-empty-mean",
                "cross_entropy",
                (np.zeros((0, 3)), np.zeros((0,), dtype=np.int64), None),
                {},
                ValueError,
                "empty batch",
            ),
            (
                "cross_entropy-error-bad-reduction",
                "cross_entropy",
                (x, np.array([0, 1, 2]), None),
                {"reduction": "avg"},
                ValueError,
                "reduction",
            ),
            (
                "cross_entropy-error-weight-length",
                "cross_entropy",
                (x, np.array([0, 1, 2]), rand(3)),
                {},
                ValueError,
                "weight must have shape \\(4,\\)",
            ),
            (
                "cross_entropy-error-label-smoothing",
                "cross_entropy",
                (x, np.array([0, 1, 2]), None),
                {"label_smoothing": 1.5},
                ValueError,
                "label_smoothing must be in \\[0, 1\\]",
            ),
            (
                "cross_entropy-error-ignore-index-float",
                "cross_entropy",
                (x, np.array([0, 1, 2]), None),
                {"ignore_index": 1.0},
                TypeError,
                "ignore_index",
            ),
            (
                "cross_entropy-error-probabilities-shape",
                "cross_entropy",
                (x, rand(3, 3), None),
                {},
                TypeError,
                "probabilities must have the input's shape",
            ),
            (
                "cross_entropy-error-spatial-target-shape",
                "cross_entropy",
                (rand(2, 3, 4), np.zeros((2, 5), dtype=np.int64), None),
                {},
                ValueError,
                "target must have shape \\(2, 4\\)",
            ),
        ]
    )
    yield from _spatial_cases()


def _spatial_cases() -> Iterator[Case]:
    """Weights, ignored targets, label smoothing, probability targets and ``(N, C, *spatial)`` logits."""
    for reduction in ("mean", "sum", "none"):
        yield Case(
            f"cross_entropy-weight-ignore-{reduction}",
            "cross_entropy",
            (rand(6, 4, low=-2, high=2), np.array([0, 3, -100, 1, 3, 2]), _positive_weights(4)),
            {"reduction": reduction},
            tags=("loss",),
        )
        yield Case(
            f"cross_entropy-smoothing0.2-weight-ignore-{reduction}",
            "cross_entropy",
            (rand(5, 3, low=-2, high=2), np.array([2, 0, 1, 1, 0]), _positive_weights(3)),
            {"reduction": reduction, "label_smoothing": 0.2, "ignore_index": 1},
            tags=("loss",),
        )
        yield Case(
            f"cross_entropy-spatial-2d-{reduction}",
            "cross_entropy",
            (rand(2, 3, 4, 5, low=-2, high=2), rand.integers(2, 4, 5, high=3), None),
            {"reduction": reduction, "label_smoothing": 0.1},
            tags=("loss",),
        )
        yield Case(
            f"cross_entropy-probabilities-{reduction}",
            "cross_entropy",
            (rand(4, 3, 2, low=-2, high=2), _probabilities((4, 3, 2)), _positive_weights(3)),
            {"reduction": reduction, "label_smoothing": 0.3},
            tags=("loss",),
        )
    yield Case(
        "cross_entropy-spatial-1d-weight",
        "cross_entropy",
        (rand(3, 4, 6, low=-2, high=2), rand.integers(3, 6, high=4), _positive_weights(4)),
        tags=("loss",),
    )
    # torch's mean with weights: the sum of the weighted losses over the sum of the kept weights
    yield Case(
        "cross_entropy-golden-weighted-mean",
        "cross_entropy",
        ([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]], np.array([0, 1, 1]), [1.0, 3.0]),
        {"ignore_index": 0},
        expected=float(np.log(2.0)),
        grad_output=1.0,
        expected_grads=([[0.0, 0.0], [0.25, -0.25], [0.25, -0.25]], None, None),
        tags=("golden", "loss"),
    )
    yield Case(
        "cross_entropy-golden-smoothing",
        "cross_entropy",
        ([[0.0, 0.0, 0.0, 0.0]], np.array([1]), None),
        {"label_smoothing": 0.4},
        expected=float(np.log(4.0)),
        tags=("golden", "loss"),
    )


def _positive_weights(c: int) -> Random:
    r = rand(c)
    return Random(r.shape, seed=r.seed, low=0.2, high=2.0)


def _probabilities(shape: tuple[int, ...]) -> np.ndarray:
    """Rows of class probabilities (axis 1 sums to 1), as a literal (it follows the suite's dtype)."""
    r = np.random.default_rng(50999).uniform(0.05, 1.0, size=shape)
    return (r / r.sum(axis=1, keepdims=True)).tolist()


class CrossEntropySpec(OpSpec):
    """Softmax cross-entropy of logits ``(N, C, *spatial)`` against class indices or probabilities.

    With ``log p = log softmax(a)`` over the class axis (computed stably, the largest
    logit subtracted first), class weights ``w`` (default 1) and label smoothing ``ε``,
    every position ``n`` has a target distribution ``q_n`` over the classes:

    - class indices ``t``: ``q_nc = w_c ((1 - ε) [c = t_n] + ε / C)``, and ``q_n = 0``
      where ``t_n`` is ``ignore_index``;
    - probabilities ``t`` (the input's shape): ``q_nc = w_c ((1 - ε) t_nc + ε / C)``.

    Forward: ``E_n = -Σ_c q_nc log p_nc``, then ``"none"``, ``"sum"``, or ``"mean"``:
    ``Σ_n E_n / Σ_n w_{t_n}`` over the positions not ignored (class indices, torch's rule),
    ``Σ_n E_n / (N·Π spatial)`` (probabilities).

    Backward: ``dE/da_n = (p_n Σ_c q_nc - q_n) · δ_n`` (``δ`` divided by the mean's
    denominator), and for probabilities ``dE/dt_nc = -(1 - ε) w_c log p_nc · δ_n``. The
    class weights get no gradient (as torch's).

    Canonical attributes: ``reduction``, ``ignore_index`` (int), ``label_smoothing``
    (float in ``[0, 1]``).
    """

    name = "cross_entropy"
    inputs = ("input", "target", "weight")
    optional = frozenset({"weight"})
    integer_inputs = frozenset({"target"})
    constant_inputs = frozenset({"weight"})
    defaults: Mapping[str, Any] = {"reduction": "mean", "ignore_index": -100, "label_smoothing": 0.0}

    def _check_dtypes(self, where, infos):
        target = infos[1]
        if target is not None and target.dtype in FLOAT_DTYPES:  # probabilities: floating like the logits
            OpSpec._check_dtypes(_AS_FLOATS, where, infos)
        else:
            OpSpec._check_dtypes(self, where, infos)

    def check(self, where, infos, attrs):
        logits, target, weight = infos
        if logits.ndim < 2:
            raise ValueError(
                f"{where}: input must have at least 2 dimensions (N, classes, *spatial), "
                f"got {logits.ndim} (input {logits.shape})"
            )
        classes = logits.shape[1]
        probabilities = target.dtype in FLOAT_DTYPES
        if probabilities and target.shape != logits.shape:
            raise TypeError(
                f"{where}: target must hold integers (class indices), got dtype {target.dtype} of "
                f"shape {target.shape}; class probabilities must have the input's shape {logits.shape}"
            )
        want = (logits.shape[0], *logits.shape[2:])
        if not probabilities and target.shape != want:
            raise ValueError(
                f"{where}: target must have shape {want}, one class index per row of input, "
                f"got {target.shape} (input {logits.shape})"
            )
        if classes < 1:
            raise ValueError(f"{where}: input must have at least one class, got {logits.shape}")
        if weight is not None and weight.shape != (classes,):
            raise ValueError(
                f"{where}: weight must have shape ({classes},), one weight per class of input "
                f"{logits.shape}, got {weight.shape}"
            )
        reduction = attrs["reduction"]
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"{where}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        if reduction == "mean" and logits.shape[0] == 0:
            raise ValueError(f"{where}: the mean over an empty batch is undefined (input {logits.shape})")
        ignore_index = attrs["ignore_index"]
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
            raise TypeError(f"{where}: ignore_index must be an int, got {ignore_index!r}")
        smoothing = as_float(attrs["label_smoothing"], "label_smoothing", where)
        if not 0.0 <= smoothing <= 1.0:
            raise ValueError(f"{where}: label_smoothing must be in [0, 1], got {smoothing}")
        return {"reduction": reduction, "ignore_index": int(ignore_index), "label_smoothing": smoothing}

    def output_shape(self, infos, attrs):
        x = infos[0]
        return (x.shape[0], *x.shape[2:]) if attrs["reduction"] == "none" else ()

    def check_values(self, where, inputs, to_numpy, attrs=None):
        logits, target, _ = inputs
        ignore_index = (attrs or {}).get("ignore_index", -100)
        t = to_numpy(target)
        if t.dtype.kind == "f":
            return
        classes = logits.shape[1]
        bad_mask = ((t < 0) | (t >= classes)) & (t != ignore_index)
        if t.size and bad_mask.any():
            bad = t[bad_mask][0]
            raise ValueError(
                f"{where}: target holds class index {int(bad)}, outside [0, {classes}) "
                f"(input {tuple(logits.shape)})"
            )

    def cases(self):
        return _cases()

    def oracle(self, z, t, weight=None, *, reduction, ignore_index, label_smoothing):
        c = z.shape[1]
        w = np.ones(c) if weight is None else weight
        zc = np.moveaxis(z, 1, -1).reshape(-1, c)  # one row per position
        m = zc.max(axis=1, keepdims=True) if zc.size else np.zeros((zc.shape[0], 1))
        log_p = zc - (m + np.log(np.exp(zc - m).sum(axis=1, keepdims=True)))
        eps = label_smoothing
        if t.dtype.kind == "f":
            tc = np.moveaxis(t, 1, -1).reshape(-1, c)
            losses = -((tc * (1 - eps) + eps / c) * w * log_p).sum(axis=1)
            denom = float(zc.shape[0])
        else:
            tf = t.reshape(-1)
            losses, denom = np.zeros(len(tf)), 0.0
            for n, k in enumerate(tf):  # one position at a time, as the definition reads
                if k == ignore_index:
                    continue
                losses[n] = -(1 - eps) * w[k] * log_p[n, k] - eps / c * (w * log_p[n]).sum()
                denom += w[k]
        if reduction == "none":
            return losses.reshape((z.shape[0], *z.shape[2:]))
        return losses.sum() if reduction == "sum" else losses.sum() / denom


class _FloatTarget(OpSpec):
    """Cross-entropy's inputs when the target holds probabilities: every input is floating."""

    inputs = CrossEntropySpec.inputs
    optional = CrossEntropySpec.optional


_AS_FLOATS = _FloatTarget()


# -- the function ----------------------------------------------------------------------------


def cross_entropy(
    input: Any,
    target: Any,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    backend: BackendArg = None,
) -> Any:
    """Softmax cross-entropy: ``E = -Σ_c q_c log softmax(input)_c``, computed stably, torch's semantics.

    ``q`` is the target: a class index (one-hot, times its class weight) or class
    probabilities, smoothed by ``label_smoothing`` towards the uniform distribution.
    Its gradient with respect to the logits is ``softmax(input) Σ_c q_c - q`` (divided
    by the mean's denominator for ``reduction="mean"``); see :class:`CrossEntropySpec`.

    Args:
        input: logits ``(N, classes)`` or ``(N, classes, *spatial)``.
        target: class indices ``(N, *spatial)``, integers in ``[0, classes)`` or
            ``ignore_index``; or class probabilities of the input's shape (floating).
        weight: a weight per class ``(classes,)``, or ``None``.
        ignore_index: a class index whose positions count for nothing, not even in the
            mean's denominator (class-index targets only; default -100).
        reduction: ``"mean"`` (default: the weighted mean over the positions not ignored),
            ``"sum"`` or ``"none"``.
        label_smoothing: in ``[0, 1]``: the share of the target spread uniformly over the
            classes (default 0).
        backend: the backend to run on (default: the active one).

    Shape:
        a scalar ``()``, or ``(N, *spatial)`` with ``reduction="none"``.

    Returns:
        The loss, in the logits' dtype.

    Raises:
        ValueError: shapes that do not match, a class index outside ``[0, classes)``, a
            ``weight`` of the wrong length, ``label_smoothing`` outside ``[0, 1]``, an empty
            batch with ``"mean"``, an unknown ``reduction``.
        TypeError: a target that is neither integers nor probabilities of the input's
            shape, non-floating logits, a non-integer ``ignore_index``.

    Example:
        >>> import numpy as np
        >>> round(float(cross_entropy(np.zeros((1, 4)), np.array([2]))), 4)
        1.3863
        >>> float(cross_entropy(np.zeros((2, 2)), np.array([0, -100])))  # the ignored row counts for nothing
        0.6931471805599453
    """
    return call(
        "cross_entropy",
        input,
        target,
        weight,
        backend=backend,
        where="cross_entropy",
        reduction=reduction,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
    )


# -- the loss layer --------------------------------------------------------------------------


class CrossEntropyLoss(Layer):
    """Softmax cross-entropy of logits against class indices or class probabilities.

    ``E = -Σ_c q_c log softmax(z)_c`` per position (see :func:`cross_entropy` for ``q``),
    averaged as torch does; its gradient ``dE/dz = softmax(z) Σ_c q_c - q`` (÷ the mean's
    denominator) is computed by the backend's manual ``backward`` (never by autograd).

    Args:
        weight: a weight per class ``(classes,)`` (kept as the buffer ``weight``, as
            torch's), or ``None``.
        ignore_index: a class index that counts for nothing (default -100).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        label_smoothing: in ``[0, 1]`` (default 0).

    Shape:
        logits ``(N, classes, *spatial)``, targets ``(N, *spatial)`` integers in
        ``[0, classes)`` (or probabilities of the logits' shape); the loss is a scalar
        ``()`` (``(N, *spatial)`` with ``"none"``).

    Returns:
        ``forward`` returns the loss as the backend's array; ``backward()``
        returns ``dE/dlogits`` with the logits' shape.

    Raises:
        ValueError, TypeError: a bad ``reduction``, ``label_smoothing``, ``ignore_index`` or
            ``weight`` here, and what :func:`cnnkit.functional.cross_entropy` raises.
        RuntimeError: ``backward`` before ``forward``.

    Example:
        >>> import numpy as np
        >>> loss = CrossEntropyLoss()
        >>> round(float(loss(np.zeros((2, 4)), np.array([0, 3]))), 4)
        1.3863
        >>> loss.backward()[0].round(3).tolist()
        [-0.375, 0.125, 0.125, 0.125]
    """

    buffer_names = ("weight",)

    def __init__(
        self,
        weight: Any = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(
                f"CrossEntropyLoss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}"
            )
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
            raise TypeError(f"CrossEntropyLoss: ignore_index must be an int, got {ignore_index!r}")
        smoothing = as_float(label_smoothing, "label_smoothing", "CrossEntropyLoss")
        if not 0.0 <= smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got {smoothing}")
        self.reduction = reduction
        self.ignore_index = int(ignore_index)
        self.label_smoothing = smoothing
        self.weight = None if weight is None else Parameter(_weights(weight), "weight")
        self._out: Any = None

    def buffer_specs(self):
        if self.weight is None:
            return {"weight": None}
        values = np.asarray(self.weight.data, dtype=np.float64)
        return {"weight": BufferSpec(values.shape, value=tuple(values.tolist()))}

    def function(self, input: Any, target: Any, weight: Any = None) -> Any:
        if weight is not None and hasattr(input, "shape"):  # the weights follow the logits
            be = backend_of(input)
            if not be.is_native(weight):
                weight = be.asarray(np.asarray(weight))
            weight = be.cast_like(weight, be.dtype_name(input), be.device_of(input))
        return cross_entropy(input, target, weight, self.ignore_index, self.reduction, self.label_smoothing)

    def config(self):
        out: dict[str, Any] = {"reduction": self.reduction}
        if self.weight is not None:
            out["weight"] = np.asarray(self.weight.data, dtype=np.float64).tolist()
        if self.ignore_index != -100:
            out["ignore_index"] = self.ignore_index
        if self.label_smoothing:
            out["label_smoothing"] = self.label_smoothing
        return out

    def _weight(self) -> Any:
        return None if self.weight is None else self.weight.data

    def forward(self, logits: Any, targets: Any) -> Any:
        """The loss of ``logits`` against ``targets``; remembers what ``backward`` needs."""
        be = backend_of(logits) if hasattr(logits, "shape") else None
        with use_backend(be) if be is not None else contextlib.nullcontext():
            self._out, self._pullback = vjp(self.function, logits, targets, self._weight())
        return self._out

    __call__ = forward

    def backward(self, grad_output: Any = None) -> Any:
        """``dE/dlogits`` (times ``grad_output``, default 1)."""
        if self._pullback is None:
            raise RuntimeError("CrossEntropyLoss.backward called before forward")
        if grad_output is None:
            shape = tuple(self._out.shape)
            be = backend_of(self._out)
            grad_output = be.asarray(np.ones(shape, dtype=be.dtype_name(self._out)))
        dlogits = self._pullback(grad_output)[0]
        return dlogits

    def infer(self, logits: Any, targets: Any) -> Any:
        """The loss, remembering nothing for ``backward``."""
        return self.function(logits, targets, self._weight())

    def __repr__(self) -> str:
        return f"CrossEntropyLoss({', '.join(f'{k}={v!r}' for k, v in self.config().items())})"


def _weights(weight: Any) -> np.ndarray:
    """Class weights as a 1-D float64 NumPy array (from a list or any backend's array)."""
    if not isinstance(weight, (np.ndarray, list, tuple)) and hasattr(weight, "shape"):
        weight = backend_of(weight).to_numpy(weight)
    try:
        values = np.array(weight, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"CrossEntropyLoss: weight must be an array of numbers, got {weight!r}") from exc
    if values.ndim != 1:
        raise ValueError(
            f"CrossEntropyLoss: weight must be 1-D, one weight per class, got shape {values.shape}"
        )
    return values


#: What :mod:`cnnkit.functional` and :mod:`cnnkit.losses` show of this family.
FUNCTIONS = (cross_entropy,)
LOSSES = (CrossEntropyLoss,)
#: The family's op records.
SPECS = (CrossEntropySpec(),)
