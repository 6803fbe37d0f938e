"""The learning loop: loss, optimiser and schedules against PyTorch, fit, and learning end to end."""

from __future__ import annotations

import io
import json
import math
import sys

import numpy as np
import pytest

from cnnkit.data import load_task, timeseries_split
from cnnkit.layers import Parameter
from cnnkit.losses import CrossEntropyLoss
from cnnkit.models import build_model
from cnnkit.optim import SGD, ConstantLR, CosineAnnealingLR, StepLR, make_scheduler
from cnnkit.training import History, evaluate, fit, predict

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- CrossEntropyLoss ------------------------------------------------------------------------------


def test_cross_entropy_values_and_gradient():
    z = np.array([[1.0, 2.0, 3.0], [0.5, 0.5, -1.0]])
    t = np.array([2, 0])
    loss = CrossEntropyLoss()
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    expected = -np.log(p[[0, 1], t])
    assert float(loss(z, t)) == pytest.approx(expected.mean(), rel=1e-12)
    onehot = np.eye(3)[t]
    np.testing.assert_allclose(loss.backward(), (p - onehot) / 2, rtol=1e-12)
    np.testing.assert_allclose(loss.backward(np.array(3.0)), 3 * (p - onehot) / 2, rtol=1e-12)
    np.testing.assert_allclose(CrossEntropyLoss(reduction="none")(z, t), expected, rtol=1e-12)
    assert float(CrossEntropyLoss(reduction="sum")(z, t)) == pytest.approx(expected.sum(), rel=1e-12)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        CrossEntropyLoss().backward()


@pytest.mark.parametrize("dtype, big", [(np.float64, 1e4), (np.float64, 1e300), (np.float32, 1e38)])
def test_cross_entropy_is_stable_on_huge_logits(dtype, big):
    # a naive exp(z) overflows here; the shifted log-sum-exp gives the exact answer
    z = np.array([[big, 0.0, -big], [-big, big, 0.0]], dtype=dtype)
    t = np.array([0, 0])
    loss = CrossEntropyLoss(reduction="none")
    per_example = np.asarray(loss(z, t), dtype=np.float64)
    assert np.all(np.isfinite(per_example))
    np.testing.assert_allclose(per_example, [0.0, 2 * big], rtol=1e-6)
    g = CrossEntropyLoss()
    g(z, t)
    grad = g.backward()
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, np.array([[0.0, 0.0, 0.0], [-1.0, 1.0, 0.0]]) / 2, atol=1e-7)


def test_cross_entropy_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    z = rng.normal(scale=30.0, size=(16, 10))
    t = rng.integers(0, 10, 16)
    zt = torch.tensor(z, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(zt, torch.tensor(t))
    ref.backward()
    loss = CrossEntropyLoss()
    assert float(loss(z, t)) == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(loss.backward(), zt.grad.numpy(), rtol=1e-10, atol=1e-15)
    # and on the torch backend, tensors in, tensors out
    ours = CrossEntropyLoss()
    assert float(ours(torch.tensor(z), torch.tensor(t))) == pytest.approx(ref.item(), rel=1e-12)
    assert isinstance(ours.backward(), torch.Tensor)


# -- SGD and the schedules, step for step against torch.optim ----------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {},
        dict(momentum=0.9),
        dict(momentum=0.9, weight_decay=1e-2),
        dict(momentum=0.8, dampening=0.3, weight_decay=5e-3),
        dict(momentum=0.9, nesterov=True, weight_decay=1e-3),
    ],
    ids=["plain", "momentum", "momentum-wd", "dampening", "nesterov"],
)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_sgd_matches_torch_step_for_step(kw, backend):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    w0, b0 = rng.normal(size=(3, 4)), rng.normal(size=4)
    grads = [(rng.normal(size=(3, 4)), rng.normal(size=4)) for _ in range(6)]
    wrap = (lambda a: a.copy()) if backend == "numpy" else torch.tensor
    params = [Parameter(wrap(w0)), Parameter(wrap(b0))]
    opt = SGD(params, lr=0.1, **kw)
    ref_params = [torch.tensor(w0, requires_grad=True), torch.tensor(b0, requires_grad=True)]
    ref = torch.optim.SGD(ref_params, lr=0.1, **kw)
    for gw, gb in grads:
        opt.zero_grad()
        assert all(p.grad is None for p in params)
        params[0].grad, params[1].grad = wrap(gw), wrap(gb)
        opt.step()
        ref.zero_grad()
        ref_params[0].grad, ref_params[1].grad = torch.tensor(gw), torch.tensor(gb)
        ref.step()
        for p, r in zip(params, ref_params):
            np.testing.assert_allclose(np.asarray(p.data), r.detach().numpy(), rtol=1e-13, atol=1e-15)


def test_sgd_skips_parameters_without_gradient_and_checks_arguments():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    a.grad = np.array([1.0, -1.0])
    SGD([a, b], lr=0.5).step()
    assert a.data.tolist() == [0.5, 1.5] and b.data.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="lr must be > 0, got 0"):
        SGD([a], lr=0)
    with pytest.raises(ValueError, match="momentum must be >= 0"):
        SGD([a], lr=0.1, momentum=-0.1)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        SGD([a], lr=0.1, weight_decay=-1)
    with pytest.raises(ValueError, match="nesterov needs momentum > 0"):
        SGD([a], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="empty list"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match=r"params\[0\] must be a cnnkit Parameter, got ndarray"):
        SGD([np.ones(2)], lr=0.1)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda o: CosineAnnealingLR(o, T_max=7), lambda o, s: s.CosineAnnealingLR(o, T_max=7)),
        (
            lambda o: CosineAnnealingLR(o, T_max=5, eta_min=0.01),
            lambda o, s: s.CosineAnnealingLR(o, T_max=5, eta_min=0.01),
        ),
        (lambda o: StepLR(o, 3, gamma=0.5), lambda o, s: s.StepLR(o, 3, gamma=0.5)),
        (lambda o: ConstantLR(o), lambda o, s: s.LambdaLR(o, lambda e: 1.0)),
    ],
    ids=["cosine", "cosine-eta-min", "step", "constant"],
)
def test_schedules_match_torch_lr_scheduler(ours, theirs):
    torch = pytest.importorskip("torch")
    opt = SGD([Parameter(np.zeros(1))], lr=0.2)
    ref_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
    sched, ref = ours(opt), theirs(ref_opt, torch.optim.lr_scheduler)
    for epoch in range(16):  # past T_max, where the cosine turns back up
        assert sched.get_last_lr()[0] == pytest.approx(ref.get_last_lr()[0], rel=1e-9, abs=1e-15), epoch
        assert opt.lr == sched.get_last_lr()[0]
        ref_opt.step()
        sched.step()
        ref.step()


def test_make_scheduler_and_schedule_errors():
    opt = SGD([Parameter(np.zeros(1))], lr=1.0)
    cos = make_scheduler("cosine", opt, 10)
    assert isinstance(cos, CosineAnnealingLR) and cos.T_max == 10
    step = make_scheduler("step", SGD([Parameter(np.zeros(1))], lr=1.0), 9)
    assert isinstance(step, StepLR) and (step.step_size, step.gamma) == (3, 0.1)
    with pytest.raises(ValueError, match="unknown schedule 'linear'; known: constant, cosine, step"):
        make_scheduler("linear", opt, 10)
    with pytest.raises(ValueError, match="T_max must be an int >= 1, got 0"):
        CosineAnnealingLR(opt, 0)
    with pytest.raises(ValueError, match="step_size must be an int >= 1"):
        StepLR(opt, 0)
    with pytest.raises(TypeError, match="optimizer must have an lr attribute"):
        StepLR(object(), 2)


# -- fit --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_task("digits", seed=0)


def test_fit_is_reproducible_and_records_every_epoch(digits):
    X, y = digits.X_train[:256], digits.y_train[:256]
    Xt, yt = digits.X_test[:128], digits.y_test[:128]

    def run(shuffle_seed):
        model = build_model("digits-cnn", seed=3)
        h = fit(model, X, y, Xt, yt, epochs=3, batch_size=32, lr_schedule="cosine", seed=shuffle_seed)
        return model, h

    m1, h1 = run(0)
    _, h2 = run(0)
    _, h3 = run(1)
    assert h1.train_loss == h2.train_loss and h1.test_loss == h2.test_loss  # bit-for-bit
    assert h1.train_loss[0] != h3.train_loss[0]  # another shuffle, another run
    assert h1.epoch == [1, 2, 3]
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"):
        assert len(getattr(h1, key)) == 3, key
    np.testing.assert_allclose(h1.lr, [0.05, 0.05 * 0.75, 0.05 * 0.25])
    assert h1.train_loss[-1] < h1.train_loss[0] < math.log(10) + 0.2
    assert all(0 <= a <= 1 for a in h1.train_acc + h1.test_acc)
    # the last epoch's held-out figures are the trained model's
    loss, acc = evaluate(m1, Xt, yt)
    assert (loss, acc) == (pytest.approx(h1.test_loss[-1]), h1.test_acc[-1])
    assert predict(m1, Xt, batch_size=50).shape == (128, 10)
    assert set(h1.as_dict()) == {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"}


def test_fit_without_held_out_data_and_with_callback(digits):
    seen = []
    h = fit(
        build_model("digits-cnn", seed=0),
        digits.X_train[:64],
        digits.y_train[:64],
        epochs=2,
        on_epoch=lambda e, hist: seen.append((e, len(hist.train_loss))),
    )
    assert seen == [(1, 1), (2, 2)]
    assert all(math.isnan(v) for v in h.test_loss + h.test_acc)
    assert isinstance(h, History)


def test_fit_errors(digits):
    model = build_model("digits-cnn", seed=0)
    with pytest.raises(ValueError, match="epochs and batch_size must be >= 1, got 0 and 32"):
        fit(model, digits.X_train, digits.y_train, epochs=0)
    with pytest.raises(ValueError, match="X_train has 10 examples but y_train has 9"):
        fit(model, digits.X_train[:10], digits.y_train[:9])
    other = SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="scheduler must be built on the optimizer"):
        fit(model, digits.X_train[:10], digits.y_train[:10], scheduler=StepLR(other, 1))


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


@pytest.mark.parametrize("tty", [True, False])
def test_progress_bar_only_on_a_terminal(digits, monkeypatch, tty):
    stream = _Stream(tty)
    monkeypatch.setattr("sys.stderr", stream)
    fit(build_model("digits-cnn", seed=0), digits.X_train[:96], digits.y_train[:96], epochs=1, batch_size=32)
    text = stream.getvalue()
    if tty:
        assert "\repoch 1/1 [########################] 96/96 loss " in text
        assert "\repoch 1/1 [########................] 32/96 loss " in text
    else:
        assert text == ""
    # an explicit progress=True draws even when stderr is not a terminal
    stream2 = _Stream(False)
    monkeypatch.setattr("sys.stderr", stream2)
    fit(build_model("digits-cnn"), digits.X_train[:32], digits.y_train[:32], epochs=1, progress=True)
    assert "32/32 loss" in stream2.getvalue()


# -- learning end to end ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-9), ("float32", 1e-4)])
def test_numpy_and_torch_backends_learn_the_same(digits, dtype, rtol):
    pytest.importorskip("torch")
    histories = {}
    for backend in ("numpy", "torch"):
        model = build_model("digits-cnn", seed=0).to(backend, dtype=dtype)
        histories[backend] = fit(model, *digits, epochs=2, lr_schedule="cosine", seed=0)
    a, b = histories["numpy"], histories["torch"]
    # the first epoch's losses agree to rtol (1e-4 in float32, rounding-level in float64)
    np.testing.assert_allclose(b.train_loss[0], a.train_loss[0], rtol=rtol)
    np.testing.assert_allclose(b.test_loss[0], a.test_loss[0], rtol=rtol)
    if dtype == "float64":
        np.testing.assert_allclose(b.train_loss, a.train_loss, rtol=rtol)
        np.testing.assert_allclose(b.test_loss, a.test_loss, rtol=rtol)
    assert abs(a.test_acc[-1] - b.test_acc[-1]) <= 0.005
    assert a.test_acc[-1] > 0.9


def test_conv1d_learns_the_time_series():
    split = timeseries_split(seed=0)
    model = build_model("timeseries-cnn1d", seed=0)
    h = fit(model, *split, epochs=8, lr=0.1, lr_schedule="cosine", weight_decay=1e-3, seed=0)
    assert min(h.test_acc[-3:]) >= 0.95, h.test_acc  # 97.5% at seed 0
    assert h.train_acc[-1] >= 0.97


# -- cnnkit train ------------------------------------------------------------------------------------


def test_cnnkit_train_default_run_reaches_97_percent(tmp_path, capsys):
    """The README's main job with default arguments: NumPy, digits-cnn-wide, 20 epochs, cosine from 0.1."""
    pytest.importorskip("matplotlib")
    from cnnkit import io as cio
    from cnnkit.cli import main

    assert main(["train", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "cnnkit train: digits-cnn-wide (21386 parameters) on digits (1347 train / 450 held out)"
    )
    assert "backend numpy, 20 epochs, seed 0" in out
    assert "epoch 20/20" in out and "lr 0.1 " in out
    record = json.loads((tmp_path / "history.json").read_text())
    assert record["lr_schedule"] == "cosine" and record["lr"] == 0.1 and record["epochs"] == 20
    final = record["final_test_acc"]
    assert final >= 0.97
    assert min(record["history"]["test_acc"][-5:]) >= 0.97  # settled, not a lucky last epoch
    assert f"final test accuracy: {100 * final:.2f}% on 450 held-out examples" in out
    # the saved model is the trained one
    split = load_task("digits", seed=0)
    assert evaluate(cio.load(tmp_path / "model.npz"), split.X_test, split.y_test)[1] == final
    assert (tmp_path / "filters.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    names = ("model.npz", "history.json", "curves.png", "confusion.png")
    written = ", ".join(str(tmp_path / n) for n in names)
    assert f"wrote {written}, {tmp_path / 'filters.png'}" in out
    # the confusion matrix in history.json is the saved model's, on the held-out digits
    C = np.array(record["confusion"])
    assert C.shape == (10, 10) and C.sum() == 450 and np.trace(C) == round(final * 450)


def test_cnnkit_train_without_matplotlib_skips_the_picture(tmp_path, capsys, monkeypatch):
    from cnnkit.cli import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    args = ["train", "--task", "timeseries", "--epochs", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert (
        "note: matplotlib is not installed (pip install 'cnnkit[plot]'); "
        "skipped curves.png, confusion.png, filters.png"
    ) in out
    assert not any(tmp_path.glob("*.png"))
    assert (tmp_path / "model.npz").exists() and (tmp_path / "history.json").exists()


def test_plot_filters_for_1d_and_2d_models(tmp_path):
    pytest.importorskip("matplotlib")
    from cnnkit.cli.train import plot_filters

    for name, task in (("timeseries-cnn1d", "timeseries"), ("digits-cnn", "digits")):
        x = load_task(task, seed=0).X_test[0]
        path = tmp_path / f"{name}.png"
        assert plot_filters(build_model(name, seed=0), x, path) is None
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_cnnkit_train_no_plot_and_other_schedule(tmp_path, capsys):
    from cnnkit.cli import main

    args = ["train", "--epochs", "2", "--lr-schedule", "step", "--no-plot", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "note:" not in out and not any(tmp_path.glob("*.png"))
    record = json.loads((tmp_path / "history.json").read_text())
    assert record["lr_schedule"] == "step" and record["history"]["lr"] == pytest.approx([0.1, 0.01])


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--epochs", "0", "argument --epochs: expected an integer > 0, got '0'"),
        ("--batch-size", "x", "argument --batch-size: expected an integer > 0, got 'x'"),
        ("--lr", "-1", "argument --lr: expected a finite number > 0, got '-1'"),
    ],
)
def test_cnnkit_train_rejects_bad_numbers(capsys, flag, value, message):
    from cnnkit.cli import main

    with pytest.raises(SystemExit):
        main(["train", flag, value])
    assert message in capsys.readouterr().err


def test_plot_filters_needs_filters(tmp_path):
    pytest.importorskip("matplotlib")
    from cnnkit.cli.train import plot_filters
    from cnnkit.layers import Flatten, Linear, ReLU, Sequential

    note = plot_filters(Sequential(ReLU(), Flatten(), Linear(64, 2)), np.zeros((1, 8, 8)), tmp_path / "f.png")
    assert note == "the first layer (ReLU) has no filters to draw; skipped f.png"
