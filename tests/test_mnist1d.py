"""MNIST-1D: the loader, augmentation, Adam/AdamW against torch.optim, cnnkit train on it, the table command.

Every training here runs on a reduced MNIST-1D (500 signals) for a few epochs; the
full figures (4,000 / 1,000 signals, the recipes' epochs) are in the README.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from cnnkit.cli import main
from cnnkit.data import augment_signals, load_mnist1d, load_task
from cnnkit.layers import Parameter
from cnnkit.models import ARCHITECTURES, build_model
from cnnkit.optim import Adam, AdamW, make_optimizer
from cnnkit.training import evaluate, fit, predict

pytestmark = pytest.mark.usefixtures("one_torch_thread")

mnist1d = pytest.importorskip("mnist1d")


@pytest.fixture(scope="module")
def small():
    return load_mnist1d(num_samples=500)


@pytest.fixture
def small_task(monkeypatch):
    """cnnkit train --task mnist1d on 400 / 100 signals."""
    import cnnkit.data

    monkeypatch.setattr(
        cnnkit.data,
        "mnist1d_split",
        lambda seed=0, *, shuffle_seq=False: load_mnist1d(shuffle_seq=shuffle_seq, num_samples=500),
    )


# -- the data ------------------------------------------------------------------------------------


def test_load_mnist1d_is_the_packages_make_dataset_with_its_defaults():
    from mnist1d.data import get_dataset_args, make_dataset

    s = load_mnist1d()
    assert [a.shape for a in s] == [(4000, 1, 40), (4000,), (1000, 1, 40), (1000,)]
    assert s.X_train.dtype == np.float32 and s.y_train.dtype == np.int64
    assert sorted(set(s.y_test.tolist())) == list(range(10))
    args = get_dataset_args()  # seed 42, the package's defaults; fewer signals to keep the test quick
    args.num_samples = 600
    ref, ours = make_dataset(args), load_mnist1d(num_samples=600)
    np.testing.assert_array_equal(ours.X_test[:, 0], ref["x_test"].astype(np.float32))
    np.testing.assert_array_equal(ours.y_train, ref["y"])
    assert (
        load_task("mnist1d", seed=3).X_train.tobytes() == s.X_train.tobytes()
    )  # the seed does not change it


def test_shuffled_mnist1d_is_one_permutation_of_the_positions(small):
    sh = load_mnist1d(num_samples=500, shuffle_seq=True)
    np.testing.assert_array_equal(sh.y_train, small.y_train)
    # the same permutation of the 40 positions for every signal
    a, b = small.X_train[:, 0].astype(np.float64), sh.X_train[:, 0].astype(np.float64)
    d = ((a[:, :, None] - b[:, None, :]) ** 2).sum(axis=0)  # (40, 40): plain position i vs shuffled j
    match = d.argmin(axis=0)
    assert np.allclose(d.min(axis=0), 0.0, atol=1e-8)  # every shuffled position is one plain position
    assert sorted(match.tolist()) == list(range(40)) and not np.array_equal(match, np.arange(40))


def test_load_mnist1d_leaves_the_global_generator_alone():
    np.random.seed(7)  # noqa: NPY002
    expected = np.random.rand()  # noqa: NPY002
    np.random.seed(7)  # noqa: NPY002
    load_mnist1d(num_samples=100)
    assert np.random.rand() == expected  # noqa: NPY002


def test_missing_mnist1d_is_one_line(monkeypatch, tmp_path, capsys):
    from cnnkit.data import MissingExtraError

    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'cnnkit\[data\]'"):
        load_mnist1d()
    assert main(["train", "--task", "mnist1d", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnkit: error: MNIST-1D needs the mnist1d package: pip install 'cnnkit[data]'")
    assert err.count("\n") == 1


def test_augment_signals_shifts_scales_and_keeps_the_input():
    X = np.arange(12.0).reshape(3, 1, 4)
    before = X.copy()
    out = augment_signals(max_shift=2)(X, np.random.default_rng(0))
    np.testing.assert_array_equal(X, before)
    for x, o in zip(X[:, 0], out[:, 0]):  # every row is a circular shift of its input by at most 2
        assert any(np.array_equal(np.roll(x, k), o) for k in range(-2, 3))
    lin = augment_signals(max_shift=3, circular=False)(np.ones((50, 2, 6)), np.random.default_rng(1))
    zeros = (lin == 0).sum(axis=-1)  # zeros came in from one side: as many as the shift
    assert zeros.max() == 3 and zeros.min() == 0 and np.all(zeros[:, 0] == zeros[:, 1])
    sc = augment_signals(max_shift=0, scale=0.1)(np.ones((100, 1, 5)), np.random.default_rng(2))
    assert np.all(np.abs(sc - 1) <= 0.1) and np.all(sc == sc[:, :, :1])
    with pytest.raises(ValueError, match="must be >= 0"):
        augment_signals(max_shift=-1)


def test_fit_with_augmentation_keeps_the_order_and_predict_with_shifts(small):
    X, y = small.X_train[:64], small.y_train[:64]
    seen = []

    def aug(xb, rng):
        seen.append(xb.copy())
        return xb

    h1 = fit(build_model("paper-cnn", seed=0), X, y, epochs=1, augment=aug)
    h2 = fit(build_model("paper-cnn", seed=0), X, y, epochs=1)
    assert h1.train_loss == h2.train_loss  # an identity augmentation changes nothing
    assert sum(len(s) for s in seen) == 64
    m = build_model("mnist1d-cnn", seed=0)
    z = predict(m, small.X_test[:8], shifts=(-1, 0, 1))
    ref = np.mean([predict(m, np.roll(small.X_test[:8], k, axis=-1)) for k in (-1, 0, 1)], axis=0)
    np.testing.assert_allclose(z, ref, rtol=1e-6)
    assert evaluate(m, small.X_test[:8], small.y_test[:8], shifts=(0,)) == evaluate(
        m, small.X_test[:8], small.y_test[:8]
    )


# -- the architectures -----------------------------------------------------------------------------


def test_the_papers_architectures_have_the_papers_sizes():
    count = {
        n: sum(p.size for p in build_model(n).parameters()) for n in ("logistic", "paper-mlp", "paper-cnn")
    }
    assert count["logistic"] == 40 * 10 + 10
    assert count["paper-mlp"] == (40 * 100 + 100) + (100 * 100 + 100) + (100 * 10 + 10)
    # three Conv1d of 25 channels, kernel 5/3/3, then linear 125 -> 10 (length 40 -> 19 -> 10 -> 5)
    assert count["paper-cnn"] == (25 * 5 + 25) + 2 * (25 * 25 * 3 + 25) + (125 * 10 + 10)
    x = np.zeros((2, 1, 40), dtype=np.float32)
    for name in ("logistic", "paper-mlp", "paper-cnn", "mnist1d-cnn"):
        assert ARCHITECTURES[name].task == "mnist1d"
        assert build_model(name).infer(x).shape == (2, 10)


# -- Adam and AdamW against torch.optim ----------------------------------------------------------


@pytest.mark.parametrize(
    "cls, kw",
    [
        ("Adam", {}),
        ("Adam", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
        ("Adam", dict(weight_decay=0.01, amsgrad=True)),
        ("AdamW", {}),
        ("AdamW", dict(lr=0.02, weight_decay=0.3)),
        ("AdamW", dict(weight_decay=0.1, amsgrad=True)),
    ],
    ids=["adam", "adam-wd", "adam-amsgrad", "adamw", "adamw-wd", "adamw-amsgrad"],
)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_adam_matches_torch_for_20_steps(cls, kw, backend):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    w0, b0 = rng.normal(size=(3, 4)), rng.normal(size=4)
    wrap = (lambda a: a.copy()) if backend == "numpy" else torch.tensor
    params = [Parameter(wrap(w0)), Parameter(wrap(b0))]
    opt = {"Adam": Adam, "AdamW": AdamW}[cls](params, **kw)
    ref_params = [torch.tensor(w0, requires_grad=True), torch.tensor(b0, requires_grad=True)]
    ref = getattr(torch.optim, cls)(ref_params, **kw)
    for step in range(20):
        gw, gb = rng.normal(size=(3, 4)), rng.normal(size=4)
        opt.zero_grad()
        params[0].grad = wrap(gw)
        params[1].grad = None if step == 5 else wrap(gb)  # a step without a gradient skips it
        opt.step()
        ref.zero_grad()
        ref_params[0].grad = torch.tensor(gw)
        ref_params[1].grad = None if step == 5 else torch.tensor(gb)
        ref.step()
        for p, r in zip(params, ref_params):
            np.testing.assert_allclose(np.asarray(p.data), r.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_adam_defaults_and_errors():
    p = Parameter(np.zeros(2))
    a, w = Adam([p]), AdamW([p])
    assert (a.lr, a.betas, a.eps, a.weight_decay, a.amsgrad) == (1e-3, (0.9, 0.999), 1e-8, 0.0, False)
    assert w.weight_decay == 1e-2  # torch's AdamW default
    for kw, msg in [
        (dict(lr=0), "lr must be a finite number > 0"),
        (dict(lr=float("inf")), "lr must be a finite number > 0"),
        (dict(betas=(0.9, 1.0)), r"betas must be two numbers in \[0, 1\)"),
        (dict(eps=-1), "eps must be >= 0"),
        (dict(weight_decay=float("nan")), "weight_decay must be >= 0"),
    ]:
        with pytest.raises(ValueError, match=msg):
            Adam([p], **kw)
    with pytest.raises(ValueError, match="AdamW: params is an empty list"):
        AdamW([])
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; known: sgd, adam, adamw"):
        make_optimizer("rmsprop", [p], lr=0.1)


# -- cnnkit train --task mnist1d -------------------------------------------------------------------


def test_cnnkit_train_mnist1d_writes_everything(tmp_path, capsys, small_task):
    pytest.importorskip("matplotlib")
    from cnnkit import io as cio

    assert main(["train", "--task", "mnist1d", "--epochs", "3", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "cnnkit train: mnist1d-cnn (32394 parameters) on mnist1d (400 train / 100 held out)"
    )
    assert "3 epochs, seed 0, sgd, shifts up to 3" in out
    assert "mean over circular shifts -1..1; without:" in out
    record = json.loads((tmp_path / "history.json").read_text())
    assert (record["optimizer"], record["lr"], record["augment"], record["tta"]) == ("sgd", 0.05, 3, 1)
    split = load_mnist1d(num_samples=500)
    model = cio.load(tmp_path / "model.npz")
    acc = evaluate(model, split.X_test, split.y_test, shifts=(-1, 0, 1))[1]
    assert record["final_test_acc"] == acc and acc > 0.3
    C = np.array(record["confusion"])
    assert C.shape == (10, 10) and C.sum() == 100 and np.trace(C) == round(100 * acc)
    for name in ("curves.png", "confusion.png", "filters.png", "signals.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.parametrize(
    "arch, shuffled, epochs, low",
    [("logistic", False, 3, 0.1), ("paper-mlp", True, 3, 0.1), ("paper-cnn", False, 4, 0.15)],
)
def test_cnnkit_train_paper_rows_use_the_papers_recipe(
    tmp_path, capsys, small_task, arch, shuffled, epochs, low
):
    argv = ["train", "--task", "mnist1d", "--arch", arch, "--epochs", str(epochs), "--no-plot"]
    argv += ["--out", str(tmp_path)] + (["--shuffle-inputs"] if shuffled else [])
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"on mnist1d{' (shuffled)' if shuffled else ''} (400 train / 100 held out)" in out
    record = json.loads((tmp_path / "history.json").read_text())
    assert (record["optimizer"], record["lr"], record["batch_size"], record["lr_schedule"]) == (
        "adam",
        0.01,
        100,
        "constant",
    )
    assert record["shuffle_inputs"] is shuffled and record["final_test_acc"] > low


# -- cnnkit experiment mnist1d-table ----------------------------------------------------------------


def test_cnnkit_experiment_mnist1d_table_reduced(tmp_path, capsys):
    pytest.importorskip("torch")
    argv = [
        "experiment",
        "mnist1d-table",
        "--rows",
        "logistic,paper-cnn",
        "--samples",
        "300",
        "--epochs",
        "2",
    ]
    argv += ["--seeds", "0,1", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| model | paper | numpy | torch | s/run (numpy) | s/run (torch) |" in out
    assert "| paper-cnn (shuffled) | 56% |" in out and "| logistic | 32% |" in out
    assert "the paper's CNN loses" in out
    records = json.loads((tmp_path / "mnist1d-table.json").read_text())
    assert [(r["model"], r["backend"]) for r in records][:2] == [("logistic", "numpy"), ("logistic", "torch")]
    assert len(records) == 8 and all(len(r["accs"]) == 2 for r in records)
    for r in records:
        assert r["mean"] == pytest.approx(np.mean(r["accs"])) and r["std"] == pytest.approx(np.std(r["accs"]))
    # the same seeds give the same accuracy on both backends up to float32 rounding, here exactly
    by = {(r["model"], r["backend"]): r["accs"] for r in records}
    assert by[("logistic", "numpy")] == by[("logistic", "torch")]
    assert (tmp_path / "mnist1d-table.md").read_text().startswith("| model | paper |")
    assert main(["experiment", "mnist1d-table", "--rows", "gru"]) == 2
    assert "unknown --rows gru; known: logistic, paper-mlp, paper-cnn, mnist1d-cnn" in capsys.readouterr().err


def test_readme_table_is_what_the_command_wrote():
    """The README's MNIST-1D table is examples/results/mnist1d-table.md, and that is its JSON, formatted."""
    from pathlib import Path

    from cnnkit.experiments import table_markdown

    root = Path(__file__).resolve().parents[1]
    md = (root / "examples/results/mnist1d-table.md").read_text().split("\n\n")[0]
    records = json.loads((root / "examples/results/mnist1d-table.json").read_text())
    assert table_markdown(records) == md
    assert md in (root / "README.md").read_text()
    by = {(r["model"], r["backend"]): r for r in records}
    # the marks: the paper's rows within 3 points, the default >= 99% on NumPy, torch within 0.5
    for model, paper in (
        ("logistic", 32),
        ("paper-mlp", 68),
        ("paper-cnn", 94),
        ("paper-cnn (shuffled)", 56),
    ):
        for be in ("numpy", "torch"):
            assert abs(by[(model, be)]["mean"] - paper) <= 3, (model, be)
    assert by[("mnist1d-cnn", "numpy")]["mean"] >= 99 and by[("mnist1d-cnn", "numpy")]["seeds"] == [0, 1, 2]
    assert abs(by[("mnist1d-cnn", "torch")]["mean"] - by[("mnist1d-cnn", "numpy")]["mean"]) <= 0.5
