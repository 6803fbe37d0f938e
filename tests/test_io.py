"""Saving and loading models: one .npz, never a pickle, any backend to any backend, clear errors."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from cnnkit import io
from cnnkit.data import load_task
from cnnkit.layers import Conv1d, Flatten, GlobalAvgPool, GlobalLPPool, LeakyReLU, Linear, Sequential
from cnnkit.models import build_model
from cnnkit.training import fit, predict

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    return load_task("digits", seed=0)


@pytest.fixture(scope="module")
def trained(digits):
    """A digits-cnn trained for one epoch on NumPy (so its weights are not just the seeded init)."""
    model = build_model("digits-cnn", seed=1)
    fit(model, digits.X_train, digits.y_train, epochs=1)
    return model


@pytest.mark.parametrize("src, dst", [("numpy", "torch"), ("torch", "numpy"), ("numpy", "numpy")])
def test_save_on_one_backend_load_on_the_other(tmp_path, digits, trained, src, dst):
    pytest.importorskip("torch")
    model = io.load(_saved(trained, tmp_path / "a.npz"), backend=src)  # the trained weights on src
    path = io.save(model, tmp_path / "m.npz", metadata={"arch": "digits-cnn", "input_shape": [1, 8, 8]})
    loaded = io.load(path, backend=dst)
    assert loaded.metadata == {"arch": "digits-cnn", "input_shape": [1, 8, 8]}
    assert type(loaded.parameters()[0].data).__module__.split(".")[0] == dst
    for (name, a), (name_b, b) in zip(model.named_parameters(), loaded.named_parameters()):
        assert name == name_b
        np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data))
    before, after = predict(model, digits.X_test), predict(loaded, digits.X_test)
    np.testing.assert_array_equal(before.argmax(axis=1), after.argmax(axis=1))  # identical predictions
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)
    assert (before.argmax(axis=1) == digits.y_test).mean() > 0.3  # trained: well above chance (0.1)


def _saved(model, path):
    io.save(model, path)
    return path


def test_file_is_plain_arrays_and_json(tmp_path, trained):
    path = io.save(trained, tmp_path / "m.npz", metadata={"note": "x"})
    with zipfile.ZipFile(path) as z:
        names = sorted(z.namelist())
    assert names == sorted(["__architecture__.npy"] + [f"{n}.npy" for n, _ in trained.named_parameters()])
    with np.load(path, allow_pickle=False) as f:  # no entry needs a pickle
        arch = json.loads(str(f["__architecture__"]))
        assert all(f[k].dtype != object for k in f.files)
    assert arch["format"] == "cnnkit-model" and arch["version"] == 1
    assert [layer["class"] for layer in arch["model"]["layers"]] == [
        "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear"
    ]  # fmt: skip
    assert arch["model"]["layers"][0]["config"]["kernel_size"] == [3, 3]
    assert arch["metadata"] == {"note": "x"}


def test_round_trip_of_other_layers_and_float64(tmp_path):
    model = Sequential(
        Conv1d(2, 4, 3, stride=2, padding="same", dilation=1, groups=2, bias=False, seed=0),
        LeakyReLU(0.2),
        GlobalAvgPool(),
        Flatten(),
        Linear(4, 3, seed=1),
    ).to("numpy", dtype="float64")
    loaded = io.load(io.save(model, tmp_path / "m.npz"), "numpy", dtype="float64")
    assert repr(loaded) == repr(model)
    x = np.random.default_rng(0).normal(size=(5, 2, 9))
    np.testing.assert_array_equal(loaded.infer(x), model.infer(x))
    assert loaded.metadata == {}


def test_round_trip_of_global_lp_pool(tmp_path):
    model = Sequential(Conv1d(2, 4, 3, seed=0), GlobalLPPool(3), Flatten(), Linear(4, 3, seed=1))
    loaded = io.load(io.save(model, tmp_path / "m.npz"), "numpy")
    assert repr(loaded) == repr(model)
    assert loaded.layers[1].norm_type == 3.0
    x = np.random.default_rng(0).normal(size=(5, 2, 9)).astype(np.float32)
    np.testing.assert_array_equal(loaded.infer(x), model.infer(x))


# -- bad files -----------------------------------------------------------------------------------


def _rewrite(src, dst, change):
    """Copy the .npz at ``src`` to ``dst`` with ``change(arrays)`` applied to its dict of arrays."""
    with np.load(src, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    change(arrays)
    with open(dst, "wb") as out:
        np.savez(out, **arrays)
    return dst


def _arch(arrays):
    return json.loads(str(arrays["__architecture__"]))


def _set_arch(arrays, arch):
    arrays["__architecture__"] = np.array(json.dumps(arch))


@pytest.fixture
def good(tmp_path, trained):
    return io.save(trained, tmp_path / "good.npz")


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.0])
def test_truncated_file(tmp_path, good, keep):
    data = good.read_bytes()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match=r"load .*bad\.npz: not a readable cnnkit model file .* truncated"):
        io.load(bad)


def test_not_an_npz(tmp_path):
    p = tmp_path / "x.npz"
    with open(p, "wb") as f:
        np.save(f, np.ones(3))
    with pytest.raises(ValueError, match=r"x\.npz: not a readable cnnkit model file .* single \.npy array"):
        io.load(p)
    p.write_text("hello")
    with pytest.raises(ValueError, match="not a readable cnnkit model file"):
        io.load(p)
    with pytest.raises(FileNotFoundError):
        io.load(tmp_path / "missing.npz")


def test_pickled_entry_is_refused_not_unpickled(tmp_path, good):
    bad = _rewrite(good, tmp_path / "p.npz", lambda a: a.update(evil=np.array([{"a": 1}], dtype=object)))
    with pytest.raises(ValueError, match=r"entry 'evil' is a pickled object array; .* never unpickles"):
        io.load(bad)


def test_wrong_shape_missing_and_extra_weights(tmp_path, good):
    bad = _rewrite(good, tmp_path / "s.npz", lambda a: a.update({"3.weight": np.zeros((32, 16, 5, 5))}))
    with pytest.raises(
        ValueError,
        match=r"weight '3\.weight' has shape \(32, 16, 5, 5\) but the architecture needs \(32, 16, 3, 3\)",
    ):
        io.load(bad)
    bad = _rewrite(good, tmp_path / "m.npz", lambda a: a.pop("7.bias"))
    with pytest.raises(ValueError, match=r"missing weight\(s\) \['7\.bias'\]"):
        io.load(bad)
    bad = _rewrite(good, tmp_path / "e.npz", lambda a: a.update({"9.weight": np.zeros(2)}))
    with pytest.raises(ValueError, match=r"weight\(s\) \['9\.weight'\] belong to no parameter"):
        io.load(bad)
    bad = _rewrite(good, tmp_path / "i.npz", lambda a: a.update({"7.bias": np.zeros(10, dtype=np.int64)}))
    with pytest.raises(ValueError, match=r"weight '7\.bias' has dtype int64, expected a floating dtype"):
        io.load(bad)
    bad = _rewrite(good, tmp_path / "n.npz", lambda a: a.update({"7.bias": np.full(10, np.nan)}))
    with pytest.raises(ValueError, match=r"weight '7\.bias' holds NaN or infinite values"):
        io.load(bad)


def test_bad_architecture(tmp_path, good):
    bad = _rewrite(good, tmp_path / "a.npz", lambda a: a.pop("__architecture__"))
    with pytest.raises(ValueError, match=r"no '__architecture__' entry; this \.npz was not written"):
        io.load(bad)

    def unknown(a):
        arch = _arch(a)
        arch["model"]["layers"][1]["class"] = "Swish"
        _set_arch(a, arch)

    with pytest.raises(ValueError, match=r"unknown layer class 'Swish' at layer 1; registered layers: "):
        io.load(_rewrite(good, tmp_path / "u.npz", unknown))

    def bad_config(a):
        arch = _arch(a)
        arch["model"]["layers"][0]["config"]["groups"] = 5
        _set_arch(a, arch)

    with pytest.raises(ValueError, match=r"cannot build Conv2d at layer 0 from .*groups=5 must divide"):
        io.load(_rewrite(good, tmp_path / "c.npz", bad_config))

    def version(a):
        arch = _arch(a)
        arch["version"] = 99
        _set_arch(a, arch)

    with pytest.raises(ValueError, match="format version 99 is not supported"):
        io.load(_rewrite(good, tmp_path / "v.npz", version))

    def not_json(a):
        a["__architecture__"] = np.array("{oops")

    with pytest.raises(ValueError, match="the architecture is not valid JSON"):
        io.load(_rewrite(good, tmp_path / "j.npz", not_json))


def test_save_refuses_what_json_cannot_hold(tmp_path, trained):
    with pytest.raises(ValueError, match="config\\(\\) or the metadata is not JSON"):
        io.save(trained, tmp_path / "x.npz", metadata={"f": object()})
