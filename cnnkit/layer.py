"""The layer interface: parameters plus one op, with ``forward`` and a hand-derived ``backward``.

Every layer is defined once, beside its op's record in :mod:`cnnkit.ops`, as a
:class:`Layer` subclass. The definition is all a runtime needs:

- the constructor validates the hyperparameters (with the core's helpers and
  messages) and keeps them as attributes;
- :meth:`Layer.param_specs` declares each parameter's shape and initialisation,
  :meth:`Layer.buffer_specs` each buffer's (state that is not learnt, such as a
  batch norm's running statistics: saved, loaded and moved with the parameters,
  registered with ``register_buffer`` by the torch adapter);
- :meth:`Layer.function` is the layer's math, one :mod:`cnnkit.functional` call
  taking the input, then the parameters in :attr:`Layer.param_names` order,
  then the buffers in :attr:`Layer.buffer_names` order;
- :attr:`Layer.training` says whether the layer runs in training mode
  (:meth:`Layer.train`, :meth:`Layer.eval`; ``Sequential`` passes it on), as
  ``torch.nn.Module.training`` does (random masks, batch statistics);
- :meth:`Layer.config` returns the constructor arguments that rebuild it
  (:mod:`cnnkit.io` saves them), :meth:`Layer.extra_repr` what ``torch.nn``
  prints for its namesake.

cnnkit runs a layer itself (:meth:`Layer.forward` through :func:`cnnkit.vjp`,
:meth:`Layer.backward` through the backend's manual gradient), and the PyTorch
backend derives a ``torch.nn.Module`` from the same definition
(``cnnkit_torch.nn``), so a plugin's layer runs in torch with no torch code.

Parameters take PyTorch's default initialisation (weights
``kaiming_uniform(a=√5)``, i.e. ``U(±1/√fan_in)``, and biases ``U(±1/√fan_in)``),
drawn here from a seeded NumPy generator (``seed=`` or ``rng=``) so that every
backend starts from the same numbers. They are created on ``backend=``
(default: the active backend) in its ``default_dtype``, and a layer runs on the
backend its parameters live on.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnkit.backend import Backend
from cnnkit.dispatch import vjp
from cnnkit.registry import get_backend, get_registry, use_backend

__all__ = ["BufferSpec", "Layer", "ParamSpec", "Parameter", "Sequential", "backend_of", "describe_only"]


@dataclass(frozen=True)
class ParamSpec:
    """How one parameter is made: its shape and its initialisation.

    Attributes:
        shape: the parameter's shape.
        fan_in: the inputs each output unit sees; values are drawn from
            ``U(±1/√fan_in)``.
        init: ``"kaiming_uniform"`` (a weight: torch calls
            ``kaiming_uniform_(a=√5)``, the same distribution), ``"uniform"``
            (a bias), ``"ones"`` or ``"zeros"`` (a batch norm's scale and shift).
    """

    shape: tuple[int, ...]
    fan_in: int
    init: str = "uniform"

    @property
    def bound(self) -> float:
        return 1.0 / math.sqrt(self.fan_in) if self.fan_in > 0 else 0.0


@dataclass(frozen=True)
class BufferSpec:
    """How one buffer (state that is not learnt) is made: its shape, its first value, its kind.

    Attributes:
        shape: the buffer's shape (``()`` for a counter).
        fill: the value every entry starts at.
        integer: an ``int64`` counter (``num_batches_tracked``) instead of the
            parameters' floating dtype.
        value: the first values themselves, flat (a loss's class weights), instead of ``fill``.
    """

    shape: tuple[int, ...]
    fill: float = 0.0
    integer: bool = False
    value: tuple[float, ...] | None = None

    def make(self) -> np.ndarray:
        dtype = np.int64 if self.integer else np.float64
        if self.value is not None:
            return np.array(self.value, dtype=dtype).reshape(self.shape)
        return np.full(self.shape, self.fill, dtype=dtype)


_DESCRIBE_ONLY: ContextVar[bool] = ContextVar("cnnkit_describe_only", default=False)


@contextlib.contextmanager
def describe_only() -> Iterator[None]:
    """Build layers inside this block without drawing their parameters.

    The torch adapter builds the cnnkit layer as the *description* of its
    module (hyperparameters validated, shapes declared) and makes the
    parameters itself, as ``torch.nn`` does.
    """
    token = _DESCRIBE_ONLY.set(True)
    try:
        yield
    finally:
        _DESCRIBE_ONLY.reset(token)


class Parameter:
    """A learnable array and the gradient the last ``backward`` left for it (a buffer: no gradient)."""

    def __init__(self, data: Any, name: str = "") -> None:
        self.data = data
        self.grad: Any = None
        self.name = name

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __repr__(self) -> str:
        return f"Parameter({self.name or '?'}, shape={self.shape})"


def backend_of(x: Any) -> Backend:
    """The backend whose native array type ``x`` is: the active one if it fits, else the first that does.

    Raises:
        TypeError: no installed backend holds arrays of ``x``'s type.
    """
    active = get_backend()
    if active.is_native(x):
        return active
    registry = get_registry()
    for name in sorted(registry.backend_infos()):
        try:
            be = registry.backend(name)
        except Exception:  # a backend that cannot load cannot own x
            continue
        if be.is_native(x):
            return be
    raise TypeError(
        f"no installed cnnkit backend holds arrays of type {type(x).__module__}.{type(x).__name__}"
    )


def _rng(seed: int | None, rng: np.random.Generator | None) -> np.random.Generator:
    if rng is not None:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        return rng
    return np.random.default_rng(seed)


class Layer:
    """Base class of every layer (built-in or from a plugin).

    Subclasses implement :meth:`function` (the op, as a functional call taking
    the input and then the parameters in :attr:`param_names` order) and
    :meth:`config` (the constructor's keyword arguments, for saving).

    The backend a layer runs on is, in this order: the one it was built on
    (``self.backend``), the one its first parameter lives on, the one its
    input lives on.
    """

    #: Names of the parameters, in the order :meth:`function` takes them.
    param_names: tuple[str, ...] = ()
    #: Names of the buffers, taken by :meth:`function` after the parameters.
    buffer_names: tuple[str, ...] = ()
    #: Training mode (masks drop units, batch statistics normalise and move the running ones).
    training: bool = True
    #: The backend the parameters were created on (``None``: decided per call).
    backend: Backend | None = None

    def __init__(self) -> None:
        self._pullback: Any = None

    # -- the contract ---------------------------------------------------------------

    def function(self, x: Any, *params: Any) -> Any:
        """The layer's op; must dispatch exactly one cnnkit op."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this layer (JSON-serialisable)."""
        return {}

    def param_specs(self) -> dict[str, ParamSpec | None]:
        """Each parameter of :attr:`param_names` with its shape and init (``None``: absent)."""
        return {}

    def buffer_specs(self) -> dict[str, BufferSpec | None]:
        """Each buffer of :attr:`buffer_names` with its shape and first value (``None``: absent)."""
        return {}

    def train(self, mode: bool = True) -> Layer:
        """Set training mode (``False``: evaluation); returns ``self``, as ``torch.nn.Module.train``."""
        if not isinstance(mode, (bool, np.bool_)):
            raise TypeError(f"{type(self).__name__}.train: mode must be True or False, got {mode!r}")
        self.training = bool(mode)
        return self

    def eval(self) -> Layer:
        """Evaluation mode: ``train(False)``; returns ``self``."""
        return self.train(False)

    def extra_repr(self) -> str:
        """What ``torch.nn`` prints inside its namesake's parentheses (the torch module's repr)."""
        return ""

    def init_parameters(
        self,
        *,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
        backend: str | Backend | None = None,
    ) -> None:
        """Draw every parameter of :meth:`param_specs`, in order, from ``U(±bound)`` on ``backend``.

        Inside :func:`describe_only` nothing is drawn (the torch adapter makes them).
        """
        if _DESCRIBE_ONLY.get():
            return
        be = self.backend = get_backend(backend)
        gen = _rng(seed, rng)
        for name, spec in self.param_specs().items():
            if spec is None:
                values = None
            elif spec.init in ("ones", "zeros"):
                values = np.full(spec.shape, 1.0 if spec.init == "ones" else 0.0)
            else:
                values = gen.uniform(-spec.bound, spec.bound, spec.shape)
            setattr(self, name, None if values is None else self._make_parameter(name, values, be))
        for name, bspec in self.buffer_specs().items():
            setattr(self, name, None if bspec is None else self._make_buffer(name, bspec.make(), be))

    # -- parameters -------------------------------------------------------------------

    def parameters(self) -> list[Parameter]:
        """The learnable parameters, in :attr:`param_names` order (absent ones skipped)."""
        return [p for name in self.param_names if (p := getattr(self, name, None)) is not None]

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """``(name, parameter)`` pairs; names are those :func:`cnnkit.io.save` writes."""
        for name in self.param_names:
            p = getattr(self, name, None)
            if p is not None:
                yield name, p

    def _make_parameter(self, name: str, values: np.ndarray, backend: Backend) -> Parameter:
        return Parameter(backend.asarray(np.asarray(values), dtype=backend.default_dtype), name)

    def _make_buffer(self, name: str, values: np.ndarray, backend: Backend) -> Parameter:
        dtype = "int64" if values.dtype.kind in "iu" else backend.default_dtype
        return Parameter(backend.asarray(np.array(values), dtype=dtype), name)

    def buffers(self) -> list[Parameter]:
        """The buffers, in :attr:`buffer_names` order (absent ones skipped)."""
        return [b for _, b in self.named_buffers()]

    def named_buffers(self) -> Iterator[tuple[str, Parameter]]:
        """``(name, buffer)`` pairs; named as :func:`cnnkit.io.save` writes them (torch's keys)."""
        for name in self.buffer_names:
            b = getattr(self, name, None)
            if b is not None:
                yield name, b

    def to(self, backend: str | Backend, **options: Any) -> Layer:
        """Move the parameters to ``backend`` (a name with options, or an instance); returns ``self``.

        Example:
            >>> from cnnkit.layers import Conv1d
            >>> layer = Conv1d(3, 2, 1, seed=0)
            >>> layer.to("numpy", dtype="float64").weight.data.dtype.name
            'float64'
        """
        be = get_backend(backend, **options)
        for p in self.parameters():
            p.data = be.asarray(backend_of(p.data).to_numpy(p.data), dtype=be.default_dtype)
            p.grad = None
        for b in self.buffers():
            values = np.array(backend_of(b.data).to_numpy(b.data))
            b.data = be.asarray(values, dtype="int64" if values.dtype.kind in "iu" else be.default_dtype)
        if self.param_names or self.buffer_names:
            self.backend = be
        return self

    def _run_backend(self, x: Any) -> Backend:
        if self.backend is not None:
            return self.backend
        params = self.parameters() + self.buffers()
        if not params and not hasattr(x, "shape"):
            raise TypeError(
                f"{type(self).__name__}: input must be an array (a NumPy array or a backend's), "
                f"got {type(x).__name__}"
            )
        return backend_of(params[0].data if params else x)

    def _arrays(self, be: Backend, x: Any) -> tuple[Any, list[Any]]:
        """The input on ``be``, floating inputs in the parameters' dtype (on every backend alike)."""
        datas = [None if p is None else p.data for p in (getattr(self, n, None) for n in self.param_names)]
        ref = next((d for d in datas if d is not None), None)
        datas += [None if b is None else b.data for b in (getattr(self, n, None) for n in self.buffer_names)]
        if not hasattr(x, "shape"):
            return x, datas  # lists: the op converts (and names) them
        if not be.is_native(x):
            x = be.asarray(x if isinstance(x, np.ndarray) else backend_of(x).to_numpy(x))
        dtype = be.dtype_name(x)
        if ref is not None and dtype.startswith(("float", "bfloat")) and dtype != be.dtype_name(ref):
            x = be.asarray(x, dtype=be.dtype_name(ref))
        return x, datas  # lists: the op converts (and names) them
        native = be.is_native(x)
        src_dtype = (
            be.dtype_name(x) if native else np.asarray(x if isinstance(x, np.ndarray) else 0).dtype.name
        )
        if not native:
            src = x if isinstance(x, np.ndarray) else backend_of(x).to_numpy(x)
            src_dtype = src.dtype.name
        floating = src_dtype.startswith(("float", "bfloat"))
        dtype = be.dtype_name(ref) if ref is not None and floating else None
        if not native:
            x = be.asarray(src, dtype=dtype)
        elif dtype is not None and dtype != src_dtype:
            x = be.asarray(x, dtype=dtype)
        return x, datas

    # -- running --------------------------------------------------------------------------

    def forward(self, x: Any) -> Any:
        """``y = f(x)``; remembers what ``backward`` needs."""
        be = self._run_backend(x)
        x, datas = self._arrays(be, x)
        with use_backend(be):
            y, self._pullback = vjp(self.function, x, *datas)
        return y

    def __call__(self, x: Any) -> Any:
        return self.forward(x)

    def infer(self, x: Any) -> Any:
        """``y = f(x)`` without remembering anything for ``backward`` (evaluation)."""
        be = self._run_backend(x)
        x, datas = self._arrays(be, x)
        with use_backend(be):
            return self.function(x, *datas)

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

    def window(self) -> tuple[tuple[int, int, int, int], ...] | None:
        """Per spatial axis ``(kernel, stride, padding_before, dilation)``, for receptive fields.

        ``None`` (the default) means the layer looks at one unit (element-wise);
        layers that mix the whole input (dense layers, global pooling)
        return ``()``.
        """
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def window_of(kernel_size, stride, padding, dilation) -> tuple[tuple[int, int, int, int], ...]:
    """Per axis ``(kernel, stride, padding_before, dilation)`` for :meth:`Layer.window`.

    ``padding`` as the layer keeps it; ``"same"`` pads ``(D·(F-1)) // 2`` before.
    """
    dims = len(kernel_size)
    if isinstance(padding, str):
        same = padding.lower() == "same"
        pad = tuple((d * (f - 1)) // 2 if same else 0 for f, d in zip(kernel_size, dilation))
    elif isinstance(padding, int):
        pad = (padding,) * dims
    else:
        pad = tuple(p if isinstance(p, int) else p[0] for p in padding)
    return tuple(zip(kernel_size, stride, pad, dilation))


class Sequential(Layer):
    """Layers applied one after another; ``backward`` runs them in reverse.

    Args:
        layers: the layers, first applied first.

    Shape:
        the first layer's input -> the last layer's output.

    Returns:
        ``forward(x)`` returns the last layer's output; ``backward(δ)`` returns
        ``dE/dx`` of the first layer and fills every parameter's ``grad``.

    Example:
        >>> import numpy as np
        >>> from cnnkit.layers import Conv1d, GlobalMaxPool
        >>> net = Sequential(Conv1d(3, 4, 3, seed=0), GlobalMaxPool(), Conv1d(4, 2, 1, seed=1))
        >>> net(np.ones((5, 3, 8), dtype=np.float32)).shape, len(net.parameters())
        ((5, 2, 1), 4)
    """

    def __init__(self, *layers: Layer) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: layer {i} must be a cnnkit Layer, got {type(layer).__name__}")
        self.layers: list[Layer] = list(layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> Layer:
        return self.layers[i]

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    @property  # type: ignore[override]
    def backend(self) -> Backend | None:
        """The backend of the first layer that has parameters or buffers (``None`` if none has)."""
        for layer in self.layers:
            if layer.parameters() or layer.buffers():
                return layer._run_backend(None)
        return None

    def parameters(self) -> list[Parameter]:
        return [p for layer in self.layers for p in layer.parameters()]

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        for i, layer in enumerate(self.layers):
            for name, p in layer.named_parameters():
                yield f"{i}.{name}", p

    def named_buffers(self) -> Iterator[tuple[str, Parameter]]:
        for i, layer in enumerate(self.layers):
            for name, b in layer.named_buffers():
                yield f"{i}.{name}", b

    def train(self, mode: bool = True) -> Sequential:
        super().train(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    def to(self, backend: str | Backend, **options: Any) -> Sequential:
        for layer in self.layers:
            layer.to(backend, **options)
        return self

    def forward(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def infer(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer.infer(x)
        return x

    def backward(self, grad_output: Any) -> Any:
        g = grad_output
        for layer in reversed(self.layers):
            g = layer.backward(g)
        return g

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)"
