"""batch_norm, dropout and cross_entropy on both backends against torch.nn.functional's native ops.

Forward values and every gradient (under torch's native autograd), in float32 and float64; the
running statistics of batch norm; dropout compared with the very same mask (and, on the torch
backend, with torch's own draw for the same seed); BatchNorm models converted both ways through
state dicts; cnnkit.io with buffers; train/eval modes.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from cnnkit_torch import nn as cnn  # noqa: E402

import cnnkit  # noqa: E402
import cnnkit.functional as cf  # noqa: E402
from cnnkit import io  # noqa: E402
from cnnkit.layers import BatchNorm1d, BatchNorm2d, Dropout, Dropout2d, Linear, ReLU, Sequential  # noqa: E402
from cnnkit.losses import CrossEntropyLoss  # noqa: E402
from cnnkit.training import evaluate, fit, predict  # noqa: E402

BACKENDS = ("numpy", "torch")
DTYPES = (np.float32, np.float64)
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


def _t(a, grad=False):
    t = torch.from_numpy(np.array(a))
    return t.requires_grad_(True) if grad else t


def _np(a):
    return a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _close(actual, expected, dtype):
    np.testing.assert_allclose(_np(actual), _np(expected), **TOL[dtype])


def _ours(backend, fn, arrays, grad_idx, g, **kw):
    """cnnkit's output and the gradients of the inputs ``grad_idx`` for output gradient ``g``."""
    if backend == "numpy":
        out, pullback = cnnkit.vjp(fn, *arrays, backend="numpy", **kw)
        grads = pullback(g)
        return out, [grads[i] for i in grad_idx]
    leaves = [None if a is None else _t(a, grad=i in grad_idx) for i, a in enumerate(arrays)]
    out = fn(*leaves, backend="torch", **kw)
    grads = torch.autograd.grad(out, [leaves[i] for i in grad_idx], _t(g))
    return out, list(grads)


# -- batch norm ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(("shape", "affine"), [((6, 3), True), ((4, 3, 5), False), ((2, 3, 4, 5), True)])
def test_batch_norm_matches_torch(backend, dtype, training, shape, affine):
    rng = np.random.default_rng(0)
    c = shape[1]
    x = rng.normal(1.0, 2.0, shape).astype(dtype)
    w, b = rng.normal(size=c).astype(dtype), rng.normal(size=c).astype(dtype)
    rm, rv = rng.normal(size=c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)
    g = rng.normal(size=shape).astype(dtype)
    weight, bias = (w, b) if affine else (None, None)

    # cnnkit takes (input, running_mean, running_var, weight, bias): wrap it to put the grads first
    ours_rm, ours_rv = (rm.copy(), rv.copy()) if backend == "numpy" else (_t(rm), _t(rv))

    def fn(x_, w_, b_, backend):
        return cf.batch_norm(x_, ours_rm, ours_rv, w_, b_, training, 0.2, 1e-3, backend=backend)

    grad_idx = [0, 1, 2] if affine else [0]
    out, grads = _ours(backend, fn, [x, weight, bias], grad_idx, g)

    xt = _t(x, grad=True)
    wt, bt = (_t(w, grad=True), _t(b, grad=True)) if affine else (None, None)
    trm, trv = _t(rm), _t(rv)
    ref = F.batch_norm(xt, trm, trv, wt, bt, training, 0.2, 1e-3)
    want = torch.autograd.grad(ref, [t for t in (xt, wt, bt) if t is not None], _t(g))
    _close(out, ref, dtype)
    for a, e in zip(grads, want):
        _close(a, e, dtype)
    _close(ours_rm, trm, dtype)  # running statistics: moved in training (unbiased variance), kept in eval
    _close(ours_rv, trv, dtype)
    if not training:
        np.testing.assert_array_equal(np.asarray(ours_rm), rm)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_norm_layer_running_statistics_and_cumulative_momentum_match_torch(backend):
    torch.manual_seed(0)
    for momentum in (0.1, None):
        native = torch.nn.BatchNorm2d(3, momentum=momentum).double()
        if backend == "numpy":
            ours = BatchNorm2d(3, momentum=momentum, backend=cnnkit.get_backend("numpy", dtype="float64"))
        else:
            ours = cnn.BatchNorm2d(3, momentum=momentum).double()
        for step in range(3):
            x = torch.randn(4, 3, 2, 2, dtype=torch.float64) * (step + 1) + step
            y = ours(x.numpy() if backend == "numpy" else x)
            _close(y, native(x), np.float64)
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            value = getattr(ours, key)
            _close(value.data if backend == "numpy" else value, native.state_dict()[key], np.float64)
        ours.eval()
        native.eval()
        x = torch.randn(2, 3, 2, 2, dtype=torch.float64)
        _close(ours(x.numpy() if backend == "numpy" else x), native(x), np.float64)


def _native_net():
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 5 * 5, 6),
        torch.nn.BatchNorm1d(6, momentum=None),
        torch.nn.Dropout(0.0),
        torch.nn.Linear(6, 3),
    ).double()


def _our_net():
    return torch.nn.Sequential(
        cnn.Conv2d(2, 4, 3, padding=1),
        cnn.BatchNorm2d(4),
        cnn.ReLU(),
        cnn.Flatten(),
        cnn.Linear(4 * 5 * 5, 6),
        cnn.BatchNorm1d(6, momentum=None),
        cnn.Dropout(0.0),
        cnn.Linear(6, 3),
    ).double()


def test_state_dicts_load_strictly_both_ways_and_give_torchs_outputs_and_gradients():
    torch.manual_seed(1)
    native, ours = _native_net(), _our_net()
    assert list(ours.state_dict()) == list(native.state_dict())
    ours.load_state_dict(native.state_dict(), strict=True)
    x = torch.randn(5, 2, 5, 5, dtype=torch.float64)
    for mode in ("train", "eval", "train"):
        for net in (native, ours):
            getattr(net, mode)()
        outs = []
        for net in (native, ours):
            net.zero_grad()
            y = net(x)
            y.square().sum().backward()
            outs.append((y, [p.grad.clone() for p in net.parameters()]))
        _close(outs[1][0], outs[0][0], np.float64)
        for a, e in zip(outs[1][1], outs[0][1]):
            _close(a, e, np.float64)
    for key, value in native.state_dict().items():  # running statistics moved alike
        _close(ours.state_dict()[key], value, np.float64)
    assert type(
        ours[1](torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)).grad_fn
    ).__name__ == ("BatchNormBackward")
    back = _native_net()
    back.load_state_dict(ours.state_dict(), strict=True)
    back.eval()
    ours.eval()
    _close(back(x), ours(x), np.float64)


def test_cnnkit_model_with_batch_norm_converts_and_saves_with_its_running_statistics(tmp_path):
    be = cnnkit.get_backend("numpy", dtype="float64")
    model = Sequential(Linear(4, 3, seed=0, backend=be), BatchNorm1d(3, backend=be), ReLU(), Dropout(0.5))
    x = np.random.default_rng(2).normal(size=(8, 4))
    model(x)
    model(x * 2)  # the running statistics moved twice
    assert [k for k, _ in model.named_buffers()] == [
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
    ]
    path = io.save(model, tmp_path / "bn.npz")
    loaded = io.load(path, backend="numpy", dtype="float64")
    for (k, a), (k2, b) in zip(model.named_buffers(), loaded.named_buffers()):
        assert k == k2
        np.testing.assert_array_equal(a.data, b.data)
    assert int(loaded[1].num_batches_tracked.data) == 2
    model.eval()
    loaded.eval()
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-12)
    module = cnn.from_cnnkit(model).eval()  # torch module: buffers registered, same outputs
    assert "1.running_var" in module.state_dict()
    np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(), model(x), rtol=1e-12)
    module.train()
    module(torch.from_numpy(x))
    cnn.copy_to_cnnkit(module, model)
    assert int(model[1].num_batches_tracked.data) == 3 and model.training


def test_layers_switch_modes_and_the_adapter_maps_torchs():
    net = Sequential(Linear(3, 3, seed=0), Dropout(0.5))
    assert net.training and net[1].training
    assert net.eval() is net and not net[1].training
    x = np.ones((4, 3), dtype=np.float32)
    np.testing.assert_array_equal(net(x), net(x))  # evaluation: the identity
    module = cnn.Dropout(0.5)
    module.eval()
    xt = torch.ones(50, 50)
    assert torch.equal(module(xt), xt)
    module.train()
    assert (module(xt) == 0).any()
    with pytest.raises(TypeError, match="mode must be True or False"):
        net.train("no")


def test_fit_trains_and_evaluate_evaluates():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    model = Sequential(Linear(4, 8, seed=0), BatchNorm1d(8), ReLU(), Dropout(0.3), Linear(8, 2, seed=1))
    seen = []
    fit(model, X, y, X, y, epochs=2, batch_size=8, on_epoch=lambda e, h: seen.append(model.training))
    assert seen == [True, True] and model.training  # evaluate gave the mode back
    assert int(model[1].num_batches_tracked.data) == 10
    before = model[1].running_mean.data.copy()
    np.testing.assert_array_equal(predict(model, X), predict(model, X))  # no dropout, no updates
    np.testing.assert_array_equal(model[1].running_mean.data, before)
    loss, acc = evaluate(model, X, y)
    assert np.isfinite(loss) and 0 <= acc <= 1 and model.training


# -- dropout --------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("fn", "shape"), [("dropout", (6, 7)), ("dropout1d", (3, 4, 5)), ("dropout2d", (2, 5, 3, 3))]
)
def test_dropout_matches_torch_with_the_same_mask(backend, dtype, fn, shape):
    rng = np.random.default_rng(3)
    x = rng.uniform(0.5, 2.0, shape).astype(dtype)  # no zeros: the mask reads off the output
    g = rng.normal(size=shape).astype(dtype)
    p = 0.4
    out, (dx,) = _ours(backend, getattr(cf, fn), [x], [0], g, p=p, generator=4)
    got = _np(out)
    keep = got != 0
    xt = _t(x, grad=True)
    ref = torch.where(_t(keep), xt / (1 - p), 0)  # torch's definition, under its autograd
    (want,) = torch.autograd.grad(ref, xt, _t(g))
    _close(out, ref, dtype)
    _close(dx, want, dtype)
    if fn != "dropout":  # whole channels
        flat = keep.reshape(*shape[:2], -1)
        assert (flat.all(axis=-1) | ~flat.any(axis=-1)).all()
    again = _ours(backend, getattr(cf, fn), [x], [0], g, p=p, generator=4)[0]
    np.testing.assert_array_equal(_np(again), got)  # a seed repeats its mask


@pytest.mark.parametrize(
    ("ours", "theirs", "shape"),
    [
        ("dropout", F.dropout, (5, 6, 7)),
        ("dropout2d", F.dropout2d, (4, 5, 3, 3)),
        ("dropout3d", F.dropout3d, (2, 3, 2, 2, 2)),
    ],
)
def test_torch_backend_draws_torchs_own_mask_for_the_same_seed(ours, theirs, shape):
    x = torch.randn(shape, dtype=torch.float64)
    torch.manual_seed(11)
    a = getattr(cf, ours)(x, 0.3, backend="torch")
    torch.manual_seed(11)
    assert torch.equal(a, theirs(x, 0.3))
    assert torch.equal(getattr(cf, ours)(x, 0.3, training=False, backend="torch"), x)


def test_numpy_dropout_is_reproducible_from_cnnkits_seed_and_a_generator():
    x = np.ones(100)
    cnnkit.ops.dropout.manual_seed(5)
    a = cf.dropout(x)
    cnnkit.ops.dropout.manual_seed(5)
    np.testing.assert_array_equal(cf.dropout(x), a)
    np.testing.assert_array_equal(
        cf.dropout(x, generator=np.random.default_rng(1)), cf.dropout(x, generator=np.random.default_rng(1))
    )


# -- cross-entropy --------------------------------------------------------------------------------

CE_CONFIGS = [
    dict(shape=(6, 4)),
    dict(shape=(6, 4), weight=True, ignore_index=2),
    dict(shape=(6, 4), weight=True, label_smoothing=0.25, ignore_index=0),
    dict(shape=(3, 4, 2, 3), weight=True, label_smoothing=0.1, ignore_index=1),
    dict(shape=(5, 3, 4), probabilities=True, weight=True, label_smoothing=0.2),
    dict(shape=(5, 3), probabilities=True),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("config", CE_CONFIGS, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_cross_entropy_matches_torch(backend, dtype, reduction, config):
    rng = np.random.default_rng(4)
    shape = config["shape"]
    c = shape[1]
    z = rng.normal(0, 2, shape).astype(dtype)
    probabilities = config.get("probabilities", False)
    if probabilities:
        t = rng.uniform(0.1, 1, shape)
        t = (t / t.sum(axis=1, keepdims=True)).astype(dtype)
    else:
        t = rng.integers(0, c, (shape[0], *shape[2:]))
    w = rng.uniform(0.2, 2, c).astype(dtype) if config.get("weight") else None
    kw = dict(
        ignore_index=config.get("ignore_index", -100),
        reduction=reduction,
        label_smoothing=config.get("label_smoothing", 0.0),
    )
    out_shape = () if reduction != "none" else (shape[0], *shape[2:])
    g = np.asarray(rng.normal(size=out_shape), dtype=dtype)
    grad_idx = [0, 1] if probabilities else [0]
    out, grads = _ours(backend, cf.cross_entropy, [z, t, w], grad_idx, g, **kw)
    zt, tt = _t(z, grad=True), _t(t, grad=probabilities)
    ref = F.cross_entropy(zt, tt, None if w is None else _t(w), **kw)
    want = torch.autograd.grad(ref, [zt, tt] if probabilities else [zt], _t(g))
    _close(out, ref, dtype)
    for a, e in zip(grads, want):
        _close(a, e, dtype)


def test_cross_entropy_loss_layer_and_module_match_torchs():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(6, 4))
    t = np.array([0, 3, 1, 1, 2, 3])
    w = [0.5, 1.0, 2.0, 1.5]
    native = torch.nn.CrossEntropyLoss(
        weight=torch.tensor(w, dtype=torch.float64), ignore_index=3, label_smoothing=0.1
    )
    zt = _t(z, grad=True)
    ref = native(zt, _t(t))
    (want,) = torch.autograd.grad(ref, zt)
    ours = CrossEntropyLoss(weight=w, ignore_index=3, label_smoothing=0.1)
    np.testing.assert_allclose(ours(z, t), ref.item(), rtol=1e-12)
    np.testing.assert_allclose(ours.backward(), want.numpy(), rtol=1e-10, atol=1e-14)
    module = cnn.CrossEntropyLoss(weight=torch.tensor(w), ignore_index=3, label_smoothing=0.1)
    assert list(module.state_dict()) == list(native.state_dict()) == ["weight"]
    z2 = _t(z, grad=True)
    loss = module(z2, _t(t))
    loss.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=0)
    torch.testing.assert_close(z2.grad, want, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        CrossEntropyLoss(label_smoothing=1.5)


def test_layer_constructors_refuse_bad_arguments_naming_them():
    with pytest.raises(ValueError, match="BatchNorm2d: eps must be a finite number >= 0"):
        BatchNorm2d(3, eps=-1.0)
    with pytest.raises(ValueError, match="BatchNorm1d: momentum must be in"):
        BatchNorm1d(3, momentum=2.0)
    with pytest.raises(ValueError, match="Dropout2d: p must be in"):
        Dropout2d(1.0)
    with pytest.raises(ValueError, match="BatchNorm2d: expected 4D input, got 3D input"):
        BatchNorm2d(3)(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="batch_norm: running_var must have shape"):
        cf.batch_norm(np.zeros((2, 3)), np.zeros(3), np.ones(2), training=True)


def test_loading_a_huge_batch_norm_allocates_nothing_before_its_arrays_are_checked(tmp_path):
    import json
    import tracemalloc

    arch = {
        "format": "cnnkit-model",
        "version": 1,
        "model": {"class": "BatchNorm2d", "config": {"num_features": 10**9}},
        "metadata": {},
    }
    path = tmp_path / "huge.npz"
    np.savez(path, __architecture__=np.array(json.dumps(arch)))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="missing weight"):
            io.load(path)
        assert tracemalloc.get_traced_memory()[1] < 50 * 2**20
    finally:
        tracemalloc.stop()


def test_dropout_layers_backward_through_their_mask_and_the_modules_draw_torchs():
    x = np.random.default_rng(6).uniform(1, 2, (8, 4, 3)).astype(np.float32)
    layer = cnnkit.layers.Dropout1d(0.5)
    y = layer(x)
    g = np.ones_like(y)
    np.testing.assert_array_equal(layer.backward(g), np.where(y != 0, 2.0, 0.0))
    xt = torch.from_numpy(x)
    torch.manual_seed(2)
    ours = cnn.Dropout1d(0.5)(xt)
    torch.manual_seed(2)
    assert torch.equal(ours, torch.nn.Dropout1d(0.5)(xt))
    assert repr(cnn.Dropout(0.25)) == repr(torch.nn.Dropout(0.25))


def test_cross_entropy_loss_layer_on_segmentation_logits_and_soft_targets():
    rng = np.random.default_rng(7)
    z = rng.normal(size=(2, 3, 4, 4))
    t = rng.integers(0, 3, (2, 4, 4))
    loss = CrossEntropyLoss(ignore_index=0)
    zt = _t(z, grad=True)
    ref = F.cross_entropy(zt, _t(t), ignore_index=0)
    np.testing.assert_allclose(loss(z, t), ref.item(), rtol=1e-12)
    np.testing.assert_allclose(
        loss.backward(), torch.autograd.grad(ref, zt)[0].numpy(), rtol=1e-9, atol=1e-14
    )
    soft = rng.dirichlet(np.ones(3), size=(2, 4, 4)).transpose(0, 3, 1, 2).copy()
    ref = F.cross_entropy(_t(z), _t(soft), label_smoothing=0.1)
    np.testing.assert_allclose(CrossEntropyLoss(label_smoothing=0.1)(z, soft), ref.item(), rtol=1e-12)
