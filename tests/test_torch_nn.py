"""cnnkit_torch.nn: torch.nn.Module layers on cnnkit's Functions, held against torch.nn itself."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cnnkit_torch import nn as cnn  # noqa: E402

from cnnkit.models import build_model  # noqa: E402

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
    ),
]

# (ours, torch.nn's, input shape); torch's LPPool is not the true norm, so its inputs are made positive
PAIRS = [
    (
        "conv1d",
        lambda: cnn.Conv1d(3, 4, 3, stride=2, padding=1),
        lambda: torch.nn.Conv1d(3, 4, 3, 2, 1),
        (2, 3, 9),
    ),
    (
        "conv2d",
        lambda: cnn.Conv2d(2, 6, 3, padding=1, groups=2),
        lambda: torch.nn.Conv2d(2, 6, 3, 1, 1, 1, 2),
        (2, 2, 7, 6),
    ),
    (
        "conv2d-same-dil",
        lambda: cnn.Conv2d(2, 3, (3, 2), padding="same", dilation=2, bias=False),
        lambda: torch.nn.Conv2d(2, 3, (3, 2), padding="same", dilation=2, bias=False),
        (2, 2, 7, 6),
    ),
    (
        "conv3d",
        lambda: cnn.Conv3d(2, 3, 2, stride=(1, 2, 1)),
        lambda: torch.nn.Conv3d(2, 3, 2, (1, 2, 1)),
        (1, 2, 4, 5, 4),
    ),
    ("maxpool1d", lambda: cnn.MaxPool1d(3, 2, 1), lambda: torch.nn.MaxPool1d(3, 2, 1), (2, 3, 9)),
    (
        "maxpool2d-ceil",
        lambda: cnn.MaxPool2d(2, ceil_mode=True),
        lambda: torch.nn.MaxPool2d(2, ceil_mode=True),
        (2, 3, 5, 7),
    ),
    ("maxpool3d", lambda: cnn.MaxPool3d(2), lambda: torch.nn.MaxPool3d(2), (1, 2, 4, 4, 4)),
    ("avgpool1d", lambda: cnn.AvgPool1d(3, 1, 1), lambda: torch.nn.AvgPool1d(3, 1, 1), (2, 3, 8)),
    (
        "avgpool2d-nopad",
        lambda: cnn.AvgPool2d(3, 2, 1, count_include_pad=False),
        lambda: torch.nn.AvgPool2d(3, 2, 1, count_include_pad=False),
        (2, 3, 7, 6),
    ),
    ("avgpool3d", lambda: cnn.AvgPool3d(2), lambda: torch.nn.AvgPool3d(2), (1, 2, 4, 4, 4)),
    ("lppool1d", lambda: cnn.LPPool1d(2, 3), lambda: torch.nn.LPPool1d(2, 3), (2, 3, 9)),
    ("lppool2d", lambda: cnn.LPPool2d(3, 2), lambda: torch.nn.LPPool2d(3, 2), (2, 3, 6, 6)),
    ("lppool3d", lambda: cnn.LPPool3d(2, 2), lambda: torch.nn.LPPool3d(2, 2), (1, 2, 4, 4, 4)),
    ("globalmax", lambda: cnn.GlobalMaxPool(), lambda: torch.nn.AdaptiveMaxPool2d(1), (2, 3, 5, 4)),
    ("globalavg", lambda: cnn.GlobalAvgPool(), lambda: torch.nn.AdaptiveAvgPool1d(1), (2, 3, 7)),
    ("relu", lambda: cnn.ReLU(), lambda: torch.nn.ReLU(), (3, 4)),
    ("leakyrelu", lambda: cnn.LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2), (3, 4)),
    ("sigmoid", lambda: cnn.Sigmoid(), lambda: torch.nn.Sigmoid(), (3, 4)),
    ("tanh", lambda: cnn.Tanh(), lambda: torch.nn.Tanh(), (3, 4)),
    ("flatten", lambda: cnn.Flatten(), lambda: torch.nn.Flatten(), (2, 3, 4, 5)),
    ("linear", lambda: cnn.Linear(5, 3), lambda: torch.nn.Linear(5, 3), (4, 5)),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("ours_fn", "theirs_fn", "shape"), [p[1:] for p in PAIRS], ids=[p[0] for p in PAIRS])
def test_forward_and_every_gradient_match_torch_nn(ours_fn, theirs_fn, shape, device):
    torch.manual_seed(0)
    ours = ours_fn().to(device=device, dtype=torch.float64)
    theirs = theirs_fn().to(device=device, dtype=torch.float64)
    theirs.load_state_dict(ours.state_dict())  # torch.nn's keys, ours' numbers
    x = torch.rand(shape, dtype=torch.float64, device=device) + 0.1
    if "pool" not in type(ours).__name__.lower():
        x = x - 0.6  # both signs, except for torch's LPPool (not the true norm)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ours(x1), theirs(x2)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-10)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-10)
    for (name, p1), (_, p2) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-5, atol=1e-10, msg=name)
    assert type(y1.grad_fn)._forward_cls.__module__ == "cnnkit_torch.ops"


def test_cross_entropy_matches_torch_and_its_gradient():
    torch.manual_seed(1)
    a = torch.randn(6, 5, dtype=torch.float64)
    t = torch.tensor([0, 4, 2, 2, 1, 3])
    for reduction in ("mean", "sum", "none"):
        a1, a2 = a.clone().requires_grad_(), a.clone().requires_grad_()
        e1 = cnn.CrossEntropyLoss(reduction=reduction)(a1, t)
        e2 = torch.nn.CrossEntropyLoss(reduction=reduction)(a2, t)
        torch.testing.assert_close(e1, e2, rtol=1e-12, atol=0)
        e1.sum().backward()
        e2.sum().backward()
        torch.testing.assert_close(a1.grad, a2.grad, rtol=1e-10, atol=1e-14)
        assert type(e1.grad_fn).__name__ == "CrossEntropyBackward"


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda: cnn.Conv1d(3, 4, 5), lambda: torch.nn.Conv1d(3, 4, 5)),
        (lambda: cnn.Conv2d(4, 8, (3, 2), groups=2), lambda: torch.nn.Conv2d(4, 8, (3, 2), groups=2)),
        (lambda: cnn.Conv3d(2, 3, 2, bias=False), lambda: torch.nn.Conv3d(2, 3, 2, bias=False)),
        (lambda: cnn.Linear(7, 3), lambda: torch.nn.Linear(7, 3)),
    ],
)
def test_initialisation_is_torch_nn_number_for_number(ours, theirs):
    torch.manual_seed(123)
    a = ours()
    torch.manual_seed(123)
    b = theirs()
    assert a.state_dict().keys() == b.state_dict().keys()
    for key, value in b.state_dict().items():
        assert torch.equal(a.state_dict()[key], value), key
    fan_in = math.prod(a.weight.shape[1:])
    assert a.weight.abs().max() <= 1 / math.sqrt(fan_in)


def test_state_dict_round_trip_both_directions():
    torch.manual_seed(0)
    native = torch.nn.Conv2d(3, 5, 3, padding=1)
    ours = cnn.Conv2d(3, 5, 3, padding=1)
    assert str(ours.load_state_dict(native.state_dict())) == "<All keys matched successfully>"
    assert torch.equal(ours.weight, native.weight) and torch.equal(ours.bias, native.bias)
    ours.reset_parameters()
    native.load_state_dict(ours.state_dict())
    assert torch.equal(ours.weight, native.weight) and torch.equal(ours.bias, native.bias)
    lin, nlin = cnn.Linear(4, 2, bias=False), torch.nn.Linear(4, 2, bias=False)
    nlin.load_state_dict(lin.state_dict())
    assert list(lin.state_dict()) == ["weight"] and torch.equal(nlin.weight, lin.weight)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda: cnn.Conv2d(1, 16, 3, padding=1), lambda: torch.nn.Conv2d(1, 16, 3, padding=1)),
        (lambda: cnn.Conv1d(4, 4, 3, 2, 0, 2, 2, False), lambda: torch.nn.Conv1d(4, 4, 3, 2, 0, 2, 2, False)),
        (lambda: cnn.Conv3d(1, 2, 3, padding="same"), lambda: torch.nn.Conv3d(1, 2, 3, padding="same")),
        (lambda: cnn.MaxPool2d(2), lambda: torch.nn.MaxPool2d(2)),
        (lambda: cnn.AvgPool1d(3, 2, 1), lambda: torch.nn.AvgPool1d(3, 2, 1)),
        (lambda: cnn.LPPool2d(2, 3), lambda: torch.nn.LPPool2d(2, 3)),
        (lambda: cnn.Linear(3, 2), lambda: torch.nn.Linear(3, 2)),
        (lambda: cnn.LeakyReLU(0.1), lambda: torch.nn.LeakyReLU(0.1)),
        (lambda: cnn.ReLU(), lambda: torch.nn.ReLU()),
        (lambda: cnn.Flatten(), lambda: torch.nn.Flatten()),
    ],
)
def test_repr_is_torch_nn_repr(ours, theirs):
    assert repr(ours()) == repr(theirs())


def test_flip_shows_in_repr_and_rotates_the_kernel():
    conv = cnn.Conv2d(1, 1, 3, padding=1, flip=True, bias=False).double()
    assert (
        repr(conv) == "Conv2d(1, 1, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False, flip=True)"
    )
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[-1.0, -2, -1], [0, 0, 0], [1, 2, 1]]]]))
    x = torch.arange(1.0, 10.0, dtype=torch.float64).reshape(1, 1, 3, 3)
    assert conv(x)[0, 0].tolist() == [[-13.0, -20.0, -17.0], [-18.0, -24.0, -18.0], [13.0, 20.0, 17.0]]


def test_grad_fn_is_cnnkits_function():
    net = torch.nn.Sequential(
        cnn.Conv2d(1, 2, 3), cnn.ReLU(), cnn.MaxPool2d(2), cnn.Flatten(), cnn.Linear(8, 3)
    )
    y = net(torch.randn(2, 1, 6, 6))
    assert type(y.grad_fn).__name__ == "LinearBackward"
    fn = y.grad_fn
    names = []
    while fn is not None:
        names.append(type(fn).__name__)
        fn = next(
            (f for f, _ in fn.next_functions if f is not None and "Accumulate" not in type(f).__name__), None
        )
    assert names == ["LinearBackward", "FlattenBackward", "MaxPoolBackward", "ReLUBackward", "ConvBackward"]
    from cnnkit_torch import ops

    assert type(y.grad_fn)._forward_cls is ops.Linear


@pytest.mark.parametrize("device", DEVICES)
def test_module_to_dtype_and_device(device):
    conv = cnn.Conv2d(2, 3, 3, device=device, dtype=torch.float64)
    assert conv.weight.dtype == torch.float64 and conv.weight.device.type == device
    conv = conv.to(torch.float32)
    y = conv(torch.zeros(1, 2, 5, 5, device=device))
    assert y.dtype == torch.float32 and y.device.type == device and y.shape == (1, 3, 3, 3)
    lin = cnn.Linear(4, 2).to(torch.float64)
    assert lin(torch.ones(1, 4, dtype=torch.float64)).dtype == torch.float64


def test_training_with_torch_optim_sgd_matches_native_torch_nn():
    def build(ns):
        return torch.nn.Sequential(
            ns.Conv2d(1, 4, 3, padding=1),
            ns.ReLU(),
            ns.MaxPool2d(2),
            ns.Conv2d(4, 6, 3, padding=1),
            ns.ReLU(),
            ns.AvgPool2d(2),
            ns.Flatten(),
            ns.Linear(6 * 2 * 2, 3),
        ).double()

    torch.manual_seed(0)
    ours = build(cnn)
    torch.manual_seed(0)
    native = build(torch.nn)
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), native.state_dict().values()))
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(40, 1, 8, 8, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=gen)
    runs = []
    for net, loss_fn in ((ours, cnn.CrossEntropyLoss()), (native, torch.nn.CrossEntropyLoss())):
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        losses = []
        for step in range(6):
            xb, yb = X[step * 8 % 40 :][:8], y[step * 8 % 40 :][:8]
            opt.zero_grad()
            loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        runs.append(losses)
    np.testing.assert_allclose(runs[0], runs[1], rtol=0, atol=1e-6)
    assert runs[0][-1] != runs[0][0]  # it did learn something
    for a, b in zip(ours.parameters(), native.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: cnn.Conv2d(3, 4, 0), "kernel_size"),
        (lambda: cnn.Conv1d(3, 4, (2, 2)), "kernel_size"),
        (lambda: cnn.Conv2d(3, 4, 3, groups=2), "groups=2 must divide in_channels"),
        (lambda: cnn.Conv2d(0, 4, 3), "in_channels"),
        (lambda: cnn.Conv2d(2, 4, 3, stride=0), "stride"),
        (lambda: cnn.Conv2d(2, 4, 3, padding=-1), "padding"),
        (lambda: cnn.Conv2d(2, 4, 3, padding="full"), "padding"),
        (lambda: cnn.MaxPool2d(0), "kernel_size"),
        (lambda: cnn.ConvTranspose2d(2, 4, 3, stride=2, output_padding=2), "output_padding"),
        (lambda: cnn.AdaptiveAvgPool2d(0), "output_size"),
        (lambda: cnn.AvgPool3d((2, 2)), "kernel_size"),
        (lambda: cnn.Linear(0, 3), "in_features"),
        (lambda: cnn.CrossEntropyLoss(reduction="avg"), "reduction"),
        (lambda: cnn.LPPool2d(0, 2), "norm_type"),
        (lambda: cnn.LPPool1d(-1.5, 2), "norm_type"),
        (lambda: cnn.LPPool3d(float("inf"), 2), "norm_type"),
        (lambda: cnn.GlobalLPPool(0), "norm_type"),
    ],
)
def test_bad_constructor_arguments_raise_value_error_naming_them(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_types_raise_type_error():
    with pytest.raises(TypeError, match="kernel_size"):
        cnn.Conv2d(3, 4, 2.5)
    with pytest.raises(TypeError, match="bias"):
        cnn.Conv2d(3, 4, 3, bias="yes")
    for make, name in [
        (lambda: cnn.LPPool2d("2", 2), "norm_type"),
        (lambda: cnn.GlobalLPPool(None), "norm_type"),
        (lambda: cnn.LeakyReLU("0.1"), "negative_slope"),
        (lambda: cnn.Flatten(1.5), "start_dim"),
        (lambda: cnn.Flatten(1, "-1"), "end_dim"),
        (lambda: cnn.ReLU(inplace="no"), "inplace"),
        (lambda: cnn.LeakyReLU(0.1, inplace=1), "inplace"),
    ]:
        with pytest.raises(TypeError, match=f"{name} must be"):
            make()


def test_bad_input_gets_the_cores_error():
    conv = cnn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r"conv2d: .*3.*channels|channels.*conv2d"):
        conv(torch.zeros(1, 2, 5, 5))
    with pytest.raises(ValueError, match="conv2d"):
        conv(torch.zeros(1, 3, 5))
    with pytest.raises(ValueError, match="linear"):
        cnn.Linear(3, 2)(torch.zeros(2, 4))


def test_from_cnnkit_converts_every_parameterless_layer():
    from cnnkit import layers as L

    model = L.Sequential(
        L.Conv2d(2, 3, 3, padding=1, seed=0),
        L.LeakyReLU(0.1),
        L.MaxPool2d(2),
        L.Tanh(),
        L.AvgPool2d(1),
        L.Sigmoid(),
        L.LPPool2d(2, 1),
        L.ReLU(),
        L.GlobalLPPool(3),
        L.GlobalMaxPool(),
        L.GlobalAvgPool(),
        L.Flatten(),
        L.Linear(3, 2, seed=1),
    )
    net = cnn.from_cnnkit(model, dtype=torch.float64)
    assert [type(m).__name__ for m in net] == [type(layer).__name__ for layer in model.layers]
    x = np.random.default_rng(0).normal(size=(2, 2, 6, 6))
    want = model.infer(x.astype(np.float32))
    np.testing.assert_allclose(net(torch.from_numpy(x)).detach().numpy(), want, rtol=1e-4, atol=1e-5)


def test_from_cnnkit_gives_the_same_model_and_copy_back():
    model = build_model("timeseries-cnn1d", seed=3, backend="numpy")
    net = cnn.from_cnnkit(model, dtype=torch.float64)
    assert [k for k, _ in model.named_parameters()] == list(net.state_dict())
    x = np.random.default_rng(0).normal(size=(3, 1, 64))
    want = model.infer(x.astype(np.float32))
    got = net(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(2)
    cnn.copy_to_cnnkit(net, model)
    assert model.layers[0].weight.data.dtype == np.float32
    np.testing.assert_allclose(model.layers[0].weight.data, net[0].weight.detach().numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="copy_to_cnnkit"):
        cnn.copy_to_cnnkit(torch.nn.Sequential(cnn.Linear(2, 2)), model)


def test_new_layers_match_torch_nn_module_for_module():
    """ConvTranspose, adaptive pools, return_indices and unpooling: torch.nn's names, state dicts,
    reprs, initial numbers (same seed) and outputs."""
    pairs = [
        (
            cnn.ConvTranspose1d(2, 4, 3, stride=2, padding=1, output_padding=1),
            torch.nn.ConvTranspose1d,
            (2, 4, 3),
            dict(stride=2, padding=1, output_padding=1),
            (2, 2, 5),
        ),
        (
            cnn.ConvTranspose2d(4, 6, (3, 2), 2, 1, 1, 2, False, 2),
            torch.nn.ConvTranspose2d,
            (4, 6, (3, 2), 2, 1, 1, 2, False, 2),
            {},
            (1, 4, 5, 4),
        ),
        (cnn.ConvTranspose3d(2, 2, 2), torch.nn.ConvTranspose3d, (2, 2, 2), {}, (1, 2, 3, 3, 3)),
        (cnn.AdaptiveAvgPool2d((3, None)), torch.nn.AdaptiveAvgPool2d, ((3, None),), {}, (2, 3, 7, 5)),
        (cnn.AdaptiveMaxPool1d(3), torch.nn.AdaptiveMaxPool1d, (3,), {}, (2, 3, 7)),
        (
            cnn.AvgPool2d(3, 2, 1, False, True, 2),
            torch.nn.AvgPool2d,
            (3, 2, 1, False, True, 2),
            {},
            (1, 2, 6, 6),
        ),
        (
            cnn.Conv2d(2, 4, 3, 1, 2),
            torch.nn.Conv2d,
            (2, 4, 3, 1, 2, 1, 1, True, "reflect"),
            {},
            (1, 2, 5, 6),
        ),
        (
            cnn.Conv1d(2, 2, 3),
            torch.nn.Conv1d,
            (2, 2, 3),
            dict(padding=1, padding_mode="circular"),
            (2, 2, 5),
        ),
        (
            cnn.Conv3d(1, 2, 2),
            torch.nn.Conv3d,
            (1, 2, 2),
            dict(padding=1, padding_mode="replicate"),
            (1, 1, 3, 3, 3),
        ),
    ]
    for ours, cls, args, kwargs, shape in pairs:
        torch.manual_seed(0)
        mine = type(ours)(*args, **kwargs)
        torch.manual_seed(0)
        theirs = cls(*args, **kwargs)
        assert repr(mine) == repr(theirs)
        assert {k: v.shape for k, v in mine.state_dict().items()} == {
            k: v.shape for k, v in theirs.state_dict().items()
        }
        for k, v in theirs.state_dict().items():
            torch.testing.assert_close(mine.state_dict()[k], v)
        x = torch.randn(*shape, dtype=torch.float32)
        torch.testing.assert_close(mine(x), theirs(x))
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    y, idx = cnn.MaxPool2d(2, return_indices=True)(x)
    y2, idx2 = torch.nn.MaxPool2d(2, return_indices=True)(x)
    assert torch.equal(idx, idx2) and torch.equal(y, y2)
    back = cnn.MaxUnpool2d(2)(y, idx)
    torch.testing.assert_close(back, torch.nn.MaxUnpool2d(2)(y2, idx2))
    assert repr(cnn.MaxUnpool2d(2)) == repr(torch.nn.MaxUnpool2d(2))
    back.sum().backward()
    assert x.grad is not None and float(x.grad.sum()) == 2 * 3 * 9


def test_a_torch_nn_model_of_the_new_layers_loads_both_ways_and_matches():
    """Conv with padding_mode, BatchNorm, ConvTranspose, Dropout, adaptive pooling: torch.nn's model and
    cnnkit_torch.nn's, one state dict loaded strictly in both directions, same outputs and gradients."""

    def build(nn):
        return torch.nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect"),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1),
            nn.Dropout(0.5),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(12, 5),
        ).double()

    torch.manual_seed(0)
    theirs = build(torch.nn)
    ours = build(cnn)
    assert str(ours.load_state_dict(theirs.state_dict(), strict=True)) == "<All keys matched successfully>"
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    for mode in ("train", "eval"):
        getattr(ours, mode)()
        getattr(theirs, mode)()
        if mode == "train":  # dropout draws differ between the two: compare without it
            ours[5].p = theirs[5].p = 0.0  # set on the module, it reaches the definition
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ours(xa), theirs(xb)
        torch.testing.assert_close(ya, yb, rtol=1e-10, atol=1e-12)
        ya.square().sum().backward()
        yb.square().sum().backward()
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-10, atol=1e-12)
        for (name, pa), (_, pb) in zip(ours.named_parameters(), theirs.named_parameters()):
            torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-9, atol=1e-12, msg=name)
            pa.grad = pb.grad = None
    torch.testing.assert_close(ours[1].running_mean, theirs[1].running_mean)
    torch.testing.assert_close(ours[1].running_var, theirs[1].running_var)
