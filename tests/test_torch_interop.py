"""cnnkit_torch as a PyTorch citizen: higher-order gradients, torch.func, autocast, compile, export.

Every check compares with native ``torch.nn`` on the same weights.
"""

from __future__ import annotations

import functools

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from cnnkit_torch import nn as cnn  # noqa: E402
from test_torch_backend import GRADCHECKS, _entry  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from cnnkit import functional as cf  # noqa: E402

F64 = dict(rtol=1e-7, atol=1e-9)


def _one_per_op_and_route() -> list[str]:
    """The first record case of each op, and every torch-specific route entry of GRADCHECKS."""
    from cnnkit.conformance import all_cases

    by_id = {c.id: c.op for c in all_cases()}
    seen, names = set(), []
    for name in GRADCHECKS:
        op = by_id.get(name)
        if op is None or op not in seen:
            names.append(name)
            seen.add(op)
    return names


EVERY_OP = _one_per_op_and_route()

# torch.func's forward mode scripts a helper on first use, and torch.jit.script now warns
# (and Dynamo instantiates autograd.Function classes while it traces them, which warns too)
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning"),
]


def _pair(dtype=torch.float64):
    """The same small CNN twice: on cnnkit's ops and on torch.nn, with the same weights."""
    torch.manual_seed(0)
    ours = torch.nn.Sequential(
        cnn.Conv2d(1, 3, 3, padding=1),
        cnn.Tanh(),
        cnn.MaxPool2d(2),
        cnn.Conv2d(3, 4, 3, stride=2, padding=1),
        cnn.Sigmoid(),
        cnn.AvgPool2d(2, 1),
        cnn.Flatten(),
        cnn.Linear(4, 3),
    ).to(dtype)
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3, padding=1),
        torch.nn.Tanh(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(3, 4, 3, stride=2, padding=1),
        torch.nn.Sigmoid(),
        torch.nn.AvgPool2d(2, 1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    ).to(dtype)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


# -- higher-order gradients ----------------------------------------------------------------------


@pytest.mark.parametrize("name", EVERY_OP)
def test_gradgradcheck(name):
    """Every op, every conv route: the backward is differentiable, by hand-derived formulas."""
    fn, _, inputs = _entry(name)
    assert torch.autograd.gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5)


class _OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


#: The ops that came after the toolbox work (issue 10): their double backward runs no aten
#: ``*_backward`` op at all, every GRADCHECKS case of them.
_NEWER_OPS = ("conv_transpose", "adaptive_", "max_unpool", "pad", "batch_norm", "dropout")
_NO_ATEN_BACKWARD = [k for k in GRADCHECKS if k.startswith(("conv", "max_pool", "avg_pool"))][::2]
_NO_ATEN_BACKWARD += [k for k in GRADCHECKS if k.startswith(_NEWER_OPS) and k not in _NO_ATEN_BACKWARD]


@pytest.mark.parametrize("name", _NO_ATEN_BACKWARD)
def test_double_backward_runs_no_aten_conv_or_pool_backward(name):
    fn, _, inputs = _entry(name)
    y = fn(*inputs)
    v = torch.ones_like(y, requires_grad=True)  # the backward's own backward: d/dδ of the gradients
    gs = torch.autograd.grad(y, inputs, v, create_graph=True)
    with _OpLog() as log:
        torch.autograd.grad(sum((g * g).sum() for g in gs), [v, *inputs], allow_unused=True)
    banned = ("convolution_backward", "pool2d_backward", "pool3d_backward", "pool1d_backward")
    if name.startswith(_NEWER_OPS):
        banned = ("backward",)  # transposed conv, pad, adaptive pools, unpooling, norm, dropout
    assert log.names and not [n for n in log.names if any(b in n for b in banned)], log.names


def test_hessian_of_a_small_cnn_matches_native():
    ours, theirs = _pair()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    h = torch.autograd.functional.hessian(lambda v: ours(v).pow(2).sum(), x)
    h_ref = torch.autograd.functional.hessian(lambda v: theirs(v).pow(2).sum(), x)
    assert h_ref.abs().max() > 1e-5  # not trivially zero
    torch.testing.assert_close(h, h_ref, **F64)


def test_torch_func_hessian_of_a_small_cnn_matches_native():
    """torch.func.hessian (jacfwd over jacrev): forward mode over the vmapped Functions, whose
    attributes hold tuples (strides, padding pairs, shapes) that functorch's vmap rule must not
    flatten (they go in as one leaf each: ``CnnkitFunction.apply``)."""
    ours, theirs = _pair()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    h, h_ref = (torch.func.hessian(lambda v, m=m: m(v).pow(2).sum())(x) for m in (ours, theirs))
    assert h_ref.abs().max() > 1e-5
    torch.testing.assert_close(h, h_ref, **F64)


def _penalty_step_grads(model, x):
    """A WGAN-GP critic step: the parameters' gradients of ``mean(critic) + 10 (|∇x critic| - 1)²``,
    through the input gradient (a second derivative)."""
    xi = x.clone().requires_grad_(True)
    critic = model(xi).sum(1)
    (gx,) = torch.autograd.grad(critic.sum(), xi, create_graph=True)
    penalty = ((gx.flatten(1).norm(dim=1) - 1) ** 2).mean()
    return torch.autograd.grad(critic.mean() + 10 * penalty, list(model.parameters()))


def test_wgan_gradient_penalty_step_matches_native():
    ours, theirs = _pair()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    grads = [_penalty_step_grads(model, x) for model in (ours, theirs)]
    for g, g_ref in zip(*grads):
        torch.testing.assert_close(g, g_ref, **F64)


def test_cross_entropy_double_backward_matches_native():
    logits = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 3, 1, 1, 2])
    out = []
    for loss_fn in (cnn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss()):
        (g,) = torch.autograd.grad(loss_fn(logits, t), logits, create_graph=True)
        out.append(torch.autograd.grad(g.pow(3).sum(), logits)[0])
    torch.testing.assert_close(out[0], out[1], **F64)


# -- torch.func: vmap, jvp, grad, jacrev ---------------------------------------------------------


@pytest.mark.parametrize("name", EVERY_OP)
def test_jacrev_and_jacfwd_equal_the_autograd_jacobian(name):
    """jacrev is vmap over the hand-derived backward, jacfwd vmap over the hand-derived jvp;
    both equal the Jacobian built row by row from plain backward passes."""
    fn, _, inputs = _entry(name)
    argnums = tuple(range(len(inputs)))
    expected = torch.autograd.functional.jacobian(fn, tuple(inputs))
    for jac in (torch.func.jacrev, torch.func.jacfwd):
        got = jac(fn, argnums=argnums)(*inputs)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, **F64)


@pytest.mark.parametrize("name", EVERY_OP[::2])
def test_forward_mode_gradcheck(name):
    fn, _, inputs = _entry(name)
    assert torch.autograd.gradcheck(
        fn,
        inputs,
        eps=1e-6,
        atol=1e-6,
        check_forward_ad=True,
        check_backward_ad=False,
        check_batched_forward_grad=True,
    )


def test_vmap_over_a_batch_of_weights_matches_native():
    ours, theirs = cnn.Conv2d(2, 3, 3, padding=1).double(), torch.nn.Conv2d(2, 3, 3, padding=1).double()
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    ws = torch.randn(5, 3, 2, 3, 3, dtype=torch.float64)

    def run(model):
        return torch.func.vmap(
            lambda w: torch.func.functional_call(model, {"weight": w, "bias": model.bias}, (x,))
        )(ws)

    theirs.load_state_dict(ours.state_dict())
    torch.testing.assert_close(run(ours), run(theirs), **F64)


def test_jvp_of_a_small_cnn_matches_native():
    ours, theirs = _pair()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    v = torch.randn_like(x)
    (y, dy), (y_ref, dy_ref) = (torch.func.jvp(m, (x,), (v,)) for m in (ours, theirs))
    torch.testing.assert_close(y, y_ref, **F64)
    torch.testing.assert_close(dy, dy_ref, **F64)


def test_grad_and_jacrev_of_a_model_with_cnnkit_loss_match_native():
    ours, theirs = _pair()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([0, 2, 1])
    results = []
    for model, loss in ((ours, cnn.CrossEntropyLoss()), (theirs, torch.nn.CrossEntropyLoss())):
        params = {k: v.detach() for k, v in model.named_parameters()}
        g = torch.func.grad(lambda p, m=model, f=loss: f(torch.func.functional_call(m, p, (x,)), t))(params)
        plain = torch.func.grad(lambda p, m=model: torch.func.functional_call(m, p, (x,)).sum())(params)
        j = torch.func.jacrev(lambda v, m=model, f=loss: f(m(v), t))(x)
        results.append((g, plain, j))
    (g, plain, j), (g_ref, plain_ref, j_ref) = results
    for key in g_ref:
        torch.testing.assert_close(g[key], g_ref[key], **F64)
        torch.testing.assert_close(plain[key], plain_ref[key], **F64)
    torch.testing.assert_close(j, j_ref, **F64)


# -- autocast ------------------------------------------------------------------------------------


def test_autocast_bfloat16_forward_and_backward_match_native():
    """Conv and linear run in bfloat16, pools and activations in their input's dtype, the loss
    in float32, exactly as native ops under autocast; gradients come back in float32."""
    ours, theirs = _pair(torch.float32)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0, 2, 1])
    runs = []
    for model, loss_fn in ((ours, cnn.CrossEntropyLoss()), (theirs, torch.nn.CrossEntropyLoss())):
        dtypes, h = [], x.clone().requires_grad_(True)
        with torch.autocast("cpu", torch.bfloat16):
            out = h
            for layer in model:
                out = layer(out)
                dtypes.append(out.dtype)
            loss = loss_fn(out, t)
        loss.backward()
        runs.append((dtypes, loss, h.grad, [p.grad for p in model.parameters()]))
    (dt, loss, gx, gp), (dt_ref, loss_ref, gx_ref, gp_ref) = runs
    assert dt == dt_ref and torch.bfloat16 in dt and loss.dtype == loss_ref.dtype == torch.float32
    tol = dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(loss, loss_ref, **tol)
    assert gx.dtype == torch.float32
    torch.testing.assert_close(gx, gx_ref, **tol)
    for g, g_ref in zip(gp, gp_ref):
        assert g.dtype == g_ref.dtype == torch.float32
        torch.testing.assert_close(g, g_ref, **tol)


def test_autocast_lowers_conv_transpose_as_native():
    """The transposed conv is a conv-like op (``autocast = "lower"``): bfloat16 under autocast, as
    native ``conv_transpose2d``; its gradients come back in the float32 of the inputs."""
    torch.manual_seed(0)
    ours, theirs = cnn.ConvTranspose2d(3, 4, 3, 2, 1, 1), torch.nn.ConvTranspose2d(3, 4, 3, 2, 1, 1)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    runs = []
    for model in (ours, theirs):
        h = x.clone().requires_grad_(True)
        with torch.autocast("cpu", torch.bfloat16):
            y = model(h)
        y.float().square().sum().backward()
        runs.append((y, h.grad, model.weight.grad))
    (y, gx, gw), (y_ref, gx_ref, gw_ref) = runs
    assert y.dtype == y_ref.dtype == torch.bfloat16 and gx.dtype == gw.dtype == torch.float32
    for a, b in ((y, y_ref), (gx, gx_ref), (gw, gw_ref)):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)


def test_autocast_keeps_batch_norm_in_its_inputs_dtype_as_native():
    """Native batch norm is on no autocast list: a bfloat16 input (a conv's output) stays
    bfloat16, its float32 parameters and running statistics stay float32, and so do their
    gradients (``autocast = "input"``; the running statistics are never cast)."""
    torch.manual_seed(0)
    pairs = [(cnn.Conv2d(3, 4, 1), cnn.BatchNorm2d(4)), (torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))]
    pairs[1][0].load_state_dict(pairs[0][0].state_dict())
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    v = torch.randn(4, 4, 5, 5, generator=torch.Generator().manual_seed(2))
    runs = []
    for conv, bn in pairs:
        h = x.clone().requires_grad_(True)
        with torch.autocast("cpu", torch.bfloat16):
            y = bn(conv(h))
        (y.float() * v).sum().backward()
        runs.append((y, h.grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var))
    (y, *rest), (y_ref, *rest_ref) = runs
    assert y.dtype == y_ref.dtype == torch.bfloat16
    for a, b in zip(rest, rest_ref):
        assert a.dtype == b.dtype == torch.float32
    for a, b in zip(runs[0], runs[1]):
        torch.testing.assert_close(a, b, rtol=3e-2, atol=3e-2)


# -- torch.compile and torch.export --------------------------------------------------------------


def _compile_pair():
    torch.manual_seed(0)
    # the second conv has 8 input channels: its weight gradient takes the GEMM route eagerly
    ours = torch.nn.Sequential(
        cnn.Conv2d(1, 8, 3, padding=1), cnn.ReLU(), cnn.MaxPool2d(2),
        cnn.Conv2d(8, 4, 3, padding=1), cnn.Flatten(), cnn.Linear(64, 3),
    )  # fmt: skip
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(64, 3),
    )  # fmt: skip
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _compiled_runs(model, x, calls=2):
    """``model`` is one graph with no break (``torch._dynamo.explain``); compiled with
    ``fullgraph=True``, ``calls`` forward+backward passes reuse that graph (no recompile).
    Returns each pass's ``(output, input gradient)``."""
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(x)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    runs = []
    for _ in range(calls):
        xi = x.clone().requires_grad_(True)
        y = compiled(xi)
        y.square().sum().backward()
        runs.append((y, xi.grad))
    assert counters["stats"]["unique_graphs"] == 1 and not counters["recompiles"]
    return runs


def test_compile_is_one_graph_with_no_break_and_matches_native():
    ours, theirs = _compile_pair()
    x = torch.randn(2, 1, 8, 8)
    xi = x.clone().requires_grad_(True)
    y_ref = theirs(xi)
    y_ref.square().sum().backward()
    for y, g in _compiled_runs(ours, x):
        torch.testing.assert_close(y, y_ref)
        torch.testing.assert_close(g, xi.grad)


def test_compile_of_a_deep_model_is_one_graph_with_no_recompile_per_op():
    """17 modules of 12 kinds (the shared dispatch frame once hit Dynamo's recompile limit):
    one graph, no break, and later calls reuse it."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        cnn.Conv2d(1, 8, 3, padding=1), cnn.BatchNorm2d(8), cnn.ReLU(),
        cnn.Conv2d(8, 8, 3, padding=1), cnn.ReLU(), cnn.MaxPool2d(2),
        cnn.Conv2d(8, 16, 3, padding=1), cnn.Tanh(), cnn.AvgPool2d(2),
        cnn.Conv2d(16, 16, 3, padding=1), cnn.Sigmoid(), cnn.AdaptiveAvgPool2d(1),
        cnn.Flatten(), cnn.Linear(16, 8), cnn.LeakyReLU(), cnn.Dropout(0.1), cnn.Linear(8, 3),
    ).eval()  # fmt: skip
    x = torch.randn(4, 1, 16, 16)
    xi = x.clone().requires_grad_(True)
    y_ref = model(xi)
    y_ref.square().sum().backward()
    for y, g in _compiled_runs(model, x, calls=3):
        torch.testing.assert_close(y, y_ref)
        torch.testing.assert_close(g, xi.grad)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_compile_of_the_newer_layers_is_one_graph_and_matches_native(mode):
    """BatchNorm2d (training: the running statistics move inside the graph), ConvTranspose2d,
    a reflect-padded conv, an adaptive pool: fullgraph, outputs, gradients, running statistics."""
    ours, theirs = _newer_pair()
    for m in (ours, theirs):
        m.train(mode == "train")
    x = _r(4, 1, 5, 5, seed=8)
    torch._dynamo.reset()
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
    runs = []
    for model in (compiled, theirs):
        xi = x.clone().requires_grad_(True)
        y = model(xi)
        y.square().sum().backward()
        runs.append((y, xi.grad, *(p.grad for p in model.parameters())))
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, **F64)
    torch.testing.assert_close(ours[1].running_mean, theirs[1].running_mean, **F64)
    torch.testing.assert_close(ours[1].running_var, theirs[1].running_var, **F64)


# -- expanded and unusual tensors ----------------------------------------------------------------

_ROUTES = {  # x shape, w shape, stride, groups: one per Conv.backward route
    "im2col": ((2, 2, 6, 6), (16, 2, 3, 3), 1, 1),
    "gemm": ((2, 8, 6, 6), (4, 8, 3, 3), 1, 1),
    "columns": ((2, 8, 7, 7), (4, 8, 3, 3), 2, 1),
    "conv": ((2, 3, 6, 6), (6, 1, 3, 3), 1, 3),
}


def _expanded(*shapes, seed=5):
    """Leaves of batch (first axis) 1, broadcast to ``shapes`` (stride 0 on the first axis)."""
    g = torch.Generator().manual_seed(seed)
    leaves = [torch.randn(1, *s[1:], dtype=torch.float64, generator=g).requires_grad_(True) for s in shapes]
    return leaves, [leaf.expand(s) for leaf, s in zip(leaves, shapes)]


def _non_contiguous_like(y):
    g = torch.randn(y.shape[::-1], dtype=y.dtype, generator=torch.Generator().manual_seed(9))
    return g.permute(*reversed(range(y.dim())))


@pytest.mark.parametrize("route", list(_ROUTES))
def test_broadcast_weights_expanded_batches_and_non_contiguous_gradients(route):
    xs, ws, stride, groups = _ROUTES[route]
    results = []
    for conv in (cnn.Conv2d, torch.nn.Conv2d):
        leaves, (x, w, b) = _expanded(xs, ws, (ws[0],))
        y = torch.nn.functional.conv2d(x, w, b, stride, 1, 1, groups) if conv is torch.nn.Conv2d else None
        if y is None:
            from cnnkit import functional as cf

            y = cf.conv2d(x, w, b, stride, 1, 1, groups, backend="torch")
        gy = _non_contiguous_like(y)
        first = torch.autograd.grad(y, leaves, gy, create_graph=True)
        second = torch.autograd.grad(sum((g * g).sum() for g in first), leaves, materialize_grads=True)
        results.append((y, first, second))
    for ours, theirs in zip(*results):
        for a, b in zip(
            ours if isinstance(ours, tuple) else [ours], theirs if isinstance(theirs, tuple) else [theirs]
        ):
            torch.testing.assert_close(a, b, **F64)


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d", "relu", "linear"])
def test_expanded_inputs_of_the_other_ops(op):
    from cnnkit import functional as cf

    shapes = [(4, 5), (3, 5), (3,)] if op == "linear" else [(4, 3, 6, 6)]
    ours = getattr(cf, op)
    theirs = getattr(torch.nn.functional, op)
    results = []
    for fn in (lambda *a: ours(*a, backend="torch"), theirs):
        leaves, inputs = _expanded(*shapes)
        extra = (2,) if "pool" in op else ()
        y = fn(*inputs, *extra)
        results.append(torch.autograd.grad(y, leaves, _non_contiguous_like(y)))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **F64)


def test_an_op_that_stays_first_order_raises_one_clear_error():
    """_first_order_only: every route to a second derivative raises, none returns zeros."""
    from cnnkit_torch import ops

    class Square(ops.CnnkitFunction):
        @staticmethod
        def forward(x):
            return x * x

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        @staticmethod
        @ops._first_order_only
        def backward(ctx, dy):
            (x,) = ctx.saved_tensors
            return 2 * x * dy

    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(Square.apply(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        g.sum().backward()
    with pytest.raises(RuntimeError, match="differentiate twice"):
        torch.autograd.functional.hessian(lambda v: Square.apply(v).sum(), x)


# -- the newer ops (transposed conv, pad, adaptive pools, unpooling, batch norm, dropout) -------


def _r(*shape, seed=0, positive=False):
    t = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return t.abs() + 0.5 if positive else t


_RM, _RV = _r(3, seed=11), _r(3, seed=12, positive=True)  # running statistics (constants)
_POOLED, _IDX = F.max_pool2d(_r(2, 3, 6, 6, seed=13), 2, return_indices=True)
_MASK = cf.dropout(torch.ones(2, 3, 4, 4, dtype=torch.float64), 0.5, generator=7, backend="torch")
_MASK2D = cf.dropout2d(torch.ones(2, 3, 4, 4, dtype=torch.float64), 0.5, generator=7, backend="torch")

#: op -> (cnnkit's, native's, input shapes): the same function of the same float inputs.
NEWER = {
    "conv_transpose2d": (
        lambda x, w, b: cf.conv_transpose2d(x, w, b, 2, 1, 1, backend="torch"),
        lambda x, w, b: F.conv_transpose2d(x, w, b, 2, 1, 1),
        [(2, 4, 3, 4), (4, 3, 3, 3), (3,)],
    ),
    "conv_transpose2d_groups_dilation_outpad": (  # output_padding >= stride: units no window reads
        lambda x, w, b: cf.conv_transpose2d(x, w, b, 1, (1, 0), 1, 2, 2, backend="torch"),
        lambda x, w, b: F.conv_transpose2d(x, w, b, 1, (1, 0), 1, 2, 2),
        [(2, 4, 4, 3), (4, 1, 2, 3), (2,)],
    ),
    "conv_transpose1d_stride3": (
        lambda x, w: cf.conv_transpose1d(x, w, None, 3, 2, backend="torch"),
        lambda x, w: F.conv_transpose1d(x, w, None, 3, 2),
        [(2, 2, 5), (2, 3, 4)],
    ),
    "batch_norm_train": (
        lambda x, w, b: cf.batch_norm(x, _RM.clone(), _RV.clone(), w, b, True, backend="torch"),
        lambda x, w, b: F.batch_norm(x, _RM.clone(), _RV.clone(), w, b, True),
        [(4, 3, 3, 2), (3,), (3,)],
    ),
    "batch_norm_train_no_stats_no_affine": (
        lambda x: cf.batch_norm(x, None, None, None, None, True, eps=0.1, backend="torch"),
        lambda x: F.batch_norm(x, None, None, None, None, True, eps=0.1),
        [(5, 3, 4)],
    ),
    "batch_norm_eval": (
        lambda x, w, b: cf.batch_norm(x, _RM, _RV, w, b, False, backend="torch"),
        lambda x, w, b: F.batch_norm(x, _RM, _RV, w, b, False),
        [(4, 3, 3, 2), (3,), (3,)],
    ),
    "adaptive_avg_pool2d": (
        lambda x: cf.adaptive_avg_pool2d(x, (3, 2), backend="torch"),
        lambda x: F.adaptive_avg_pool2d(x, (3, 2)),
        [(2, 3, 5, 7)],
    ),
    "adaptive_max_pool2d": (
        lambda x: cf.adaptive_max_pool2d(x, (2, 3), backend="torch"),
        lambda x: F.adaptive_max_pool2d(x, (2, 3)),
        [(2, 3, 5, 7)],
    ),
    "max_unpool2d": (
        lambda x: cf.max_unpool2d(x, _IDX, 2, backend="torch"),
        lambda x: F.max_unpool2d(x, _IDX, 2),
        [tuple(_POOLED.shape)],
    ),
    **{
        f"pad_{mode}": (
            lambda x, m=mode: cf.pad(x, (1, 2, 2, 1), m, backend="torch"),
            lambda x, m=mode: F.pad(x, (1, 2, 2, 1), m),
            [(2, 3, 4, 5)],
        )
        for mode in ("constant", "reflect", "replicate", "circular")
    },
    "dropout": (  # the same seed draws the same mask: native is x ⊙ mask
        lambda x: cf.dropout(x, 0.5, generator=7, backend="torch"),
        lambda x: x * _MASK,
        [(2, 3, 4, 4)],
    ),
    "dropout2d": (
        lambda x: cf.dropout2d(x, 0.5, generator=7, backend="torch"),
        lambda x: x * _MASK2D,
        [(2, 3, 4, 4)],
    ),
}


def _second_derivatives(fn, shapes):
    """The first gradients (create_graph) for a random δ, then the gradient of a weighted sum of
    their squares w.r.t. δ and every input: the backward's own derivatives, in every argument."""
    inputs = [_r(*s, seed=i).requires_grad_(True) for i, s in enumerate(shapes)]
    y = fn(*inputs)
    v = _r(*y.shape, seed=20).requires_grad_(True)
    gs = torch.autograd.grad(y, inputs, v, create_graph=True)
    loss = sum((g * g * _r(*g.shape, seed=30 + i)).sum() for i, g in enumerate(gs))
    return (y, *gs, *torch.autograd.grad(loss, [v, *inputs], materialize_grads=True))


@pytest.mark.parametrize("name", list(NEWER))
def test_second_derivatives_of_the_newer_ops_equal_native(name):
    ours, theirs, shapes = NEWER[name]
    got, want = _second_derivatives(ours, shapes), _second_derivatives(theirs, shapes)
    assert any(w.abs().max() > 1e-3 for w in want[len(shapes) + 1 :])  # not trivially zero
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **F64)


@pytest.mark.parametrize("name", list(NEWER))
@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")  # native max_unpool2d
def test_jvp_and_jacfwd_of_the_newer_ops_equal_native(name):
    """torch.func.jvp and jacfwd (vmap over the jvp), every input with a tangent. Dropout's mask
    is drawn once for all tangents (``randomness="same"``), as it would be for native dropout."""
    ours, theirs, shapes = NEWER[name]
    inputs = [_r(*s, seed=i) for i, s in enumerate(shapes)]
    tangents = [_r(*s, seed=10 + i) for i, s in enumerate(shapes)]
    argnums = tuple(range(len(inputs)))
    (y, dy), (y_ref, dy_ref) = (torch.func.jvp(f, tuple(inputs), tuple(tangents)) for f in (ours, theirs))
    torch.testing.assert_close(y, y_ref, **F64)
    torch.testing.assert_close(dy, dy_ref, **F64)
    jacs = (torch.func.jacfwd(f, argnums=argnums, randomness="same")(*inputs) for f in (ours, theirs))
    for got, want in zip(*jacs):
        torch.testing.assert_close(got, want, **F64)


def test_batch_norm_grad_is_differentiable_again():
    """BatchNormGrad's own backward (the third derivative of batch norm) and its jvp, by gradcheck,
    with μ, 1/σ and ŷ recomputed from y on every perturbation (they are functions of y)."""
    from cnnkit_torch import ops

    def grads(dy, x, w, training):
        with torch.no_grad():
            _, mu, inv_std = ops.BatchNorm.forward(x, w, None, _RM, _RV, training, 0.1, 1e-5)
        return ops.BatchNormGrad.apply(dy, x, w, mu, inv_std, training, 1e-5, True, True)

    for training in (True, False):
        inputs = [_r(4, 3, 2, seed=1), _r(4, 3, 2, seed=2), _r(3, seed=3)]
        inputs = [t.requires_grad_(True) for t in inputs]
        fn = functools.partial(grads, training=training)
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, check_forward_ad=True)
        assert torch.autograd.gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5)


def _newer_pair(track_running_stats=True, adaptive="avg"):
    """A small model of the newer layers twice, cnnkit_torch.nn and torch.nn, one state dict."""

    def build(nn):
        pool = nn.AdaptiveAvgPool2d(2) if adaptive == "avg" else nn.AdaptiveMaxPool2d(2)
        return torch.nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1, padding_mode="reflect"),
            nn.BatchNorm2d(3, track_running_stats=track_running_stats),
            nn.Tanh(),
            nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1),
            nn.Sigmoid(),
            pool,
            nn.Flatten(),
            nn.Linear(8, 2),
        ).double()

    torch.manual_seed(0)
    ours, theirs = build(cnn), build(torch.nn)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


@pytest.mark.parametrize("adaptive", ["avg", "max"])
def test_gradient_penalty_step_of_the_newer_layers_matches_native(adaptive):
    """WGAN-GP with BatchNorm2d (training, running statistics), ConvTranspose2d and an adaptive
    pool: parameter gradients through the input gradient's norm, and the running statistics."""
    ours, theirs = _newer_pair(adaptive=adaptive)
    x = _r(4, 1, 5, 5, seed=2)
    grads = [_penalty_step_grads(model, x) for model in (ours, theirs)]
    for g, g_ref in zip(*grads):
        torch.testing.assert_close(g, g_ref, **F64)
    torch.testing.assert_close(ours[1].running_mean, theirs[1].running_mean, **F64)
    torch.testing.assert_close(ours[1].running_var, theirs[1].running_var, **F64)


@pytest.mark.parametrize("mode", ["train", "eval", "train_no_stats"])
def test_hessian_of_the_newer_layers_matches_native(mode):
    """The Hessian w.r.t. the input of a model with BatchNorm2d, ConvTranspose2d and an adaptive
    pool: autograd's, and torch.func.hessian's (forward over reverse), each against native's.
    (With running statistics in training, torch.func refuses native's module and ours alike:
    ``num_batches_tracked += 1`` mutates a captured buffer.)"""
    ours, theirs = _newer_pair(track_running_stats=mode != "train_no_stats")
    for m in (ours, theirs):
        m.train(mode != "eval")
    x = _r(2, 1, 4, 4, seed=3)
    results = []
    for m in (ours, theirs):
        f = lambda v, m=m: m(v).pow(2).sum()  # noqa: E731
        h = torch.autograd.functional.hessian(f, x)
        results.append((h, h if mode == "train" else torch.func.hessian(f)(x)))
    (h, h_func), (h_ref, h_func_ref) = results
    assert h_ref.abs().max() > 1e-5
    torch.testing.assert_close(h, h_ref, **F64)
    torch.testing.assert_close(h_func, h_func_ref, **F64)
    torch.testing.assert_close(h_func, h_ref, **F64)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_jvp_jacfwd_and_vmap_of_the_newer_layers_match_native(mode):
    ours, theirs = _newer_pair(track_running_stats=mode == "eval", adaptive="max")
    for m in (ours, theirs):
        m.train(mode == "train")
    x, v = _r(3, 1, 4, 4, seed=4), _r(3, 1, 4, 4, seed=5)
    (y, dy), (y_ref, dy_ref) = (torch.func.jvp(m, (x,), (v,)) for m in (ours, theirs))
    torch.testing.assert_close(y, y_ref, **F64)
    torch.testing.assert_close(dy, dy_ref, **F64)
    j, j_ref = (torch.func.jacfwd(m)(x) for m in (ours, theirs))
    torch.testing.assert_close(j, j_ref, **F64)
    xs = _r(5, 3, 1, 4, 4, seed=6)  # vmap over batches: batch norm's statistics per batch
    torch.testing.assert_close(torch.func.vmap(ours)(xs), torch.func.vmap(theirs)(xs), **F64)


def test_vmap_over_batch_norm_training_with_running_statistics_says_so():
    bn = cnn.BatchNorm2d(3).double()
    xs = _r(4, 2, 3, 2, 2, seed=7)
    with pytest.raises(RuntimeError, match="running statistics"):
        torch.func.vmap(bn)(xs)
    # batched running statistics (a buffer per vmapped batch) move per batch, as native's
    buffers = {k: v.expand(4, *v.shape).clone() for k, v in bn.named_buffers() if v.dim()}
    native = torch.nn.BatchNorm2d(3).double()
    native_buffers = {k: v.clone() for k, v in buffers.items()}

    def run(m, b):
        return torch.func.vmap(lambda x, bb: torch.func.functional_call(m, bb, (x,)))(xs, b)

    torch.testing.assert_close(run(bn, buffers), run(native, native_buffers), **F64)
    for k in buffers:
        torch.testing.assert_close(buffers[k], native_buffers[k], **F64)
