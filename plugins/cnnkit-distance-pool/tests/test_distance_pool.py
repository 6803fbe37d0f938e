"""Tests of the distance-pool plugin: golden values, gradients, NumPy vs PyTorch, the layer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from cnnkit_distance_pool import DistancePool2d, distance_pool2d, distance_weights
from cnnkit_distance_pool import numpy_kernel as npk
from cnnkit_distance_pool.cases import CASES
from cnnkit_distance_pool.spec import DistancePoolSpec

import cnnkit

W_CENTRE = 1.0 / (1.0 + 4.0 * math.exp(-0.5) + 4.0 * math.exp(-1.0))


def _torch():
    return pytest.importorskip("torch")


def _bind(shape, **attrs):
    return DistancePoolSpec().bind("t", [cnnkit.TensorInfo(shape, "float64")], attrs)


def _loop_reference(x, kernel_size, stride, padding, sigma):
    """The definition, pixel by pixel (2-D only): the executable spec the kernels must match."""
    w = distance_weights(kernel_size, sigma)
    xp = np.pad(x, ((0, 0), (0, 0), *padding))
    (fh, fw), (sh, sw) = kernel_size, stride
    oh, ow = (xp.shape[2] - fh) // sh + 1, (xp.shape[3] - fw) // sw + 1
    y = np.zeros((*x.shape[:2], oh, ow))
    for i in range(oh):
        for j in range(ow):
            y[:, :, i, j] = np.einsum("ncab,ab->nc", xp[:, :, i * sh : i * sh + fh, j * sw : j * sw + fw], w)
    return y


def test_weights_are_a_normalised_gaussian_of_the_distance():
    w = distance_weights((3, 3), 1.0)
    assert w.sum() == pytest.approx(1.0)
    assert w[1, 1] == pytest.approx(W_CENTRE)
    assert w[0, 1] == pytest.approx(W_CENTRE * math.exp(-0.5))
    assert w[0, 0] == pytest.approx(W_CENTRE * math.exp(-1.0))
    # even windows: the centre lies between taps, all four middle taps weigh the same
    w4 = distance_weights((4,), 0.5)
    assert w4[1] == pytest.approx(w4[2]) and w4[0] == pytest.approx(w4[3])


def test_golden_values():
    ramp = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    assert distance_pool2d(ramp, 3).tolist() == [[[[pytest.approx(5.0)]]]]
    impulse = np.zeros((1, 1, 3, 3))
    impulse[0, 0, 1, 1] = 1.0
    assert distance_pool2d(impulse, 3)[0, 0, 0, 0] == pytest.approx(0.2041799555)


def test_large_sigma_is_average_pooling():
    x = np.random.default_rng(0).normal(size=(2, 3, 6, 4))
    y = distance_pool2d(x, 2, sigma=1e6)
    mean = x.reshape(2, 3, 3, 2, 2, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(y, mean, rtol=1e-10)


@pytest.mark.parametrize(
    ("kernel_size", "stride", "padding", "sigma"),
    [((3, 3), (1, 1), ((1, 1), (1, 1)), 1.0), ((2, 3), (2, 1), ((0, 1), (1, 0)), 0.6)],
)
def test_vectorised_kernel_equals_the_loop_definition(kernel_size, stride, padding, sigma):
    x = np.random.default_rng(1).normal(size=(2, 2, 5, 6))
    y, _ = npk.distance_pool(x, kernel_size=kernel_size, stride=stride, padding=padding, sigma=sigma)
    np.testing.assert_allclose(y, _loop_reference(x, kernel_size, stride, padding, sigma), atol=1e-12)


@pytest.mark.parametrize(
    "attrs", [{"kernel_size": 3, "stride": 2, "padding": 1, "sigma": 0.8}, {"kernel_size": 2}]
)
def test_numpy_backward_matches_finite_differences(attrs):
    x = np.random.default_rng(2).normal(size=(1, 2, 5, 5))
    y, pullback = cnnkit.vjp(distance_pool2d, x, **attrs)
    g = np.random.default_rng(3).normal(size=y.shape)
    (dx,) = pullback(g)
    eps, num = 1e-6, np.zeros_like(x)
    for idx in np.ndindex(*x.shape):  # a 50-unit input: the test, not the kernel, loops
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        num[idx] = ((distance_pool2d(xp, **attrs) - distance_pool2d(xm, **attrs)) * g).sum() / (2 * eps)
    np.testing.assert_allclose(dx, num, atol=1e-8)


@pytest.mark.parametrize(
    "shape_attrs",
    [
        ((2, 3, 6, 6), {"kernel_size": 2}),
        ((1, 2, 5, 7), {"kernel_size": (3, 2), "stride": 1, "padding": 1}),
        ((2, 2, 9), {"kernel_size": 3, "stride": 2, "sigma": 0.5}),
        ((1, 1, 4, 4, 4), {"kernel_size": 2}),
    ],
)
def test_torch_kernel_agrees_with_numpy_forward_and_backward(shape_attrs):
    torch = _torch()
    from cnnkit_distance_pool import torch_kernel as tk

    shape, user_attrs = shape_attrs
    attrs = _bind(shape, **user_attrs)
    rng = np.random.default_rng(4)
    x = rng.normal(size=shape)
    y_np, ctx_np = npk.distance_pool(x, **attrs)
    y_t, ctx_t = tk.distance_pool(torch.tensor(x), **attrs)
    np.testing.assert_allclose(y_t.numpy(), y_np, atol=1e-12)
    g = rng.normal(size=y_np.shape)
    (dx_np,) = npk.distance_pool_backward(ctx_np, g)
    (dx_t,) = tk.distance_pool_backward(ctx_t, torch.tensor(g))
    np.testing.assert_allclose(dx_t.numpy(), dx_np, atol=1e-12)


def test_torch_function_gradient_is_the_manual_one_and_passes_gradcheck():
    torch = _torch()
    from cnnkit_distance_pool import torch_kernel as tk

    attrs = _bind((1, 2, 5, 5), kernel_size=3, stride=2, padding=1, sigma=0.9)
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    args = (attrs["kernel_size"], attrs["stride"], attrs["padding"], attrs["sigma"])
    assert torch.autograd.gradcheck(lambda t: tk.DistancePoolFunction.apply(t, *args), (x,))
    y = tk.DistancePoolFunction.apply(x, *args)
    g = torch.randn_like(y)
    y.backward(g)
    (dx,) = npk.distance_pool_backward(npk.distance_pool(x.detach().numpy(), **attrs)[1], g.numpy())
    np.testing.assert_allclose(x.grad.numpy(), dx, atol=1e-12)


def test_through_the_torch_backend_when_installed():
    torch = _torch()
    try:
        cnnkit.get_backend("torch")
    except (cnnkit.BackendNotFoundError, cnnkit.BackendUnavailableError):
        pytest.skip("cnnkit's torch backend is not available")
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    y = distance_pool2d(x, 3, stride=1, padding=1, sigma=1.3, backend="torch")
    np.testing.assert_allclose(
        y.detach().numpy(), distance_pool2d(x.detach().numpy(), 3, 1, 1, 1.3, backend="numpy"), atol=1e-12
    )
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_layer_forward_backward_and_config():
    layer = DistancePool2d(3, stride=2, padding=1, sigma=0.7)
    x = np.random.default_rng(5).normal(size=(2, 1, 5, 5))
    y = layer(x)
    assert y.shape == (2, 1, 3, 3)
    dx = layer.backward(np.ones_like(y))
    assert dx.shape == x.shape
    assert layer.config() == {"kernel_size": 3, "stride": 2, "padding": 1, "sigma": 0.7}
    assert DistancePool2d(**layer.config()).config() == layer.config()


def test_errors_name_the_argument():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"distance_pool2d: sigma must be a finite number > 0, got 0"):
        distance_pool2d(x, 2, sigma=0)
    with pytest.raises(TypeError, match=r"distance_pool2d: kernel_size must be an int"):
        distance_pool2d(x, 2.5)
    with pytest.raises(ValueError, match=r"distance_pool2d: input must have 4 dimensions"):
        distance_pool2d(np.zeros((1, 4, 4)), 2)
    with pytest.raises(ValueError, match=r"padding must be at most the window's extent minus one"):
        distance_pool2d(x, 2, padding=2)


def test_registered_through_the_entry_point():
    reg = cnnkit.get_registry()
    assert "distance_pool" in reg.ops()
    assert reg.layers()["DistancePool2d"] is DistancePool2d
    ids = {c.id for c in reg.conformance_cases()}
    assert {c.id for c in CASES} <= ids
    record = reg.records["distance_pool"]
    assert record.dist == "cnnkit-distance-pool" and record.status == "loaded"


def test_the_plugin_adds_the_distance_weights_command(capsys):
    from cnnkit import cli

    assert cli.main(["distance-weights", "3", "--sigma", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "distance_pool weights w_m, kernel_size (3, 3), sigma 1.0 (they sum to 1):"
    assert lines[1:] == ["0.0751  0.1238  0.0751", "0.1238  0.2042  0.1238", "0.0751  0.1238  0.0751"]
    assert cli.main(["distance-weights", "3", "--sigma", "0"]) == 2
    assert capsys.readouterr().err == (
        "cnnkit: error: distance-weights: sigma must be a finite number > 0, got 0.0\n"
    )
