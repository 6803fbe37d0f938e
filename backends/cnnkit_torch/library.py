"""cnnkit's ops as opaque PyTorch operators (``torch.ops.cnnkit.<op>``), for ``torch.export``.

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

Nothing here names an op: every kernel of ``ops.KERNELS`` with a Function gets its operator,
``cnnkit::<op kind>``, read off the Function (:func:`_entry`): the arguments of its
``forward``, the first one a ``Tensor``, later tensors ``Tensor?``, then the attributes, typed
by name (:data:`ATTRIBUTES`, the core's canonical vocabulary): tuples of ints as ``int[]``;
per-axis ``(before, after)`` padding pairs flattened to ``int[]`` ``[b0, a0, b1, a1, ...]``;
flags ``bool``, modes and reductions ``str``, slopes, norms, momenta ``float``. One output per
gradient its ``backward`` takes. Running statistics (:data:`STATE`) are updated on copies that
the operator returns after the Function's outputs (an operator with an autograd formula must be
functional); :func:`apply` writes them back when ``training`` is set, which ``torch.export``
records as a buffer mutation.

Left out (:data:`EXCLUDED`, with the reason), and traced as the Function's aten forward ops
while exporting: a Function taking an attribute with no schema type here (a random mask's
``generator``: a ``torch.Generator``, a seed or ``None``; in eval mode, the usual export, it is
a copy, whose aten gradient is the identity anyway), and the index kernels (integer outputs, no
Function, no gradient).

Importing this module registers the operators (a few milliseconds); it is imported with the
kernels (:mod:`cnnkit_torch.plugin`), so a program that uses cnnkit's torch backend, or
:func:`torch.export.load` after ``import cnnkit_torch.library``, finds them. Importing it
again (a reload) defines them again over the same names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd.function import Function

from cnnkit.ops import BUILTIN_SPECS
from cnnkit_torch import ops

__all__ = [
    "ATTRIBUTES",
    "EXCLUDED",
    "NAMESPACE",
    "OPS",
    "STATE",
    "OpEntry",
    "apply",
    "custom_args",
    "operator",
    "registered",
]

NAMESPACE = "cnnkit"

# how each Function argument travels: as is, a tuple of ints, or (before, after) pairs flattened
_SAME, _INTS, _PAIRS = "same", "ints", "pairs"

#: The schema type and encoding of every attribute name the Functions take. The vocabulary is
#: shared by the ops (the core's canonical attribute names), so an op whose Function takes only
#: these names gets its operator with no line here; an unknown name leaves the op out.
ATTRIBUTES: dict[str, tuple[str, str]] = {
    **dict.fromkeys(("stride", "dilation", "kernel_size", "output_size", "output_padding"), ("int[]", _INTS)),
    **dict.fromkeys(("padding", "pads"), ("int[]", _PAIRS)),
    **dict.fromkeys(("groups", "start_dim", "end_dim", "ignore_index", "mask_dims"), ("int", _SAME)),
    **dict.fromkeys(("flip", "ceil_mode", "count_include_pad", "training"), ("bool", _SAME)),
    **dict.fromkeys(("mode", "reduction"), ("str", _SAME)),
    **dict.fromkeys(
        ("norm_type", "value", "negative_slope", "label_smoothing", "momentum", "eps", "p"), ("float", _SAME)
    ),
}
#: Tensor arguments the Function updates in place (running statistics), and the flag saying
#: whether it does: an operator with an autograd formula must be functional, so it updates
#: copies and returns them after the Function's outputs; :func:`apply` writes them back.
STATE = ("running_mean", "running_var")
STATE_FLAG = "training"


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
    names: tuple[str, ...]
    kinds: tuple[str, ...]
    n_tensors: int
    state: tuple[int, ...] = ()
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


def _entry(op: str, fn: type[Function], n_tensors: int) -> OpEntry | str:
    """The operator of ``fn`` read off its methods: the arguments of ``forward`` (the record's
    ``n_tensors`` inputs, then attributes typed by :data:`ATTRIBUTES`), one output per gradient
    its ``backward`` takes. A string: why there is none."""
    names = tuple(inspect.signature(fn.forward).parameters)
    n_outputs = len(inspect.signature(fn.backward).parameters) - 1  # follows _first_order_only's wraps
    first_attr = n_tensors
    unknown = [n for n in names[first_attr:] if n not in ATTRIBUTES]
    if unknown:
        return f"{fn.__name__}.forward's {', '.join(unknown)} has no schema type (see ATTRIBUTES)"
    args, kinds = [], []
    for i, n in enumerate(names):
        if i < first_attr:
            args.append(f"Tensor{'?' if i else ''} {n}")
            kinds.append(_SAME)
        else:
            args.append(f"{ATTRIBUTES[n][0]} {n}")
            kinds.append(ATTRIBUTES[n][1])
    state = tuple(i for i, n in enumerate(names[:first_attr]) if n in STATE)
    outputs = ", ".join(["Tensor"] * (n_outputs + len(state)))
    schema = f"({', '.join(args)}) -> {outputs if n_outputs + len(state) == 1 else f'({outputs})'}"
    flag = names.index(STATE_FLAG) if state and STATE_FLAG in names else None
    return OpEntry(op, fn, schema, names, tuple(kinds), first_attr, state, flag)


def _entries() -> tuple[dict[str, OpEntry], dict[str, str]]:
    found, excluded = {}, {}
    inputs = {spec.name: len(spec.inputs) for spec in BUILTIN_SPECS}
    for op, kernel in ops.KERNELS.items():
        fn = getattr(kernel.call, "function", None)
        made = "integer outputs: no Function, no gradient" if fn is None else _entry(op, fn, inputs[op])
        if isinstance(made, str):
            excluded[op] = made
        else:
            found[op] = made
    return found, excluded


#: Every operator registered here, by op kind (the names of :data:`cnnkit_torch.ops.KERNELS`),
#: and the op kinds left out, with the reason.
OPS, EXCLUDED = _entries()


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
for _e in OPS.values():
    _DEFINED[_e.function.__name__] = (_e, _define(_e))
del _e


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
    return entry.encode((*inputs, *(attrs[k] for k in entry.names[len(inputs) :])))


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
