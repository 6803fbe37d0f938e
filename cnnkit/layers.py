"""Layers: parameters plus an op, with ``forward`` and a hand-derived ``backward``.

A layer's math is one :mod:`cnnkit.functional` call, :meth:`Layer.function`.
``forward`` runs it through :func:`cnnkit.vjp`, keeping the pullback, and
``backward(dE/dy)`` runs the backend's manual gradient, stores ``dE/dW`` in
each parameter's ``grad`` and returns ``dE/dx`` for the layer below.
"""

from __future__ import annotations

from typing import Any

from cnnkit.dispatch import vjp
from cnnkit.hookspecs import hookimpl

__all__ = ["Layer", "Parameter"]


class Parameter:
    """A learnable array and the gradient the last ``backward`` left for it."""

    def __init__(self, data: Any, name: str = "") -> None:
        self.data = data
        self.grad: Any = None
        self.name = name

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def __repr__(self) -> str:
        return f"Parameter({self.name or '?'}, shape={self.shape})"


class Layer:
    """Base class of every layer (built-in or from a plugin).

    Subclasses implement :meth:`function` (the op, as a functional call taking
    the input and then the parameters in :attr:`param_names` order) and
    :meth:`config` (the constructor's keyword arguments, for saving).
    """

    #: Names of the parameters, in the order :meth:`function` takes them.
    param_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._pullback: Any = None

    def function(self, x: Any, *params: Any) -> Any:
        """The layer's op; must dispatch exactly one cnnkit op."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this layer (JSON-serialisable)."""
        return {}

    def parameters(self) -> list[Parameter]:
        """The learnable parameters, in :attr:`param_names` order (absent ones skipped)."""
        return [p for name in self.param_names if (p := getattr(self, name, None)) is not None]

    def forward(self, x: Any) -> Any:
        """``y = f(x)``; remembers what ``backward`` needs."""
        params = [getattr(self, name, None) for name in self.param_names]
        y, self._pullback = vjp(self.function, x, *[None if p is None else p.data for p in params])
        return y

    __call__ = forward

    def backward(self, grad_output: Any) -> Any:
        """Given ``dE/dy``, set each parameter's ``grad`` and return ``dE/dx``."""
        if self._pullback is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        dx, *dparams = self._pullback(grad_output)
        for name, g in zip(self.param_names, dparams):
            p = getattr(self, name, None)
            if p is not None:
                p.grad = g
        return dx

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


#: Built-in layer classes, registered through the same hook a plugin uses.
BUILTIN_LAYERS: tuple[type[Layer], ...] = ()


@hookimpl
def cnnkit_register_layers(register):
    for cls in BUILTIN_LAYERS:
        register(cls)
