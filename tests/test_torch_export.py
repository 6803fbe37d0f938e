"""torch.export keeps cnnkit's operations: the ``torch.ops.cnnkit`` custom ops of ``cnnkit_torch.library``.

Every registered operator passes ``torch.library.opcheck`` on its record's own cases; a small
CNN exported in strict mode holds ``cnnkit::`` operators (no aten convolution or pooling), its
values match eager, it saves and loads, and differentiating the exported module runs cnnkit's
hand-derived backward (no aten ``*_backward`` op), with gradients equal to eager cnnkit's and
native ``torch.nn``'s.
"""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cnnkit_torch import library  # noqa: E402
from cnnkit_torch import nn as cnn  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import cnnkit  # noqa: E402
from cnnkit.registry import Kernel, Registry  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:While compiling, we found certain side effects:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning"),
]

#: Kernel calls per op sampled from the op's record cases (at most this many).
PER_OP = 4
#: Ops whose Function reads spatial sizes through cnnkit.geometry, which takes Python ints: they
#: trace with static spatial sizes (a dynamic batch is fine), so opcheck runs the static AOT test.
STATIC_SPATIAL = ("lp_pool", "conv_transpose")


def _kernel_calls() -> dict[str, list[tuple[str, tuple, dict]]]:
    """``(case id, tensor inputs, canonical attrs)`` of the kernel calls the record cases make,
    caught at the registry (the core has converted the inputs and canonicalised the attrs)."""
    from cnnkit.conformance import all_cases
    from cnnkit.conformance.cases import Random

    calls: dict[str, list] = defaultdict(list)
    current: list[str] = []
    lookup = Registry.kernel

    def kernel(self, backend, op):
        k = lookup(self, backend, op)

        def call(*inputs, **attrs):
            if op == current[0] and len(calls[op]) < PER_OP:
                calls[op].append((current[1], inputs, attrs))
            return k(*inputs, **attrs)

        return Kernel(forward=k.forward, backward=k.backward, call=call)

    Registry.kernel = kernel
    try:
        for case in all_cases():
            if case.raises is not None or case.op not in library.OPS or len(calls[case.op]) >= PER_OP:
                continue
            if case.attrs.get("padding_mode", "zeros") != "zeros" or case.attrs.get("divisor_override"):
                continue  # the kernel's wrappers (a PadNd first, a scale after) around the operator
            current[:] = [case.op, case.id]
            values = [
                None if v is None else v.make("float64") if isinstance(v, Random) else np.asarray(v)
                for v in case.inputs
            ]
            cnnkit.call(case.op, *values, backend="torch", **case.attrs)
    finally:
        Registry.kernel = lookup
    return calls


CALLS = _kernel_calls()
SAMPLES = [
    pytest.param(op, i, id=case_id) for op, cs in CALLS.items() for i, (case_id, _, _) in enumerate(cs)
]


def test_every_registered_operator_has_samples_and_every_kernel_is_covered_or_excluded():
    from cnnkit_torch.ops import KERNELS

    assert set(CALLS) == set(library.OPS)
    assert all(len(cs) >= 2 for cs in CALLS.values()), {op: len(cs) for op, cs in CALLS.items()}
    assert set(KERNELS) == set(library.OPS) | set(library.EXCLUDED)


def _opcheck_args(op: str, index: int) -> tuple:
    _, inputs, attrs = CALLS[op][index]
    spec = cnnkit.registry.get_registry().op(op)
    args = []
    for name, t in zip(spec.inputs, inputs):
        if t is not None:
            t = t.detach().clone()
            if t.is_floating_point() and name not in spec.state_inputs | spec.constant_inputs:
                t.requires_grad_(True)
        args.append(t)
    return library.custom_args(op, args, attrs)


@pytest.mark.parametrize(("op", "index"), SAMPLES)
def test_opcheck(op, index):
    """Schema, autograd registration, fake tensors and AOT dispatch (dynamic shapes where the
    Function traces them) on each sample of the op's record."""
    utils = ["test_schema", "test_autograd_registration", "test_faketensor"]
    utils.append("test_aot_dispatch_static" if op in STATIC_SPATIAL else "test_aot_dispatch_dynamic")
    torch.library.opcheck(library.operator(op), _opcheck_args(op, index), test_utils=utils)


@pytest.mark.parametrize(("op", "index"), SAMPLES)
def test_operator_gradients_are_the_functions(op, index):
    """The operator's outputs and gradients are exactly the Function's (the same code runs)."""
    args = _opcheck_args(op, index)
    entry = library.OPS[op]
    fn_args = [
        a.detach().clone().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a for a in args
    ]
    out = library.operator(op)(*args)
    ref = entry.function.apply(*entry.decode(fn_args))
    first, ref_first = (out[0], ref[0]) if isinstance(ref, tuple) else (out, ref)
    torch.testing.assert_close(first, ref_first, rtol=0, atol=0)
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    if not leaves:
        return
    ref_leaves = [a for a in fn_args if isinstance(a, torch.Tensor) and a.requires_grad]
    g = torch.randn_like(first)
    got = torch.autograd.grad(first, leaves, g, allow_unused=True)
    want = torch.autograd.grad(ref_first, ref_leaves, g, allow_unused=True)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# -- an exported CNN -----------------------------------------------------------------------------


def _cnn_pair():
    torch.manual_seed(0)
    ours = torch.nn.Sequential(
        cnn.Conv2d(1, 4, 3, padding=1), cnn.BatchNorm2d(4), cnn.ReLU(), cnn.MaxPool2d(2),
        cnn.Conv2d(4, 6, 3, padding=1), cnn.AvgPool2d(2), cnn.AdaptiveAvgPool2d(2),
        cnn.Flatten(), cnn.Linear(24, 3),
    ).double()  # fmt: skip
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 6, 3, padding=1), torch.nn.AvgPool2d(2), torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(24, 3),
    ).double()  # fmt: skip
    with torch.no_grad():  # running statistics that are not the identity
        ours[1].running_mean.uniform_(-0.5, 0.5)
        ours[1].running_var.uniform_(0.5, 2.0)
    theirs.load_state_dict(ours.state_dict())
    return ours.eval(), theirs.eval()


class _Log(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def _targets(program) -> list[str]:
    return [str(n.target) for n in program.graph.nodes if n.op == "call_function"]


_ATEN_LAYERS = ("convolution", "conv2d", "max_pool", "avg_pool", "adaptive", "batch_norm", "linear", "addmm")


@pytest.fixture(scope="module")
def exported():
    ours, theirs = _cnn_pair()
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    return ours, theirs, torch.export.export(ours, (x,), strict=True)


@pytest.mark.filterwarnings(
    "ignore:`isinstance.treespec, LeafSpec.` is deprecated:FutureWarning"
)  # torch's own
def test_strict_export_keeps_cnnkits_operators(exported):
    _, _, program = exported
    targets = _targets(program)
    ours = {t.rsplit(".", 1)[0] for t in targets if t.startswith("cnnkit.")}
    assert ours == {
        "cnnkit.conv", "cnnkit.batch_norm", "cnnkit.relu", "cnnkit.max_pool", "cnnkit.avg_pool",
        "cnnkit.adaptive_avg_pool", "cnnkit.flatten", "cnnkit.linear",
    }, targets  # fmt: skip
    assert not [t for t in targets if t.startswith("aten.") and any(a in t for a in _ATEN_LAYERS)], targets
    assert "copy_" not in " ".join(targets)  # batch norm in eval moves no running statistic
    # the decomposed (inference) program keeps them too: they are opaque to decompositions
    decomposed = _targets(program.run_decompositions())
    assert sum(t.startswith("cnnkit.") for t in decomposed) == sum(t.startswith("cnnkit.") for t in targets)
    assert not [t for t in decomposed if t.startswith("aten.") and any(a in t for a in _ATEN_LAYERS)]


def test_strict_export_round_trip(exported):
    ours, _, program = exported
    for seed in (1, 2):
        x = torch.randn(2, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(program.module()(x), ours(x), rtol=0, atol=0)


def test_exported_program_saves_and_loads(exported, tmp_path):
    ours, _, program = exported
    path = tmp_path / "cnn.pt2"
    torch.export.save(program, path)
    loaded = torch.export.load(path)
    assert _targets(loaded) == _targets(program)
    x = torch.randn(3, 1, 16, 16, dtype=torch.float64)[:2]
    torch.testing.assert_close(loaded.module()(x), ours(x), rtol=0, atol=0)


def test_gradients_of_the_exported_module_are_cnnkits_hand_derived_ones(exported):
    ours, theirs, program = exported
    module = program.module()
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    g = torch.randn(2, 3, dtype=torch.float64)
    results = []
    for name, model in (("exported", module), ("eager", ours), ("native", theirs)):
        for p in (*module.parameters(), *ours.parameters(), *theirs.parameters()):
            p.grad = None  # the exported module may share its parameters with ours
        xi = x.clone().requires_grad_(True)
        y = model(xi)
        with _Log() as log:
            y.backward(g)
        params = dict(model.named_parameters())
        results.append((xi.grad, {k: p.grad.clone() for k, p in params.items()}))
        if name == "exported":
            backward_ops = [op for op in log.ops if "backward" in op]
            assert not backward_ops, backward_ops  # no convolution_backward, *_pool*_backward, ...
            assert "aten.convolution" in log.ops  # the hand-derived gradients: forward convs
    (gx, gp), (ex, ep), (nx, np_) = results
    torch.testing.assert_close(gx, ex, rtol=0, atol=0)
    torch.testing.assert_close(gx, nx)
    assert set(gp) == set(ep) == set(np_)
    for k in gp:
        torch.testing.assert_close(gp[k], ep[k], rtol=0, atol=0)
        torch.testing.assert_close(gp[k], np_[k])


def test_second_derivatives_of_the_exported_module_match_native(exported):
    """A gradient penalty through the whole exported CNN (batch norm, the pools, the convs, the
    linear layer): the registered backward is the Functions' own, differentiable again."""
    ours, theirs, _ = exported
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    program = torch.export.export(ours, (x,), strict=True)
    penalties = []
    for model in (program.module(), theirs):
        xi = x.clone().requires_grad_(True)
        (gx,) = torch.autograd.grad(model(xi).square().sum(), xi, create_graph=True)
        (ggx,) = torch.autograd.grad(gx.square().sum(), xi)
        penalties.append(ggx)
    assert penalties[1].abs().max() > 1e-6  # not trivially zero
    torch.testing.assert_close(penalties[0], penalties[1])


def test_training_mode_export_moves_the_running_statistics_as_eager():
    ours, theirs = _cnn_pair()
    ours.train()
    theirs.train()
    x = torch.randn(4, 1, 16, 16, dtype=torch.float64)
    program = torch.export.export(ours, (x,), strict=True)
    assert any(t == "cnnkit.batch_norm.default" for t in _targets(program))
    module = program.module()
    torch.testing.assert_close(module(x), theirs(x))
    buffers = dict(module.named_buffers())
    for key in ("running_mean", "running_var"):
        torch.testing.assert_close(buffers[f"1.{key}"], getattr(theirs[1], key))


def test_export_with_a_dynamic_batch():
    ours, _ = _cnn_pair()
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(ours, (x,), dynamic_shapes=({0: batch},), strict=True)
    y = torch.randn(5, 1, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(program.module()(y), ours(y), rtol=0, atol=0)


def test_compile_still_traces_the_functions_not_the_operators():
    """Only export routes to the operators: torch.compile keeps the Functions (one graph)."""
    ours, _ = _cnn_pair()
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(ours)(x)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    code = explained.graphs[0].code
    assert "cnnkit" not in code.replace("cnnkit_torch", "")


def test_registering_again_is_harmless():
    """A second import (a reload, as xdist workers and re-imports do) defines the operators again."""
    script = (
        "import importlib, torch, cnnkit_torch.library as lib\n"
        "importlib.reload(lib)\n"
        "x = torch.randn(3, requires_grad=True)\n"
        "y = lib.operator('relu')(x); y.sum().backward()\n"
        "assert torch.equal(x.grad, (x > 0).to(x.dtype)), x.grad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
