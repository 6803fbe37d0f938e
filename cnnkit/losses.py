"""Losses with a forward and a hand-derived backward, as the layers have.

The loss closes the chain of ``backward`` calls: :meth:`CrossEntropyLoss.backward`
returns ``dE/dlogits``, which the last layer of a network takes as its ``δ``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnkit import functional as F
from cnnkit.dispatch import vjp
from cnnkit.layers import backend_of
from cnnkit.registry import use_backend

__all__ = ["CrossEntropyLoss"]


class CrossEntropyLoss:
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
        self.reduction = reduction
        self._pullback: Any = None
        self._out: Any = None

    def forward(self, logits: Any, targets: Any) -> Any:
        """The loss of ``logits`` against ``targets``; remembers what ``backward`` needs."""
        be = backend_of(logits) if hasattr(logits, "shape") else None
        if be is None:
            self._out, self._pullback = vjp(F.cross_entropy, logits, targets, reduction=self.reduction)
            return self._out
        with use_backend(be.name, **be.options):
            self._out, self._pullback = vjp(F.cross_entropy, logits, targets, reduction=self.reduction)
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

    def __repr__(self) -> str:
        return f"CrossEntropyLoss(reduction={self.reduction!r})"
