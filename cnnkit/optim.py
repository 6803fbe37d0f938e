"""Optimisers that update :class:`cnnkit.layers.Parameter` arrays in place.

At the heart of it is the lecture's update ``w <- w - η dE/dw``; :class:`SGD`
adds momentum and weight decay, :class:`Adam` and :class:`AdamW` scale each
step by running moments of the gradient. Each follows ``torch.optim``'s
formulas and defaults step for step (the tests hold them to 1e-10 in float64).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from cnnkit.layers import Parameter

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "SGD",
    "Adam",
    "AdamW",
    "ConstantLR",
    "CosineAnnealingLR",
    "LRScheduler",
    "StepLR",
    "make_optimizer",
    "make_scheduler",
]


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


def _maximum(a: Any, b: Any) -> Any:
    """Element-wise maximum of two arrays of one backend (a backend's array may have its own method)."""
    if hasattr(a, "maximum"):  # torch.Tensor.maximum; the core imports no backend's library
        return a.maximum(b)
    import numpy as np

    return np.maximum(a, b)


class Adam:
    """Adam (Kingma & Ba, 2015), step for step as ``torch.optim.Adam``.

    Per parameter ``w`` with gradient ``g`` at its step ``t = 1, 2, ...`` (counted per
    parameter: a step where ``grad`` is ``None`` skips it, as in torch)::

        g <- g + λ w                               (weight_decay λ, an L2 penalty; AdamW decays instead)
        m <- β₁ m + (1 - β₁) g                      (first moment, m₀ = 0)
        v <- β₂ v + (1 - β₂) g²                     (second moment, v₀ = 0)
        v̂ <- max(v̂, v) if amsgrad else v
        w <- w - η/(1 - β₁ᵗ) · m / (√v̂ / √(1 - β₂ᵗ) + ε)

    Args:
        params: the parameters (``model.parameters()``).
        lr: the learning rate ``η`` > 0 (default 1e-3, torch's).
        betas: ``(β₁, β₂)``, each in ``[0, 1)`` (default ``(0.9, 0.999)``).
        eps: ``ε`` >= 0 (default 1e-8).
        weight_decay: ``λ`` >= 0 (default 0).
        amsgrad: keep the running maximum of ``v`` (default ``False``).

    Raises:
        ValueError: an out-of-range argument or an empty parameter list.
        TypeError: a parameter that is not a :class:`cnnkit.layers.Parameter`.

    Example:
        >>> import numpy as np
        >>> w = Parameter(np.array([1.0, 2.0]))
        >>> w.grad = np.array([0.5, -1.0])
        >>> Adam([w], lr=0.1).step()
        >>> w.data.round(6).tolist()   # the first step moves every weight by lr, against its gradient
        [0.9, 2.1]
    """

    #: torch's default ``weight_decay`` for this optimiser.
    default_weight_decay = 0.0

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float | None = None,
        amsgrad: bool = False,
    ) -> None:
        where = type(self).__name__
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{where}: params is an empty list; pass model.parameters()")
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                raise TypeError(f"{where}: params[{i}] must be a cnnkit Parameter, got {type(p).__name__}")
        weight_decay = self.default_weight_decay if weight_decay is None else weight_decay
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"{where}: lr must be a finite number > 0, got {lr!r}")
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"{where}: betas must be two numbers in [0, 1), got {betas!r}")
        if not eps >= 0:
            raise ValueError(f"{where}: eps must be >= 0, got {eps!r}")
        if not weight_decay >= 0:
            raise ValueError(f"{where}: weight_decay must be >= 0, got {weight_decay!r}")
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.amsgrad = bool(amsgrad)
        n = len(self.params)
        self._t = [0] * n  # per parameter, as torch: a step without its gradient does not count
        self._m: list[Any] = [None] * n
        self._v: list[Any] = [None] * n
        self._vmax: list[Any] = [None] * n

    def zero_grad(self) -> None:
        """Forget every parameter's gradient (``grad = None``)."""
        for p in self.params:
            p.grad = None

    def _decay(self, p: Parameter, g: Any) -> Any:
        # Adam: the L2 penalty joins the gradient (and so the moments)
        return g + self.weight_decay * p.data if self.weight_decay else g

    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        b1, b2 = self.betas
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            self._t[i] += 1
            bc1, bc2_sqrt = 1.0 - b1 ** self._t[i], math.sqrt(1.0 - b2 ** self._t[i])
            g = self._decay(p, g)
            if self._m[i] is None:
                self._m[i], self._v[i] = 0.0 * g, 0.0 * g
            m = self._m[i] = self._m[i] + (1.0 - b1) * (g - self._m[i])  # torch's lerp form
            v = self._v[i] = self._v[i] * b2 + (1.0 - b2) * g * g
            if self.amsgrad:
                v = self._vmax[i] = v if self._vmax[i] is None else _maximum(self._vmax[i], v)
            denom = v**0.5 / bc2_sqrt + self.eps
            p.data -= (self.lr / bc1) * (m / denom)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(lr={self.lr}, betas={self.betas}, eps={self.eps}, "
            f"weight_decay={self.weight_decay}, amsgrad={self.amsgrad})"
        )


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter, 2019), step for step as ``torch.optim.AdamW``.

    Adam with the weight decay taken out of the gradient: each step first
    shrinks the weights, ``w <- w (1 - η λ)``, then takes Adam's step on the
    plain gradient. Default ``weight_decay`` 1e-2, as torch.

    Example:
        >>> import numpy as np
        >>> w = Parameter(np.array([1.0]))
        >>> w.grad = np.array([0.0])
        >>> AdamW([w], lr=0.1, weight_decay=0.5).step()
        >>> w.data.tolist()
        [0.95]
    """

    default_weight_decay = 1e-2

    def _decay(self, p: Parameter, g: Any) -> Any:
        if self.weight_decay:
            p.data *= 1.0 - self.lr * self.weight_decay
        return g


#: Optimiser names for :func:`make_optimizer` (and ``cnnkit train --optimizer``).
OPTIMIZERS = ("sgd", "adam", "adamw")


def make_optimizer(
    name: str, params: Iterable[Parameter], *, lr: float, momentum: float = 0.0, weight_decay: float = 0.0
) -> SGD | Adam:
    """An optimiser by name: ``"sgd"`` (with ``momentum``), ``"adam"`` or ``"adamw"`` (torch's betas).

    Raises:
        ValueError: an unknown name, listing the known ones.

    Example:
        >>> import numpy as np
        >>> make_optimizer("adamw", [Parameter(np.zeros(1))], lr=1e-3, weight_decay=0.01)
        AdamW(lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.01, amsgrad=False)
    """
    if name == "sgd":
        return SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"make_optimizer: unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")


# -- learning-rate schedules ------------------------------------------------------------------


class LRScheduler:
    """Base of the learning-rate schedules: ``torch.optim.lr_scheduler`` semantics.

    Building a schedule records the optimiser's ``lr`` as the base ``η₀`` and
    sets epoch 0; each :meth:`step` (call it once per epoch, after the
    epoch's optimiser steps) advances the epoch ``t`` and sets
    ``optimizer.lr = lr_at(t)``. Subclasses give :meth:`lr_at` in closed form.

    Args:
        optimizer: the optimiser whose ``lr`` is scheduled (anything with an ``lr`` attribute).
    """

    def __init__(self, optimizer: Any) -> None:
        if not hasattr(optimizer, "lr"):
            raise TypeError(
                f"{type(self).__name__}: optimizer must have an lr attribute, got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        self.base_lr = float(optimizer.lr)
        self.last_epoch = 0
        optimizer.lr = self.lr_at(0)

    def lr_at(self, epoch: int) -> float:
        """The learning rate for epoch ``epoch`` (0: the first)."""
        raise NotImplementedError

    def step(self) -> None:
        """End of an epoch: move to the next epoch's learning rate."""
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def get_last_lr(self) -> list[float]:
        """The learning rate now in force, as a one-element list (as torch returns one per group)."""
        return [float(self.optimizer.lr)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_lr={self.base_lr}, last_epoch={self.last_epoch})"


class ConstantLR(LRScheduler):
    """No schedule: ``η_t = η₀`` for every epoch.

    Example:
        >>> import numpy as np
        >>> opt = SGD([Parameter(np.zeros(1))], lr=0.1)
        >>> sched = ConstantLR(opt); sched.step(); sched.get_last_lr()
        [0.1]
    """

    def lr_at(self, epoch: int) -> float:
        return self.base_lr


class StepLR(LRScheduler):
    """Step decay: ``η_t = η₀ · γ^⌊t / step_size⌋``, as ``torch.optim.lr_scheduler.StepLR``.

    Args:
        optimizer: the optimiser.
        step_size: epochs between decays, >= 1.
        gamma: the factor ``γ`` of each decay (default 0.1).

    Raises:
        ValueError: ``step_size`` < 1 or ``gamma`` <= 0.

    Example:
        >>> import numpy as np
        >>> opt = SGD([Parameter(np.zeros(1))], lr=1.0)
        >>> sched = StepLR(opt, step_size=2, gamma=0.5)
        >>> lrs = []
        >>> for _ in range(5):
        ...     lrs.append(opt.lr); sched.step()
        >>> lrs
        [1.0, 1.0, 0.5, 0.5, 0.25]
    """

    def __init__(self, optimizer: Any, step_size: int, gamma: float = 0.1) -> None:
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"StepLR: step_size must be an int >= 1, got {step_size!r}")
        if not gamma > 0:
            raise ValueError(f"StepLR: gamma must be > 0, got {gamma!r}")
        self.step_size, self.gamma = step_size, float(gamma)
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """Cosine annealing: ``η_t = η_min + (η₀ - η_min)(1 + cos(π t / T_max)) / 2``.

    As ``torch.optim.lr_scheduler.CosineAnnealingLR`` (its closed form): the
    rate falls from ``η₀`` at epoch 0 to ``η_min`` at epoch ``T_max``, slowly
    at first and last, so the final epochs take small, calm steps.

    Args:
        optimizer: the optimiser.
        T_max: epochs of the half cosine, >= 1 (usually the number of epochs).
        eta_min: the last learning rate ``η_min`` >= 0 (default 0).

    Raises:
        ValueError: ``T_max`` < 1 or ``eta_min`` < 0.

    Example:
        >>> import numpy as np
        >>> opt = SGD([Parameter(np.zeros(1))], lr=1.0)
        >>> sched = CosineAnnealingLR(opt, T_max=4)
        >>> lrs = []
        >>> for _ in range(5):
        ...     lrs.append(round(opt.lr, 4)); sched.step()
        >>> lrs
        [1.0, 0.8536, 0.5, 0.1464, 0.0]
    """

    def __init__(self, optimizer: Any, T_max: int, eta_min: float = 0.0) -> None:
        if isinstance(T_max, bool) or not isinstance(T_max, int) or T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be an int >= 1, got {T_max!r}")
        if eta_min < 0:
            raise ValueError(f"CosineAnnealingLR: eta_min must be >= 0, got {eta_min!r}")
        self.T_max, self.eta_min = T_max, float(eta_min)
        super().__init__(optimizer)

    def lr_at(self, epoch: int) -> float:
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2


#: Schedule names for :func:`make_scheduler` (and ``cnnkit train --lr-schedule``).
SCHEDULES = ("constant", "cosine", "step")


def make_scheduler(name: str, optimizer: Any, epochs: int) -> LRScheduler:
    """A schedule by name for a run of ``epochs`` epochs.

    ``"constant"``: no decay; ``"cosine"``: :class:`CosineAnnealingLR` with
    ``T_max = epochs`` (the last epoch runs at ``η₀(1 + cos(π(E-1)/E))/2``);
    ``"step"``: :class:`StepLR` dividing the rate by 10 after each third of the run.

    Raises:
        ValueError: an unknown name, listing the known ones.

    Example:
        >>> import numpy as np
        >>> type(make_scheduler("cosine", SGD([Parameter(np.zeros(1))], lr=0.1), 10)).__name__
        'CosineAnnealingLR'
    """
    if name == "constant":
        return ConstantLR(optimizer)
    if name == "cosine":
        return CosineAnnealingLR(optimizer, T_max=max(int(epochs), 1))
    if name == "step":
        return StepLR(optimizer, step_size=max(int(epochs) // 3, 1), gamma=0.1)
    raise ValueError(f"make_scheduler: unknown schedule {name!r}; known: {', '.join(SCHEDULES)}")
