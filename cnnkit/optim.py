"""Optimisers that update :class:`cnnkit.layers.Parameter` arrays in place.

At the heart of it is the lecture's update ``w <- w - η dE/dw``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cnnkit.layers import Parameter

__all__ = ["SGD"]


def _copy(x: Any) -> Any:
    return x.clone() if hasattr(x, "clone") else x.copy()


class SGD:
    """Stochastic gradient descent, step for step as ``torch.optim.SGD``.

    Per parameter ``w`` with gradient ``g = dE/dw`` (set by ``backward``)::

        g <- g + λ w                          (weight_decay λ)
        b <- g             on the first step,
        b <- μ b + (1 - τ) g                  (momentum μ, dampening τ)
        g <- g + μ b  if nesterov  else  b
        w <- w - η g                          (lr η; the lecture's w - η dE/dw)

    The update runs in place on the backend's arrays (NumPy arrays or torch
    tensors alike); parameters whose ``grad`` is ``None`` are skipped.

    Args:
        params: the parameters (``model.parameters()``).
        lr: the learning rate ``η`` > 0.
        momentum: ``μ`` >= 0 (default 0: plain SGD).
        dampening: ``τ`` (default 0).
        weight_decay: ``λ`` >= 0, L2 penalty (default 0).
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).

    Raises:
        ValueError: a negative or zero learning rate, negative momentum or
            weight decay, Nesterov without momentum, an empty parameter list.

    Example:
        >>> import numpy as np
        >>> from cnnkit.layers import Parameter
        >>> w = Parameter(np.array([1.0, 2.0]))
        >>> w.grad = np.array([0.5, -1.0])
        >>> SGD([w], lr=0.1).step()
        >>> w.data.tolist()
        [0.95, 2.1]
    """

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("SGD: params is an empty list; pass model.parameters()")
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                raise TypeError(f"SGD: params[{i}] must be a cnnkit Parameter, got {type(p).__name__}")
        if not lr > 0:
            raise ValueError(f"SGD: lr must be > 0, got {lr!r}")
        if momentum < 0:
            raise ValueError(f"SGD: momentum must be >= 0, got {momentum!r}")
        if weight_decay < 0:
            raise ValueError(f"SGD: weight_decay must be >= 0, got {weight_decay!r}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                f"SGD: nesterov needs momentum > 0 and dampening 0, got momentum={momentum}, "
                f"dampening={dampening}"
            )
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.dampening = float(dampening)
        self.weight_decay = float(weight_decay)
        self.nesterov = bool(nesterov)
        self._buffers: list[Any] = [None] * len(self.params)

    def zero_grad(self) -> None:
        """Forget every parameter's gradient (``grad = None``)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            if self.momentum:
                buf = self._buffers[i]
                if buf is None:
                    buf = self._buffers[i] = _copy(g)
                else:
                    buf *= self.momentum
                    buf += (1.0 - self.dampening) * g
                g = g + self.momentum * buf if self.nesterov else buf
            p.data -= self.lr * g

    def __repr__(self) -> str:
        return (
            f"SGD(lr={self.lr}, momentum={self.momentum}, dampening={self.dampening}, "
            f"weight_decay={self.weight_decay}, nesterov={self.nesterov})"
        )
