"""The loss record: softmax ``cross_entropy``, its function and :class:`CrossEntropyLoss`.

The loss closes the chain of ``backward`` calls: :meth:`CrossEntropyLoss.backward`
returns ``dE/dlogits``, which the last layer of a network takes as its ``δ``.
The NumPy kernel is ``cnnkit_numpy.ops.cross_entropy_*``; the torch kernel
``cnnkit_torch.ops.CrossEntropy``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from cnnkit.conformance.cases import Case, Seeds, error_cases
from cnnkit.dispatch import call, vjp
from cnnkit.layer import Layer, backend_of
from cnnkit.ops._shared import BackendArg
from cnnkit.registry import use_backend
from cnnkit.spec import OpSpec, check_ndim

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
                (rand(n, c, low=-3, high=3), rand.integers(n, high=c)),
                {"reduction": reduction},
                tags=("loss",),
            )
        if reduction != "mean":
            yield Case(
                f"cross_entropy-{reduction}-empty",
                "cross_entropy",
                (np.zeros((0, 3)), np.zeros((0,), dtype=np.int64)),
                {"reduction": reduction},
                tags=("loss",),
            )
    yield Case(
        "cross_entropy-golden-uniform",
        "cross_entropy",
        ([[0.0, 0, 0, 0]], np.array([2])),
        expected=float(np.log(4.0)),
        tags=("golden", "loss"),
        grad_output=1.0,
        expected_grads=([[0.25, 0.25, -0.75, 0.25]], None),
    )
    yield Case(
        "cross_entropy-golden-stable",
        "cross_entropy",
        ([[1000.0, 0.0], [0.0, 1000.0]], np.array([0, 0])),
        {"reduction": "none"},
        expected=[0.0, 1000.0],
        tags=("golden", "loss"),
    )
    # rows with different maxima and huge logits: a max over the whole batch instead of per row overflows
    yield Case(
        "cross_entropy-golden-huge-logits-per-row-max",
        "cross_entropy",
        ([[1000.0, 0.0, -1000.0], [0.0, 5000.0, 4000.0], [-3000.0, -3001.0, -2999.0]], np.array([2, 2, 0])),
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
        ([[np.nan, 0.0], [0.0, 1.0]], np.array([0, 1])),
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
                (x, np.array([0, 4, 1])),
                {},
                ValueError,
                "outside",
            ),
            (
                "cross_entropy-error-negative-target",
                "cross_entropy",
                (x, np.array([0, -1, 1])),
                {},
                ValueError,
                "outside",
            ),
            ("cross_entropy-error-float-target", "cross_entropy", (x, rand(3)), {}, TypeError, "integers"),
            (
                "cross_entropy-error-target-shape",
                "cross_entropy",
                (x, np.array([0, 1])),
                {},
                ValueError,
                "target must have shape",
            ),
            (
                "cross_entropy-error-empty-mean",
                "cross_entropy",
                (np.zeros((0, 3)), np.zeros((0,), dtype=np.int64)),
                {},
                ValueError,
                "empty batch",
            ),
            (
                "cross_entropy-error-bad-reduction",
                "cross_entropy",
                (x, np.array([0, 1, 2])),
                {"reduction": "avg"},
                ValueError,
                "reduction",
            ),
        ]
    )


class CrossEntropySpec(OpSpec):
    """Softmax cross-entropy of logits ``(N, C)`` against class indices ``(N,)``.

    Forward: ``E_n = -log softmax(a_n)[t_n] = logsumexp(a_n) - a_n[t_n]``, computed
    stably (the largest logit subtracted first); summed or averaged over ``n``.

    Backward: ``dE/da = softmax(a) - onehot(t)`` (÷ N for the mean), times ``δ``.
    """

    name = "cross_entropy"
    inputs = ("input", "target")
    integer_inputs = frozenset({"target"})
    defaults: Mapping[str, Any] = {"reduction": "mean"}

    def check(self, where, infos, attrs):
        logits, target = infos
        check_ndim(where, "input", logits, 2, "(N, classes)")
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

    def cases(self):
        return _cases()

    def oracle(self, z, t, *, reduction):
        m = z.max(axis=1, keepdims=True) if z.size else np.zeros((z.shape[0], 1))
        logsumexp = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
        e = logsumexp - z[np.arange(z.shape[0]), t]
        if reduction == "none":
            return e
        return e.sum() if reduction == "sum" else e.mean()


# -- the function ----------------------------------------------------------------------------


def cross_entropy(input: Any, target: Any, reduction: str = "mean", *, backend: BackendArg = None) -> Any:
    """Softmax cross-entropy: ``E = -log softmax(input)[target]``, computed stably.

    Its gradient with respect to the logits is ``softmax(input) - onehot(target)``
    (divided by ``N`` for ``reduction="mean"``).

    Args:
        input: logits ``(N, classes)``.
        target: class indices ``(N,)``, integers in ``[0, classes)``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        backend: the backend to run on (default: the active one).

    Shape:
        a scalar ``()``, or ``(N,)`` with ``reduction="none"``.

    Returns:
        The loss, in the logits' dtype.

    Raises:
        ValueError: shapes that do not match, a class index outside ``[0, classes)``,
            an empty batch with ``"mean"``, an unknown ``reduction``.
        TypeError: a non-integer target, non-floating logits.

    Example:
        >>> import numpy as np
        >>> round(float(cross_entropy(np.zeros((1, 4)), np.array([2]))), 4)
        1.3863
    """
    return call("cross_entropy", input, target, backend=backend, where="cross_entropy", reduction=reduction)


# -- the loss layer --------------------------------------------------------------------------


class CrossEntropyLoss(Layer):
    """Softmax cross-entropy of logits against class indices.

    ``E = -(1/N) Σ_n log softmax(z_n)[t_n]``; its gradient is
    ``dE/dz = (softmax(z) - onehot(t)) / N``, computed by the backend's
    manual ``backward`` (never by autograd).

    Args:
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Shape:
        logits ``(N, classes)``, targets ``(N,)`` integers in ``[0, classes)``;
        the loss is a scalar ``()`` (``(N,)`` with ``"none"``).

    Returns:
        ``forward`` returns the loss as the backend's array; ``backward()``
        returns ``dE/dlogits`` with the logits' shape.

    Raises:
        ValueError, TypeError: from :func:`cnnkit.functional.cross_entropy`
            (shapes that do not match, targets outside the classes, non-integer targets).
        RuntimeError: ``backward`` before ``forward``.

    Example:
        >>> import numpy as np
        >>> loss = CrossEntropyLoss()
        >>> round(float(loss(np.zeros((2, 4)), np.array([0, 3]))), 4)
        1.3863
        >>> loss.backward()[0].round(3).tolist()
        [-0.375, 0.125, 0.125, 0.125]
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(
                f"CrossEntropyLoss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}"
            )
        self.reduction = reduction
        self._out: Any = None

    def function(self, input: Any, target: Any) -> Any:
        return cross_entropy(input, target, self.reduction)

    def config(self):
        return {"reduction": self.reduction}

    def forward(self, logits: Any, targets: Any) -> Any:
        """The loss of ``logits`` against ``targets``; remembers what ``backward`` needs."""
        be = backend_of(logits) if hasattr(logits, "shape") else None
        with use_backend(be) if be is not None else contextlib.nullcontext():
            self._out, self._pullback = vjp(self.function, logits, targets)
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
        dlogits, _ = self._pullback(grad_output)
        return dlogits

    def infer(self, logits: Any, targets: Any) -> Any:
        """The loss, remembering nothing for ``backward``."""
        return self.function(logits, targets)

    def __repr__(self) -> str:
        return f"CrossEntropyLoss(reduction={self.reduction!r})"


#: What :mod:`cnnkit.functional` and :mod:`cnnkit.losses` show of this family.
FUNCTIONS = (cross_entropy,)
LOSSES = (CrossEntropyLoss,)
#: The family's op records.
SPECS = (CrossEntropySpec(),)
