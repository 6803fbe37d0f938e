"""``torch.nn.Module`` layers derived from :mod:`cnnkit.layers`: every forward and backward is cnnkit's.

Each module here is made from one cnnkit layer definition (a
:class:`cnnkit.layer.Layer` subclass, a built-in's or a plugin's) by
:func:`module_class`: the layer's constructor validates the arguments (the
same messages as :mod:`cnnkit.functional`), its :meth:`~cnnkit.layer.Layer.param_specs`
say which ``torch.nn.Parameter`` to make (initialised as ``torch.nn`` does:
``kaiming_uniform_(a=√5)`` for weights, ``U(±1/√fan_in)`` for biases, the same
numbers after ``torch.manual_seed``), its :meth:`~cnnkit.layer.Layer.function`
is the forward, run on the ``torch`` backend, and its
:meth:`~cnnkit.layer.Layer.extra_repr` the repr. The call validates the input
once in the core and applies the op's ``autograd.Function`` from
:mod:`cnnkit_torch.ops`, so ``loss.backward()`` runs the hand-derived
gradients: ``y.grad_fn`` is the backward node of cnnkit's own Function
(``ConvBackward``, ...), never aten's.

The modules take the layer's arguments, with ``device`` and ``dtype`` in place
of ``seed``, ``rng`` and ``backend``. A ``torch.nn`` state dict loads into the
matching module here and back::

    >>> import torch
    >>> from cnnkit_torch import nn as cnn
    >>> ours = cnn.Conv2d(1, 4, 3, padding=1)
    >>> ours.load_state_dict(torch.nn.Conv2d(1, 4, 3, padding=1).state_dict())
    <All keys matched successfully>
    >>> y = ours(torch.randn(2, 1, 8, 8))
    >>> type(y.grad_fn).__name__
    'ConvBackward'

:func:`from_cnnkit` turns any cnnkit layer or :class:`cnnkit.layers.Sequential`
(a named architecture of :mod:`cnnkit.models`, a model read by
:func:`cnnkit.io.load`, a plugin's layer) into the equivalent module with the
same weights; :func:`copy_to_cnnkit` writes trained weights back for
:func:`cnnkit.io.save`.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
import torch
from torch.nn import init

from cnnkit.layer import Layer, Sequential, backend_of, describe_only
from cnnkit.layers import BUILTIN_LAYERS
from cnnkit.losses import __all__ as _LOSS_NAMES
from cnnkit.registry import get_registry, traced_backend, use_backend
from cnnkit_torch.backend import TorchBackend

#: The backend every module runs on: no device or dtype option, so tensors stay
#: where they are and keep their dtype (a module moved with ``.to()`` just works).
_BACKEND = TorchBackend()
_CLASSES: dict[type, type[torch.nn.Module]] = {}


class CnnkitModule(torch.nn.Module):
    """A ``torch.nn.Module`` running one cnnkit layer definition (see :func:`module_class`).

    Attributes:
        layer: the cnnkit layer that describes this module (hyperparameters
            only; the parameters are this module's ``torch.nn.Parameter``).
    """

    layer_class: type[Layer] = Layer

    def __init__(self, *args: Any, device: Any = None, dtype: Any = None, **kwargs: Any) -> None:
        super().__init__()
        with describe_only():
            layer = self.layer_class(*args, **kwargs)
        self._adopt(layer, device, dtype)

    def _adopt(self, layer: Layer, device: Any, dtype: Any) -> None:
        self.layer = layer
        # the registry's lookups collected now, eagerly: a traced forward (torch.compile) then
        # reads them from plain dicts and takes no lock
        get_registry().kernels(_BACKEND.name)
        for name, spec in layer.param_specs().items():
            if spec is None:
                self.register_parameter(name, None)
            else:
                self.register_parameter(
                    name, torch.nn.Parameter(torch.empty(spec.shape, device=device, dtype=dtype))
                )
        for name, bspec in layer.buffer_specs().items():  # running statistics: state, not learnt
            if bspec is None:
                self.register_buffer(name, None)
            else:
                value = torch.from_numpy(bspec.make())
                kind = {} if bspec.integer else {"dtype": dtype or torch.get_default_dtype()}
                self.register_buffer(name, value.to(device=device, **kind))
        self.training = layer.training
        self.reset_parameters()

    @classmethod
    def from_layer(cls, layer: Layer, *, device: Any = None, dtype: Any = None) -> CnnkitModule:
        """The module of ``layer``'s definition, its parameters copied from ``layer``."""
        module = cls.__new__(cls)
        torch.nn.Module.__init__(module)
        with describe_only():
            description = cls.layer_class(**layer.config())
        module._adopt(description, device, dtype)
        params = dict(layer.named_parameters())
        with torch.no_grad():
            for key, p in module.named_parameters(recurse=False):
                src = params[key].data
                value = torch.from_numpy(np.array(backend_of(src).to_numpy(src)))
                p.data = value.to(device=p.device, dtype=dtype or value.dtype)
            buffers = dict(layer.named_buffers())
            for key, b in module.named_buffers(recurse=False):
                src = buffers[key].data
                value = torch.from_numpy(np.array(backend_of(src).to_numpy(src)))
                integer = not value.is_floating_point()
                setattr(
                    module, key, value.to(device=b.device, dtype=None if integer else dtype or value.dtype)
                )
        module.train(layer.training)
        return module

    def reset_parameters(self) -> None:
        """torch.nn's initialisation, call for call (the same numbers for the same seed)."""
        specs = self.layer.param_specs()
        for name, spec in specs.items():
            p = getattr(self, name)
            if spec is None or p is None:
                continue
            if spec.init == "kaiming_uniform":
                init.kaiming_uniform_(p, a=math.sqrt(5))
            elif spec.init in ("ones", "zeros"):
                (init.ones_ if spec.init == "ones" else init.zeros_)(p)
            else:
                init.uniform_(p, -spec.bound, spec.bound)

    def forward(self, *inputs: Any) -> Any:
        params = [getattr(self, name) for name in self.layer.param_names]
        buffers = [getattr(self, name) for name in self.layer.buffer_names]
        if self.layer.training != self.training:  # module.train() / .eval() reach the definition
            self.layer.training = self.training  # (only on a change: no side effect for export)
        if torch.compiler.is_compiling():  # no ContextVar, no lock: the call traces into one graph
            previous = traced_backend(_BACKEND)
            try:
                return self.layer.function(*inputs, *params, *buffers)
            finally:
                traced_backend(previous)
        with use_backend(_BACKEND):
            return self.layer.function(*inputs, *params, *buffers)

    def __setattr__(self, name: str, value: Any) -> None:
        # a hyperparameter set on the module (``module.p = 0.1``) is set on its definition,
        # which the forward runs; parameters, buffers, submodules and ``training`` stay torch's
        layer = self.__dict__.get("layer")
        if (
            layer is not None
            and name != "training"
            and not name.startswith("_")
            and name in vars(layer)
            and name not in self.__dict__.get("_parameters", {})
            and name not in self.__dict__.get("_buffers", {})
        ):
            setattr(layer, name, value)
            return
        super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            layer = self.__dict__.get("layer")
            own = () if layer is None else (*layer.param_names, *layer.buffer_names)  # torch's to hold
            if name != "layer" and layer is not None and not name.startswith("_") and name not in own:
                return getattr(layer, name)
            raise

    def extra_repr(self) -> str:
        return self.layer.extra_repr()


def module_class(layer_class: type[Layer]) -> type[CnnkitModule]:
    """The ``torch.nn.Module`` class derived from a cnnkit layer class (made once, then cached).

    Its constructor takes the layer's arguments, with ``device`` and ``dtype``
    in place of ``seed``, ``rng`` and ``backend``.
    """
    if layer_class not in _CLASSES:
        sig = inspect.signature(layer_class.__init__)
        params = [p for name, p in sig.parameters.items() if name not in ("self", "seed", "rng", "backend")]
        params = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind == p.VAR_KEYWORD else p for p in params
        ]
        extra = [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None) for n in ("device", "dtype")
        ]
        name = layer_class.__name__
        cls = type(
            name,
            (CnnkitModule,),
            {
                "layer_class": layer_class,
                "__module__": __name__,
                "__qualname__": name,
                "__doc__": (
                    f"``{name}`` as a ``torch.nn.Module``, on cnnkit's ops: the definition is "
                    f":class:`{layer_class.__module__}.{name}` (its formulas, arguments, shapes).\n\n"
                    "    Takes the layer's arguments, with ``device`` and ``dtype`` in place of ``seed``, "
                    "``rng`` and ``backend``;\n    parameters are initialised as ``torch.nn`` does.\n"
                ),
            },
        )
        cls.__signature__ = inspect.Signature([*params, *extra])  # type: ignore[attr-defined]
        _CLASSES[layer_class] = cls
    return _CLASSES[layer_class]


def from_cnnkit(layer: Any, *, device: Any = None, dtype: Any = None) -> torch.nn.Module:
    """The ``torch.nn`` module computing what cnnkit layer ``layer`` computes, with its weights.

    A :class:`cnnkit.layers.Sequential` becomes a ``torch.nn.Sequential`` whose
    state-dict keys (``"0.weight"``, ...) are the names :func:`cnnkit.io.save`
    writes, so ``cnnkit.models.build_model(name, seed=s)`` and its conversion
    start from the very same numbers. Any layer converts, a plugin's included:
    its module is derived from its definition, with no torch code of its own.

    Args:
        layer: a :class:`cnnkit.layer.Layer` (or a ``Sequential`` of them), on any backend.
        device, dtype: where and in what the parameters go (default: CPU, the layer's dtype).

    Returns:
        A ``torch.nn.Module``.

    Raises:
        TypeError: ``layer`` is not a cnnkit layer.

    Example:
        >>> from cnnkit.models import build_model
        >>> net = from_cnnkit(build_model("digits-cnn", seed=0))
        >>> net(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    if isinstance(layer, Sequential):
        seq = torch.nn.Sequential(*(from_cnnkit(child, device=device, dtype=dtype) for child in layer))
        return seq.train(layer.training)
    if not isinstance(layer, Layer):
        raise TypeError(f"from_cnnkit: expected a cnnkit layer, got {type(layer).__name__}")
    return module_class(type(layer)).from_layer(layer, device=device, dtype=dtype)


def copy_to_cnnkit(module: torch.nn.Module, layer: Any) -> Any:
    """Write ``module``'s parameters and buffers into ``layer`` (the inverse of :func:`from_cnnkit`).

    The values keep ``layer``'s backend and dtype. Returns ``layer``.

    Raises:
        ValueError: the two do not have the same parameter names and shapes.
    """
    ours = dict(module.named_parameters())
    theirs = dict(layer.named_parameters())
    if sorted(ours) != sorted(theirs):
        raise ValueError(
            f"copy_to_cnnkit: module has parameters {sorted(ours)} but layer has {sorted(theirs)}"
        )
    for key, p in theirs.items():
        src = ours[key].detach().cpu()
        if tuple(src.shape) != p.shape:
            raise ValueError(f"copy_to_cnnkit: {key} has shape {tuple(src.shape)}, the layer needs {p.shape}")
        be = backend_of(p.data)
        p.data = be.asarray(src.numpy(), dtype=be.dtype_name(p.data))
        p.grad = None
    ours_b = dict(module.named_buffers())
    for key, b in layer.named_buffers():
        if key not in ours_b:
            raise ValueError(f"copy_to_cnnkit: module has no buffer {key!r}")
        be = backend_of(b.data)
        b.data = be.asarray(ours_b[key].detach().cpu().numpy(), dtype=be.dtype_name(b.data))
    layer.train(module.training)
    return layer


def _builtin_modules() -> dict[str, type[CnnkitModule]]:
    from cnnkit import losses

    classes = [cls for cls in BUILTIN_LAYERS if cls is not Sequential]
    classes += [getattr(losses, name) for name in _LOSS_NAMES]
    return {cls.__name__: module_class(cls) for cls in classes}


# One module per built-in layer and loss, under the layer's name (Conv2d, MaxPool2d, ...).
globals().update(_builtin_modules())

__all__ = sorted(["CnnkitModule", "copy_to_cnnkit", "from_cnnkit", "module_class", *_builtin_modules()])
