"""Layers: gradients against finite differences and the functional vjp, PyTorch's initialisation."""

from __future__ import annotations

import math

import numpy as np
import pytest

import cnnkit
from cnnkit import functional as F
from cnnkit import layers as L
from cnnkit.registry import get_backend

F64 = get_backend("numpy", dtype="float64")


def _fd_check(layer, x, *, eps=1e-6, n_probe=12, seed=0):
    """Check ``layer.backward`` against central differences of ``E = Σ y ⊙ G`` (float64).

    Probes every entry of small arrays and ``n_probe`` random entries of larger ones,
    for the input and for every parameter.
    """
    rng = np.random.default_rng(seed)
    y = layer.forward(x)
    G = rng.normal(size=y.shape)
    dx = layer.backward(G)
    assert dx.shape == x.shape
    grads = {"x": (x, dx)} | {name: (p.data, p.grad) for name, p in layer.named_parameters()}

    def energy():
        return float((layer.infer(x) * G).sum())

    for name, (arr, grad) in grads.items():
        assert grad is not None and grad.shape == arr.shape, name
        flat = arr.reshape(-1)  # a view: perturbing it perturbs the array the layer reads
        probes = range(flat.size) if flat.size <= n_probe else rng.choice(flat.size, n_probe, replace=False)
        for i in probes:
            old = flat[i]
            flat[i] = old + eps
            up = energy()
            flat[i] = old - eps
            down = energy()
            flat[i] = old
            numeric = (up - down) / (2 * eps)
            assert grad.reshape(-1)[i] == pytest.approx(numeric, rel=1e-5, abs=1e-7), (name, int(i))


def _away_from_kinks(shape, seed=1):
    """Random values at least 0.05 from zero and from each other's ties (max pooling, ReLU)."""
    rng = np.random.default_rng(seed)
    x = rng.permutation(np.linspace(-2.0, 2.0, math.prod(shape)))
    x = np.where(np.abs(x) < 0.05, x + 0.1, x)
    return x.reshape(shape)


LAYERS = {
    "conv1d-s2-p1-d2": (lambda: L.Conv1d(2, 3, 3, stride=2, padding=1, dilation=2, seed=0), (2, 2, 9)),
    "conv2d-groups2-same-flip": (
        lambda: L.Conv2d(4, 6, 3, padding="same", groups=2, flip=True, seed=1),
        (2, 4, 5, 5),
    ),
    "conv2d-nobias-stride2": (lambda: L.Conv2d(2, 3, (2, 3), stride=2, bias=False, seed=2), (2, 2, 6, 7)),
    "conv3d-pad1": (lambda: L.Conv3d(2, 2, 2, padding=1, seed=3), (1, 2, 3, 4, 3)),
    "maxpool1d": (lambda: L.MaxPool1d(3, stride=2), (2, 2, 9)),
    "maxpool2d-pad1-ceil": (lambda: L.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (2, 2, 6, 6)),
    "maxpool3d": (lambda: L.MaxPool3d(2), (1, 2, 4, 4, 4)),
    "avgpool1d-pad": (lambda: L.AvgPool1d(3, stride=2, padding=1, count_include_pad=False), (2, 3, 8)),
    "avgpool2d": (lambda: L.AvgPool2d(2), (2, 2, 4, 6)),
    "avgpool3d": (lambda: L.AvgPool3d((1, 2, 2)), (1, 2, 2, 4, 4)),
    "lppool1d-p3": (lambda: L.LPPool1d(3, 2), (2, 2, 8)),
    "lppool2d-p2": (lambda: L.LPPool2d(2, 2), (2, 2, 4, 4)),
    "lppool3d-p2": (lambda: L.LPPool3d(2, 2), (1, 1, 4, 4, 4)),
    "globalmax": (lambda: L.GlobalMaxPool(), (2, 3, 4, 4)),
    "globalavg": (lambda: L.GlobalAvgPool(), (2, 3, 5)),
    "globallp-p3": (lambda: L.GlobalLPPool(3), (2, 3, 4, 4)),
    "relu": (lambda: L.ReLU(), (3, 7)),
    "leakyrelu": (lambda: L.LeakyReLU(0.2), (3, 7)),
    "sigmoid": (lambda: L.Sigmoid(), (3, 7)),
    "tanh": (lambda: L.Tanh(), (3, 7)),
    "flatten": (lambda: L.Flatten(), (2, 3, 2, 2)),
    "linear": (lambda: L.Linear(5, 4, seed=4), (3, 5)),
    "sequential-cnn": (
        lambda: L.Sequential(
            L.Conv2d(1, 3, 3, padding=1, seed=5),
            L.ReLU(),
            L.MaxPool2d(2),
            L.Conv2d(3, 4, 3, padding=1, seed=6),
            L.Tanh(),
            L.GlobalAvgPool(),
            L.Flatten(),
            L.Linear(4, 3, seed=7),
        ),
        (2, 1, 6, 6),
    ),
}


@pytest.mark.parametrize("case", sorted(LAYERS))
def test_backward_matches_finite_differences(case):
    build, shape = LAYERS[case]
    layer = build().to(F64)
    x = _away_from_kinks(shape)
    if "lppool" in case:
        x = np.abs(x) + 0.1  # |x|^p is smooth away from 0
    _fd_check(layer, x)


@pytest.mark.parametrize(
    "layer, fn, attrs",
    [
        (
            L.Conv2d(2, 4, 3, stride=2, padding=1, seed=0),
            F.conv2d,
            dict(stride=2, padding=1),
        ),
        (L.Conv1d(3, 2, 5, padding="same", seed=1), F.conv1d, dict(padding="same")),
        (L.Linear(6, 5, seed=2), F.linear, {}),
    ],
    ids=["conv2d", "conv1d", "linear"],
)
def test_backward_is_the_functional_vjp(layer, fn, attrs):
    layer.to(F64)
    rng = np.random.default_rng(3)
    in_shape = {F.conv2d: (2, 2, 7, 7), F.conv1d: (2, 3, 10), F.linear: (4, 6)}[fn]
    x = rng.normal(size=in_shape)
    y = layer.forward(x)
    G = rng.normal(size=y.shape)
    dx = layer.backward(G)
    w, b = layer.weight.data, layer.bias.data
    y_ref, pullback = cnnkit.vjp(fn, x, w, b, **attrs)
    dx_ref, dw_ref, db_ref = pullback(G)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, dx_ref)
    np.testing.assert_array_equal(layer.weight.grad, dw_ref)
    np.testing.assert_array_equal(layer.bias.grad, db_ref)
    # the classic hand check of dE/db = Σ δ over batch and positions
    np.testing.assert_allclose(db_ref, G.sum(axis=tuple(i for i in range(G.ndim) if i != 1)))


def test_layer_errors_are_clear():
    with pytest.raises(ValueError, match=r"groups=3 must divide in_channels \(4\)"):
        L.Conv2d(4, 6, 3, groups=3)
    with pytest.raises(RuntimeError, match=r"ReLU\.backward called before forward"):
        L.ReLU().backward(np.ones(3))
    with pytest.raises(TypeError, match="layer 1 must be a cnnkit Layer, got int"):
        L.Sequential(L.ReLU(), 3)
    with pytest.raises(TypeError, match=r"rng must be a numpy\.random\.Generator"):
        L.Linear(2, 2, rng=0)


# -- initialisation: PyTorch's defaults --------------------------------------------------------


@pytest.mark.parametrize(
    "make, fan_in",
    [
        (lambda: L.Conv1d(4, 64, 5, seed=0), 20),
        (lambda: L.Conv2d(16, 32, 3, seed=0), 144),
        (lambda: L.Conv2d(8, 64, 3, groups=4, seed=0), 18),
        (lambda: L.Conv3d(2, 32, 3, seed=0), 54),
        (lambda: L.Linear(128, 64, seed=0), 128),
    ],
    ids=["conv1d", "conv2d", "conv2d-groups", "conv3d", "linear"],
)
def test_default_init_is_pytorchs(make, fan_in):
    torch = pytest.importorskip("torch")
    layer = make()
    w, b = layer.weight.data, layer.bias.data
    # kaiming_uniform(a=√5): bound = gain·√(3/fan_in) with gain = √(2/(1+a²)) = 1/√fan_in
    gain = torch.nn.init.calculate_gain("leaky_relu", math.sqrt(5))
    bound = gain * math.sqrt(3.0 / fan_in)
    assert bound == pytest.approx(1 / math.sqrt(fan_in))
    # the torch module of the same shape draws from the same interval
    kind = type(layer).__name__
    if kind == "Linear":
        ref = torch.nn.Linear(layer.in_features, layer.out_features)
    else:
        ref = getattr(torch.nn, kind)(
            layer.in_channels, layer.out_channels, layer.kernel_size, groups=layer.groups
        )
    assert tuple(ref.weight.shape) == w.shape and tuple(ref.bias.shape) == b.shape
    for ours, theirs in ((w, ref.weight.detach().numpy()), (b, ref.bias.detach().numpy())):
        assert np.abs(ours).max() <= bound and np.abs(theirs).max() <= bound
    # U(-bound, bound): mean 0, variance bound²/3 (the weights have >= 1000 draws)
    assert w.size >= 1000
    assert abs(w.mean()) < 0.06 * bound
    assert w.var() == pytest.approx(bound**2 / 3, rel=0.08)
    assert w.var() == pytest.approx(ref.weight.detach().numpy().var(), rel=0.12)
    assert np.abs(w).max() > 0.99 * bound


def test_same_seed_same_weights_on_every_backend():
    pytest.importorskip("torch")
    a = L.Conv2d(3, 4, 3, seed=11, backend="numpy")
    b = L.Conv2d(3, 4, 3, seed=11, backend="torch")
    np.testing.assert_array_equal(a.weight.data, b.weight.data.numpy())
    np.testing.assert_array_equal(a.bias.data, b.bias.data.numpy())
    assert a.weight.data.dtype == np.float32
    c = L.Conv2d(3, 4, 3, seed=12)
    assert not np.array_equal(a.weight.data, c.weight.data)


def test_torch_layers_match_numpy_layers():
    pytest.importorskip("torch")
    build, shape = LAYERS["sequential-cnn"]
    net_np, net_t = build().to(F64), build().to("torch", dtype="float64")
    x = _away_from_kinks(shape)
    y_np, y_t = net_np.forward(x), net_t.forward(x)
    np.testing.assert_allclose(y_t.numpy(), y_np, rtol=1e-12, atol=1e-12)
    G = np.random.default_rng(0).normal(size=y_np.shape)
    dx_np, dx_t = net_np.backward(G), net_t.backward(net_t.backend.asarray(G))
    np.testing.assert_allclose(dx_t.numpy(), dx_np, rtol=1e-10, atol=1e-12)
    for (name, p_np), (_, p_t) in zip(net_np.named_parameters(), net_t.named_parameters()):
        np.testing.assert_allclose(p_t.grad.numpy(), p_np.grad, rtol=1e-10, atol=1e-12, err_msg=name)


def test_window_feeds_the_receptive_field():
    assert L.Conv2d(1, 1, 3, stride=2, padding=1, dilation=2).window() == ((3, 2, 1, 2), (3, 2, 1, 2))
    assert L.Conv1d(1, 1, 5, padding="same").window() == ((5, 1, 2, 1),)
    assert L.MaxPool2d(2).window() == ((2, 2, 0, 1), (2, 2, 0, 1))
    assert L.ReLU().window() is None
    assert L.Flatten().window() == () and L.Linear(2, 2).window() == ()


def test_to_moves_parameters_and_backend_of_names_foreign_arrays():
    lin = L.Linear(3, 2, seed=0)
    w32 = lin.weight.data.copy()
    lin.weight.grad = np.ones_like(w32)
    assert lin.to("numpy", dtype="float64") is lin
    assert lin.weight.data.dtype == np.float64 and lin.weight.grad is None
    np.testing.assert_array_equal(lin.weight.data, w32.astype(np.float64))
    assert L.backend_of(np.zeros(2)).name == "numpy"
    with pytest.raises(TypeError, match=r"no installed cnnkit backend holds arrays of type builtins\.list"):
        L.backend_of([1.0, 2.0])
