"""cnnkit explain and cnnkit demo sobel: the lecture's sums and edge maps, checked for their values."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit.cli import main
from cnnkit.explain import LECTURE_VOLUME, explain_conv2d, explain_pool2d, lecture_example

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SOBEL_S = [[-13, -20, -17], [-18, -24, -18], [13, 20, 17]]
VOLUME_O = [
    [[7, 10, -1], [7, 14, 6], [3, 8, -1]],
    [[6, 3, 0], [-3, -1, -3], [-5, -7, -3]],
]


def test_sobel_s00_is_the_slides_sum():
    e = lecture_example("sobel")
    # S(0,0) = I(0,0)K(0,0) + I(0,1)K(0,-1) + I(1,0)K(-1,0) + I(1,1)K(-1,-1) = 0·1 + 0·2 - 2·4 - 1·5
    assert [(t.row, t.col) for t in e.terms] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [t.kernel for t in e.terms] == [(0, 0), (0, -1), (-1, 0), (-1, -1)]
    assert [(t.x, t.w) for t in e.terms] == [(1, 0), (2, 0), (4, -2), (5, -1)]
    assert e.value == e.computed == -13
    assert (e.rows, e.cols) == ((-1, 1), (-1, 1))
    text = e.text()
    assert "S(0,0) = I(0,0)K(0,0) + I(0,1)K(0,-1) +\n           I(1,0)K(-1,0) + I(1,1)K(-1,-1)" in text
    assert "= 1×0 + 2×0 + 4×(-2) + 5×(-1)\n         = -13" in text
    assert "receptive field rows -1..1, columns -1..1 (inside the input: rows 0..1, columns 0..1" in text


def test_sobel_s11_has_the_slides_nine_terms_and_every_unit_matches():
    e = lecture_example("sobel", (1, 1))
    # the slide: S(1,1) = I(0,0)K(1,1) + I(0,1)K(1,0) + I(0,2)K(1,-1) + ... + I(2,2)K(-1,-1)
    assert [t.kernel for t in e.terms] == [(1 - r, 1 - c) for r in range(3) for c in range(3)]
    assert "S(1,1) = I(0,0)K(1,1) + I(0,1)K(1,0) + I(0,2)K(1,-1) +" in e.text()
    got = [[lecture_example("sobel", (i, j)).value for j in range(3)] for i in range(3)]
    assert got == SOBEL_S


def test_volume_o000_is_6_minus_3_plus_3_plus_1():
    e = lecture_example("volume")
    assert e.partial == [6, -3, 3] and e.bias == 1 and e.value == e.computed == 7
    text = e.text()
    assert "o[0,0,0] = 6 - 3 + 3 + 1 = 7" in text
    assert "d=0: x(0,0,0)w0(1,1,0) + x(0,1,0)w0(1,2,0) + x(1,0,0)w0(2,1,0) + x(1,1,0)w0(2,2,0)" in text
    assert "= 2×1 + 0×1 + 2×1 + 2×1 = 6" in text
    assert "depth 0..2" in text
    got = [
        [[lecture_example("volume", (k, i, j)).value for j in range(3)] for i in range(3)] for k in range(2)
    ]
    assert got == VOLUME_O
    # stride 2: the unit (row 1, column 2) sees input rows 1..3, columns 3..5 (column 5 is padding)
    e = lecture_example("volume", (0, 1, 2))
    assert (e.rows, e.cols) == ((1, 3), (3, 5))


def test_explain_on_the_torch_backend_and_random_arrays():
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, w, b = rng.normal(size=(2, 6, 5)), rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3)
    for flip in (False, True):
        for at in [(0, 0, 0), (2, 1, 2), (1, 2, 0)]:
            e = explain_conv2d(x, w, b, stride=2, padding=1, flip=flip, at=at, backend="torch")
            assert e.value == pytest.approx(e.computed, rel=1e-12, abs=1e-12)
    e = explain_conv2d(**LECTURE_VOLUME, at=(1, 2, 2), backend="torch")
    assert e.value == e.computed == -3


def test_explain_pools():
    x = [[1, 3, 5], [2, 0, 1], [4, 4, 4]]
    e = explain_pool2d(x, 2, stride=1, kind="max", at=(1, 0))
    assert e.value == e.computed == 4
    assert "o[0,1,0] = max(2, 0, 4, 4) = 4" in e.text()
    assert "goes to x(2,0,0) alone (the first maximum)" in e.text()
    e = explain_pool2d(x, 2, stride=1, kind="avg", at=(1, 0))
    assert e.value == e.computed == 2.5
    assert "(2 + 0 + 4 + 4) / 4 = 2.5" in e.text()


def test_cnnkit_explain_command(capsys):
    assert main(["explain", "volume"]) == 0
    out = capsys.readouterr().out
    assert "o[0,0,0] = 6 - 3 + 3 + 1 = 7" in out and "cnnkit.functional gives 7" in out
    assert main(["explain", "sobel", "--at", "2,2"]) == 0
    assert "= 17\n" in capsys.readouterr().out
    args = ["explain", "conv", "--input", "[[1,2],[3,4]]", "--weight", "[[1,0],[0,1]]", "--bias", "[0.5]"]
    assert main(args) == 0
    assert "o[0,0,0] = 5 + 0.5 = 5.5" in capsys.readouterr().out
    assert main(["explain", "max-pool", "--input", "[[1,3],[2,0]]"]) == 0
    assert "max(1, 3, 2, 0) = 3" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["explain", "conv", "--input", "[[1]]"], "cnnkit: error: explain conv needs --input and --weight"),
        (["explain", "sobel", "--at", "5,5"], "cnnkit: error: explain: unit (0, 5, 5) is outside the output"),
    ],
)
def test_cnnkit_explain_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


# -- the Sobel kernel on a photograph ------------------------------------------------------------


def _true_conv_same(image, k):
    # S(i, j) = Σ_m Σ_n I(i - m, j - n) K(m, n), m, n in -1..1, zero outside: shifted copies, summed
    H, W = image.shape
    P = np.pad(image, 1)
    return sum(
        k[m + 1, n + 1] * P[1 - m : 1 - m + H, 1 - n : 1 - n + W] for m in (-1, 0, 1) for n in (-1, 0, 1)
    )


def test_sobel_edges_of_the_lecture_image_and_of_a_step():
    from cnnkit.demos import SOBEL, sobel_edges

    image = np.arange(1.0, 10.0).reshape(3, 3)
    gy, gx = sobel_edges(image)
    assert gy.tolist() == SOBEL_S
    assert (
        gx.tolist() == _true_conv_same(image, SOBEL.T).tolist() == [[-9, -6, 9], [-20, -8, 20], [-21, -6, 21]]
    )
    step = np.zeros((6, 6))
    step[3:] = 1.0  # a horizontal edge between rows 2 and 3
    gy, gx = sobel_edges(step)
    np.testing.assert_array_equal(gy, _true_conv_same(step, SOBEL))
    assert gy[2, 1:-1].tolist() == [-4.0] * 4 and gy[3, 1:-1].tolist() == [-4.0] * 4
    assert np.all(gx[:, 1:-1] == 0)  # no vertical edge inside


def test_cnnkit_demo_sobel_writes_the_picture_and_the_maps(tmp_path, capsys):
    pytest.importorskip("skimage")
    pytest.importorskip("torch")
    from cnnkit.demos import SOBEL, camera_image

    assert main(["demo", "sobel", "--backends", "numpy,torch", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "torch vs numpy: largest difference" in out
    with np.load(tmp_path / "sobel.npz", allow_pickle=False) as f:
        image, gy, gx, ty = f["image"], f["numpy_y"], f["numpy_x"], f["torch_y"]
    np.testing.assert_array_equal(image, camera_image())
    assert image.shape == (512, 512)
    np.testing.assert_allclose(gy, _true_conv_same(image, SOBEL), atol=1e-12)
    np.testing.assert_allclose(gx, _true_conv_same(image, SOBEL.T), atol=1e-12)
    np.testing.assert_allclose(ty, gy, atol=1e-12)
    pytest.importorskip("matplotlib")
    assert (tmp_path / "sobel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cnnkit_demo_sobel_without_scikit_image(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "skimage", None)
    assert main(["demo", "sobel", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "cnnkit: error: the camera photograph ships with scikit-image: pip install 'cnnkit[data]'\n"


@pytest.mark.parametrize(
    "module",
    ["cnnkit.explain", "cnnkit.demos", "cnnkit.plots", "cnnkit.experiments", "cnnkit.optim", "cnnkit.data"],
)
def test_docstring_examples_hold(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
