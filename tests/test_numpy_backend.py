"""The NumPy backend's own tests: vectorised kernels equal the literal loops, gradients equal
central finite differences, dtypes are kept, and the lecture's worked examples come out exactly."""

from __future__ import annotations

import numpy as np
import pytest
from cnnkit_numpy import ops
from cnnkit_numpy import reference as ref

import cnnkit
from cnnkit import functional as F
from cnnkit.conformance.cases import Random
from cnnkit.geometry import pool_padding
from cnnkit.registry import get_registry
from cnnkit.spec import TensorInfo

RNG = np.random.default_rng(20240607)


def rand(*shape, dtype=np.float64):
    return RNG.standard_normal(shape).astype(dtype)


def _off_zero(*shape):
    """Signed values with |x| in [0.25, 1.5], from their own seed: off the kink of p < 1."""
    rng = np.random.default_rng(5)
    return rng.uniform(0.25, 1.5, shape) * rng.choice([-1.0, 1.0], shape)


def pads(*pairs):
    return tuple(pairs)


# -- conv: vectorised == literal loops ------------------------------------------------------

# canonical attributes for the checks that need one fixed configuration
POOL_K2 = {
    "kernel_size": (2, 2),
    "stride": (2, 2),
    "padding": pads((0, 0), (0, 0)),
    "dilation": (1, 1),
    "ceil_mode": False,
}
POOL_K3_S2_PAD1 = {**POOL_K2, "kernel_size": (3, 3), "padding": pads((1, 1), (1, 1))}
POOL_CEIL_ASYM = {
    **POOL_K2,
    "kernel_size": (3, 3),
    "stride": (2, 3),
    "padding": pads((1, 0), (0, 1)),
    "ceil_mode": True,
}
CONV_GROUPS2 = {
    "stride": (1, 2),
    "padding": pads((1, 0), (1, 1)),
    "dilation": (1, 1),
    "groups": 2,
    "flip": False,
}
CONV_STRIDE2_FLIP = {
    "stride": (2, 2),
    "padding": pads((1, 1), (1, 1)),
    "dilation": (1, 1),
    "groups": 1,
    "flip": True,
}


def record_cases(op, every=1):
    """The op's own conformance cases (its record's), seeded random ones, every ``every``-th,
    as ``(id, input values, canonical attributes)``: the same list every backend is held to."""
    spec = get_registry().op(op)
    cases = [
        c
        for c in spec.cases()
        if c.raises is None and all(v is None or isinstance(v, Random) for v in c.inputs)
    ]
    picked = cases[::every] + [c for c in cases[1::every] if "manyfilters" in c.id or "asym" in c.id]
    out = []
    for case in picked:
        values = [None if v is None else v.make("float64") for v in case.inputs]
        infos = [None if a is None else TensorInfo(a.shape, a.dtype.name) for a in values]
        out.append(pytest.param(values, spec.bind(op, infos, dict(case.attrs)), id=case.id))
    return out


@pytest.mark.parametrize(("values", "attrs"), record_cases("conv", every=3))
def test_conv_equals_reference(values, attrs):
    x, w, b = values
    flip = attrs["flip"]
    out, ctx = ops.conv_forward(x, w, b, **attrs)
    np.testing.assert_allclose(out, ref.conv(x, w, b, **attrs), rtol=1e-12, atol=1e-12)

    delta = rand(*out.shape)
    dx, dw, db = ops.conv_backward(ctx, delta)
    if attrs["padding_mode"] != "zeros":
        return  # the padding's backward is pad_nd's, held to the reference by the conformance suite
    plain = {k: v for k, v in attrs.items() if k not in ("flip", "padding_mode")}
    w_used = w[(slice(None), slice(None), *(slice(None, None, -1),) * (w.ndim - 2))] if flip else w
    rdx, rdw, rdb = ref.conv_backward(x, w_used, delta, **plain)
    if flip:  # dE/dW of rot180(W) is rot180 of dE/d(rot180 W)
        rdw = rdw[(slice(None), slice(None), *(slice(None, None, -1),) * (w.ndim - 2))]
    np.testing.assert_allclose(dx, rdx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, rdw, rtol=1e-12, atol=1e-12)
    if b is None:
        assert db is None
    else:
        np.testing.assert_allclose(db, rdb, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride", [(2, 1), (1, 1)], ids=["strided", "padded-grid"])
@pytest.mark.parametrize("keep", [0, 1 << 30], ids=["recompute", "keep"])
def test_conv_batch_chunks_agree(monkeypatch, keep, stride):
    x, w, b = rand(5, 3, 7, 6), rand(4, 3, 3, 3), rand(4)
    attrs = {
        "stride": stride,
        "padding": pads((1, 2), (1, 1)),
        "dilation": (1, 2),
        "groups": 1,
        "flip": False,
    }
    whole, ctx = ops.conv_forward(x, w, b, **attrs)
    delta = rand(*whole.shape)
    grads = ops.conv_backward(ctx, delta)
    monkeypatch.setattr(ops, "CHUNK_BYTES", 1)  # one sample per chunk
    monkeypatch.setattr(ops, "KEEP_COLUMNS_BYTES", keep)
    chunked, ctx = ops.conv_forward(x, w, b, **attrs)
    np.testing.assert_allclose(chunked, whole, rtol=1e-13, atol=1e-13)
    for g_chunked, g_whole in zip(ops.conv_backward(ctx, delta), grads):
        np.testing.assert_allclose(g_chunked, g_whole, rtol=1e-13, atol=1e-13)


def test_conv_no_bias_gives_none_and_empty_batch_works():
    out, ctx = ops.conv_forward(
        rand(0, 2, 5, 5), rand(3, 2, 3, 3), None, stride=(1, 1), padding=pads((1, 1), (1, 1)),
        dilation=(1, 1), groups=1, flip=False,
    )  # fmt: skip
    assert out.shape == (0, 3, 5, 5)
    dx, dw, db = ops.conv_backward(ctx, np.zeros(out.shape))
    assert dx.shape == (0, 2, 5, 5) and db is None
    assert np.all(dw == 0)


# -- pooling: vectorised == literal loops ---------------------------------------------------


@pytest.mark.parametrize("data", ["random", "ties", "negative", "nan"])
@pytest.mark.parametrize(("values", "attrs"), record_cases("max_pool", every=3))
def test_max_pool_equals_reference(values, attrs, data):
    x = values[0]
    if data == "ties":  # few distinct values: many windows hold their maximum twice
        x = np.round(x).clip(-1, 1)
    elif data == "negative":  # the -inf padding must lose against every real unit
        x = -np.abs(x) - 5
    elif data == "nan":  # a NaN wins its windows (the first NaN, if several)
        x.flat[:: max(3, x.size // 4)] = np.nan
    out, ctx = ops.max_pool_forward(x, **attrs)
    rout, winner = ref.max_pool(x, **attrs)
    np.testing.assert_array_equal(out, rout)
    delta = rand(*out.shape)
    (dx,) = ops.max_pool_backward(ctx, delta)
    np.testing.assert_allclose(dx, ref.max_pool_backward(x, delta, winner, **attrs), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize(("values", "attrs"), record_cases("max_pool", every=6))
def test_max_pool_backward_non_finite_delta_reaches_only_the_winner(values, attrs, bad):
    # the fast scatter multiplies δ by a 0/1 mask; a non-finite δ must still give 0 elsewhere
    x = values[0]
    out, ctx = ops.max_pool_forward(x, **attrs)
    _, winner = ref.max_pool(x, **attrs)
    delta = rand(*out.shape)
    delta.flat[0] = bad
    (dx,) = ops.max_pool_backward(ctx, delta)
    expected = ref.max_pool_backward(x, delta, winner, **attrs)
    np.testing.assert_allclose(dx, expected, rtol=1e-14, atol=1e-14)
    assert np.isfinite(dx).sum() == dx.size - 1


def test_max_pool_ties_go_to_the_first_maximum():
    x = np.array([[[[1.0, 3.0], [3.0, 3.0]]]])
    attrs = {"kernel_size": (2, 2), "stride": (2, 2), "padding": ((0, 0), (0, 0)), "dilation": (1, 1)}
    out, ctx = ops.max_pool_forward(x, **attrs, ceil_mode=False)
    (dx,) = ops.max_pool_backward(ctx, np.ones_like(out))
    assert out.item() == 3.0
    assert dx[0, 0].tolist() == [[0.0, 1.0], [0.0, 0.0]]


@pytest.mark.parametrize(("values", "attrs"), record_cases("avg_pool", every=2))
def test_avg_pool_equals_reference(values, attrs):
    x = values[0]
    out, _ = ops.avg_pool_forward(x, **attrs)
    np.testing.assert_allclose(out, ref.avg_pool(x, **attrs), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize(("values", "attrs"), record_cases("lp_pool", every=2))
def test_lp_pool_equals_reference(values, attrs):
    x = values[0]
    out, _ = ops.lp_pool_forward(x, **attrs)
    np.testing.assert_allclose(out, ref.lp_pool(x, **attrs), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, 0.5])
def test_lp_pool_all_zero_windows_give_zero_gradient(p):
    x = rand(1, 2, 4, 4)
    x[:, :, :2, :2] = 0.0  # the first window of each channel is all zeros
    out, ctx = ops.lp_pool_forward(x, **POOL_K2, norm_type=p)
    assert np.all(out[:, :, 0, 0] == 0)
    (dx,) = ops.lp_pool_backward(ctx, np.ones_like(out))
    assert np.all(np.isfinite(dx))
    assert np.all(dx[:, :, :2, :2] == 0)


def test_lp_pool_is_the_true_norm_with_abs():
    x = -np.ones((1, 1, 2, 2))
    out, _ = ops.lp_pool_forward(x, **POOL_K2, norm_type=3.0)
    np.testing.assert_allclose(out, [[[[4.0 ** (1 / 3)]]]])


def test_avg_pool_ceil_extra_region_is_not_counted():
    # 5 units, k=2, s=2, ceil: last window holds one real unit and one unit past the input
    x = np.arange(1.0, 6.0).reshape(1, 1, 5)
    attrs = {
        "kernel_size": (2,),
        "stride": (2,),
        "padding": pads((0, 0)),
        "dilation": (1,),
        "ceil_mode": True,
    }
    for cip in (True, False):
        out, _ = ops.avg_pool_forward(x, **attrs, count_include_pad=cip)
        assert out[0, 0].tolist() == [1.5, 3.5, 5.0]
    out, _ = ops.avg_pool_forward(x, **{**attrs, "padding": pads((1, 1))}, count_include_pad=True)
    assert out[0, 0].tolist() == [0.5, 2.5, 4.5]


# -- float32 stays float32 ------------------------------------------------------------------

F32_CALLS = [
    ("conv", lambda x: ops.conv_forward(x, rand(4, 2, 3, 3, dtype=np.float32), rand(4, dtype=np.float32),
                                        **CONV_GROUPS2)),
    ("conv-flip", lambda x: ops.conv_forward(x, rand(4, 4, 3, 3, dtype=np.float32), None,
                                             **CONV_STRIDE2_FLIP)),
    ("max_pool", lambda x: ops.max_pool_forward(x, **POOL_K3_S2_PAD1)),
    ("avg_pool", lambda x: ops.avg_pool_forward(x, **POOL_CEIL_ASYM, count_include_pad=False)),
    ("lp_pool", lambda x: ops.lp_pool_forward(x, **POOL_K3_S2_PAD1, norm_type=2.5)),
    ("relu", ops.relu_forward),
    ("leaky_relu", lambda x: ops.leaky_relu_forward(x, negative_slope=0.1)),
    ("sigmoid", ops.sigmoid_forward),
    ("tanh", ops.tanh_forward),
    ("flatten", lambda x: ops.flatten_forward(x, start_dim=1, end_dim=3)),
    ("linear", lambda x: ops.linear_forward(x, rand(3, 7, dtype=np.float32), rand(3, dtype=np.float32))),
]  # fmt: skip


@pytest.mark.parametrize("name,forward", F32_CALLS, ids=[c[0] for c in F32_CALLS])
def test_float32_stays_float32(name, forward):
    x = rand(2, 4, 6, 7, dtype=np.float32)
    kernel_backward = ops.KERNELS[name.split("-")[0]][1]
    out, ctx = forward(x)
    assert out.dtype == np.float32
    # a float64 δ must not upcast the gradients either
    grads = kernel_backward(ctx, np.ones(out.shape, dtype=np.float64))
    assert all(g is None or g.dtype == np.float32 for g in grads)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_float32_and_zero_d_output(reduction):
    z = rand(5, 4, dtype=np.float32)
    t = np.array([0, 3, 1, 1, 2])
    out, ctx = ops.cross_entropy_forward(z, t, reduction=reduction, ignore_index=-100, label_smoothing=0.0)
    assert out.dtype == np.float32
    assert out.shape == ((5,) if reduction == "none" else ())
    assert isinstance(out, np.ndarray)
    dz, dt, dw = ops.cross_entropy_backward(ctx, np.ones(out.shape, dtype=np.float64))
    assert dz.dtype == np.float32 and dt is None and dw is None


# -- gradients against central finite differences (float64, through cnnkit.vjp) ---------


def check_gradients(fn, inputs, *, eps=1e-6, rtol=1e-6, **attrs):
    """Every float input's manual gradient equals central differences of Σ out·g."""
    out, pullback = cnnkit.vjp(fn, *inputs, backend="numpy", **attrs)
    g = rand(*np.shape(out))
    grads = pullback(g)

    def loss():
        return float(np.sum(fn(*inputs, backend="numpy", **attrs) * g))

    for x, grad in zip(inputs, grads):
        if x is None or not np.issubdtype(x.dtype, np.floating):
            assert grad is None
            continue
        numeric = np.zeros_like(x)
        for idx in np.ndindex(*x.shape):
            keep = x[idx]
            x[idx] = keep + eps
            up = loss()
            x[idx] = keep - eps
            down = loss()
            x[idx] = keep
            numeric[idx] = (up - down) / (2 * eps)
        scale = max(1.0, np.abs(numeric).max())
        np.testing.assert_allclose(grad, numeric, rtol=0, atol=rtol * scale)


GRAD_CASES = [
    ("conv1d", F.conv1d, lambda: (rand(2, 2, 7), rand(3, 2, 3), rand(3)), {"stride": 2, "padding": [(1, 0)]}),
    ("conv2d-groups-dil", F.conv2d, lambda: (rand(1, 4, 5, 5), rand(4, 2, 2, 3), rand(4)),
     {"stride": (1, 2), "padding": [(1, 0), (1, 1)], "dilation": (2, 1), "groups": 2}),
    ("conv2d-flip-nobias", F.conv2d, lambda: (rand(1, 2, 4, 4), rand(2, 2, 3, 3), None),
     {"padding": "same", "flip": True}),
    ("conv3d", F.conv3d, lambda: (rand(1, 2, 3, 4, 3), rand(2, 2, 2, 2, 2), rand(2)),
     {"padding": 1, "stride": 2}),
    ("max_pool2d", F.max_pool2d, lambda: (rand(1, 2, 5, 5),), {"kernel_size": 3, "stride": 2, "padding": 1}),
    ("max_pool1d-ceil-dil", F.max_pool1d, lambda: (rand(2, 1, 9),),
     {"kernel_size": 2, "stride": 2, "dilation": 2, "ceil_mode": True}),
    ("avg_pool2d-ceil", F.avg_pool2d, lambda: (rand(1, 2, 5, 6),),
     {"kernel_size": 2, "stride": 2, "ceil_mode": True, "padding": 1, "count_include_pad": False}),
    ("avg_pool3d", F.avg_pool3d, lambda: (rand(1, 1, 3, 4, 4),), {"kernel_size": 2, "stride": 1}),
    ("lp_pool2d-p3", F.lp_pool2d, lambda: (rand(1, 2, 4, 5),),
     {"norm_type": 3.0, "kernel_size": 2, "stride": 1}),
    # p < 1: |x| kept away from the kink at 0, whatever the shared generator drew before
    ("lp_pool1d-p0.5", F.lp_pool1d, lambda: (_off_zero(1, 2, 6),),
     {"norm_type": 0.5, "kernel_size": 3, "stride": 2}),
    ("lp_pool2d-p2", F.lp_pool2d, lambda: (rand(1, 1, 4, 4),), {"norm_type": 2.0, "kernel_size": 2}),
    ("relu", F.relu, lambda: (rand(3, 4),), {}),
    ("leaky_relu", F.leaky_relu, lambda: (rand(3, 4),), {"negative_slope": 0.2}),
    ("sigmoid", F.sigmoid, lambda: (rand(3, 4) * 3,), {}),
    ("tanh", F.tanh, lambda: (rand(3, 4),), {}),
    ("flatten", F.flatten, lambda: (rand(2, 3, 2),), {"start_dim": 0, "end_dim": 1}),
    ("linear", F.linear, lambda: (rand(2, 3, 4), rand(5, 4), rand(5)), {}),
    ("linear-1d-nobias", F.linear, lambda: (rand(4), rand(3, 4), None), {}),
]  # fmt: skip


@pytest.mark.parametrize("name,fn,make,attrs", GRAD_CASES, ids=[c[0] for c in GRAD_CASES])
def test_gradients_match_finite_differences(name, fn, make, attrs):
    check_gradients(fn, make(), **attrs)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_gradient_matches_finite_differences(reduction):
    z, t = rand(4, 5) * 3, np.array([4, 0, 2, 2])
    check_gradients(F.cross_entropy, (z, t), reduction=reduction)


def test_cross_entropy_is_stable_for_huge_logits():
    z = np.array([[1000.0, 0.0, -1000.0]], dtype=np.float32)
    out, _ = ops.cross_entropy_forward(z, np.array([1]), reduction="sum")
    assert out.item() == pytest.approx(1000.0)


# -- NaN and inf propagate without a warning (filterwarnings = error) -----------------------


def test_nan_and_inf_propagate_quietly():
    x = rand(1, 2, 4, 4)
    x[0, 0, 1, 1] = np.nan
    x[0, 1, 2, 2] = np.inf
    y = F.conv2d(x, rand(1, 2, 2, 2), padding=0, backend="numpy")
    assert np.isnan(y[0, 0, :2, :2]).all()
    m = F.max_pool2d(x, 2, backend="numpy")
    assert np.isnan(m[0, 0, 0, 0]) and m[0, 1, 1, 1] == np.inf
    for fn in (F.relu, F.sigmoid, F.tanh, F.leaky_relu):
        assert np.isnan(fn(x, backend="numpy")[0, 0, 1, 1])
    assert np.isinf(F.lp_pool2d(x, 3.0, 2, backend="numpy")[0, 1, 1, 1])
    loss = F.cross_entropy(np.array([[np.inf, 0.0], [np.nan, 1.0]]), np.array([0, 1]), backend="numpy")
    assert np.isnan(loss)


# -- the lecture's worked examples, exactly --------------------------------------------------


def test_worked_example_sobel_true_convolution_same_padding():
    image = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.float64)
    sobel = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=np.float64)
    s = F.conv2d(image[None, None], sobel[None, None], padding="same", flip=True, backend="numpy")
    assert s[0, 0].tolist() == [[-13, -20, -17], [-18, -24, -18], [13, 20, 17]]


def _rows(*rows):
    return np.array([[int(ch) for ch in r] for r in rows], dtype=np.float64)


def test_worked_example_two_filters_stride2_pad1():
    x_lecture = np.stack(
        [
            _rows("20000", "22210", "21122", "11122", "00100"),
            _rows("11121", "12100", "12021", "20111", "11122"),
            _rows("00020", "21112", "11202", "12120", "00021"),
        ],
        axis=-1,
    )  # (5, 5, 3): x[:, :, d]
    w0 = np.stack([[[1, -1, 0], [1, 1, 1], [0, 1, 1]], [[1, 1, 0], [-1, -1, 1], [1, -1, -1]],
                   [[1, -1, 1], [-1, 0, 1], [1, 1, 1]]], axis=-1)  # fmt: skip
    w1 = np.stack([[[-1, 1, 0], [1, -1, -1], [0, 1, 1]], [[0, -1, -1], [0, -1, 0], [0, 1, 1]],
                   [[0, -1, -1], [0, 0, 0], [-1, 1, 0]]], axis=-1)  # fmt: skip
    x = np.moveaxis(x_lecture, -1, 0)[None]  # (1, 3, 5, 5): x_nchw[0, d] = x_lecture[:, :, d]
    w = np.stack([np.moveaxis(w0, -1, 0), np.moveaxis(w1, -1, 0)]).astype(np.float64)  # (2, 3, 3, 3)
    o = F.conv2d(x, w, np.array([1.0, 0.0]), stride=2, padding=1, backend="numpy")
    assert o[0, 0].tolist() == [[7, 10, -1], [7, 14, 6], [3, 8, -1]]
    assert o[0, 1].tolist() == [[6, 3, 0], [-3, -1, -3], [-5, -7, -3]]


# -- semantics cross-checked against PyTorch where it agrees -------------------------------


def test_matches_torch_where_semantics_agree():
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    x, w, b = rand(2, 4, 7, 6), rand(6, 2, 3, 2), rand(6)
    ours = F.conv2d(x, w, b, stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2, backend="numpy")
    theirs = tf.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), (2, 1), (1, 0), (1, 2), 2)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-12, atol=1e-12)
    for cip in (True, False):
        ours = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=cip, backend="numpy")
        theirs = tf.avg_pool2d(torch.tensor(x), 3, 2, 1, ceil_mode=True, count_include_pad=cip)
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-12, atol=1e-12)
    ours = F.max_pool2d(x, 3, 2, 1, dilation=1, ceil_mode=True, backend="numpy")
    theirs = tf.max_pool2d(torch.tensor(x), 3, 2, 1, ceil_mode=True)
    np.testing.assert_array_equal(ours, theirs.numpy())
    z, t = rand(6, 5), np.array([0, 4, 1, 1, 3, 2])
    ours = F.cross_entropy(z, t, backend="numpy")
    np.testing.assert_allclose(ours, tf.cross_entropy(torch.tensor(z), torch.tensor(t)).numpy(), rtol=1e-12)


def test_pool_padding_helper_is_what_is_read():
    # the windows read the declared padding plus ceil_mode's extra units, as geometry says
    x = rand(1, 1, 7)
    attrs = {
        "kernel_size": (3,),
        "stride": (2,),
        "padding": pads((1, 1)),
        "dilation": (1,),
        "ceil_mode": True,
    }
    out, (geo, _) = ops.max_pool_forward(x, **attrs)
    assert geo["reads"] == (pool_padding(7, 3, 2, (1, 1), 1, True),)
    assert out.shape == (1, 1, 4)
