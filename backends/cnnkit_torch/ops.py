"""PyTorch kernels: one ``torch.autograd.Function`` per op, gradients derived by hand.

The ops come in the same order and under the same names as in
:mod:`cnnkit_numpy.ops`: ``conv``, ``max_pool``, ``avg_pool``, ``lp_pool``,
``relu``, ``leaky_relu``, ``sigmoid``, ``tanh``, ``flatten``, ``linear``,
``cross_entropy``; then the ops past the lecture, ``conv_transpose``, ``pad_nd``, the adaptive
pools and ``max_unpool``, and last ``batch_norm`` and ``dropout`` (their own section at the
end). Each ``forward`` uses torch's forward primitives (``conv``, ``max_pool``,
``avg_pool``, ``matmul``); each ``backward`` computes the
lecture's formulas itself, with forward primitives as the engine: it never
calls autograd, ``torch.nn.grad`` or aten's own ``*_backward`` ops.

Symbols (the lecture's): ``y`` the layer input, ``W`` the kernel, ``a`` the
output, ``δ = dE/da`` the incoming deltas, ``δ_prev = dE/dy``, ``S`` stride,
``D`` dilation, ``⋆`` cross-correlation, ``⋆_full`` full cross-correlation.

Every Function is registered as a :class:`cnnkit.Kernel` whose ``call`` is the
Function's ``apply`` (autograd records cnnkit's gradients) and whose
``forward``/``backward`` run the very same ``forward``/``setup_context``/
``backward`` on a plain context object, under ``torch.no_grad()``, for
:func:`cnnkit.vjp`.

Higher-order gradients, by hand. Every ``backward`` is itself differentiable, because it is
built from cnnkit's own Functions (or elementwise torch ops), never from a ``torch.no_grad``
block hidden from autograd: the conv's gradients are :class:`ConvGrad` (the input gradient a
transposed conv, the weight gradient a conv; its backward is :class:`Conv` and
:class:`ConvGrad` again), max pooling's is the scatter :class:`MaxPoolGrad` (its backward the
gather :class:`MaxPoolGather`), average pooling's :class:`AvgPoolGrad` (its backward the pool),
the window sums of Lp pooling :class:`WindowSum`/:class:`WindowSpread` (each the other's
adjoint). The newer ops follow suit: the transposed conv's gradients are :class:`Conv` (input)
and :class:`ConvGrad` (weight), the conv's own pieces by duality; the pad's is the fold
:class:`PadNdGrad` (its adjoint the pad again); adaptive average pooling's
:class:`AdaptiveAvgPoolGrad` (``Aᵀ δ``, its adjoint the pool); adaptive max pooling and max
unpooling scatter and gather by the saved indices (:class:`MaxPoolGrad`/:class:`MaxPoolGather`);
batch norm's :class:`BatchNormGrad`, a Function of ``(δ, y, γ)`` whose hand-derived backward
follows ``ŷ`` and ``1/σ`` as functions of ``y``; dropout's ``δ ⊙ mask``. ``create_graph=True``,
gradgradcheck, Hessians and gradient penalties therefore run the lecture's formulas at every
order, for every op. To adopt this in a new Function:

- write the backward's linear pieces as Functions whose ``backward`` is their adjoint, and
  call them through :func:`_grad_apply` (``fn.apply`` while a graph is recorded, a plain call
  of ``fn.forward`` otherwise, so first order costs nothing extra);
- elementwise parts (masks, ``σ(1 - σ)``) may stay plain torch ops on saved tensors;
- where an op truly stays first order, decorate its ``backward`` with
  :func:`_first_order_only`: every route to a second derivative then raises one clear error
  instead of returning zeros.

The rest of PyTorch's toolbox, and how a new Function joins it (a line or two each):

- **Base class**: derive from :class:`CnnkitFunction` (not ``Function``): ``forward`` without
  ctx plus ``setup_context``, and ``generate_vmap_rule = True``, so ``torch.func.vmap``,
  ``grad``, ``jacrev`` run the Function's own methods on batched tensors. Routes that view
  memory (``as_strided``, ``storage_offset``, writes into fresh buffers) step aside when
  :func:`_transformed` is true (under a transform or while torch.compile traces). Under a
  transform, :meth:`CnnkitFunction.apply` passes tuple attributes as one pytree leaf each
  (functorch's generated rule would flatten them out of step with the tangents). vmap over the
  batch of a training batch norm that moves unbatched running statistics raises one clear error,
  as torch's own does.
- **Forward mode**: a ``jvp(ctx, *tangents)`` staticmethod with the hand-derived tangent
  formula (``torch.func.jvp``, ``jacfwd``, ``torch.autograd.forward_ad``); save what it reads
  with :func:`_save` (``save_for_backward`` and ``save_for_forward`` at once).
- **Autocast**: the class attribute ``autocast`` (``"lower"`` for conv/linear-like ops,
  ``"float32"`` for losses, ``"input"`` for batch norm, default ``"promote"``).
  :func:`autocast_inputs` casts the inputs before the core validates them
  (``TorchBackend.prepare``) as native ops are cast, and the Function then runs with autocast
  off in those dtypes; gradients return in the inputs' dtypes.
  (``torch.amp.custom_fwd`` is not used: it writes to ``args[0]``, the ctx of old-style
  Functions, and serves one device type; the attribute serves CPU and CUDA.)
- **torch.compile / torch.export**: nothing to do. :func:`_kernel` hands Dynamo a twin of the
  class without its ``jvp`` (:func:`_traceable`; Dynamo refuses Functions that define one),
  and while ``torch.export`` traces, the Function's ``cnnkit::`` operator
  (:mod:`cnnkit_torch.library`, the same forward and backward) so the exported program keeps
  cnnkit's ops;
  the core's path takes no lock once the registry is collected, reads no ContextVar while
  compiling, and checks values on the host only where :func:`host_readable` says so.
- **TorchScript** (``torch.jit.script``) stays unsupported: it cannot script Python
  ``autograd.Function`` classes or the core's dispatch (pluggy, dataclasses, kwargs).

Attributes arrive in the core's canonical form (see :mod:`cnnkit.ops`) and are
never validated again here. Nothing here leaves the device: no ``.item()``,
no ``.cpu()``, no NumPy.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import Function, once_differentiable

from cnnkit.geometry import bounded_window, conv_output_size, pool_output_size, pool_padding
from cnnkit.registry import Kernel
from cnnkit_torch import autotune
from cnnkit_torch.sizes import COLUMNS_CHUNK_BYTES

__all__ = [
    "KERNELS",
    "AdaptiveAvgPool",
    "AdaptiveAvgPoolGrad",
    "AdaptiveMaxPool",
    "AvgPool",
    "AvgPoolGrad",
    "BatchNorm",
    "BatchNormGrad",
    "Conv",
    "ConvGrad",
    "ConvTranspose",
    "CrossEntropy",
    "Dropout",
    "Flatten",
    "LeakyReLU",
    "Linear",
    "LpPool",
    "MaxPool",
    "MaxPoolGather",
    "MaxPoolGrad",
    "MaxUnpool",
    "PadNd",
    "PadNdGrad",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "WindowSpread",
    "WindowSum",
]

Pads = Sequence[tuple[int, int]]

_CONV = {1: torch.conv1d, 2: torch.conv2d, 3: torch.conv3d}
_CONV_T = {1: torch.conv_transpose1d, 2: torch.conv_transpose2d, 3: torch.conv_transpose3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


# -- shared geometry helpers ---------------------------------------------------------------


def _spatial(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(2, x.dim()))


def _pad_arg(pads: Pads) -> list[int]:
    """``(before, after)`` per axis, first axis first -> F.pad's last-axis-first list."""
    out: list[int] = []
    for lo, hi in reversed(pads):
        out += [lo, hi]
    return out


def _pad(x: torch.Tensor, pads: Pads, value: float = 0.0) -> torch.Tensor:
    if not any(lo or hi for lo, hi in pads):
        return x
    return F.pad(x, _pad_arg(pads), value=value)


def _crop(x: torch.Tensor, pads: Pads, size: Sequence[int]) -> torch.Tensor:
    """Undo :func:`_pad`: keep ``size`` units per axis starting after the ``before`` padding."""
    index = (slice(None), slice(None), *(slice(lo, lo + n) for (lo, _), n in zip(pads, size)))
    return x[index]


def _split_padding(pads: Pads) -> tuple[tuple[int, ...], list[tuple[int, int]]]:
    """Split per-axis pairs into the symmetric part torch's convs take and the rest."""
    sym = tuple(min(lo, hi) for lo, hi in pads)
    rest = [(lo - s, hi - s) for (lo, hi), s in zip(pads, sym)]
    return sym, rest


def _ones_kernel(x: torch.Tensor, kernel: Sequence[int]) -> torch.Tensor:
    return x.new_ones((1, 1, *kernel))


def _avg_pool_runs(x: torch.Tensor) -> bool:
    """torch's CPU ``avg_pool3d`` has no float16/bfloat16 kernel; a conv with ones does."""
    return not (x.dim() == 5 and x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16))


def _window_sum(
    x_pad: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> torch.Tensor:
    """``s[i] = Σ_m x_pad[S·i + D·m]`` per channel: the sum of each (already padded) window."""
    n, c, *size = x_pad.shape
    d = len(kernel)
    if all(v == 1 for v in dilation) and _avg_pool_runs(x_pad):
        if d == 1:
            return F.avg_pool2d(
                x_pad.unsqueeze(2), (1, kernel[0]), (1, stride[0]), divisor_override=1
            ).squeeze(2)
        return _AVG_POOL[d](x_pad, kernel, stride, divisor_override=1)
    s = _CONV[d](x_pad.reshape(n * c, 1, *size), _ones_kernel(x_pad, kernel), None, stride, 0, dilation)
    return s.view(n, c, *s.shape[2:])


def _window_spread(
    g: torch.Tensor,
    size: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
) -> torch.Tensor:
    """The adjoint of :func:`_window_sum`: every unit of the padded input (``size``) gets
    ``Σ_{windows ∋ unit} g[window]``."""
    n, c, *out = g.shape
    d = len(kernel)
    if all(s == f for s, f in zip(stride, kernel)) and all(v == 1 for v in dilation):
        # windows tile the input: each unit lies in exactly one window, so spreading is a repeat
        shape = [n, c]
        view = [n, c]
        for o, f in zip(out, kernel):
            view += [o, 1]
            shape += [o, f]
        tiled = g.reshape(view).expand(shape).reshape(n, c, *(o * f for o, f in zip(out, kernel)))
        return _pad(tiled, [(0, full - o * f) for full, o, f in zip(size, out, kernel)])
    # full cross-correlation of the stride-dilated g with rot180(ones) = conv_transpose with ones
    extra = [
        full - ((o - 1) * s + dl * (f - 1) + 1)
        for full, o, s, f, dl in zip(size, out, stride, kernel, dilation)
    ]
    r = _CONV_T[d](
        g.reshape(n * c, 1, *out), _ones_kernel(g, kernel), None, stride, 0, tuple(extra), 1, dilation
    )
    return r.view(n, c, *size)


def _window_count(
    size: Sequence[int],
    out: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    pads: Pads,
    dilation: Sequence[int],
    include_pad: bool,
    like: torch.Tensor,
) -> torch.Tensor:
    """``|window|`` per output unit, shape ``out``: taps inside the input (and the declared
    padding when ``include_pad``), never the ceil-mode overhang. Built on ``like``'s device,
    by arithmetic per window (``O(O)``, not an ``(O, F)`` table of taps)."""
    count = None
    dev = like.device
    for axis, (n, o, f, s, (lo, hi), dl) in enumerate(zip(size, out, kernel, stride, pads, dilation)):
        start = torch.arange(o, device=dev) * s - lo  # input coordinate of each window's first tap
        first, end = (-lo, n + hi) if include_pad else (0, n)
        # taps m with first <= start + D·m < end: ceil((first - start)/D) <= m <= ceil((end - start)/D) - 1
        m_lo = (-((start - first) // dl)).clamp_min(0)
        m_hi = (-((start - end) // dl) - 1).clamp_max(f - 1)
        c = (m_hi - m_lo + 1).clamp_min(0).to(like.dtype)
        c = c.view([-1] + [1] * (len(size) - axis - 1))
        count = c if count is None else count * c
    assert count is not None
    return count


def _dense(t: torch.Tensor) -> bool:
    """False for a broadcast tensor (an axis of size > 1 with stride 0: one element, many places)."""
    return all(st != 0 for st, n in zip(t.stride(), t.shape) if n > 1)


def _bounded(x_shape: Sequence[int], kernel: Sequence[int], stride, padding, dilation):
    """Stride and dilation no larger than the padded input (:func:`cnnkit.geometry.bounded_window`):
    the same windows, and no 64-bit overflow in torch's arguments for a stride of 10**20."""
    return bounded_window(tuple(x_shape[2:]), tuple(kernel), stride, padding, dilation)


def _is_empty(x: Any) -> bool:
    """An empty batch (N = 0) or no channels (C = 0): nothing to compute, zeros of the right shape."""
    return math.prod(x.shape) == 0


# -- once differentiable, and saying so ----------------------------------------------------------


class _SecondOrderError(Function):
    """Passes gradients through unchanged; differentiating them raises ``message``. Its inputs
    include the tensors the gradients were computed from, so every route to a second
    derivative (``.backward()``, ``autograd.grad``, Hessians) reaches it and raises."""

    @staticmethod
    def forward(ctx, message, n, *tensors):
        ctx.message = message
        return tuple(t.clone() for t in tensors[:n])

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(ctx.message)


def _first_order_only(fn: Any) -> Any:
    """Mark a ``backward`` first order only: one clear error on every second derivative.

    With ``create_graph=True`` the gradients are computed without a graph and then passed
    through :class:`_SecondOrderError`, whose inputs also hold the saved tensors and incoming
    gradients that require grad: differentiating them again raises "trying to differentiate
    twice", never returns zeros (torch's ``once_differentiable`` detaches the result from the
    inputs, so a Hessian came back all zero). No cnnkit op needs it today; it is for an op whose
    backward cannot be built from differentiable pieces.
    """
    inner = once_differentiable(fn)
    message = (
        f"cnnkit_torch.ops.{fn.__qualname__}: trying to differentiate twice a function that was "
        "marked first order only (its hand-derived backward is not itself differentiable)"
    )

    @functools.wraps(fn)
    def backward(ctx: Any, *grad_outputs: Any) -> Any:
        if not torch.is_grad_enabled():  # no create_graph: nothing will differentiate these
            return inner(ctx, *grad_outputs)
        with torch.no_grad():
            grads = fn(ctx, *grad_outputs)
        many = isinstance(grads, tuple)
        grads_ = grads if many else (grads,)
        sources = [
            t for t in (*ctx.saved_tensors, *grad_outputs) if isinstance(t, torch.Tensor) and t.requires_grad
        ]
        where = [i for i, g in enumerate(grads_) if isinstance(g, torch.Tensor)]
        if not sources or not where:
            return grads
        passed = _SecondOrderError.apply(message, len(where), *(grads_[i] for i in where), *sources)
        out = list(grads_)
        for i, g in zip(where, passed):
            out[i] = g
        return tuple(out) if many else out[0]

    return backward


#: The C++ ``apply`` that :meth:`torch.autograd.Function.apply` ends in.
_C_APPLY = torch._C._FunctionBase.__dict__["apply"]
_is_wrapped = torch._C._functorch.is_functorch_wrapped_tensor


def _apply(fn: type[Function], *args: Any) -> Any:
    """``fn.apply(*args)`` without its per-call ``inspect.signature`` binding (about 45 µs a
    call, as long as a small op itself; every argument here is positional, so binding the
    defaults changes nothing): the C++ apply directly in plain eager mode. Under a torch.func
    transform, while Dynamo traces, or with a functorch-wrapped argument, ``fn.apply`` itself."""
    if (
        torch._C._are_functorch_transforms_active()
        or torch.compiler.is_compiling()
        or any(isinstance(a, torch.Tensor) and _is_wrapped(a) for a in args)
    ):
        return fn.apply(*args)
    return _C_APPLY.__get__(None, fn)(*args)


def _grad_apply(fn: type[Function], *args: Any) -> Any:
    """Run a gradient Function inside a ``backward``: applied when autograd is recording
    (``create_graph=True``: the gradient is differentiated again through ``fn``'s own
    hand-derived ``backward``), else ``fn.forward`` directly (first order: no node, no cost)."""
    if torch.is_grad_enabled():
        return _apply(fn, *args)
    return fn.forward(*args)


class CnnkitFunction(Function):
    """The base of every Function here: ``forward`` takes no ctx (``setup_context`` does the
    saving), so torch.func can transform it, and ``generate_vmap_rule``: ``vmap`` runs the
    Function's own ``forward``/``backward`` on batched tensors (they are pure torch; the routes
    that view memory with ``as_strided`` step aside under a transform, see :func:`_transformed`).
    Forward mode (``jvp``, ``torch.func.jvp``, ``torch.autograd.forward_ad``) runs each class's
    hand-written ``jvp`` staticmethod; tensors it reads are saved with :func:`_save`."""

    generate_vmap_rule = True

    #: What ``torch.autocast`` does to the inputs (see :func:`autocast_inputs`): ``"lower"``
    #: (conv, linear: the autocast dtype, as native conv and linear), ``"float32"`` (losses),
    #: ``"input"`` (batch norm: the first input's dtype, its parameters cast to it, as native
    #: batch norm keeps a bfloat16 input bfloat16), ``"promote"`` (the rest: the widest floating
    #: dtype among the inputs, as native ops).
    autocast = "promote"

    @classmethod
    def apply(cls, *args: Any) -> Any:
        # Under a torch.func transform, a tuple, list or ``torch.Size`` attribute goes in as one
        # pytree leaf (:class:`_Attr`): functorch's generated vmap rule flattens the inputs'
        # in_dims as a pytree but the jvp's tangents one per input, so a tuple argument (a
        # stride, padding pairs, a shape) broke ``jvp`` of a vmapped Function
        # (``torch.func.hessian``, jacfwd of jacrev).
        if torch._C._are_functorch_transforms_active():
            args = tuple(
                _Attr(a) if isinstance(a, (tuple, list)) and type(a) is not _Attr else a for a in args
            )
        return super().apply(*args)


class _Attr(tuple):
    """A tuple attribute as one pytree leaf (a tuple subclass is no pytree node): what
    :meth:`CnnkitFunction.apply` passes under a torch.func transform. It reads as the tuple."""

    __slots__ = ()


def _save(ctx: Any, *tensors: Any) -> None:
    """Save ``tensors`` for ``backward`` and for ``jvp`` (forward mode reads its own saved list)."""
    ctx.save_for_backward(*tensors)
    ctx.save_for_forward(*tensors)


def _transformed(*tensors: Any) -> bool:
    """True under a torch.func transform (vmap, grad, jvp wrap tensors) or while torch.compile
    traces: only routes of plain, batchable, traceable torch ops (no ``as_strided`` or
    ``storage_offset``, no in-place writes into a fresh buffer) may run."""
    if torch.compiler.is_compiling():  # traced by Dynamo: no storage to view, functional ops only
        return True
    return any(
        isinstance(t, torch.Tensor) and torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors
    )


def host_readable(*tensors: Any) -> bool:
    """True where reading these tensors on the host costs no device sync and breaks no trace:
    CPU tensors, in eager mode, outside any torch.func transform."""
    if torch.compiler.is_compiling() or torch._C._functorch.peek_interpreter_stack() is not None:
        return False
    return all(not isinstance(t, torch.Tensor) or t.device.type in ("cpu", "meta") for t in tensors)


def _autocast_device(arrays: Sequence[Any]) -> str | None:
    if not torch._C._is_any_autocast_enabled():
        return None
    for a in arrays:
        if isinstance(a, torch.Tensor):
            dev = a.device.type
            return dev if dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev) else None
    return None


def autocast_inputs(op: str, arrays: list[Any], state: Sequence[int] = ()) -> list[Any]:
    """The op's floating inputs cast as its Function's ``autocast`` declares, under an active
    ``torch.autocast`` on their device (CPU, CUDA); unchanged otherwise. The casts are ordinary
    autograd ops, so gradients come back in the inputs' own dtypes. The inputs at positions
    ``state`` (running statistics, moved in place) are never cast."""
    dev = _autocast_device(arrays)
    if dev is None:
        return arrays
    fn = _FUNCTIONS.get(op)
    policy = getattr(fn, "autocast", "promote")
    floats = [
        a
        for i, a in enumerate(arrays)
        if isinstance(a, torch.Tensor) and a.is_floating_point() and i not in state
    ]
    if not floats:
        return arrays
    if policy == "lower":
        target = torch.get_autocast_dtype(dev)
    elif policy == "float32":
        target = torch.float32
    elif policy == "input":
        target = floats[0].dtype
    else:
        target = functools.reduce(torch.promote_types, (a.dtype for a in floats))
    return [
        a.to(target) if isinstance(a, torch.Tensor) and a.is_floating_point() and i not in state else a
        for i, a in enumerate(arrays)
    ]


# -- the plain context used by cnnkit.vjp ------------------------------------------------------


class _Ctx:
    """What ``setup_context`` and ``backward`` need of autograd's ctx, for the vjp path."""

    def __init__(self, needs_input_grad: tuple[bool, ...]) -> None:
        self.needs_input_grad = needs_input_grad
        self.saved_tensors: tuple[Any, ...] = ()

    def save_for_backward(self, *tensors: Any) -> None:
        self.saved_tensors = tensors

    def save_for_forward(self, *tensors: Any) -> None:
        pass

    def mark_non_differentiable(self, *tensors: Any) -> None:
        pass


def _traceable(fn: type[Function]) -> type[Function]:
    """``fn`` as torch.compile traces it: the same forward, setup_context and backward, without
    the ``jvp`` staticmethod (Dynamo refuses Functions that define one; a compiled graph runs no
    forward mode)."""
    if fn.jvp is Function.jvp:
        return fn
    return type(
        fn.__name__,
        (fn,),
        {"jvp": Function.jvp, "__module__": fn.__module__, "__qualname__": fn.__qualname__},
    )


def _kernel(fn: type[Function], n_inputs: int, attrs: tuple[str, ...], n_outputs: int = 1) -> Kernel:
    """A :class:`Kernel` running ``fn``: ``call`` is ``fn.apply``; ``forward``/``backward`` run
    ``fn``'s own static methods on a :class:`_Ctx` for :func:`cnnkit.vjp`."""

    traced = _traceable(fn)
    name = fn.__name__  # the Function's operator in cnnkit_torch.library, by a key Dynamo can hash

    def run(f: type[Function], args: tuple) -> Any:
        if torch.compiler.is_exporting():
            # torch.export keeps no autograd.Function: run fn's opaque operator instead (same
            # forward, the same hand-derived backward through register_autograd)
            from cnnkit_torch import library

            return library.apply(name, args, f.apply)
        return _apply(f, *args)

    def call(*inputs: Any, **kw: Any) -> Any:
        f = traced if torch.compiler.is_compiling() else fn
        args = (*inputs, *(kw[k] for k in attrs))
        dev = _autocast_device(inputs)
        if dev is None:
            out = run(f, args)
        else:  # inputs already cast (autocast_inputs): the Function runs in their dtypes
            with torch.autocast(dev, enabled=False):
                out = run(f, args)
        return out[0] if n_outputs > 1 else out

    def forward(*inputs: Any, **kw: Any) -> tuple[Any, _Ctx]:
        args = (*inputs, *(kw[k] for k in attrs))
        needs = tuple(isinstance(a, torch.Tensor) and a.is_floating_point() for a in inputs)
        ctx = _Ctx(needs + (False,) * len(attrs))
        with torch.no_grad():
            out = fn.forward(*args)
            fn.setup_context(ctx, args, out)
        return (out[0] if n_outputs > 1 else out), ctx

    def backward(ctx: _Ctx, grad_output: Any) -> tuple[Any, ...]:
        with torch.no_grad():  # cnnkit's own hand-written Function.backward, called directly
            grads = fn.backward(ctx, grad_output, *([None] * (n_outputs - 1)))
        return tuple(grads[:n_inputs])

    forward.__name__ = f"{fn.__name__.lower()}_forward"
    backward.__name__ = f"{fn.__name__.lower()}_backward"
    call.__name__ = f"{fn.__name__.lower()}_apply"
    call.function = fn  # type: ignore[attr-defined]
    return Kernel(forward=forward, backward=backward, call=call)


# -- conv --------------------------------------------------------------------------------------


def _conv_input_grad(
    dy: torch.Tensor,
    w: torch.Tensor,
    x_shape: Sequence[int],
    stride: Sequence[int],
    pads: Pads,
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    """``δ_prev = δ ⋆_full rot180(W)``: the full cross-correlation of the stride-dilated deltas
    with the 180°-rotated kernel, cropped to the input (padding removed).

    Stride 1: exactly that, one conv of ``δ`` (padded by ``D(F-1) - P``) with ``rot180(W)``,
    its in and out channels swapped. Stride > 1: ``conv_transpose`` with ``W``, which
    computes the same sum without building the zero-filled (stride-dilated) deltas.
    """
    d = len(stride)
    size = x_shape[2:]
    sym, rest = _split_padding(pads)
    full = [n + lo + hi for n, (lo, hi) in zip(size, rest)]  # padded by the asymmetric rest only
    # trailing input rows that no window reached (output size not whole) get output_padding
    extra = tuple(
        n + 2 * p - ((o - 1) * s + dl * (f - 1) + 1)
        for n, p, o, s, f, dl in zip(full, sym, dy.shape[2:], stride, w.shape[2:], dilation)
    )
    k, cg = w.shape[:2]
    if all(s == 1 for s in stride) and not any(extra):
        # stride 1: the lecture's formula as it stands, a conv of δ with rot180(W), channels swapped
        w_rot = w.flip(_spatial(w)).view(groups, k // groups, cg, *w.shape[2:]).transpose(1, 2)
        w_rot = w_rot.reshape(groups * cg, k // groups, *w.shape[2:])
        full_pads = [(dl * (f - 1) - p, dl * (f - 1) - p) for f, dl, p in zip(w.shape[2:], dilation, sym)]
        if all(lo >= 0 for lo, _ in full_pads):
            dx = _CONV[d](dy, w_rot, None, 1, tuple(lo for lo, _ in full_pads), dilation, groups)
            return _crop(dx, rest, size) if any(lo or hi for lo, hi in rest) else dx
    dx = _CONV_T[d](dy, w, None, stride, sym, extra, groups, dilation)
    return _crop(dx, rest, size) if any(lo or hi for lo, hi in rest) else dx


def _zero_borders(t: torch.Tensor, first: int, inner: Sequence[tuple[int, int]]) -> None:
    """Zero what lies outside ``[lo, lo + n)`` on the axes ``first, first + 1, ...`` of ``t``
    (``inner`` the ``(lo, n)`` per axis): the padding, without a fill of the whole buffer."""
    for a, (lo, size) in enumerate(inner):
        ax, total = first + a, t.shape[first + a]
        if lo > 0:
            t.narrow(ax, 0, lo).zero_()
        if lo + size < total:
            t.narrow(ax, lo + size, total - lo - size).zero_()


def _fill_channels_last(buf: torch.Tensor, x: torch.Tensor, pads: Pads) -> torch.Tensor:
    """``buf`` (N, *P, C) := ``y_pad`` channels-last, in one copy: the input written into place,
    only the padding zeroed (no zero-fill that the copy then overwrites)."""
    inner = [(lo, s_) for s_, (lo, _) in zip(x.shape[2:], pads)]
    buf[(slice(None), *(slice(lo, lo + s_) for lo, s_ in inner), slice(None))] = x.movedim(1, -1)
    _zero_borders(buf, 1, inner)
    return buf


def _conv_weight_grad_gemm(
    x: torch.Tensor, dy: torch.Tensor, kernel: Sequence[int], stride: int, pads: Pads, dilation: Sequence[int]
) -> torch.Tensor:
    """``dW[:, :, m] = Σ_n Σ_i δ[n, :, i] · y_pad[n, :, S·i + D·m]ᵀ``, one GEMM per kernel offset
    ``m`` over the whole batch (groups = 1, one stride on every axis).

    The padded input is laid out channel by channel, the samples of a channel one after the
    other, ``(C, N·ΠP)``; the deltas on the same grid ``(K, N·ΠP)`` (padded to the input's row
    length, zeros where no output is). The input units a kernel offset meets are then the
    columns ``S·i + off_m`` of one ``(C, units)`` view, so each offset is one
    ``(K, units) @ (units, C)`` GEMM over the whole batch, both operands contiguous along the
    summed axis: no im2col copy, no channels-last transpose, no per-sample products to sum.
    Both buffers are filled by plane copies; only their padding is zeroed.
    """
    n, c = x.shape[:2]
    k = dy.shape[1]
    d = len(kernel)
    out = dy.shape[2:]
    full = [size + lo + hi for size, (lo, hi) in zip(x.shape[2:], pads)]
    row = [math.prod(full[a + 1 :]) for a in range(d)]  # flat stride of each axis, in units
    t = out[0] * row[0]  # grid units of one sample that hold outputs
    rows0 = full[0]
    while (rows0 * row[0]) % stride:  # each sample starts on the grid: its length a multiple of S
        rows0 += 1
    per = rows0 * row[0]  # input units per sample
    tg = per // stride  # grid units per sample
    span = (n - 1) * tg + t  # grid units the GEMMs run over
    reach = stride * (span - 1) + sum(dl * (f - 1) * r for dl, f, r in zip(dilation, kernel, row)) + 1
    length = max(n * per, reach)
    buf = x.new_empty((c, length))
    planes = buf[:, : n * per].view(c, n, rows0, *full[1:])
    inner = [(lo, size) for size, (lo, _) in zip(x.shape[2:], pads)]
    planes[(slice(None), slice(None), *(slice(lo, lo + size) for lo, size in inner))] = x.transpose(0, 1)
    _zero_borders(planes, 2, inner)
    if length > n * per:
        buf[:, n * per :].zero_()
    # δ on the grid (O_1, P_2, ..., P_d) per sample (tg units apart), zeros where no output unit is
    grid = dy.new_empty((k, n, tg))
    cells = grid[:, :, :t].view(k, n, out[0], *full[1:])
    cells[(slice(None), slice(None), slice(None), *(slice(0, o) for o in out[1:]))] = dy.transpose(0, 1)
    _zero_borders(cells, 3, [(0, o) for o in out[1:]])
    if tg > t:
        grid[:, :, t:].zero_()
    delta = grid.view(k, n * tg)[:, :span]
    dw = x.new_empty((k, c, math.prod(kernel)))  # laid out like W
    for j, m in enumerate(itertools.product(*(range(f) for f in kernel))):
        offset = sum(dl * mm * r for dl, mm, r in zip(dilation, m, row))
        y_m = buf[:, offset : offset + stride * (span - 1) + 1 : stride]  # (C, units)
        dw[:, :, j] = delta @ y_m.t()  # (K, C): one GEMM over the whole batch
    return dw.view(k, c, *kernel)


def _conv_weight_grad_columns(
    x: torch.Tensor,
    dy: torch.Tensor,
    kernel: Sequence[int],
    stride: Sequence[int],
    pads: Pads,
    dilation: Sequence[int],
) -> torch.Tensor:
    """``dW = Σ_chunks δ (K, n·ΠO) @ columns (n·ΠO, ΠF·C)`` (groups = 1): the lecture's ``y ⋆ δ``
    over channels-last im2col columns ``[(n, i), (m, c)] = y_pad[n, c, S·i + D·m]``, for strided
    convs, where no strided view of the input is a matrix. The batch goes in chunks of about
    :data:`COLUMNS_CHUNK_BYTES` of columns; the padded chunk and its columns are written into two
    buffers made once per call (only the padding zeroed), one GEMM per chunk."""
    n, c = x.shape[:2]
    k, out = dy.shape[1], dy.shape[2:]
    units, width = math.prod(out), math.prod(kernel) * c  # columns per sample: rows, row length
    delta = dy.movedim(1, 0).reshape(k, n * units)  # (K, N·ΠO)
    step = min(n, max(1, COLUMNS_CHUNK_BYTES // (units * width * x.element_size())))
    full = [size + lo + hi for size, (lo, hi) in zip(x.shape[2:], pads)]
    y_buf = x.new_empty((step, *full, c))
    col_buf = x.new_empty((step * units, width))
    dw = None
    for n0 in range(0, n, step):
        nb = min(step, n - n0)
        y = _fill_channels_last(y_buf[:nb], x[n0 : n0 + nb], pads)  # (nb, *P, C)
        s_n, *s_sp, s_c = y.stride()
        win = y.as_strided(
            (nb, *out, *kernel, c),
            (s_n, *(s * r for s, r in zip(stride, s_sp)), *(dl * r for dl, r in zip(dilation, s_sp)), s_c),
        )
        columns = col_buf[: nb * units]
        columns.view(nb, *out, *kernel, c).copy_(win)  # (nb·ΠO, ΠF·C)
        d = delta[:, n0 * units : (n0 + nb) * units]
        dw = d @ columns if dw is None else dw.addmm_(d, columns)
    return dw.view(k, *kernel, c).movedim(-1, 1)


def _conv_weight_grad_conv(
    x: torch.Tensor,
    dy: torch.Tensor,
    kernel: Sequence[int],
    stride: Sequence[int],
    pads: Pads,
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    """``dW = y ⋆ δ``: the input cross-correlated with the deltas (taps ``S`` apart, the
    deltas' stride-dilation), as one conv with batch and channels swapped, per group."""
    d = len(kernel)
    n, c = x.shape[:2]
    cg = c // groups
    sym, rest = _split_padding(pads)
    x_p = _pad(x, rest)
    # (N, C, *P) -> (C/G, G·N, *P): each group's samples become the channels of one conv group
    y = x_p.reshape(n, groups, cg, *x_p.shape[2:]).permute(2, 1, 0, *range(3, d + 3))
    y = y.reshape(cg, groups * n, *x_p.shape[2:])
    dw = _CONV[d](y, dy.transpose(0, 1), None, dilation, sym, stride, groups)  # (C/G, K, *F')
    dw = dw[(slice(None), slice(None), *(slice(0, f) for f in kernel))]  # drop the trailing taps
    return dw.transpose(0, 1)


def _conv_weight_grad(
    x: torch.Tensor,
    dy: torch.Tensor,
    kernel: Sequence[int],
    stride: Sequence[int],
    pads: Pads,
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    # the fastest route for this shape on this machine (autotune: timed once, else the fixed
    # rule measured on one CPU); all are y ⋆ δ
    route = autotune.dw_route(x, dy, kernel, stride, pads, dilation, groups)
    if route == "gemm":
        return _conv_weight_grad_gemm(x, dy, kernel, 1, pads, dilation)
    if route == "columns":
        return _conv_weight_grad_columns(x, dy, kernel, stride, pads, dilation)
    if route == "im2col":
        w_like = x.new_empty((dy.shape[1], x.shape[1], *kernel))  # only its shape is read
        return _conv_grads_im2col(x, w_like, dy, stride, pads, dilation, False, True)[1]
    return _conv_weight_grad_conv(x, dy, kernel, stride, pads, dilation, groups)


def _conv_grads_im2col(
    x: torch.Tensor,
    w: torch.Tensor,
    dy: torch.Tensor,
    stride: Sequence[int],
    pads: Pads,
    dilation: Sequence[int],
    need_x: bool,
    need_w: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``dW`` and ``δ_prev`` (groups = 1) as the NumPy backend computes them, over the im2col
    columns ``[n, (c, m), i] = y_pad[n, c, S·i + D·m]``:

    ``dW = Σ_n δ[n] @ columns[n]ᵀ`` (one batched matmul) and ``δ_prev`` is ``Wᵀ @ δ``
    scattered back with one strided add per kernel offset ``m``. Used for few input
    channels, where the columns are small and oneDNN's conv with <= 4 output channels is slow.
    """
    n, c, *size = x.shape
    k, kernel = w.shape[0], w.shape[2:]
    out = dy.shape[2:]
    delta = dy.reshape(n, k, -1)  # (N, K, ΠO)
    full = [p + lo + hi for p, (lo, hi) in zip(size, pads)]
    dx = dw = None
    if need_w:
        x_pad = _pad(x, pads).contiguous()
        row = x_pad.stride()[2:]
        win = x_pad.as_strided(
            (n, c, *kernel, *out),
            (
                *x_pad.stride()[:2],
                *(dl * r for dl, r in zip(dilation, row)),
                *(s * r for s, r in zip(stride, row)),
            ),
        )
        cols = win.reshape(n, c * math.prod(kernel), -1)  # (N, C·ΠF, ΠO), one copy
        dw = torch.bmm(delta, cols.transpose(1, 2)).sum(0).view(w.shape)
    if need_x:
        w_t = w.reshape(k, -1).t().expand(n, -1, -1)  # (N, C·ΠF, K)
        dcol = torch.bmm(w_t, delta).view(n, c, -1, *out)  # (N, C, ΠF, *O)
        dx_pad = dy.new_zeros((n, c, *full))
        for j, m in enumerate(itertools.product(*(range(f) for f in kernel))):
            taps = (
                slice(dl * mm, dl * mm + s * (o - 1) + 1, s) for mm, s, dl, o in zip(m, stride, dilation, out)
            )
            dx_pad[(slice(None), slice(None), *taps)] += dcol[:, :, j]
        dx = _crop(dx_pad, pads, size)
    return dx, dw


def _conv_forward(x, w, b, stride, padding, dilation, groups, flip):
    if flip:
        w = w.flip(_spatial(w))
    sym, rest = _split_padding(padding)
    return _CONV[x.dim() - 2](_pad(x, rest), w, b, stride, sym, dilation, groups)


class Conv(CnnkitFunction):
    """``a = W ⋆ y + b`` (``flip=True``: ``rot180(W)``), in 1, 2 or 3 dimensions."""

    autocast = "lower"

    @staticmethod
    def forward(x, w, b, stride, padding, dilation, groups, flip):
        stride, dilation = _bounded(x.shape, w.shape[2:], stride, padding, dilation)
        if _is_empty(x) or _is_empty(w):  # N = 0 or C = 0: a = b (every product sums nothing)
            size = [
                conv_output_size(n, f, s_, p, dl)
                for n, f, s_, p, dl in zip(x.shape[2:], w.shape[2:], stride, padding, dilation)
            ]
            a = x.new_zeros((x.shape[0], w.shape[0], *size))
            return a if b is None else a + b.view(1, -1, *([1] * len(size)))
        return _conv_forward(x, w, b, stride, padding, dilation, groups, flip)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, _b, stride, padding, dilation, groups, flip = inputs
        _save(ctx, x, w)
        stride, dilation = _bounded(x.shape, w.shape[2:], stride, padding, dilation)
        ctx.attrs = (stride, padding, dilation, groups, flip)
        ctx.out_size = tuple(output.shape[2:])

    @staticmethod
    def backward(ctx, dy):
        # dE/dW = y ⋆ δ (δ stride-dilated);  δ_prev = δ ⋆_full rot180(W);  dE/db = Σ_ij δ
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        dx = dw = None
        if need_x or need_w:
            dx, dw = _grad_apply(ConvGrad, x, w, dy, *ctx.attrs, need_x, need_w)
        db = dy.sum((0, *_spatial(w))) if need_b else None
        return dx, dw, db, None, None, None, None, None

    @staticmethod
    def jvp(ctx, dx, dw, db, *_):
        # ȧ = W ⋆ ẏ + Ẇ ⋆ y + ḃ  (bilinear)
        x, w = ctx.saved_tensors
        shape = (x.shape[0], w.shape[0], *ctx.out_size)
        return _bilinear_jvp(lambda a, b: _conv_forward(a, b, None, *ctx.attrs), x, w, dx, dw, db, shape)


def _bilinear_jvp(f, x, w, dx, dw, db, shape):
    """The tangent of ``a = f(x, W) + b`` for ``f`` bilinear (a conv, a transposed conv):
    ``ȧ = f(ẋ, W) + f(x, Ẇ) + ḃ``, of ``shape`` when only the bias has a tangent."""
    out = None
    if dx is not None:
        out = f(dx, w)
    if dw is not None:
        part = f(x, dw)
        out = part if out is None else out + part
    if db is not None:
        part = db.view(1, -1, *([1] * (x.dim() - 2)))
        out = part.expand(shape) if out is None else out + part
    return out


def _conv_grads(x, w, dy, stride, padding, dilation, groups, flip, need_x, need_w):
    """``(δ_prev, dE/dW)`` of ``a = W ⋆ y`` by the fastest route for the shape (``None`` where
    not asked for)."""
    spatial = _spatial(w)
    if _is_empty(x) or _is_empty(w):  # N = 0 or C = 0: every sum over n or c is empty
        return (torch.zeros_like(x) if need_x else None), (torch.zeros_like(w) if need_w else None)
    w_used = w.flip(spatial) if flip and need_x else w  # rot180(W) is read by δ_prev only
    dx = dw = None
    if _transformed(x, w, dy):  # batchable ops only: the transposed conv and the conv
        if need_x:
            dx = _conv_input_grad(dy, w_used, x.shape, stride, padding, dilation, groups)
        if need_w:
            dw = _conv_weight_grad_conv(x, dy, w.shape[2:], stride, padding, dilation, groups)
    else:
        # the route per gradient: timed on first sight of a shape, else the fixed rule (autotune)
        dx_route = autotune.dx_route(x, w_used, dy, stride, padding, dilation, groups) if need_x else None
        dw_route = (
            autotune.dw_route(x, dy, w.shape[2:], stride, padding, dilation, groups) if need_w else None
        )
        if "im2col" in (dx_route, dw_route):
            dx, dw = _conv_grads_im2col(
                x, w_used, dy, stride, padding, dilation, dx_route == "im2col", dw_route == "im2col"
            )
        if need_x and dx is None:
            dx = _conv_input_grad(dy, w_used, x.shape, stride, padding, dilation, groups)
        if need_w and dw is None:
            dw = _conv_weight_grad(x, dy, w.shape[2:], stride, padding, dilation, groups)
    if dw is not None and flip:
        dw = dw.flip(spatial)
    if dw is not None and dw.stride() != w.stride() and _dense(w) and not _transformed(w, dw):
        # laid out like W (a size-1 axis can leave other strides): DDP's buckets expect it;
        # a broadcast W (stride 0) has no such layout: its gradient stays dense
        dw = torch.empty_strided(w.shape, w.stride(), dtype=dw.dtype, device=dw.device).copy_(dw)
    return dx, dw


class ConvGrad(CnnkitFunction):
    """``(δ_prev, dE/dW)`` of a conv, as a Function of ``(y, W, δ)`` so it differentiates again.

    ``δ_prev = Tᵀ_W δ`` (the transposed conv) is linear in ``δ`` and in ``W``; ``dE/dW = W(y, δ)``
    (the input correlated with the deltas) is linear in ``y`` and in ``δ``. With incoming
    ``(ġ_x, ġ_W)``, from ``⟨ġ_x, Tᵀ_W δ⟩ = ⟨W ⋆ ġ_x, δ⟩`` and ``⟨ġ_W, W(y, δ)⟩ = ⟨ġ_W ⋆ y, δ⟩``:

    - ``d/dδ = ġ_x ⋆ W + y ⋆ ġ_W``  (two forward convs: :class:`Conv`)
    - ``d/dW = W(ġ_x, δ)``           (a conv's weight gradient: this Function again)
    - ``d/dy = Tᵀ_{ġ_W} δ``           (a transposed conv: this Function again)

    ``flip`` carries through unchanged (``rot180`` is its own adjoint). The first-order route
    for each shape is :func:`_conv_grads`'s; every derivative order is built from cnnkit's
    Functions, so Hessians and gradient penalties are hand-derived too.
    """

    @staticmethod
    def forward(x, w, dy, stride, padding, dilation, groups, flip, need_x, need_w):
        return _conv_grads(x, w, dy, stride, padding, dilation, groups, flip, need_x, need_w)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, dy, *attrs = inputs
        _save(ctx, x, w, dy)
        ctx.attrs = tuple(attrs[:5])
        ctx.need = tuple(attrs[5:7])

    @staticmethod
    def backward(ctx, ggx, ggw):
        x, w, dy = ctx.saved_tensors
        need_x, need_w, need_dy = ctx.needs_input_grad[:3]
        gx = gw = gdy = None
        if ggw is not None and need_x:
            gx = _grad_apply(ConvGrad, x, ggw, dy, *ctx.attrs, True, False)[0]
        if ggx is not None and need_w:
            gw = _grad_apply(ConvGrad, ggx, w, dy, *ctx.attrs, False, True)[1]
        if need_dy:
            if ggx is not None:
                gdy = _grad_apply(Conv, ggx, w, None, *ctx.attrs)
            if ggw is not None:
                part = _grad_apply(Conv, x, ggw, None, *ctx.attrs)
                gdy = part if gdy is None else gdy + part
        return gx, gw, gdy, None, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, dx, dw, ddy, *_):
        # bilinear: (Tᵀ_W δ)˙ = Tᵀ_Ẇ δ + Tᵀ_W δ̇;  W(y, δ)˙ = W(ẏ, δ) + W(y, δ̇)
        x, w, dy = ctx.saved_tensors
        need_x, need_w = ctx.need
        gx = gw = None

        def add(a, b):
            return b if a is None else (a if b is None else a + b)

        if ddy is not None:
            gx, gw = _conv_grads(x, w, ddy, *ctx.attrs, need_x, need_w)
        if dw is not None and need_x:
            gx = add(gx, _conv_grads(x, dw, dy, *ctx.attrs, True, False)[0])
        if dx is not None and need_w:
            gw = add(gw, _conv_grads(dx, w, dy, *ctx.attrs, False, True)[1])
        return gx, gw


# -- pooling -----------------------------------------------------------------------------------


def _read_padding(x, kernel, stride, padding, dilation, ceil_mode) -> list[tuple[int, int]]:
    """The padding a pooling window really reads (ceil-mode overhang included)."""
    return [
        pool_padding(n, f, s, p, dl, ceil_mode)
        for n, f, s, p, dl in zip(x.shape[2:], kernel, stride, padding, dilation)
    ]


def _torch_pool_fits(x, kernel, padding, dilation=None) -> bool:
    """torch's own pooling takes symmetric padding up to half the kernel, an input at least
    as large as the window (and, for avg, no dilation)."""
    ok = all(lo == hi and 2 * lo <= f and n >= f for (lo, hi), f, n in zip(padding, kernel, x.shape[2:]))
    return ok and (dilation is None or all(v == 1 for v in dilation))


def _pool_empty(x, kernel, stride, padding, dilation, ceil_mode) -> torch.Tensor:
    """The (empty) output of a pooling over N = 0 samples or C = 0 channels."""
    size = [
        pool_output_size(n, f, s, p, dl, ceil_mode)
        for n, f, s, p, dl in zip(x.shape[2:], kernel, stride, padding, dilation)
    ]
    return x.new_zeros((*x.shape[:2], *size))


def _max_pool_forward(x, kernel, stride, padding, dilation, ceil_mode):
    d = x.dim() - 2
    if _is_empty(x):
        y = _pool_empty(x, kernel, stride, padding, dilation, ceil_mode)
        return y, torch.zeros(y.shape, dtype=torch.long, device=x.device), None
    if _torch_pool_fits(x, kernel, padding):
        pads = None
        src, args = x, (kernel, stride, [lo for lo, _ in padding], dilation, ceil_mode, True)
    else:  # -inf padding never wins
        pads = _read_padding(x, kernel, stride, padding, dilation, ceil_mode)
        src, args = _pad(x, pads, float("-inf")), (kernel, stride, 0, dilation, False, True)
    y, idx = _MAX_POOL[d](src, *args)
    real_cpu = type(y) is torch.Tensor and y.device.type == "cpu"  # no meta, fake or subclass
    if real_cpu and host_readable(y) and bool(y.sum().isnan()):  # one reduction: a NaN propagates
        # torch's kernel keeps the last NaN of a window as its winner; the records' rule (and
        # NumPy's) is the first: the first 1 of the window's NaN mask (a strict > keeps the
        # first of equal values). Only where a NaN came out (or inf - inf in the check), and
        # only where reading that costs no device sync or trace: CPU tensors in eager mode.
        first = _MAX_POOL[d](torch.isnan(src).to(src.dtype), *args)[1]
        idx = torch.where(torch.isnan(y), first, idx)
    return y, idx, pads


class MaxPool(CnnkitFunction):
    """``a[i] = max_m y_pad[S·i + D·m]``; returns ``(a, winner)``, the winner's flat index."""

    @staticmethod
    def forward(x, kernel_size, stride, padding, dilation, ceil_mode):
        stride, dilation = _bounded(x.shape, kernel_size, stride, padding, dilation)
        y, idx, _pads = _max_pool_forward(x, kernel_size, stride, padding, dilation, ceil_mode)
        return y, idx

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, kernel_size, stride, padding, dilation, ceil_mode = inputs
        stride, dilation = _bounded(x.shape, kernel_size, stride, padding, dilation)
        _y, idx = output
        ctx.mark_non_differentiable(idx)
        _save(ctx, idx)
        ctx.x_shape = x.shape
        fits = _torch_pool_fits(x, kernel_size, padding)
        ctx.pads = None if fits else _read_padding(x, kernel_size, stride, padding, dilation, ceil_mode)

    @staticmethod
    def backward(ctx, dy, _didx):
        # δ_prev[winner(i)] += δ[i]; every unit that did not win gets 0
        (idx,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        if math.prod(ctx.x_shape) == 0:  # N = 0 or C = 0
            return dy.new_zeros(ctx.x_shape), None, None, None, None, None
        return _grad_apply(MaxPoolGrad, dy, idx, ctx.x_shape, ctx.pads), None, None, None, None, None

    @staticmethod
    def jvp(ctx, dx, *_):
        # ȧ[i] = ẏ[winner(i)]
        (idx,) = ctx.saved_tensors
        if math.prod(ctx.x_shape) == 0:
            return torch.zeros(idx.shape, dtype=dx.dtype, device=dx.device), None
        return _max_pool_gather(dx, idx, ctx.pads), None


def _max_pool_scatter(dy, idx, x_shape, pads):
    n, c, *size = x_shape
    if pads is not None:
        size = [s + lo + hi for s, (lo, hi) in zip(size, pads)]
    dx = dy.new_zeros((n, c, math.prod(size)))
    if _transformed(dy, idx):
        dx = dx.scatter_add(2, idx.reshape(n, c, -1), dy.reshape(n, c, -1))
    else:
        dx.scatter_add_(2, idx.reshape(n, c, -1), dy.reshape(n, c, -1))
    dx = dx.view(n, c, *size)
    return _crop(dx, pads, x_shape[2:]) if pads is not None else dx


def _max_pool_gather(g, idx, pads):
    n, c = g.shape[:2]
    g = _pad(g, pads) if pads is not None else g
    return g.reshape(n, c, -1).gather(2, idx.reshape(n, c, -1)).view(idx.shape)


class MaxPoolGrad(CnnkitFunction):
    """``δ_prev = scatter(δ → winners)``, linear in ``δ``; its adjoint is the gather
    ``ġ[winner(i)]`` (:class:`MaxPoolGather`), whose adjoint is this scatter again."""

    @staticmethod
    def forward(dy, idx, x_shape, pads):
        return _max_pool_scatter(dy, idx, x_shape, pads)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _dy, idx, x_shape, pads = inputs
        _save(ctx, idx)
        ctx.pads = pads
        ctx.x_shape = x_shape

    @staticmethod
    def backward(ctx, gg):
        (idx,) = ctx.saved_tensors
        return _grad_apply(MaxPoolGather, gg, idx, ctx.pads), None, None, None

    @staticmethod
    def jvp(ctx, ddy, *_):
        (idx,) = ctx.saved_tensors
        return _max_pool_scatter(ddy, idx, ctx.x_shape, ctx.pads)


class MaxPoolGather(CnnkitFunction):
    """``g[i] = ġ_pad[winner(i)]``: the adjoint of :class:`MaxPoolGrad`."""

    @staticmethod
    def forward(g, idx, pads):
        return _max_pool_gather(g, idx, pads)

    @staticmethod
    def setup_context(ctx, inputs, output):
        g, idx, pads = inputs
        _save(ctx, idx)
        ctx.pads = pads
        ctx.g_shape = g.shape

    @staticmethod
    def backward(ctx, gg):
        (idx,) = ctx.saved_tensors
        return _grad_apply(MaxPoolGrad, gg, idx, ctx.g_shape, ctx.pads), None, None

    @staticmethod
    def jvp(ctx, dg, *_):
        (idx,) = ctx.saved_tensors
        return _max_pool_gather(dg, idx, ctx.pads)


def _avg_pool_forward(x, kernel, stride, padding, dilation, ceil_mode, count_include_pad, divisor=None):
    d = x.dim() - 2
    if _is_empty(x):
        return _pool_empty(x, kernel, stride, padding, dilation, ceil_mode)
    if _torch_pool_fits(x, kernel, padding, dilation) and _avg_pool_runs(x) and (divisor is None or d > 1):
        pads = [lo for lo, _ in padding]
        if divisor is None:
            return _AVG_POOL[d](x, kernel, stride, pads, ceil_mode, count_include_pad)
        return _AVG_POOL[d](x, kernel, stride, pads, ceil_mode, count_include_pad, divisor)
    pads = _read_padding(x, kernel, stride, padding, dilation, ceil_mode)
    s = _window_sum(_pad(x, pads), kernel, stride, dilation)
    if divisor is not None:
        return s / divisor
    count = _window_count(x.shape[2:], s.shape[2:], kernel, stride, padding, dilation, count_include_pad, s)
    return s / count


class AvgPool(CnnkitFunction):
    """``a[i] = Σ_m y_pad[S·i + D·m] / |window_i|``."""

    @staticmethod
    def forward(x, kernel_size, stride, padding, dilation, ceil_mode, count_include_pad):
        stride, dilation = _bounded(x.shape, kernel_size, stride, padding, dilation)
        return _avg_pool_forward(x, kernel_size, stride, padding, dilation, ceil_mode, count_include_pad)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, kernel_size, stride, padding, dilation, *rest = inputs
        stride, dilation = _bounded(x.shape, kernel_size, stride, padding, dilation)
        ctx.x_shape = x.shape
        ctx.attrs = [kernel_size, stride, padding, dilation, *rest]

    @staticmethod
    def backward(ctx, dy):
        # δ_prev[u] = Σ_{windows i ∋ u} δ[i] / |window_i|
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None, None
        if math.prod(ctx.x_shape) == 0:  # N = 0 or C = 0
            return dy.new_zeros(ctx.x_shape), None, None, None, None, None, None
        return _grad_apply(AvgPoolGrad, dy, ctx.x_shape, *ctx.attrs), None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, dx, *_):
        # linear: ȧ = A ẏ
        return AvgPool.forward(dx, *ctx.attrs)


class AvgPoolGrad(CnnkitFunction):
    """``δ_prev = Aᵀ δ`` for the linear pool ``a = A y``; its adjoint is the pool itself
    (:class:`AvgPool` applied to the incoming gradient)."""

    @staticmethod
    def forward(dy, x_shape, kernel, stride, padding, dilation, ceil_mode, include_pad):
        size = x_shape[2:]
        count = _window_count(size, dy.shape[2:], kernel, stride, padding, dilation, include_pad, dy)
        pads = [
            pool_padding(n, f, s, p, dl, ceil_mode)
            for n, f, s, p, dl in zip(size, kernel, stride, padding, dilation)
        ]
        full = [n + lo + hi for n, (lo, hi) in zip(size, pads)]
        dx = _window_spread(dy / count, full, kernel, stride, dilation)
        return _crop(dx, pads, size)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.x_shape = inputs[1]
        ctx.attrs = inputs[2:]

    @staticmethod
    def backward(ctx, gg):
        return _grad_apply(AvgPool, gg, *ctx.attrs), None, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, ddy, *_):
        return AvgPoolGrad.forward(ddy, ctx.x_shape, *ctx.attrs)


def _lp_power(x: torch.Tensor, p: float) -> torch.Tensor:
    if p == 2.0:
        return x * x
    return x.abs() if p == 1.0 else x.abs().pow(p)


class LpPool(CnnkitFunction):
    """``a[i] = (Σ_m |y_pad[S·i + D·m]|^p)^(1/p)``, the true Lp norm of each window."""

    @staticmethod
    def forward(x, kernel_size, stride, padding, dilation, ceil_mode, norm_type):
        stride, dilation = _bounded(x.shape, kernel_size, stride, padding, dilation)
        if _is_empty(x):
            return _pool_empty(x, kernel_size, stride, padding, dilation, ceil_mode)
        pads = _read_padding(x, kernel_size, stride, padding, dilation, ceil_mode)
        s = _window_sum(_pad(_lp_power(x, norm_type), pads), kernel_size, stride, dilation)
        if norm_type == 1.0:
            return s
        return s.sqrt() if norm_type == 2.0 else s.pow(1.0 / norm_type)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, kernel_size, stride, padding, dilation, *rest = inputs
        stride, dilation = _bounded(x.shape, kernel_size, stride, padding, dilation)
        _save(ctx, x, output)
        ctx.attrs = [kernel_size, stride, padding, dilation, *rest]

    @staticmethod
    def backward(ctx, dy):
        # δ_prev[u] = Σ_{windows i ∋ u} δ[i] · a[i]^(1-p) · |y[u]|^(p-1) · sign(y[u])  (0 where a[i] = 0)
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None, None
        x, a = ctx.saved_tensors
        kernel, stride, padding, dilation, ceil_mode, p = ctx.attrs
        size = x.shape[2:]
        if _is_empty(x):  # N = 0 or C = 0
            return torch.zeros_like(x), None, None, None, None, None, None
        pads = _read_padding(x, kernel, stride, padding, dilation, ceil_mode)
        g = (
            dy if p == 1.0 else torch.where(a != 0, dy * a.pow(1.0 - p), torch.zeros_like(dy))
        )  # NaN stays NaN
        full = [n + lo + hi for n, (lo, hi) in zip(size, pads)]
        spread = _crop(_grad_apply(WindowSpread, g, tuple(full), kernel, stride, dilation), pads, size)
        if p == 2.0:
            return spread * x, None, None, None, None, None, None
        local = x.sign() if p == 1.0 else x.sign() * x.abs().pow(p - 1.0)
        if p < 1.0:  # |y|^(p-1) is infinite at 0, where sign(y) = 0: that unit gets 0
            local = torch.where(x != 0, local, torch.zeros_like(local))
        return spread * local, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, dx, *_):
        # ȧ[i] = a[i]^(1-p) · Σ_m |y[u]|^(p-1) · sign(y[u]) · ẏ[u]   (0 where a[i] = 0)
        x, a = ctx.saved_tensors
        kernel, stride, padding, dilation, ceil_mode, p = ctx.attrs
        if _is_empty(x):
            return torch.zeros_like(a)
        pads = _read_padding(x, kernel, stride, padding, dilation, ceil_mode)
        if p == 2.0:
            local = x
        else:
            local = x.sign() if p == 1.0 else x.sign() * x.abs().pow(p - 1.0)
            if p < 1.0:
                local = torch.where(x != 0, local, torch.zeros_like(local))
        s = _window_sum(_pad(local * dx, pads), kernel, stride, dilation)
        return s if p == 1.0 else torch.where(a != 0, s * a.pow(1.0 - p), torch.zeros_like(s))


class WindowSpread(CnnkitFunction):
    """:func:`_window_spread` (linear in ``g``); its adjoint is :class:`WindowSum`."""

    @staticmethod
    def forward(g, size, kernel, stride, dilation):
        return _window_spread(g, size, kernel, stride, dilation)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.size = inputs[1]
        ctx.attrs = inputs[2:]

    @staticmethod
    def backward(ctx, gg):
        return _grad_apply(WindowSum, gg, *ctx.attrs), None, None, None, None

    @staticmethod
    def jvp(ctx, dg, *_):
        return _window_spread(dg, ctx.size, *ctx.attrs)


class WindowSum(CnnkitFunction):
    """:func:`_window_sum` of an already padded input (linear); its adjoint is :class:`WindowSpread`."""

    @staticmethod
    def forward(x_pad, kernel, stride, dilation):
        return _window_sum(x_pad, kernel, stride, dilation)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.size = tuple(inputs[0].shape[2:])
        ctx.attrs = inputs[1:]

    @staticmethod
    def backward(ctx, gg):
        return _grad_apply(WindowSpread, gg, ctx.size, *ctx.attrs), None, None, None

    @staticmethod
    def jvp(ctx, dx, *_):
        return _window_sum(dx, *ctx.attrs)


# -- activations -------------------------------------------------------------------------------


class ReLU(CnnkitFunction):
    """``y' = max(0, a)``."""

    @staticmethod
    def forward(x):
        return x.clamp_min(0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save(ctx, output)

    @staticmethod
    def backward(ctx, dy):
        # δ_prev = f'(a) ⊙ δ,  f'(a) = 1 where a > 0, else 0
        (y,) = ctx.saved_tensors
        return (_relu_mask_times(y, dy) if ctx.needs_input_grad[0] else None,)

    @staticmethod
    def jvp(ctx, dx):
        (y,) = ctx.saved_tensors
        return _relu_mask_times(y, dx)


def _relu_mask_times(y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``g ⊙ [y > 0]``. In plain eager mode the mask is written straight in ``g``'s dtype and
    multiplied in place: two passes of float math, where ``g * (y > 0)`` builds a bool tensor and
    multiplies through a dtype promotion, 3-8x slower on CPU (a quarter of a VGG step's backward)."""
    if (
        y.dtype != g.dtype
        or y.shape != g.shape
        or torch.is_grad_enabled()  # create_graph: the out= and in-place forms take no graph
        or _transformed(y, g)
    ):
        return g * (y > 0)
    return torch.gt(y, 0, out=torch.empty_like(g)).mul_(g)


class LeakyReLU(CnnkitFunction):
    """``y' = a`` where ``a > 0``, else ``negative_slope · a``."""

    @staticmethod
    def forward(x, negative_slope):
        return torch.where(x > 0, x, x * negative_slope)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, negative_slope = inputs
        _save(ctx, x)
        ctx.negative_slope = negative_slope

    @staticmethod
    def backward(ctx, dy):
        # δ_prev = f'(a) ⊙ δ,  f'(a) = 1 where a > 0, else negative_slope
        (x,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None
        return torch.where(x > 0, dy, dy * ctx.negative_slope), None

    @staticmethod
    def jvp(ctx, dx, _):
        (x,) = ctx.saved_tensors
        return torch.where(x > 0, dx, dx * ctx.negative_slope)


class Sigmoid(CnnkitFunction):
    """``y' = σ(a) = 1 / (1 + e^-a)``."""

    @staticmethod
    def forward(x):
        return torch.sigmoid(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save(ctx, output)

    @staticmethod
    def backward(ctx, dy):
        # δ_prev = f'(a) ⊙ δ,  f'(a) = σ(a)(1 - σ(a))
        (y,) = ctx.saved_tensors
        return (dy * y * (1 - y) if ctx.needs_input_grad[0] else None,)

    @staticmethod
    def jvp(ctx, dx):
        (y,) = ctx.saved_tensors
        return dx * y * (1 - y)


class Tanh(CnnkitFunction):
    """``y' = tanh(a)``."""

    @staticmethod
    def forward(x):
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save(ctx, output)

    @staticmethod
    def backward(ctx, dy):
        # δ_prev = f'(a) ⊙ δ,  f'(a) = 1 - tanh(a)^2
        (y,) = ctx.saved_tensors
        return (dy * (1 - y * y) if ctx.needs_input_grad[0] else None,)

    @staticmethod
    def jvp(ctx, dx):
        (y,) = ctx.saved_tensors
        return dx * (1 - y * y)


# -- flatten, linear, loss ---------------------------------------------------------------------


class Flatten(CnnkitFunction):
    """Merge dims ``start_dim..end_dim`` into one (a new tensor: the output owns its memory)."""

    @staticmethod
    def forward(x, start_dim, end_dim):
        if x.dim() == 0:
            return x.reshape(1).clone()
        return x.flatten(start_dim, end_dim).clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.x_shape = inputs[0].shape
        ctx.out_shape = output.shape

    @staticmethod
    def backward(ctx, dy):
        # δ_prev = δ reshaped back to the input's shape
        return (dy.reshape(ctx.x_shape).clone() if ctx.needs_input_grad[0] else None), None, None

    @staticmethod
    def jvp(ctx, dx, *_):
        return dx.reshape(ctx.out_shape).clone()


class Linear(CnnkitFunction):
    """``a = y Wᵀ + b``."""

    autocast = "lower"

    @staticmethod
    def forward(x, w, b):
        return F.linear(x, w, b)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, _b = inputs
        _save(ctx, x, w)

    @staticmethod
    def backward(ctx, dy):
        # δ_prev = δ W;  dE/dW = δᵀ y;  dE/db = Σ_n δ
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        rows = math.prod(dy.shape[:-1])  # explicit: -1 is ambiguous when a side is empty
        dy2 = dy.reshape(rows, w.shape[0])
        dx = (dy @ w) if need_x else None
        dw = (dy2.t() @ x.reshape(rows, w.shape[1])) if need_w else None
        db = dy2.sum(0) if need_b else None
        return dx, dw, db

    @staticmethod
    def jvp(ctx, dx, dw, db):
        # ȧ = ẏ Wᵀ + y Ẇᵀ + ḃ
        x, w = ctx.saved_tensors
        out = None
        if dx is not None:
            out = F.linear(dx, w)
        if dw is not None:
            out = F.linear(x, dw) if out is None else out + F.linear(x, dw)
        if db is not None:
            out = db.expand(*x.shape[:-1], -1) if out is None else out + db
        return out


class CrossEntropy(CnnkitFunction):
    """``E_n = -Σ_c q_nc log softmax(a_n)_c`` (``q``: the weighted, smoothed target), reduced by
    torch's mean, a sum or not at all; returns ``(E, log p, q, the mean's denominator)``.

    Its backward is differentiable again (softmax as ``exp(a - logsumexp(a))``); ``jvp`` is the
    same formula contracted with the tangent."""

    autocast = "float32"

    @staticmethod
    def forward(x, target, weight, reduction, ignore_index, label_smoothing):
        c = x.shape[1]
        log_p = torch.log_softmax(x, 1)
        w = x.new_ones(c) if weight is None else weight
        w_c = _per_channel(w, x.dim())
        eps = label_smoothing
        if target.is_floating_point():
            q = w_c * (target * (1 - eps) + eps / c)
            denom = x.new_tensor(float(x.numel() // c if x.numel() else 0))
        else:
            target = target.to(x.device)  # class indices may stay on the host (the core read them)
            kept = target != ignore_index
            if not host_readable(x, target) and target.numel():  # the core could not read them: here
                torch._assert_async(
                    (~kept | ((target >= 0) & (target < c))).all(),
                    f"cross_entropy: target holds a class index outside [0, {c})",
                )
            t = torch.where(kept, target, 0).long()
            q = torch.full_like(x, eps / c)
            q.scatter_(1, t.unsqueeze(1), 1 - eps + eps / c)
            q = q * w_c * kept.unsqueeze(1)
            denom = (w[t] * kept).sum()
        loss = -torch.where(q != 0, q * log_p, 0).sum(1)
        if reduction == "mean":
            loss = loss.sum() / denom
        elif reduction == "sum":
            loss = loss.sum()
        return loss, log_p, q, denom

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, _target, weight, reduction, _ignore_index, label_smoothing = inputs
        _loss, _log_p, q, denom = output
        ctx.mark_non_differentiable(_log_p, q, denom)
        _save(ctx, x, q, denom, weight)
        ctx.reduction = reduction
        ctx.eps = label_smoothing

    @staticmethod
    def _scale(ctx: Any, dy: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
        if ctx.reduction == "none":
            return dy.unsqueeze(1)
        return dy / denom if ctx.reduction == "mean" else dy

    @staticmethod
    def backward(ctx, dy, _dlog_p, _dq, _ddenom):
        # δ_prev_n = (softmax(a_n) Σ_c q_nc - q_n) · δ_n   (δ ÷ the mean's denominator)
        # dE/dt_nc = -(1 - ε) w_c log p_nc · δ_n            (probability targets)
        x, q, denom, weight = ctx.saved_tensors
        log_p = x - torch.logsumexp(x, 1, keepdim=True)  # differentiable again when grad is enabled
        g = CrossEntropy._scale(ctx, dy, denom)
        dx = dt = None
        if ctx.needs_input_grad[0]:
            dx = (log_p.exp() * q.sum(1, keepdim=True) - q) * g
        if ctx.needs_input_grad[1]:
            w = x.new_ones(x.shape[1]) if weight is None else weight
            dt = -(1 - ctx.eps) * _per_channel(w, x.dim()) * log_p * g
        return dx, dt, None, None, None, None

    @staticmethod
    def jvp(ctx, dx, dt, *_):
        # Ė_n = Σ_c (softmax(a_n)_c Σ_c' q_nc' - q_nc) ȧ_nc  [- (1 - ε) Σ_c w_c log p_nc ṫ_nc], reduced as E
        x, q, denom, weight = ctx.saved_tensors
        log_p = torch.log_softmax(x, 1)
        e = ((log_p.exp() * q.sum(1, keepdim=True) - q) * dx).sum(1)
        if dt is not None:
            w = x.new_ones(x.shape[1]) if weight is None else weight
            e = e - (1 - ctx.eps) * (_per_channel(w, x.dim()) * log_p * dt).sum(1)
        if ctx.reduction == "mean":
            e = e.sum() / denom
        elif ctx.reduction == "sum":
            e = e.sum()
        return e, None, None, None


# == conv_transpose (issue 10a) ==============================================================


def _conv_transpose_forward(y, w, b, stride, padding, output_padding, dilation, groups):
    """torch's conv_transpose with the symmetric part of the padding, the rest cropped."""
    sym, rest = _split_padding(padding)
    a = _CONV_T[y.dim() - 2](y, w, b, stride, sym, output_padding, groups, dilation)
    if not any(lo or hi for lo, hi in rest):
        return a
    size = [n - lo - hi for n, (lo, hi) in zip(a.shape[2:], rest)]
    return _crop(a, rest, size)


class ConvTranspose(CnnkitFunction):
    """``a = conv_transpose(y, W) + b``: the conv's input gradient at ``δ = y``, in 1, 2 or 3 dimensions.

    The lecture's duality: this op is ``Tᵀ_W``, the adjoint of the conv ``T_W`` from ``a``'s grid
    to ``y``'s (the same stride, padding, dilation, groups). Its gradients are therefore the
    conv's own pieces with the roles of ``y`` and ``δ`` swapped:

    - ``δ_prev = T_W δ = W ⋆ δ`` (a forward conv, :class:`Conv`), cropped to ``y``;
    - ``dE/dW = W(δ, y)``: the conv's weight gradient with ``δ`` as the input and ``y`` as the
      deltas (:class:`ConvGrad`), ``y`` zero-padded onto the conv's output grid;
    - ``dE/db = Σ δ``.

    Both are cnnkit Functions (and the crop and zero-pad are :class:`PadNdGrad`/:class:`PadNd`),
    so every derivative order is hand-derived: :class:`Conv` and :class:`ConvGrad` differentiate
    into each other.
    """

    autocast = "lower"

    @staticmethod
    def forward(y, w, b, stride, padding, output_padding, dilation, groups):
        return _conv_transpose_forward(y, w, b, stride, padding, output_padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        y, w, _b, stride, padding, output_padding, dilation, groups = inputs
        _save(ctx, y, w)
        ctx.attrs = (stride, padding, output_padding, dilation, groups)
        ctx.out_shape = tuple(output.shape)

    @staticmethod
    def backward(ctx, dy):
        # δ_prev = W ⋆ δ (cropped to y);  dE/dW = W(δ, y) (the conv's dE/dW, roles swapped);  dE/db = Σ δ
        y, w = ctx.saved_tensors
        stride, padding, _output_padding, dilation, groups = ctx.attrs
        need_y, need_w, need_b = ctx.needs_input_grad[:3]
        dx = dw = db = None
        if need_y or need_w:
            stride, dilation = _bounded(dy.shape, w.shape[2:], stride, padding, dilation)
            # the conv from a's grid: its output grid is y's, plus the trailing units that an
            # output_padding >= stride added (no window of the conv reads them: zeros there)
            out = [
                conv_output_size(n, f, s, p, dl)
                for n, f, s, p, dl in zip(dy.shape[2:], w.shape[2:], stride, padding, dilation)
            ]
            grid = [(0, 0), (0, 0), *((0, o - n) for o, n in zip(out, y.shape[2:]))]
            extra = any(hi for _, hi in grid)
            if need_y:
                dx = _grad_apply(Conv, dy, w, None, stride, padding, dilation, groups, False)
                if extra:
                    dx = _grad_apply(PadNdGrad, dx, tuple(y.shape), grid, "constant")
            if need_w:
                y_grid = _grad_apply(PadNd, y, grid, "constant", 0.0) if extra else y
                dw = _grad_apply(
                    ConvGrad, dy, w, y_grid, stride, padding, dilation, groups, False, False, True
                )[1]
        if need_b:
            db = dy.sum((0, *_spatial(w)))
        return dx, dw, db, None, None, None, None, None

    @staticmethod
    def jvp(ctx, dy, dw, db, *_):
        # bilinear: ȧ = Tᵀ_W ẏ + Tᵀ_Ẇ y + ḃ
        y, w = ctx.saved_tensors
        stride, padding, output_padding, dilation, groups = ctx.attrs

        def f(a, b):
            return _conv_transpose_forward(a, b, None, stride, padding, output_padding, dilation, groups)

        return _bilinear_jvp(f, y, w, dy, dw, db, ctx.out_shape)


# == pad_nd (issue 10a) ======================================================================


def _pad_nd(x: torch.Tensor, pads: Pads, mode: str, value: float) -> torch.Tensor:
    """F.pad with one ``(before, after)`` per axis; reflect/replicate/circular on the padded
    trailing axes of ``x`` seen as ``(B, *axes)``, the form torch pads for any batch."""
    if mode == "constant":
        return F.pad(x, _pad_arg(pads), value=value)
    padded = [a for a, (lo, hi) in enumerate(pads) if lo or hi]
    if not padded:
        return x.clone()
    first = padded[0]
    y = F.pad(x.reshape(-1, *x.shape[first:]), _pad_arg(pads[first:]), mode=mode)
    return y.reshape(*x.shape[:first], *y.shape[1:])  # a view (y is fresh), batchable under vmap


def _pad_source(n: int, lo: int, hi: int, mode: str, device: Any) -> torch.Tensor:
    """``src(t)`` for ``t = -lo .. n + hi - 1``: the input unit each padded unit copies."""
    t = torch.arange(-lo, n + hi, device=device)
    if mode == "replicate":
        return t.clamp(0, n - 1)
    if mode == "circular":
        return t % n
    period = max(1, 2 * (n - 1))
    m = t % period
    return torch.where(m < n, m, period - m)


class PadNd(CnnkitFunction):
    """``out[j] = y[src(j - b)]`` along each padded axis (``constant``: ``value`` outside).

    Linear in ``y`` (the constant is no input): its backward is the adjoint, the fold
    :class:`PadNdGrad`, whose own adjoint is this pad again (with constant 0)."""

    @staticmethod
    def forward(x, pads, mode, value):
        return _pad_nd(x, pads, mode, value)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, pads, mode, _value = inputs
        ctx.x_shape = tuple(x.shape)
        ctx.attrs = (pads, mode)

    @staticmethod
    def backward(ctx, dy):
        # δ_prev[s] = Σ_{j : src(j - b) = s} δ[j] along each padded axis (constant: δ cropped)
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        pads, mode = ctx.attrs
        return _grad_apply(PadNdGrad, dy, ctx.x_shape, pads, mode), None, None, None

    @staticmethod
    def jvp(ctx, dx, *_):
        # linear: ẏ padded the same way (the constant's own tangent is 0)
        pads, mode = ctx.attrs
        return _pad_nd(dx, pads, mode, 0.0)


def _pad_nd_backward(dy: torch.Tensor, shape: Sequence[int], pads: Pads, mode: str) -> torch.Tensor:
    """``δ_prev[s] = Σ_{j : src(j - b) = s} δ[j]`` along each padded axis (constant: δ cropped)."""
    g = dy
    if mode == "constant":
        index = tuple(slice(lo, lo + n) for n, (lo, _) in zip(shape, pads))
        return g[index].clone(memory_format=torch.contiguous_format)
    functional = _transformed(dy)  # batchable ops only: no in-place add into the fresh buffer
    for axis in reversed(range(len(pads))):
        lo, hi = pads[axis]
        if not (lo or hi):
            continue
        n = shape[axis]
        acc = g.narrow(axis, lo, n).clone()  # every unit's own copy
        src = _pad_source(n, lo, hi, mode, g.device)
        for idx, part in ((src[:lo], g.narrow(axis, 0, lo)), (src[lo + n :], g.narrow(axis, lo + n, hi))):
            if part.shape[axis]:
                acc = acc.index_add(axis, idx, part) if functional else acc.index_add_(axis, idx, part)
        g = acc
    return g.clone(memory_format=torch.contiguous_format)


class PadNdGrad(CnnkitFunction):
    """``δ_prev = Pᵀ δ``, the fold of :class:`PadNd` (constant: the crop), linear in ``δ``.

    Its adjoint is the pad itself: ``⟨ġ, Pᵀ δ⟩ = ⟨P ġ, δ⟩``, with constant 0 for ``constant``
    (the crop's adjoint puts zeros around) and the same mode for reflect, replicate and circular
    (every padded unit copies its source: ``P`` applied to ``ġ``)."""

    @staticmethod
    def forward(dy, x_shape, pads, mode):
        return _pad_nd_backward(dy, x_shape, pads, mode)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _dy, x_shape, pads, mode = inputs
        ctx.attrs = (x_shape, pads, mode)

    @staticmethod
    def backward(ctx, gg):
        _x_shape, pads, mode = ctx.attrs
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        return _grad_apply(PadNd, gg, pads, mode, 0.0), None, None, None

    @staticmethod
    def jvp(ctx, ddy, *_):
        return _pad_nd_backward(ddy, *ctx.attrs)


# == adaptive pooling (issue 10a) ============================================================

_ADAPTIVE_AVG = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}
_ADAPTIVE_MAX = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}


def _adaptive_matrix(n: int, o: int, like: torch.Tensor) -> torch.Tensor:
    """``A[i, u] = 1/|window_i|`` for ``u`` in ``[floor(i·N/O), ceil((i+1)·N/O))``, on ``like``'s device."""
    i = torch.arange(o, device=like.device)
    start = (i * n) // o
    end = -((-(i + 1) * n) // o)
    u = torch.arange(n, device=like.device)
    inside = (u[None, :] >= start[:, None]) & (u[None, :] < end[:, None])
    return inside.to(like.dtype) / (end - start).to(like.dtype)[:, None]


def _adaptive_avg_spread(dy: torch.Tensor, x_shape: Sequence[int], output_size: Sequence[int]) -> Any:
    """``δ_prev = Aᵀ δ`` per axis: ``δ_prev[u] = Σ_{windows i ∋ u} δ[i] / |window_i|``."""
    g = dy
    for a, (n, o) in enumerate(zip(x_shape[2:], output_size)):
        g = (g.movedim(2 + a, -1) @ _adaptive_matrix(n, o, dy)).movedim(-1, 2 + a)
    return g.contiguous()


class AdaptiveAvgPool(CnnkitFunction):
    """``a[i] = Σ_{u ∈ window_i} y[u] / |window_i|``, PyTorch's adaptive windows: per axis, the
    averaging matrix ``A`` (``O × N``), so ``a = A y`` is linear."""

    @staticmethod
    def forward(x, output_size):
        return _ADAPTIVE_AVG[x.dim() - 2](x, output_size)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.x_shape = tuple(inputs[0].shape)
        ctx.output_size = inputs[1]

    @staticmethod
    def backward(ctx, dy):
        # δ_prev = Aᵀ δ: per axis, δ times the averaging matrix A
        if not ctx.needs_input_grad[0]:
            return None, None
        return _grad_apply(AdaptiveAvgPoolGrad, dy, ctx.x_shape, ctx.output_size), None

    @staticmethod
    def jvp(ctx, dx, *_):
        # linear: ȧ = A ẏ
        return _ADAPTIVE_AVG[dx.dim() - 2](dx, ctx.output_size)


class AdaptiveAvgPoolGrad(CnnkitFunction):
    """``δ_prev = Aᵀ δ`` (linear in ``δ``); its adjoint is the pool ``A ġ`` (:class:`AdaptiveAvgPool`)."""

    @staticmethod
    def forward(dy, x_shape, output_size):
        return _adaptive_avg_spread(dy, x_shape, output_size)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.x_shape, ctx.output_size = inputs[1], inputs[2]

    @staticmethod
    def backward(ctx, gg):
        if not ctx.needs_input_grad[0]:
            return None, None, None
        return _grad_apply(AdaptiveAvgPool, gg, ctx.output_size), None, None

    @staticmethod
    def jvp(ctx, ddy, *_):
        return _adaptive_avg_spread(ddy, ctx.x_shape, ctx.output_size)


class AdaptiveMaxPool(CnnkitFunction):
    """``a[i] = max_{u ∈ window_i} y[u]``; returns ``(a, winner)``, the winner's flat index.

    Its backward is the scatter to the winners, :class:`MaxPoolGrad` (whose adjoint is the
    gather :class:`MaxPoolGather`); its tangent is the gather of ``ẏ`` at the winners."""

    @staticmethod
    def forward(x, output_size):
        return _ADAPTIVE_MAX[x.dim() - 2](x, output_size, return_indices=True)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _y, idx = output
        ctx.mark_non_differentiable(idx)
        _save(ctx, idx)
        ctx.x_shape = tuple(inputs[0].shape)

    @staticmethod
    def backward(ctx, dy, _didx):
        # δ_prev[winner(i)] += δ[i]; every unit that did not win gets 0
        if not ctx.needs_input_grad[0]:
            return None, None
        (idx,) = ctx.saved_tensors
        if math.prod(ctx.x_shape) == 0:  # N = 0 or C = 0
            return dy.new_zeros(ctx.x_shape), None
        return _grad_apply(MaxPoolGrad, dy, idx, ctx.x_shape, None), None

    @staticmethod
    def jvp(ctx, dx, *_):
        # ȧ[i] = ẏ[winner(i)]
        (idx,) = ctx.saved_tensors
        if math.prod(ctx.x_shape) == 0:
            return torch.zeros(idx.shape, dtype=dx.dtype, device=dx.device), None
        return _max_pool_gather(dx, idx, None), None


def _adaptive_max_pool_indices(x: torch.Tensor, output_size: Sequence[int]) -> tuple[torch.Tensor, None]:
    """The flat index, in its ``(n, c)`` plane, of each window's maximum (torch's own indices)."""
    with torch.no_grad():
        return _ADAPTIVE_MAX[x.dim() - 2](x, output_size, return_indices=True)[1], None


def _no_backward(ctx: Any, grad_output: Any) -> tuple[None]:
    # integer indices: nothing to differentiate
    return (None,)


def _indices_kernel(fn: Any, attrs: tuple[str, ...]) -> Kernel:
    """A kernel whose output is integer indices: ``call`` and ``forward`` run ``fn``, no gradient."""

    def call(*inputs: Any, **kw: Any) -> Any:
        return fn(*inputs, *(kw[k] for k in attrs))[0]

    def forward(*inputs: Any, **kw: Any) -> tuple[Any, None]:
        return fn(*inputs, *(kw[k] for k in attrs))

    return Kernel(forward=forward, backward=_no_backward, call=call)


# == max_pool's indices, max_unpool (issue 10a) ================================================


def _max_pool_indices(x, kernel_size, stride, padding, dilation, ceil_mode) -> tuple[torch.Tensor, None]:
    """The flat index, in its ``(n, c)`` input plane, of each window's maximum (PyTorch's indices)."""
    with torch.no_grad():
        stride, dilation = _bounded(x.shape, kernel_size, stride, padding, dilation)
        _y, idx, pads = _max_pool_forward(x, kernel_size, stride, padding, dilation, ceil_mode)
    if pads is None:  # torch's own pooling: its indices already are in the input plane
        return idx, None
    size = x.shape[2:]
    full = [n + lo + hi for n, (lo, hi) in zip(size, pads)]
    flat = torch.zeros_like(idx)
    rest = idx
    coords = []
    for p in reversed(full):  # unravel in the padded plane, last axis first
        coords.append(rest % p)
        rest = rest // p
    for c, n, (lo, _) in zip(reversed(coords), size, pads):
        flat = flat * n + (c - lo)
    return flat, None


def _max_unpool(x: torch.Tensor, indices: torch.Tensor, output_size: Sequence[int]) -> torch.Tensor:
    n, c = x.shape[:2]
    out = x.new_zeros((n, c, math.prod(output_size)))
    idx, src = indices.reshape(n, c, -1).long(), x.reshape(n, c, -1)
    if _transformed(x, indices):  # batchable ops only: no write into the fresh buffer
        out = out.scatter(2, idx, src)
    else:
        out.scatter_(2, idx, src)
    return out.view(n, c, *output_size)


class MaxUnpool(CnnkitFunction):
    """``a[n, c].flat[indices[n, c, i]] = y[n, c, i]``, zeros elsewhere: linear in ``y``.

    Its backward is the gather by the same indices (:class:`MaxPoolGather`, whose adjoint is
    the scatter :class:`MaxPoolGrad`)."""

    @staticmethod
    def forward(x, indices, output_size):
        return _max_unpool(x, indices, output_size)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _x, indices, output_size = inputs
        _save(ctx, indices)
        ctx.output_size = output_size

    @staticmethod
    def backward(ctx, dy):
        # δ_prev[n, c, i] = δ[n, c].flat[indices[n, c, i]]
        if not ctx.needs_input_grad[0]:
            return None, None, None
        (indices,) = ctx.saved_tensors
        return _grad_apply(MaxPoolGather, dy, indices.long(), None), None, None

    @staticmethod
    def jvp(ctx, dx, *_):
        # linear: ȧ = unpool(ẏ)
        (indices,) = ctx.saved_tensors
        return _max_unpool(dx, indices, ctx.output_size)


_POOL_ATTRS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")


#: One kernel per op kind, in the order of :mod:`cnnkit_numpy.ops`.
def _padding_mode(conv: Kernel) -> Kernel:
    """The conv kernel taking ``padding_mode``: ``"zeros"`` is the conv's own padding; any other
    mode pads through :class:`PadNd` first (its hand backward folds the gradient back) and runs
    the conv unpadded, so the conv's Function, its second derivatives included, is unchanged."""
    pad = _kernel(PadNd, 1, ("pads", "mode", "value"))

    def split(x: Any, kw: dict) -> tuple[dict, Any]:
        mode = kw.pop("padding_mode", "zeros")
        if mode == "zeros":
            return kw, None
        pads = [(0, 0), (0, 0), *kw["padding"]]
        kw["padding"] = tuple((0, 0) for _ in kw["padding"])
        return kw, {"pads": pads, "mode": mode, "value": 0.0}

    def call(x: Any, w: Any, b: Any, **kw: Any) -> Any:
        kw, p = split(x, dict(kw))
        return conv.call(x if p is None else pad.call(x, **p), w, b, **kw)

    def forward(x: Any, w: Any, b: Any, **kw: Any) -> tuple[Any, Any]:
        kw, p = split(x, dict(kw))
        if p is None:
            return conv.forward(x, w, b, **kw)
        x_pad, pad_ctx = pad.forward(x, **p)
        y, conv_ctx = conv.forward(x_pad, w, b, **kw)
        return y, (pad_ctx, conv_ctx)

    def backward(ctx: Any, g: Any) -> tuple[Any, ...]:
        if not isinstance(ctx, tuple):
            return conv.backward(ctx, g)
        padded, ctx = ctx  # the pad's context, the conv's
        dx_pad, dw, db = conv.backward(ctx, g)
        ctx = padded
        (dx,) = pad.backward(ctx, dx_pad) if dx_pad is not None else (None,)
        return dx, dw, db

    call.function = conv.call.function  # type: ignore[attr-defined]
    return Kernel(forward=forward, backward=backward, call=call)


def _divisor_override(avg: Kernel) -> Kernel:
    """The average-pool kernel taking ``divisor_override``: the count-including-padding average
    times ``|window| / divisor`` (the window sum over the divisor), through the pool's Function."""

    def scale(x: Any, kw: dict) -> tuple[dict, Any]:
        divisor = kw.pop("divisor_override", None)
        if divisor is None:
            return kw, None
        kw["count_include_pad"] = True
        k, s_, p, d, ceil = (kw[a] for a in _POOL_ATTRS)
        size = x.shape[2:]
        out = [pool_output_size(n, f, st, pp, dl, ceil) for n, f, st, pp, dl in zip(size, k, s_, p, d)]
        count = _window_count(size, out, k, s_, p, d, True, x)
        return kw, count / divisor

    def call(x: Any, **kw: Any) -> Any:
        kw, factor = scale(x, dict(kw))
        y = avg.call(x, **kw)
        return y if factor is None else y * factor

    def forward(x: Any, **kw: Any) -> tuple[Any, Any]:
        kw, factor = scale(x, dict(kw))
        y, ctx = avg.forward(x, **kw)
        return (y, ctx) if factor is None else (y * factor, (ctx, factor))

    def backward(ctx: Any, g: Any) -> tuple[Any, ...]:
        if isinstance(ctx, tuple):
            ctx, factor = ctx
            g = g * factor
        return avg.backward(ctx, g)

    call.function = avg.call.function  # type: ignore[attr-defined]
    return Kernel(forward=forward, backward=backward, call=call)


KERNELS: dict[str, Kernel] = {
    "conv": _padding_mode(_kernel(Conv, 3, ("stride", "padding", "dilation", "groups", "flip"))),
    "conv_transpose": _kernel(
        ConvTranspose, 3, ("stride", "padding", "output_padding", "dilation", "groups")
    ),
    "max_pool": _kernel(MaxPool, 1, _POOL_ATTRS, n_outputs=2),
    "avg_pool": _divisor_override(_kernel(AvgPool, 1, (*_POOL_ATTRS, "count_include_pad"))),
    "lp_pool": _kernel(LpPool, 1, (*_POOL_ATTRS, "norm_type")),
    "adaptive_avg_pool": _kernel(AdaptiveAvgPool, 1, ("output_size",)),
    "adaptive_max_pool": _kernel(AdaptiveMaxPool, 1, ("output_size",), n_outputs=2),
    "adaptive_max_pool_indices": _indices_kernel(_adaptive_max_pool_indices, ("output_size",)),
    "max_pool_indices": _indices_kernel(_max_pool_indices, _POOL_ATTRS),
    "max_unpool": _kernel(MaxUnpool, 2, ("output_size",)),
    "pad_nd": _kernel(PadNd, 1, ("pads", "mode", "value")),
    "relu": _kernel(ReLU, 1, ()),
    "leaky_relu": _kernel(LeakyReLU, 1, ("negative_slope",)),
    "sigmoid": _kernel(Sigmoid, 1, ()),
    "tanh": _kernel(Tanh, 1, ()),
    "flatten": _kernel(Flatten, 1, ("start_dim", "end_dim")),
    "linear": _kernel(Linear, 3, ()),
    "cross_entropy": _kernel(CrossEntropy, 3, ("reduction", "ignore_index", "label_smoothing"), n_outputs=4),
}


# -- normalisation and dropout (issue 10b) -----------------------------------------------------


def _channel_axes(x: torch.Tensor) -> list[int]:
    """Every axis but the channel axis 1: what batch norm reduces over."""
    return [0, *range(2, x.dim())]


def _per_channel(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """``(C,)`` -> ``(1, C, 1, ...)`` to broadcast against ``(N, C, *)``."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _bn_project(z: torch.Tensor, x_hat: torch.Tensor, axes: list[int]) -> torch.Tensor:
    """``P z = z - mean(z) - ŷ mean(ŷ z)`` per channel: the training-mode batch norm's
    Jacobian without its ``γ/σ`` (``δ_prev = (γ/σ) P δ``). ``P`` is self-adjoint."""
    return z - z.mean(dim=axes, keepdim=True) - x_hat * (x_hat * z).mean(dim=axes, keepdim=True)


def _bn_hat(x: torch.Tensor, mu: torch.Tensor, inv_std: torch.Tensor) -> torch.Tensor:
    """``ŷ = (y - μ)/σ`` per channel."""
    return (x - _per_channel(mu, x.dim())) * _per_channel(inv_std, x.dim())


def _bn_grads(dy, x, mu, inv_std, weight, training, need_x, need_w):
    """``(δ_prev, dE/dγ)`` of batch norm: ``dE/dγ = Σ δ ŷ``; ``δ_prev = (γ/σ)(δ - Σδ/M - ŷ Σδŷ/M)``
    (training, ``M`` units per channel), ``(γ/σ) δ`` (eval).

    ``ŷ`` is never built: ``Σ δ ŷ = Σ δ (y - μ) / σ``, and ``δ_prev`` is affine in ``δ`` and in
    ``y - μ`` per channel, two fused multiply-adds (a third of the passes of the term-by-term form)."""
    ndim, axes = x.dim(), _channel_axes(x)
    scale = inv_std if weight is None else weight * inv_std  # γ/σ per channel
    dx = dw = None
    if need_w or (need_x and training):
        centred = x - _per_channel(mu, ndim)
        dot = (dy * centred).sum(dim=axes) * inv_std  # Σ δ ŷ
        dw = dot if need_w else None
    if need_x:
        if training:
            m = x.numel() // max(x.shape[1], 1)
            k = -scale * inv_std * dot / m  # the coefficient of y - μ
            dx = torch.addcmul(
                _per_channel(-scale * dy.sum(dim=axes) / m, ndim), dy, _per_channel(scale, ndim)
            )
            if _transformed(dx, centred):  # batched tensors: the out-of-place form has a vmap rule
                dx = dx.addcmul(centred, _per_channel(k, ndim))
            else:
                dx.addcmul_(centred, _per_channel(k, ndim))
        else:
            dx = dy * _per_channel(scale, ndim)
    return dx, dw


def _running_stats_error(x: torch.Tensor, running_mean: torch.Tensor) -> None:
    """vmap over the batch of a training batch norm cannot move unbatched running statistics."""
    if torch.compiler.is_compiling():
        return
    level = torch._C._functorch.maybe_get_level
    if level(x) > level(running_mean):
        raise RuntimeError(
            "cnnkit batch_norm: vmap over a batch norm in training mode that updates its running "
            "statistics: each vmapped sample would move the same running_mean/running_var. Use eval "
            "mode, no running statistics (track_running_stats=False), or batched running statistics "
            "(torch.func.functional_call with a batch of buffers), as for torch's own batch norm."
        )


class BatchNorm(CnnkitFunction):
    """``a = γ (y - μ)/√(σ² + ε) + β``; returns ``(a, μ, 1/√(σ² + ε))``; training moves the running
    statistics in place (no gradient), as torch's: ``r ← (1 - M) r + M s``, unbiased ``σ²`` for ``r_σ²``.

    Its gradients are :class:`BatchNormGrad`, a Function of ``(δ, y, γ)``: ``ŷ`` and ``1/σ`` are
    functions of ``y`` (in training), so the second derivative w.r.t. ``y`` runs through them."""

    autocast = "input"

    @staticmethod
    def forward(x, weight, bias, running_mean, running_var, training, momentum, eps):
        present = [t for t in (weight, bias, running_mean, running_var) if t is not None]
        if not _transformed(x, *present) and not _is_empty(x) and all(t.dtype == x.dtype for t in present):
            # aten's forward kernel (one pass for the statistics, one for the output; it moves the
            # running statistics by the same rule); the backward stays cnnkit's
            a, mu, inv_std = torch.native_batch_norm(
                x, weight, bias, running_mean, running_var, training, momentum, eps
            )
            if not training:  # the running statistics, copied: a later step may move them in place
                mu, inv_std = running_mean.clone(), torch.rsqrt(running_var + eps)
            return a, mu, inv_std
        axes = _channel_axes(x)
        if training:
            var, mu = torch.var_mean(x, dim=axes, correction=0)  # biased: normalises
            if running_mean is not None:
                _running_stats_error(x, running_mean)
                m = x.numel() // max(x.shape[1], 1)
                running_mean.mul_(1 - momentum).add_(mu.to(running_mean.dtype), alpha=momentum)
                running_var.mul_(1 - momentum).add_(var.to(running_var.dtype), alpha=momentum * m / (m - 1))
        else:
            mu, var = running_mean.to(x.dtype, copy=True), running_var.to(x.dtype)
        inv_std = torch.rsqrt(var + eps)
        x_hat = _bn_hat(x, mu, inv_std)
        a = x_hat * _per_channel(weight, x.dim()) if weight is not None else x_hat
        if bias is not None:
            a = a + _per_channel(bias, x.dim())
        return a, mu, inv_std

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, _rm, _rv, training, _momentum, eps = inputs
        _a, mu, inv_std = output
        ctx.mark_non_differentiable(mu, inv_std)
        _save(ctx, x, mu, inv_std, weight)
        ctx.training = training
        ctx.eps = eps
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, dy, _dmu, _dinv_std):
        # δ_prev = (γ/σ) P δ (training), γ δ / σ (eval);  dE/dγ = Σ δ ŷ;  dE/dβ = Σ δ
        x, mu, inv_std, weight = ctx.saved_tensors
        need_x = ctx.needs_input_grad[0]
        need_w = weight is not None and ctx.needs_input_grad[1]
        dx = dw = db = None
        if need_x or need_w:
            dx, dw = _grad_apply(
                BatchNormGrad, dy, x, weight, mu, inv_std, ctx.training, ctx.eps, need_x, need_w
            )
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy.sum(dim=_channel_axes(dy))
        return dx, dw, db, None, None, None, None, None

    @staticmethod
    def jvp(ctx, dx, dw, db, *_):
        # ŷ̇ = (ẏ - mean(ẏ) - ŷ mean(ŷ ẏ)) / σ (training; ẏ / σ in eval);  ȧ = γ ŷ̇ + γ̇ ŷ + β̇
        x, mu, inv_std, weight = ctx.saved_tensors
        x_hat = _bn_hat(x, mu, inv_std)
        ndim, axes = x_hat.dim(), _channel_axes(x_hat)
        out = None
        if dx is not None:
            d_hat = _bn_project(dx, x_hat, axes) if ctx.training else dx
            out = d_hat * _per_channel(inv_std, ndim)
            if weight is not None:
                out = out * _per_channel(weight, ndim)
        if dw is not None:
            part = x_hat * _per_channel(dw, ndim)
            out = part if out is None else out + part
        if db is not None:
            part = _per_channel(db, ndim)
            out = part.expand(x_hat.shape) if out is None else out + part
        if out is None:  # only the running statistics had tangents: they do not move a
            out = torch.zeros_like(x_hat)
        return out, None, None


class BatchNormGrad(CnnkitFunction):
    """``(δ_prev, dE/dγ)`` of batch norm as a Function of ``(δ, y, γ)`` (``μ``, ``1/σ`` come saved
    from the forward; ``y`` is the input they are functions of), so it differentiates again.

    Per channel, ``P z = z - mean(z) - ŷ mean(ŷ z)`` (self-adjoint), ``δ_prev = (γ/σ) P δ`` and
    ``dE/dγ = ⟨δ, ŷ⟩``; with ``ẏ``: ``σ̇ = mean(ŷ ẏ)``, ``ŷ̇ = P ẏ / σ``. With incoming
    ``(u, v)`` for ``(δ_prev, dE/dγ)``, in training:

    - ``d/dδ = (γ/σ) P u + v ŷ``
    - ``d/dγ = ⟨P u, δ⟩ / σ``
    - ``d/dy = -(γ/σ²) (mean(u P δ) ŷ + P(mean(ŷ δ) u + mean(u ŷ) δ)) + (v/σ) P δ``

    and in eval (``σ`` the running one, ``ŷ̇ = ẏ/σ``): ``d/dδ = γ u/σ + v ŷ``,
    ``d/dγ = ⟨u, δ⟩/σ``, ``d/dy = v δ/σ``. The backward recomputes ``ŷ`` and ``1/σ`` from ``y``
    while a graph is recorded, so the third order is right too.
    """

    @staticmethod
    def forward(dy, x, weight, mu, inv_std, training, eps, need_x, need_w):
        return _bn_grads(dy, x, mu, inv_std, weight, training, need_x, need_w)

    @staticmethod
    def setup_context(ctx, inputs, output):
        dy, x, weight, mu, inv_std, training, eps, need_x, need_w = inputs
        _save(ctx, dy, x, weight, mu, inv_std)
        ctx.training, ctx.eps, ctx.need = training, eps, (need_x, need_w)

    @staticmethod
    def backward(ctx, u, v):
        dy, x, weight, mu, inv_std = ctx.saved_tensors
        need_dy, need_x, need_w = ctx.needs_input_grad[:3]
        ndim, axes = x.dim(), _channel_axes(x)
        x_hat = _bn_hat(x.detach(), mu, inv_std)
        if torch.is_grad_enabled():  # a graph is recorded: ŷ and 1/σ as functions of y again
            if ctx.training:
                var, mu = torch.var_mean(x, dim=axes, correction=0)
                inv_std = torch.rsqrt(var + ctx.eps)
                x_hat = (x - _per_channel(mu, ndim)) * _per_channel(inv_std, ndim)
            else:  # the running statistics are constants: ŷ̇ = ẏ/σ
                x_hat = x_hat + (x - x.detach()) * _per_channel(inv_std, ndim)
        inv = _per_channel(inv_std, ndim)
        gamma = _per_channel(weight, ndim) if weight is not None else None
        v = _per_channel(v, ndim) if v is not None else None
        gdy = gx = gw = None

        def add(a, b):
            return b if a is None else a + b

        if ctx.training:
            pu = _bn_project(u, x_hat, axes) if u is not None else None
            if need_dy:
                if pu is not None:
                    gdy = pu * inv if gamma is None else pu * (gamma * inv)
                if v is not None:
                    gdy = add(gdy, v * x_hat)
            if need_w and weight is not None and pu is not None:
                gw = (pu * dy).sum(dim=axes) * inv_std
            if need_x:
                pd = _bn_project(dy, x_hat, axes)
                if u is not None:
                    k = (x_hat * dy).mean(dim=axes, keepdim=True)
                    u_pd = (u * pd).mean(dim=axes, keepdim=True)
                    u_hat = (u * x_hat).mean(dim=axes, keepdim=True)
                    scale = inv * inv if gamma is None else gamma * inv * inv
                    gx = -scale * (u_pd * x_hat + _bn_project(k * u + u_hat * dy, x_hat, axes))
                if v is not None:
                    gx = add(gx, v * inv * pd)
        else:
            if need_dy:
                if u is not None:
                    gdy = u * inv if gamma is None else u * (gamma * inv)
                if v is not None:
                    gdy = add(gdy, v * x_hat)
            if need_w and weight is not None and u is not None:
                gw = (u * dy).sum(dim=axes) * inv_std
            if need_x and v is not None:
                gx = v * inv * dy
        return gdy, gx, gw, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx, ddy, dx, dw, *_):
        # δ_prev˙ = (γ̇/σ) P δ + (γ/σ) P δ̇ + γ ((1/σ)˙ P δ + Ṗ δ / σ),  (1/σ)˙ = -mean(ŷ ẏ)/σ²,
        # Ṗ δ = -ŷ̇ mean(ŷ δ) - ŷ mean(ŷ̇ δ);  (dE/dγ)˙ = ⟨δ̇, ŷ⟩ + ⟨δ, ŷ̇⟩   (eval: ŷ̇ = ẏ/σ, σ constant)
        dy, x, weight, mu, inv_std = ctx.saved_tensors
        need_x, need_w = ctx.need
        x_hat = _bn_hat(x, mu, inv_std)
        ndim, axes = x_hat.dim(), _channel_axes(x_hat)
        inv = _per_channel(inv_std, ndim)
        gamma = _per_channel(weight, ndim) if weight is not None else None

        def add(a, b):
            return b if a is None else a + b

        def times_gamma(t):
            return t if gamma is None else t * gamma

        hat_dot = None
        if dx is not None:
            hat_dot = _bn_project(dx, x_hat, axes) * inv if ctx.training else dx * inv
        out_x = out_w = None
        if need_x:
            pd = _bn_project(dy, x_hat, axes) if ctx.training else dy
            if dw is not None:
                out_x = pd * inv * _per_channel(dw, ndim)
            if ddy is not None:
                pdd = _bn_project(ddy, x_hat, axes) if ctx.training else ddy
                out_x = add(out_x, times_gamma(pdd * inv))
            if dx is not None and ctx.training:
                inv_dot = -(x_hat * dx).mean(dim=axes, keepdim=True) * inv * inv
                p_dot = -hat_dot * (x_hat * dy).mean(dim=axes, keepdim=True) - x_hat * (hat_dot * dy).mean(
                    dim=axes, keepdim=True
                )
                out_x = add(out_x, times_gamma(inv_dot * pd + inv * p_dot))
            if out_x is None:
                out_x = torch.zeros_like(dy)
        if need_w:
            if ddy is not None:
                out_w = (ddy * x_hat).sum(dim=axes)
            if hat_dot is not None:
                out_w = add(out_w, (dy * hat_dot).sum(dim=axes))
            if out_w is None:
                out_w = inv_std.new_zeros(x_hat.shape[1])
        return out_x, out_w


def _dropout_generator(generator: Any, device: torch.device) -> torch.Generator | None:
    """The generator a dropout mask is drawn from: the one passed, a seed's, or torch's default."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return torch.Generator(device=device).manual_seed(int(generator))


class Dropout(CnnkitFunction):
    """``a = y ⊙ mask``, ``mask = Bernoulli(1 - p) / (1 - p)`` over the first ``mask_dims`` axes;
    returns ``(a, mask)`` (``mask`` empty for the identity: eval or ``p = 0``).

    Linear in ``y`` with the mask a constant: ``δ_prev = δ ⊙ mask`` (an elementwise product with
    a saved, non-differentiable tensor, differentiable again in ``δ``), ``ȧ = ẏ ⊙ mask``."""

    @staticmethod
    def forward(x, p, training, mask_dims, generator):
        if not training or p == 0.0:
            return x.clone(), x.new_empty(0)
        shape = tuple(x.shape[:mask_dims]) + (1,) * (x.dim() - mask_dims)
        gen = _dropout_generator(generator, x.device)
        mask = x.new_empty(shape).bernoulli_(1 - p, generator=gen).div_(1 - p)
        return x * mask, mask

    @staticmethod
    def setup_context(ctx, inputs, output):
        _y, mask = output
        ctx.mark_non_differentiable(mask)
        _save(ctx, mask)
        ctx.identity = mask.numel() == 0

    @staticmethod
    def backward(ctx, dy, _dmask):
        # δ_prev = δ ⊙ mask (the forward's mask; δ itself in eval)
        (mask,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        dx = dy.clone() if ctx.identity else dy * mask
        return dx, None, None, None, None

    @staticmethod
    def jvp(ctx, dx, *_):
        (mask,) = ctx.saved_tensors
        return (dx.clone() if ctx.identity else dx * mask), None


KERNELS.update(
    {
        "batch_norm": _kernel(BatchNorm, 5, ("training", "momentum", "eps"), n_outputs=3),
        "dropout": _kernel(Dropout, 1, ("p", "training", "mask_dims", "generator"), n_outputs=2),
    }
)
#: The Function behind each op kind (its ``autocast`` declaration is read by :func:`autocast_inputs`).
_FUNCTIONS: dict[str, type[Function]] = {
    op: k.call.function  # type: ignore[union-attr]
    for op, k in KERNELS.items()
    if hasattr(k.call, "function")  # the index ops (integer outputs) have no Function
}
