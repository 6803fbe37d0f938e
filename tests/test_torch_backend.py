"""The PyTorch backend: hand-derived gradients in autograd.Functions, held to native autograd."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from cnnkit_torch import ops  # noqa: E402
from cnnkit_torch.backend import TorchBackend  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import cnnkit  # noqa: E402
from cnnkit import functional as cf  # noqa: E402
from cnnkit.geometry import pool_output_size, pool_padding, resolve_padding  # noqa: E402

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]
TOL = {torch.float64: dict(rtol=1e-5, atol=1e-8), torch.float32: dict(rtol=1e-4, atol=1e-5)}


def close(actual, expected, dtype):
    torch.testing.assert_close(actual, expected, **TOL[dtype])


def leaf(t):
    return t.detach().clone().requires_grad_(True)


# -- the backend object and the plugin ---------------------------------------------------------


def test_registered_and_lazy_about_torch():
    code = (
        "import sys, cnnkit, cnnkit_torch.plugin, cnnkit_torch\n"
        "assert 'torch' not in sys.modules, 'importing cnnkit imported torch'\n"
        "info = cnnkit.get_registry().backend_infos()['torch']\n"
        "assert 'torch' not in sys.modules\n"
        "print(info.install_hint)\n"
        "sys.modules['torch'] = None  # as if torch were not installed\n"
        "try:\n"
        "    cnnkit.get_backend('torch')\n"
        "except cnnkit.BackendUnavailableError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    hint, message = out.strip().splitlines()
    assert hint == "pip install 'cnnkit[torch]'"
    assert "backend 'torch'" in message and "pip install 'cnnkit[torch]'" in message


def test_backend_arrays_dtypes_devices():
    be = cnnkit.get_backend("torch", dtype="float32")
    assert isinstance(be, TorchBackend) and be.default_dtype == "float32"
    a = be.asarray(np.arange(3.0))
    assert a.dtype == torch.float32 and a.device.type == "cpu"
    assert be.asarray([1, 2]).dtype == torch.int64  # the dtype option only touches floats
    assert be.asarray(np.ones(2), dtype="float64").dtype == torch.float64
    ro = np.ones(3)
    ro.flags.writeable = False
    assert be.asarray(ro).tolist() == [1.0, 1.0, 1.0]
    assert be.dtype_name(torch.zeros(1, dtype=torch.bfloat16)) == "bfloat16"
    assert be.dtype_name(torch.zeros(1, dtype=torch.int64)) == "int64"
    assert be.to_numpy(torch.ones(2, dtype=torch.bfloat16)).tolist() == [1.0, 1.0]
    assert be.to_numpy(leaf(torch.ones(2))).tolist() == [1.0, 1.0]
    assert be.devices()[0] == "cpu"
    assert all(d.startswith(("cuda:", "mps")) for d in be.devices()[1:])
    assert cnnkit.get_backend("torch", dtype=torch.float64).default_dtype == "float64"
    with pytest.raises(TypeError, match="dtype"):
        TorchBackend(dtype="float33")


@pytest.mark.parametrize("device", DEVICES)
def test_backend_device_option(device):
    be = cnnkit.get_backend("torch", device=device)
    t = be.asarray(np.ones((2, 2), dtype=np.float32))
    assert t.device.type == device
    assert be.asarray(torch.ones(2)).device.type == device
    y = cf.relu([[-1.0, 2.0]], backend=be)
    assert y.device.type == device and be.to_numpy(y).tolist() == [[0.0, 2.0]]


def test_all_core_ops_registered():
    from cnnkit.ops import BUILTIN_SPECS

    registry = cnnkit.get_registry()
    assert [spec.name for spec in BUILTIN_SPECS] == list(ops.KERNELS)  # the core's order
    for op in ops.KERNELS:
        assert registry.kernel_plugin("torch", op).name == "torch"
        assert registry.kernel("torch", op) is ops.KERNELS[op]


# -- references: torch's own ops under native autograd -------------------------------------------


def conv_reference(x, w, b, stride, pads, dilation, groups, flip):
    d = x.dim() - 2
    if flip:
        w = w.flip(tuple(range(2, d + 2)))
    x = F.pad(x, [p for pair in reversed(pads) for p in pair])
    return getattr(F, f"conv{d}d")(x, w, b, stride, 0, dilation, groups)


def window_stack(x, kernel, stride, padding, dilation, ceil_mode, value=0.0):
    """Every window's taps stacked on a last axis, by literal strided slicing (no pooling op)."""
    size = x.shape[2:]
    pads = [
        pool_padding(n, f, s, p, dl, ceil_mode)
        for n, f, s, p, dl in zip(size, kernel, stride, padding, dilation)
    ]
    out = [
        pool_output_size(n, f, s, p, dl, ceil_mode)
        for n, f, s, p, dl in zip(size, kernel, stride, padding, dilation)
    ]
    x_pad = F.pad(x, [p for pair in reversed(pads) for p in pair], value=value)
    taps = []
    for m in itertools.product(*(range(f) for f in kernel)):
        index = tuple(
            slice(dl * mm, dl * mm + s * (o - 1) + 1, s) for dl, mm, s, o in zip(dilation, m, stride, out)
        )
        taps.append(x_pad[(slice(None), slice(None), *index)])
    return torch.stack(taps, -1), pads


def pool_reference(kind, x, kernel, stride, padding, dilation, ceil_mode, extra):
    if kind == "max":
        return window_stack(x, kernel, stride, padding, dilation, ceil_mode, float("-inf"))[0].amax(-1)
    win, pads = window_stack(x, kernel, stride, padding, dilation, ceil_mode)
    if kind == "lp":
        return win.abs().pow(extra).sum(-1).pow(1 / extra)
    # avg: the divisor counts input units (and declared padding with count_include_pad)
    mask = torch.ones_like(x)
    if extra:
        mask = F.pad(mask, [p for pair in reversed(padding) for p in pair], value=1.0)
        declared = padding
    else:
        declared = [(0, 0)] * len(kernel)
    rest = [(lo - dlo, hi - dhi) for (lo, hi), (dlo, dhi) in zip(pads, declared)]
    mask = F.pad(mask, [p for pair in reversed(rest) for p in pair])
    count = window_stack(mask, kernel, stride, [(0, 0)] * len(kernel), dilation, False)[0].sum(-1)
    return win.sum(-1) / count


def grads(y, inputs, seed=0):
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype).to(y.device)
    present = [t for t in inputs if t is not None]
    return torch.autograd.grad(y, present, g)


# -- random configurations against native autograd -----------------------------------------------


def random_conv_case(rng):
    d = int(rng.integers(1, 4))
    groups = int(rng.choice([1, 1, 2, 3]))
    cg, kg = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    kernel = [int(rng.integers(1, 4)) for _ in range(d)]
    dilation = [int(rng.integers(1, 3)) for _ in range(d)]
    stride = [int(rng.integers(1, 4)) for _ in range(d)]
    size = [
        int(rng.integers(dl * (f - 1) + 1, dl * (f - 1) + 6 if d < 3 else dl * (f - 1) + 3))
        for f, dl in zip(kernel, dilation)
    ]
    form = rng.integers(0, 5)
    if form == 0:
        padding = int(rng.integers(0, 3))
    elif form == 1:
        padding = tuple(int(v) for v in rng.integers(0, 3, size=d))
    elif form == 2:
        padding = tuple((int(a), int(b)) for a, b in rng.integers(0, 3, size=(d, 2)))
    else:
        padding = ["same", "valid"][form - 3]
    n = int(rng.integers(1, 3))
    return dict(
        d=d,
        x_shape=(n, cg * groups, *size),
        w_shape=(kg * groups, cg, *kernel),
        bias=bool(rng.integers(0, 2)),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        flip=bool(rng.integers(0, 2)),
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_conv_random_configs_match_native_autograd(device, dtype):
    rng = np.random.default_rng(7)
    for case in range(30):
        c = random_conv_case(rng)
        g = torch.Generator().manual_seed(case)
        x = torch.randn(c["x_shape"], generator=g, dtype=dtype).to(device)
        w = torch.randn(c["w_shape"], generator=g, dtype=dtype).to(device)
        b = torch.randn(c["w_shape"][0], generator=g, dtype=dtype).to(device) if c["bias"] else None
        attrs = dict(
            stride=c["stride"],
            padding=c["padding"],
            dilation=c["dilation"],
            groups=c["groups"],
            flip=c["flip"],
        )
        fn = getattr(cf, f"conv{c['d']}d")
        ours = [leaf(x), leaf(w), None if b is None else leaf(b)]
        y = fn(*ours, **attrs, backend="torch")
        assert isinstance(y.grad_fn, ops.Conv._backward_cls), c
        pads = resolve_padding(c["padding"], c["w_shape"][2:], c["stride"], c["dilation"], c["x_shape"][2:])
        theirs = [leaf(x), leaf(w), None if b is None else leaf(b)]
        y_ref = conv_reference(*theirs, c["stride"], pads, c["dilation"], c["groups"], c["flip"])
        close(y, y_ref, dtype)
        for a, e in zip(grads(y, ours), grads(y_ref, theirs)):
            close(a, e, dtype)


def random_route_case(rng, route):
    """A random geometry with the channels (and strides) that send Conv.backward down ``route``."""
    c = random_conv_case(rng)
    n, d = c["x_shape"][0], c["d"]
    if route == "im2col":  # few input channels, many filters
        cin, k = int(rng.integers(1, 5)), int(rng.integers(16, 19))
    else:  # many input channels: gemm at stride 1, strided columns otherwise
        cin, k = int(rng.integers(8, 11)), int(rng.integers(1, 4))
        if route == "gemm":
            c["stride"] = [1] * d
        elif all(s == 1 for s in c["stride"]):
            c["stride"][int(rng.integers(0, d))] = 2
    c.update(x_shape=(n, cin, *c["x_shape"][2:]), w_shape=(k, cin, *c["w_shape"][2:]), groups=1)
    return c


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("route", ["im2col", "gemm", "columns"])
def test_conv_fast_routes_on_random_configs_match_native_autograd(route, dtype, device, monkeypatch):
    """The routes Conv.backward takes for many filters or many channels, on random geometry."""
    rng = np.random.default_rng({"im2col": 21, "gemm": 22, "columns": 23}[route])
    name = {"im2col": "_conv_grads_im2col", "gemm": "_conv_weight_grad_gemm"}.get(
        route, "_conv_weight_grad_columns"
    )
    taken = []
    real = getattr(ops, name)
    monkeypatch.setattr(ops, name, lambda *a, **k: taken.append(1) or real(*a, **k))
    for case in range(12):
        c = random_route_case(rng, route)
        g = torch.Generator().manual_seed(100 + case)
        x = torch.randn(c["x_shape"], generator=g, dtype=dtype).to(device)
        w = torch.randn(c["w_shape"], generator=g, dtype=dtype).to(device)
        b = torch.randn(c["w_shape"][0], generator=g, dtype=dtype).to(device) if c["bias"] else None
        attrs = dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"], flip=c["flip"])
        ours = [leaf(x), leaf(w), None if b is None else leaf(b)]
        y = getattr(cf, f"conv{c['d']}d")(*ours, **attrs, backend="torch")
        pads = resolve_padding(c["padding"], c["w_shape"][2:], c["stride"], c["dilation"], c["x_shape"][2:])
        theirs = [leaf(x), leaf(w), None if b is None else leaf(b)]
        y_ref = conv_reference(*theirs, c["stride"], pads, c["dilation"], 1, c["flip"])
        close(y, y_ref, dtype)
        for a, e in zip(grads(y, ours), grads(y_ref, theirs)):
            close(a, e, dtype)
        assert len(taken) == case + 1, (route, c)


def random_pool_case(rng, kind):
    d = int(rng.integers(1, 4))
    kernel = [int(rng.integers(1, 4)) for _ in range(d)]
    dilation = [int(rng.integers(1, 3)) for _ in range(d)]
    stride = [int(rng.integers(1, 4)) for _ in range(d)]
    ext = [dl * (f - 1) + 1 for f, dl in zip(kernel, dilation)]
    padding = [(int(rng.integers(0, e // 2 + 1)), int(rng.integers(0, e // 2 + 1))) for e in ext]
    size = [
        int(rng.integers(max(1, e - lo - hi), e + (5 if d < 3 else 3))) for e, (lo, hi) in zip(ext, padding)
    ]
    attrs = dict(
        kernel_size=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        ceil_mode=bool(rng.integers(0, 2)),
    )
    for n, f, s, (lo, hi), dl in zip(size, kernel, stride, padding, dilation):
        o = pool_output_size(n, f, s, (lo, hi), dl, attrs["ceil_mode"])
        taps = np.arange(o)[:, None] * s - lo + dl * np.arange(f)[None, :]
        if not ((taps >= 0) & (taps < n)).any(1).all():  # a window of padding only: the core refuses it
            return random_pool_case(rng, kind)
    extra = None
    if kind == "avg":
        extra = bool(rng.integers(0, 2))
        attrs["count_include_pad"] = extra
    elif kind == "lp":
        extra = float(rng.choice([1.0, 2.0, 3.0, 1.5, 0.7]))
    return d, (int(rng.integers(1, 3)), int(rng.integers(1, 3)), *size), attrs, extra


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["max", "avg", "lp"])
def test_pool_random_configs_match_native_autograd(device, dtype, kind):
    rng = np.random.default_rng({"max": 1, "avg": 2, "lp": 3}[kind])
    for case in range(40):
        d, shape, attrs, extra = random_pool_case(rng, kind)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(case), dtype=dtype).to(device)
        fn = getattr(cf, f"{kind}_pool{d}d")
        ours = leaf(x)
        y = fn(ours, extra, **attrs, backend="torch") if kind == "lp" else fn(ours, **attrs, backend="torch")
        theirs = leaf(x)
        y_ref = pool_reference(
            kind,
            theirs,
            attrs["kernel_size"],
            attrs["stride"],
            attrs["padding"],
            attrs["dilation"],
            attrs["ceil_mode"],
            extra,
        )
        close(y, y_ref, dtype)
        close(grads(y, [ours])[0], grads(y_ref, [theirs])[0], dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_pools_match_torch_pooling_where_it_exists(device):
    """Symmetric padding, no dilation: torch's own max/avg/lp pooling, ceil_mode and count_include_pad."""
    rng = np.random.default_rng(11)
    dtype = torch.float64
    for case in range(40):
        d = int(rng.integers(1, 4))
        kernel = [int(rng.integers(1, 4)) for _ in range(d)]
        stride = [int(rng.integers(1, 4)) for _ in range(d)]
        pad = [int(rng.integers(0, f // 2 + 1)) for f in kernel]
        size = [int(rng.integers(f, f + 5)) for f in kernel]
        ceil_mode, cip = bool(rng.integers(0, 2)), bool(rng.integers(0, 2))
        x = torch.rand((2, 2, *size), generator=torch.Generator().manual_seed(case), dtype=dtype).to(device)
        for kind in ("max", "avg", "lp"):
            ours, theirs = leaf(x), leaf(x)
            if kind == "max":
                y = getattr(cf, f"max_pool{d}d")(ours, kernel, stride, pad, 1, ceil_mode, backend="torch")
                y_ref = getattr(F, f"max_pool{d}d")(theirs, kernel, stride, pad, 1, ceil_mode)
            elif kind == "avg":
                y = getattr(cf, f"avg_pool{d}d")(
                    ours, kernel, stride, pad, 1, ceil_mode, cip, backend="torch"
                )
                y_ref = getattr(F, f"avg_pool{d}d")(theirs, kernel, stride, pad, ceil_mode, cip)
            else:
                # torch's lp_pool has no padding, is the true norm only for nonnegative input, and
                # with ceil_mode scales a partial last window by kernel/overlap (avg_pool * numel):
                # cnnkit keeps the true norm there, so only floor mode is comparable.
                y = getattr(cf, f"lp_pool{d}d")(ours, 2.0, kernel, stride, 0, 1, False, backend="torch")
                k_, s_ = (kernel[0], stride[0]) if d == 1 else (kernel, stride)
                y_ref = getattr(F, f"lp_pool{d}d")(theirs, 2.0, k_, s_, False)
            close(y, y_ref, dtype)
            close(grads(y, [ours])[0], grads(y_ref, [theirs])[0], dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_max_pool_ties_go_to_the_first_max_like_pytorch(device):
    x = torch.tensor([[[[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]]]], device=device)
    ours, theirs = leaf(x), leaf(x)
    cf.max_pool2d(ours, 2, 1, ceil_mode=True, backend="torch").sum().backward()
    F.max_pool2d(theirs, 2, 1, ceil_mode=True).sum().backward()
    assert torch.equal(ours.grad, theirs.grad)
    assert ours.grad[0, 0, :2].tolist() == [[1.0, 0.0, 2.0, 0.0], [1.0, 0.0, 2.0, 0.0]]


@pytest.mark.parametrize("device", DEVICES)
def test_lp_pool_is_the_true_norm_with_zero_gradient_for_zero_windows(device):
    x = torch.tensor([[[3.0, -4.0, 0.0, 0.0]]], device=device, dtype=torch.float64, requires_grad=True)
    for p in (2.0, 0.5, 1.0):
        x.grad = None
        y = cf.lp_pool1d(x, p, 2, backend="torch")
        y.sum().backward()
        assert torch.isfinite(x.grad).all()
        assert x.grad[0, 0, 2:].tolist() == [0.0, 0.0]
    assert cf.lp_pool1d(x, 2, 2, backend="torch").tolist() == [[[5.0, 0.0]]]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dense_activations_and_loss_match_native_autograd(device, dtype):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, 5, generator=g, dtype=dtype).to(device)
    for name, ref in [
        ("relu", F.relu),
        ("sigmoid", torch.sigmoid),
        ("tanh", torch.tanh),
        ("leaky_relu", lambda t: F.leaky_relu(t, 0.2)),
    ]:
        ours, theirs = leaf(x), leaf(x)
        y = (
            getattr(cf, name)(ours, 0.2, backend="torch")
            if name == "leaky_relu"
            else getattr(cf, name)(ours, backend="torch")
        )
        y_ref = ref(theirs)
        close(y, y_ref, dtype)
        close(grads(y, [ours])[0], grads(y_ref, [theirs])[0], dtype)
    ours, theirs = leaf(x), leaf(x)
    y = cf.flatten(ours, 0, 1, backend="torch")
    close(y, theirs.flatten(0, 1), dtype)
    close(grads(y, [ours])[0], grads(theirs.flatten(0, 1), [theirs])[0], dtype)
    w, b = (
        torch.randn(6, 5, generator=g, dtype=dtype).to(device),
        torch.randn(6, generator=g, dtype=dtype).to(device),
    )
    ours, theirs = [leaf(x), leaf(w), leaf(b)], [leaf(x), leaf(w), leaf(b)]
    y, y_ref = cf.linear(*ours, backend="torch"), F.linear(*theirs)
    close(y, y_ref, dtype)
    for a, e in zip(grads(y, ours), grads(y_ref, theirs)):
        close(a, e, dtype)
    logits = torch.randn(5, 4, generator=g, dtype=dtype).to(device)
    target = torch.tensor([0, 3, 1, 1, 2], device=device)
    for reduction in ("mean", "sum", "none"):
        ours, theirs = leaf(logits), leaf(logits)
        y = cf.cross_entropy(ours, target, reduction=reduction, backend="torch")
        y_ref = F.cross_entropy(theirs, target, reduction=reduction)
        close(y, y_ref, dtype)
        close(grads(y, [ours])[0], grads(y_ref, [theirs])[0], dtype)


# -- gradcheck: every op, through its Function ----------------------------------------------------


def _g(*shape, seed=0):
    t = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return t.requires_grad_(True)


def _int_array(v) -> bool:
    """An integer input given as an array (unpooling's indices): passed as is, never differentiated."""
    return isinstance(v, np.ndarray) and v.dtype.kind in "iu"


def _record_checks() -> dict:
    """Every op's own cases, from its record: a few seeded random ones per op (the same list the
    conformance suite runs), each as ``(fn of the float inputs, their shapes, their values)``."""
    from cnnkit.conformance.cases import Random
    from cnnkit.ops import BUILTIN_SPECS

    checks = {}
    for spec in BUILTIN_SPECS:
        cases = [c for c in spec.cases() if c.raises is None and c.differentiable]
        random = [
            c
            for c in cases
            if all(v is None or isinstance(v, Random) or _int_array(v) for v in c.inputs)
            and any(isinstance(v, Random) for v in c.inputs)
        ]
        for case in random[:: max(1, len(random) // 3)][:3]:
            values = [None if v is None or _int_array(v) else v.make("float64") for v in case.inputs]
            values = [np.asarray(v) if _int_array(v) else x for v, x in zip(case.inputs, values)]
            floats = [
                i
                for i, (n, v) in enumerate(zip(spec.inputs, values))
                if v is not None
                and n not in spec.integer_inputs
                and n not in spec.state_inputs | spec.constant_inputs  # no gradient by design
            ]

            state = [i for i, n in enumerate(spec.inputs) if n in spec.state_inputs]
            constant = [i for i, n in enumerate(spec.inputs) if n in spec.constant_inputs]

            def fn(*xs, _case=case, _values=values, _floats=floats, _state=state, _constant=constant):
                args = [None if v is None else torch.from_numpy(v.copy()) for v in _values]
                for i in _state:  # running statistics live beside the data (updated in place)
                    if args[i] is not None:
                        args[i] = args[i].to(xs[0].device)
                for i in _constant:  # class weights: the data's device and dtype, as a user passes them
                    if args[i] is not None:
                        args[i] = args[i].to(xs[0].device, xs[0].dtype)
                for i, x in zip(_floats, xs):
                    args[i] = x
                return cnnkit.call(_case.op, *args, backend="torch", **_case.attrs)

            checks[case.id] = (fn, [values[i].shape for i in floats], [values[i] for i in floats])
    return checks


#: Per op, its record's cases; then the shapes that pick each route of a kernel (torch-specific).
GRADCHECKS = {
    **_record_checks(),
    # every route of Conv.backward (see _CONV_ROUTES), and the stride-1 input gradient
    "conv2d_im2col_route": (
        lambda x, w, b: cf.conv2d(x, w, b, (1, 2), ((1, 0), (0, 2)), (2, 1), flip=True, backend="torch"),
        [(2, 2, 6, 5), (16, 2, 2, 2), (16,)],
    ),
    "conv2d_gemm_route": (
        lambda x, w, b: cf.conv2d(x, w, b, 1, ((0, 1), (2, 1)), (1, 2), flip=True, backend="torch"),
        [(2, 8, 5, 6), (2, 8, 2, 3), (2,)],
    ),
    "conv2d_columns_route": (
        lambda x, w: cf.conv2d(x, w, None, (2, 3), 1, (2, 1), backend="torch"),
        [(1, 8, 7, 7), (3, 8, 2, 2)],
    ),
    "conv2d_depthwise_stride1": (
        lambda x, w, b: cf.conv2d(x, w, b, 1, "same", 1, 3, backend="torch"),
        [(2, 3, 5, 5), (6, 1, 3, 2), (6,)],
    ),
    "conv3d_stride1_flip_dilation": (
        lambda x, w, b: cf.conv3d(x, w, b, 1, (1, 0, 1), (1, 2, 1), 1, True, backend="torch"),
        [(1, 2, 4, 5, 3), (2, 2, 2, 2, 2), (2,)],
    ),
    "max_pool2d_torch_route": (
        lambda x: cf.max_pool2d(x, 3, 2, 1, 1, True, backend="torch"),
        [(1, 2, 6, 7)],
    ),
    "avg_pool2d_count_include_pad": (
        lambda x: cf.avg_pool2d(x, 3, 2, ((1, 1), (0, 1)), (1, 2), True, True, backend="torch"),
        [(1, 2, 6, 7)],
    ),
    "avg_pool1d_torch_route": (
        lambda x: cf.avg_pool1d(x, 3, 2, 1, 1, True, True, backend="torch"),
        [(2, 1, 8)],
    ),
    "lp_pool3d_p1": (lambda x: cf.lp_pool3d(x, 1.0, 2, 1, backend="torch"), [(1, 1, 3, 3, 3)]),
    "lp_pool2d_p2_ceil": (
        lambda x: cf.lp_pool2d(x, 2.0, 2, 2, 0, 1, True, backend="torch"),
        [(1, 2, 5, 5)],
    ),
    "global_max_pool": (lambda x: cf.global_max_pool(x, backend="torch"), [(2, 3, 3, 4)]),
    "global_avg_pool": (lambda x: cf.global_avg_pool(x, backend="torch"), [(2, 3, 5)]),
    "global_lp_pool": (lambda x: cf.global_lp_pool(x, 3.0, backend="torch"), [(1, 2, 2, 2, 3)]),
    "cross_entropy_sum": (
        lambda x: cf.cross_entropy(x, torch.tensor([2, 0, 2]), reduction="sum", backend="torch"),
        [(3, 4)],
    ),
    # ConvTranspose's backward when output_padding >= stride: trailing units no conv window reads
    # (the crop PadNdGrad, the zero-pad PadNd); groups, dilation, asymmetric padding
    "conv_transpose2d_outpad_past_stride": (
        lambda x, w, b: cf.conv_transpose2d(x, w, b, 1, (1, 0), 1, 2, 2, backend="torch"),
        [(2, 4, 4, 3), (4, 1, 2, 3), (2,)],
    ),
    "pad2d_replicate": (lambda x: cf.pad(x, (1, 2, 0, 1), "replicate", backend="torch"), [(2, 2, 3, 4)]),
    "batch_norm_train_no_affine": (
        lambda x: cf.batch_norm(x, None, None, None, None, True, eps=0.1, backend="torch"),
        [(5, 3, 4)],
    ),
}

#: Conv.backward's routes by shape (the fast ones are chosen by measurement): each must be run
#: by some GRADCHECKS entry, so gradcheck and the no-aten-backward test see every one of them.
_CONV_ROUTES = (
    "_conv_grads_im2col",
    "_conv_weight_grad_gemm",
    "_conv_weight_grad_columns",
    "_conv_weight_grad_conv",
    "_conv_input_grad",
)


def _entry(name: str):
    """``(fn, shapes, inputs)`` of a GRADCHECKS entry: float64 leaves, a record case's own values."""
    fn, shapes, *values = GRADCHECKS[name]
    if values:
        inputs = [torch.from_numpy(v.copy()).requires_grad_(True) for v in values[0]]
    else:
        inputs = [_g(*s, seed=i) for i, s in enumerate(shapes)]
    return fn, shapes, inputs


@pytest.mark.parametrize("name", list(GRADCHECKS))
def test_gradcheck(name):
    fn, _, inputs = _entry(name)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)


# -- vjp, needs_input_grad, and what backward may call -------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_vjp_runs_the_same_hand_derived_backward(device):
    x, w, b = (_g(2, 3, 6, 6).to(device), _g(4, 3, 3, 3, seed=1).to(device), _g(4, seed=2).to(device))
    y, pullback = cnnkit.vjp(cf.conv2d, x, w, b, 2, 1, backend="torch")
    assert y.grad_fn is None  # vjp runs outside autograd, even on leaves that require grad
    gy = torch.ones_like(y)
    dx, dw, db = pullback(gy)
    ex, ew, eb = torch.autograd.grad(cf.conv2d(x, w, b, 2, 1, backend="torch"), (x, w, b), gy)
    assert torch.equal(dx, ex) and torch.equal(dw, ew) and torch.equal(db, eb)
    y, pullback = cnnkit.vjp(cf.conv2d, x, w, None, backend="torch")
    assert pullback(torch.ones_like(y))[2] is None
    p, pullback = cnnkit.vjp(cf.max_pool2d, x, 2, backend="torch")
    assert torch.equal(pullback(torch.ones_like(p))[0], torch.autograd.grad(F.max_pool2d(x, 2).sum(), x)[0])
    logits, t = _g(3, 4).to(device), torch.tensor([0, 1, 3], device=device)
    loss, pullback = cnnkit.vjp(cf.cross_entropy, logits, t, backend="torch")
    dl, dt, dw = pullback(torch.ones_like(loss))
    assert (
        dt is None
        and dw is None
        and torch.allclose(dl, torch.autograd.grad(F.cross_entropy(logits, t), logits)[0])
    )


def test_backward_computes_only_requested_gradients(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("computed a gradient nobody asked for")

    x, w, b = _g(1, 2, 5, 5), _g(3, 2, 3, 3, seed=1).detach(), _g(3, seed=2).detach()
    monkeypatch.setattr(ops, "_conv_weight_grad", forbidden)
    cf.conv2d(x, w, b, backend="torch").sum().backward()
    assert x.grad is not None
    monkeypatch.undo()
    monkeypatch.setattr(ops, "_conv_input_grad", forbidden)
    x, w = x.detach(), w.requires_grad_(True)
    cf.conv2d(x, w, b, backend="torch").sum().backward()
    assert w.grad is not None
    monkeypatch.setattr(ops, "_window_spread", forbidden)
    y = cf.avg_pool2d(x, 2, 1, backend="torch") * w.sum()  # the pool's input needs no gradient
    y.sum().backward()


def test_max_pool_indices_are_not_differentiable():
    y, idx = ops.MaxPool.apply(_g(1, 1, 4, 4), (2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1), False)
    assert y.requires_grad and not idx.requires_grad and idx.dtype == torch.int64


def test_backward_source_uses_no_autograd():
    """The hand-derived backwards never hand the work back to autograd or to torch.nn.grad."""
    import inspect
    import io
    import re
    import tokenize

    def code(source):  # the module's code without strings and comments, tokens joined
        skip = (tokenize.STRING, tokenize.COMMENT)
        tokens = tokenize.generate_tokens(io.StringIO(source).readline)
        return "".join(t.string for t in tokens if t.type not in skip)

    banned = [
        r"autograd\.grad\b",
        r"enable_grad",
        r"torch\.func\b",
        r"\.backward\((?!ctx,)",  # a tensor's .backward(); fn.backward(ctx, ...) is cnnkit's own
        r"nn\.grad\b",
        r"aten\.\w*_backward",
    ]
    assert [p for p in banned if re.search(p, code(inspect.getsource(ops)))] == []
    probe = code("torch.autograd.grad(y, x)\ny.backward(g)\ntorch.nn.grad.conv2d_input(s, w, d)\n")
    assert [p for p in banned if re.search(p, probe)] == [banned[0], banned[3], banned[4]]


class _OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", list(GRADCHECKS))
def test_backward_calls_no_aten_backward_op(name):
    fn, _, inputs = _entry(name)
    y = fn(*inputs)
    with _OpLog() as log:
        torch.autograd.grad(y, inputs, torch.ones_like(y))
    assert log.names and not [n for n in log.names if "backward" in n], log.names


def test_gradchecks_cover_every_conv_route_and_every_op(monkeypatch):
    hits = dict.fromkeys(_CONV_ROUTES, 0)

    def spy(name):
        real = getattr(ops, name)

        def counted(*args, **kwargs):
            hits[name] += 1
            return real(*args, **kwargs)

        return counted

    for name in _CONV_ROUTES:
        monkeypatch.setattr(ops, name, spy(name))
    for name in GRADCHECKS:
        fn, _, inputs = _entry(name)
        y = fn(*inputs)
        torch.autograd.grad(y, inputs, torch.ones_like(y))
    assert all(hits.values()), hits
    from cnnkit.conformance import all_cases

    by_id = {c.id: c.op for c in all_cases()}
    ops_with_gradients = {
        op for op in ops.KERNELS if not getattr(cnnkit.get_registry().op(op), "index_output", False)
    }  # an op whose output is integer indices has nothing to check gradients of
    assert {by_id[key] for key in GRADCHECKS if key in by_id} >= ops_with_gradients


_T = torch.tensor([2, 0, 1])
SECOND_ORDER = {
    "conv2d": (
        lambda x, w: cf.conv2d(x, w, None, 2, 1, backend="torch"),
        lambda x, w: F.conv2d(x, w, None, 2, 1),
        [(2, 3, 6, 5), (4, 3, 3, 3)],
    ),
    "relu": (lambda x: cf.relu(x, backend="torch").pow(3), lambda x: F.relu(x).pow(3), [(3, 4)]),
    "max_pool2d": (
        lambda x: cf.max_pool2d(x, 2, 1, backend="torch").pow(2),
        lambda x: F.max_pool2d(x, 2, 1).pow(2),
        [(1, 2, 5, 5)],
    ),
    "lp_pool2d": (
        lambda x: cf.lp_pool2d(x, 2.0, 2, backend="torch"),
        lambda x: F.lp_pool2d(x, 2.0, 2),
        [(1, 2, 4, 4)],
    ),
    "linear": (
        lambda x, w: cf.linear(x, w, None, backend="torch").pow(2),
        lambda x, w: F.linear(x, w).pow(2),
        [(3, 4), (2, 4)],
    ),
    "cross_entropy": (
        lambda x: cf.cross_entropy(x, _T, backend="torch"),
        lambda x: F.cross_entropy(x, _T),
        [(3, 4)],
    ),
}


@pytest.mark.parametrize("name", list(SECOND_ORDER))
def test_double_backward_equals_native(name):
    """A gradient built with create_graph=True differentiates again (by cnnkit's own Functions),
    even when the incoming gradient itself needs no gradient, and equals native autograd's."""
    ours, theirs, shapes = SECOND_ORDER[name]
    results = []
    for fn in (ours, theirs):
        inputs = [_g(*s, seed=i) for i, s in enumerate(shapes)]
        (dx,) = torch.autograd.grad(fn(*inputs).sum(), inputs[0], create_graph=True)
        assert dx.requires_grad
        results.append(torch.autograd.grad(dx.pow(2).sum(), inputs, materialize_grads=True))
    for a, b in zip(*results):
        close(a, b, torch.float64)


@pytest.mark.parametrize("name", list(GRADCHECKS))
def test_no_host_reads_and_no_tensor_made_off_the_inputs_device(name):
    """On the meta device tensors have no data: any ``.item()``, ``bool(t)``, ``.tolist()`` or
    ``.numpy()`` raises, and so does mixing in a tensor made on a hard-coded CPU device.
    (cross_entropy's targets stay on the CPU: the core reads them to check the class range.)"""
    fn, shapes, _ = _entry(name)
    inputs = [torch.empty(s, device="meta", dtype=torch.float64, requires_grad=True) for s in shapes]
    y = fn(*inputs)
    grads_ = torch.autograd.grad(y, inputs, torch.ones_like(y))
    assert [g.device.type for g in grads_] == ["meta"] * len(inputs)
    assert [tuple(g.shape) for g in grads_] == [tuple(s) for s in shapes]


@pytest.mark.parametrize("name", list(GRADCHECKS))
def test_context_keeps_tensors_only_through_save_for_backward(name):
    fn, _, inputs = _entry(name)
    y = fn(*inputs)
    ctx = y.grad_fn
    assert type(ctx)._forward_cls.__module__ == "cnnkit_torch.ops"

    def tensors(v):
        if isinstance(v, torch.Tensor):
            return 1
        if isinstance(v, (list, tuple)):
            return sum(tensors(item) for item in v)
        return sum(tensors(item) for item in v.values()) if isinstance(v, dict) else 0

    assert not [k for k, v in vars(ctx).items() if tensors(v)], vars(ctx)
    assert ctx.saved_tensors is not None  # readable: nothing saved was modified in place


class _Readers(TorchDispatchMode):
    """Records which of ``watched`` (by storage) every aten op reads."""

    def __init__(self, **watched):
        super().__init__()
        self.ptrs = {name: t.untyped_storage().data_ptr() for name, t in watched.items()}
        self.read = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for a in itertools.chain(args, (kwargs or {}).values()):
            for t in a if isinstance(a, (list, tuple)) else [a]:
                if isinstance(t, torch.Tensor) and func is not torch.ops.aten.detach.default:
                    ptr = t.untyped_storage().data_ptr()
                    self.read |= {name for name, p in self.ptrs.items() if p == ptr}
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize(
    ("x_shape", "w_shape", "stride", "groups"),
    [
        ((2, 3, 6, 6), (16, 3, 3, 3), 1, 1),  # im2col route
        ((2, 8, 6, 6), (4, 8, 3, 3), 1, 1),  # gemm route
        ((2, 8, 6, 6), (4, 8, 3, 3), 2, 1),  # strided columns route
        ((2, 4, 6, 6), (4, 2, 3, 3), 2, 2),  # conv route
    ],
    ids=["im2col", "gemm", "columns", "groups"],
)
def test_backward_reads_only_what_the_asked_gradient_needs(x_shape, w_shape, stride, groups, flip):
    """needs_input_grad: dE/dx needs W, not y; dE/dW needs y, not W; dE/db needs neither."""
    for need, may_read in [("x", {"w"}), ("w", {"x"}), ("b", set())]:
        x, w, b = torch.randn(x_shape), torch.randn(w_shape), torch.randn(w_shape[0])
        named = dict(x=x, w=w, b=b)
        named[need].requires_grad_(True)
        y = cf.conv2d(x, w, b, stride, 1, 1, groups, flip, backend="torch")
        with _Readers(x=x, w=w) as log:
            (g,) = torch.autograd.grad(y, named[need], torch.ones_like(y))
        assert g.shape == named[need].shape
        assert log.read <= may_read, (need, log.read)


@pytest.mark.parametrize("name", list(GRADCHECKS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_every_op_runs_in_half_precision_on_cpu(name, dtype):
    """Forward and backward in float16/bfloat16 agree loosely with float32; gradients keep the dtype."""
    fn, _, inputs = _entry(name)
    base = [t.detach().float() for t in inputs]
    low = [t.to(dtype).requires_grad_(True) for t in base]
    ref = [t.to(dtype).float().requires_grad_(True) for t in base]
    y, y_ref = fn(*low), fn(*ref)
    assert y.dtype == dtype and y_ref.dtype == torch.float32
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(9))
    grads_low = torch.autograd.grad(y, low, g.to(dtype))
    grads_ref = torch.autograd.grad(y_ref, ref, g)
    tol = dict(rtol=0.05, atol=0.05) if dtype == torch.bfloat16 else dict(rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(y.float(), y_ref, **tol)
    for a, e in zip(grads_low, grads_ref):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float(), e, **tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_runs(device, dtype):
    if device == "cpu" and dtype == torch.float16 and not hasattr(torch.backends, "mkldnn"):
        pytest.skip("no float16 convolution on this CPU build")
    x, w = leaf(torch.randn(2, 3, 8, 8).to(device, dtype)), leaf(torch.randn(4, 3, 3, 3).to(device, dtype))
    y = cf.max_pool2d(
        cf.relu(cf.conv2d(x, w, None, 1, 1, backend="torch"), backend="torch"), 2, backend="torch"
    )
    y = cf.avg_pool2d(y, 2, backend="torch")
    y.float().sum().backward()
    assert x.grad.dtype == dtype and w.grad.dtype == dtype and torch.isfinite(w.grad.float()).all()
    ref = F.avg_pool2d(F.max_pool2d(F.relu(F.conv2d(x.float(), w.float(), padding=1)), 2), 2)
    assert math.isclose(float(y.detach().float().sum()), float(ref.detach().sum()), rel_tol=0.05, abs_tol=0.5)


def test_bad_input_raises_the_core_error():
    with pytest.raises(ValueError, match="weight has 4 input channels but input has 3"):
        cf.conv2d(torch.zeros(2, 3, 8, 8), torch.zeros(16, 4, 3, 3), backend="torch")
    with pytest.raises(TypeError, match="must be a floating array"):
        cf.relu(torch.zeros(3, dtype=torch.int64), backend="torch")
    with pytest.raises(ValueError, match="class index 5"):
        cf.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 5]), backend="torch")


def test_lecture_golden_examples():
    x = torch.arange(1.0, 10.0, dtype=torch.float64).reshape(1, 1, 3, 3)
    k = torch.tensor([[[[-1.0, -2, -1], [0, 0, 0], [1, 2, 1]]]], dtype=torch.float64)
    s = cf.conv2d(x, k, padding="same", flip=True, backend="torch")
    assert s[0, 0].tolist() == [[-13.0, -20.0, -17.0], [-18.0, -24.0, -18.0], [13.0, 20.0, 17.0]]


@pytest.mark.parametrize("shape", [(16, 1, 3, 3), (1, 3, 3, 3), (8, 4, 1, 1)])
def test_weight_gradient_is_laid_out_like_the_weight(shape):
    """DistributedDataParallel's gradient buckets expect dW with W's strides, size-1 axes included."""
    x = torch.randn(4, shape[1], 8, 8, requires_grad=True)
    w = torch.randn(*shape, requires_grad=True)
    cf.conv2d(x, w, stride=2, backend="torch").sum().backward()
    assert w.grad.stride() == w.stride()
    ref = leaf(w)
    F.conv2d(x.detach(), ref, stride=2).sum().backward()
    close(w.grad, ref.grad, torch.float32)


def test_strided_weight_gradient_is_the_same_in_batch_chunks(monkeypatch):
    """The columns route sums dW over batch chunks; chunks of one sample give native's dW."""
    x = torch.randn(5, 8, 9, 9, dtype=torch.float64)
    w = torch.randn(4, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    monkeypatch.setattr(ops, "COLUMNS_CHUNK_BYTES", 1)  # one sample per chunk
    cf.conv2d(x, w, stride=2, padding=1, backend="torch").sum().backward()
    ref = leaf(w)
    F.conv2d(x, ref, stride=2, padding=1).sum().backward()
    close(w.grad, ref.grad, torch.float64)
