"""cnnkit's ops as opaque PyTorch operators (``torch.ops.cnnkit.*``), for ``torch.export``.

Eager mode, ``torch.compile`` and ``torch.func`` run each op's ``autograd.Function`` from
:mod:`cnnkit_torch.ops` directly. ``torch.export`` cannot keep a Python ``autograd.Function``:
it inlines its forward as aten ops and drops its backward, so differentiating an exported
program would run aten's gradients. While exporting (``torch.compiler.is_exporting()``) the
kernels of :mod:`cnnkit_torch.ops` call the operators registered here instead; each one is a
``torch.library.custom_op`` that wraps **the same Function**:

- the operator's implementation is the Function's ``forward``;
- ``register_fake`` runs that same ``forward`` on fake (or meta) tensors: its shapes are
  the real ones by construction;
- ``register_autograd`` runs the Function's own ``setup_context`` and hand-derived
  ``backward`` on the operator's autograd context. The operator keeps the Function's
  argument list position for position (tensors, then attributes), so ``needs_input_grad``
  and the tuple of gradients line up unchanged, second derivatives included (the
  backward's pieces are cnnkit's Functions).

Attributes travel as schema types: tuples of ints as ``int[]``; per-axis ``(before, after)``
padding pairs flattened to ``int[]`` ``[b0, a0, b1, a1, ...]``; flags ``bool``, modes and
reductions ``str``, slopes, norms, momenta ``float``. :data:`OPS` lists each operator's schema.

Registered: conv (1-3d, ``flip``), conv_transpose, max_pool, avg_pool, lp_pool,
adaptive_avg_pool, adaptive_max_pool, max_unpool, pad_nd, relu, leaky_relu, sigmoid, tanh,
flatten, linear, cross_entropy, batch_norm. An operator with an autograd formula must be
functional, so batch norm's updates copies of ``running_mean``/``running_var`` and returns
them after the Function's three outputs; the caller writes them back (in training mode), which
``torch.export`` records as a buffer mutation. Left out, and traced as the
Function's aten forward ops while exporting:

- ``dropout``: its ``generator`` argument (a ``torch.Generator``, a seed or ``None``) has no
  schema type that keeps its meaning; in eval mode (the usual export) it is a copy, whose aten
  gradient is the identity anyway;
- ``max_pool_indices``, ``adaptive_max_pool_indices``: integer outputs, no gradient.

Importing this module registers the operators (a few milliseconds); it is imported with the
kernels (:mod:`cnnkit_torch.plugin`), so a program that uses cnnkit's torch backend, or
:func:`torch.export.load` after ``import cnnkit_torch.library``, finds them. Importing it
again (a reload, a second interpreter) defines them again over the same names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd.function import Function

from cnnkit_torch import ops

__all__ = ["EXCLUDED", "NAMESPACE", "OPS", "OpEntry", "apply", "custom_args", "operator", "registered"]

NAMESPACE = "cnnkit"

# how each Function argument travels: as is, a tuple of ints, or (before, after) pairs flattened
_SAME, _INTS, _PAIRS = "same", "ints", "pairs"


def _encode(kind: str, value: Any) -> Any:
    if kind == _INTS:
        return [int(v) for v in value]
    if kind == _PAIRS:
        return [int(v) for pair in value for v in pair]
    return value


def _decode(kind: str, value: Any) -> Any:
    if kind == _INTS:
        return tuple(value)
    if kind == _PAIRS:
        return tuple((value[i], value[i + 1]) for i in range(0, len(value), 2))
    return value


@dataclass(frozen=True)
class OpEntry:
    """One registered operator: the op kind, its Function, schema and argument encodings."""

    op: str
    function: type[Function]
    schema: str
    kinds: tuple[str, ...]
    #: Positions of arguments the Function updates in place (batch norm's running statistics).
    #: An operator with a registered autograd formula must be functional, so it updates copies
    #: and returns them after the Function's outputs; :func:`apply` writes them back.
    state: tuple[int, ...] = ()
    #: The position of the flag saying whether the Function updates them (``training``).
    state_flag: int | None = None

    @property
    def qualname(self) -> str:
        return f"{NAMESPACE}::{self.op}"

    def encode(self, args: Sequence[Any]) -> tuple[Any, ...]:
        """The Function's positional arguments -> the operator's."""
        return tuple(_encode(k, a) for k, a in zip(self.kinds, args))

    def decode(self, args: Sequence[Any]) -> tuple[Any, ...]:
        """The operator's positional arguments -> the Function's."""
        return tuple(_decode(k, a) for k, a in zip(self.kinds, args))


_POOL = "Tensor x, int[] kernel_size, int[] stride, int[] padding, int[] dilation, bool ceil_mode"
_POOL_KINDS = (_SAME, _INTS, _INTS, _PAIRS, _INTS, _SAME)

#: Every operator registered here, by op kind (the names of :data:`cnnkit_torch.ops.KERNELS`).
OPS: dict[str, OpEntry] = {
    e.op: e
    for e in (
        OpEntry(
            "conv",
            ops.Conv,
            "(Tensor x, Tensor w, Tensor? b, int[] stride, int[] padding, int[] dilation, int groups, "
            "bool flip) -> Tensor",
            (_SAME, _SAME, _SAME, _INTS, _PAIRS, _INTS, _SAME, _SAME),
        ),
        OpEntry(
            "conv_transpose",
            ops.ConvTranspose,
            "(Tensor y, Tensor w, Tensor? b, int[] stride, int[] padding, int[] output_padding, "
            "int[] dilation, int groups) -> Tensor",
            (_SAME, _SAME, _SAME, _INTS, _PAIRS, _INTS, _INTS, _SAME),
        ),
        OpEntry("max_pool", ops.MaxPool, f"({_POOL}) -> (Tensor, Tensor)", _POOL_KINDS),
        OpEntry(
            "avg_pool", ops.AvgPool, f"({_POOL}, bool count_include_pad) -> Tensor", (*_POOL_KINDS, _SAME)
        ),
        OpEntry("lp_pool", ops.LpPool, f"({_POOL}, float norm_type) -> Tensor", (*_POOL_KINDS, _SAME)),
        OpEntry(
            "adaptive_avg_pool",
            ops.AdaptiveAvgPool,
            "(Tensor x, int[] output_size) -> Tensor",
            (_SAME, _INTS),
        ),
        OpEntry(
            "adaptive_max_pool",
            ops.AdaptiveMaxPool,
            "(Tensor x, int[] output_size) -> (Tensor, Tensor)",
            (_SAME, _INTS),
        ),
        OpEntry(
            "max_unpool",
            ops.MaxUnpool,
            "(Tensor x, Tensor indices, int[] output_size) -> Tensor",
            (_SAME, _SAME, _INTS),
        ),
        OpEntry(
            "pad_nd",
            ops.PadNd,
            "(Tensor x, int[] pads, str mode, float value) -> Tensor",
            (_SAME, _PAIRS, _SAME, _SAME),
        ),
        OpEntry("relu", ops.ReLU, "(Tensor x) -> Tensor", (_SAME,)),
        OpEntry("leaky_relu", ops.LeakyReLU, "(Tensor x, float negative_slope) -> Tensor", (_SAME, _SAME)),
        OpEntry("sigmoid", ops.Sigmoid, "(Tensor x) -> Tensor", (_SAME,)),
        OpEntry("tanh", ops.Tanh, "(Tensor x) -> Tensor", (_SAME,)),
        OpEntry(
            "flatten", ops.Flatten, "(Tensor x, int start_dim, int end_dim) -> Tensor", (_SAME, _SAME, _SAME)
        ),
        OpEntry("linear", ops.Linear, "(Tensor x, Tensor w, Tensor? b) -> Tensor", (_SAME, _SAME, _SAME)),
        OpEntry(
            "cross_entropy",
            ops.CrossEntropy,
            "(Tensor x, Tensor target, Tensor? weight, str reduction, int ignore_index, "
            "float label_smoothing) -> (Tensor, Tensor, Tensor, Tensor)",
            (_SAME,) * 6,
        ),
        OpEntry(
            "batch_norm",
            ops.BatchNorm,
            "(Tensor x, Tensor? weight, Tensor? bias, Tensor? running_mean, Tensor? running_var, "
            "bool training, float momentum, float eps) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
            (_SAME,) * 8,
            state=(3, 4),
            state_flag=5,
        ),
    )
}

#: Op kinds of :data:`cnnkit_torch.ops.KERNELS` with no operator here, and why.
EXCLUDED: dict[str, str] = {
    "dropout": "its generator argument (a torch.Generator, a seed or None) has no schema type",
    "max_pool_indices": "integer indices: no gradient, nothing of aten's to fall back on",
    "adaptive_max_pool_indices": "integer indices: no gradient, nothing of aten's to fall back on",
}


def _define(entry: OpEntry) -> Any:
    fn, decode, state = entry.function, entry.decode, entry.state

    def forward(*args: Any) -> Any:
        # the Function's forward, run on the operator's arguments (real, fake or meta tensors)
        args = decode(args)
        if not state:
            return fn.forward(*args)
        copies = [None if args[i] is None else args[i].clone() for i in state]
        updated = list(args)
        for i, c in zip(state, copies):
            updated[i] = c
        out = fn.forward(*updated)
        return (*out, *(args[0].new_empty(0) if c is None else c for c in copies))

    forward.__name__ = entry.op
    forward.__qualname__ = entry.op
    op = torch.library.custom_op(entry.qualname, forward, mutates_args=(), schema=entry.schema)
    op.register_fake(forward)  # the same forward: the shapes, dtypes and devices it really gives

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        fn.setup_context(ctx, decode(inputs), output[: len(output) - len(state)] if state else output)

    def backward(ctx: Any, *grads: Any) -> Any:
        # cnnkit's hand-derived gradient, one per argument (none reaches the updated statistics)
        return fn.backward(ctx, *grads[: len(grads) - len(state)])

    op.register_autograd(backward, setup_context=setup_context)
    return getattr(getattr(torch.ops, NAMESPACE), entry.op).default  # the OpOverload Dynamo records


#: Function name -> (its entry, its operator): the key is a string, which Dynamo can hash.
_DEFINED: dict[str, tuple[OpEntry, Any]] = {}
for _entry in OPS.values():
    _DEFINED[_entry.function.__name__] = (_entry, _define(_entry))
del _entry


def registered(fn: type[Function]) -> bool:
    """Whether the Function ``fn`` has an operator here."""
    return _DEFINED.get(fn.__name__, (None,))[0] is not None and _DEFINED[fn.__name__][0].function is fn


def operator(op: str) -> Any:
    """The operator of op kind ``op`` (the ``default`` overload of ``torch.ops.cnnkit.<op>``)."""
    return getattr(getattr(torch.ops, NAMESPACE), op).default


def custom_args(op: str, inputs: Sequence[Any], attrs: dict[str, Any]) -> tuple[Any, ...]:
    """The operator's arguments for the kernel call ``KERNELS[op].call(*inputs, **attrs)`` (attrs
    in the core's canonical form): for :func:`torch.library.opcheck` and tests."""
    entry = OPS[op]
    names = [a.split()[-1] for a in entry.schema[1:].split(") ->")[0].split(", ")][len(inputs) :]
    return entry.encode((*inputs, *(attrs[k] for k in names)))


def apply(name: str, args: Sequence[Any], fallback: Callable[..., Any]) -> Any:
    """What ``Function.apply(*args)`` of the Function called ``name`` gives, through its operator:
    :mod:`cnnkit_torch.ops` runs this while ``torch.export`` traces. ``fallback(*args)`` (the
    Function's ``apply``) for a Function with no operator (:data:`EXCLUDED`)."""
    found = _DEFINED.get(name)
    if found is None:
        return fallback(*args)
    entry, op = found
    out = op(*entry.encode(args))
    if not entry.state:
        return out
    n = len(out) - len(entry.state)
    if entry.state_flag is not None and not args[entry.state_flag]:
        return out[:n]
    for i, updated in zip(entry.state, out[n:]):
        if args[i] is not None:
            args[i].copy_(updated.detach())  # the Function's in-place update, made here
    return out[:n]
