"""``cnnkit summary``: output shapes, parameter counts and receptive fields, checked by hand."""

from __future__ import annotations

import pytest

from cnnkit import io
from cnnkit.cli import main
from cnnkit.cli.summary import brief, summarize
from cnnkit.layers import AvgPool2d, Conv2d, Flatten, GlobalAvgPool, Linear, MaxPool2d, ReLU, Sequential
from cnnkit.models import build_model

# digits-cnn by hand, receptive field r_l = r_{l-1} + (F-1)·j_{l-1}, jump j_l = j_{l-1}·S:
#   conv 3x3 s1: r 3, j 1 | pool 2 s2: r 3+1·1 = 4, j 2 | conv 3x3: r 4+2·2 = 8 | pool 2: r 8+1·2 = 10
# parameters: 1·16·9+16 = 160, 16·32·9+32 = 4640, 128·10+10 = 1290; total 6090
DIGITS_ROWS = [
    ("Conv2d(in_channels=1, out_channels=16, kernel_size=3, padding=1)", (1, 16, 8, 8), 160, "3x3"),
    ("ReLU()", (1, 16, 8, 8), 0, "3x3"),
    ("MaxPool2d(kernel_size=2)", (1, 16, 4, 4), 0, "4x4"),
    ("Conv2d(in_channels=16, out_channels=32, kernel_size=3, padding=1)", (1, 32, 4, 4), 4640, "8x8"),
    ("ReLU()", (1, 32, 4, 4), 0, "8x8"),
    ("MaxPool2d(kernel_size=2)", (1, 32, 2, 2), 0, "10x10"),
    ("Flatten()", (1, 128), 0, "all"),
    ("Linear(in_features=128, out_features=10)", (1, 10), 1290, "all"),
]


def _rows(rows):
    return [(r["layer"], r["output_shape"], r["params"], r["receptive_field"]) for r in rows]


def test_digits_cnn_by_hand():
    rows = summarize(build_model("digits-cnn"), (1, 8, 8))
    assert _rows(rows) == DIGITS_ROWS
    assert [r["index"] for r in rows] == list(range(8))
    assert sum(r["params"] for r in rows) == 6090


def test_digits_cnn_wide_by_hand():
    # the same geometry with 32 and 64 filters: 1·32·9+32 = 320, 32·64·9+64 = 18496, 256·10+10 = 2570
    rows = summarize(build_model("digits-cnn-wide"), (1, 8, 8))
    assert [(r["output_shape"], r["params"], r["receptive_field"]) for r in rows] == [
        ((1, 32, 8, 8), 320, "3x3"),
        ((1, 32, 8, 8), 0, "3x3"),
        ((1, 32, 4, 4), 0, "4x4"),
        ((1, 64, 4, 4), 18496, "8x8"),
        ((1, 64, 4, 4), 0, "8x8"),
        ((1, 64, 2, 2), 0, "10x10"),
        ((1, 256), 0, "all"),
        ((1, 10), 2570, "all"),
    ]
    assert sum(r["params"] for r in rows) == 21386


def test_timeseries_cnn1d_by_hand():
    # conv 7: r 7, j 1 | pool 2: r 8, j 2 | conv 5: r 8+4·2 = 16 | global pool: all
    # parameters: 1·16·7+16 = 128, 16·32·5+32 = 2592, 32·4+4 = 132
    rows = summarize(build_model("timeseries-cnn1d"), (1, 64))
    assert [(r["output_shape"], r["params"], r["receptive_field"]) for r in rows] == [
        ((1, 16, 64), 128, "7"),
        ((1, 16, 64), 0, "7"),
        ((1, 16, 32), 0, "8"),
        ((1, 32, 32), 2592, "16"),
        ((1, 32, 32), 0, "16"),
        ((1, 32, 1), 0, "all"),
        ((1, 32), 0, "all"),
        ((1, 4), 132, "all"),
    ]


def test_stride_dilation_and_rectangular_kernels():
    model = Sequential(
        Conv2d(3, 4, (3, 5), stride=2, padding=(1, 2), dilation=(2, 1), seed=0),  # extent 5x5
        ReLU(),
        AvgPool2d(2, stride=1),
        Conv2d(4, 2, 1, seed=1),
        GlobalAvgPool(),
        Flatten(),
        Linear(2, 3, seed=2),
    )
    rows = summarize(model, (3, 17, 20))
    # H: conv extent D(F-1)+1 = 5 -> r 5, j 2; pool 2 s1 -> 5+1·2 = 7; 1x1 conv -> 7
    # W: conv extent 5 -> r 5, j 2; pool -> 7; 1x1 -> 7
    # H_out = floor((17+2-4-1)/2)+1 = 8, W_out = floor((20+4-4-1)/2)+1 = 10; pool -> 7x9
    assert [(r["output_shape"], r["params"], r["receptive_field"]) for r in rows] == [
        ((1, 4, 8, 10), 4 * 3 * 15 + 4, "5x5"),
        ((1, 4, 8, 10), 0, "5x5"),
        ((1, 4, 7, 9), 0, "7x7"),
        ((1, 2, 7, 9), 2 * 4 + 2, "7x7"),
        ((1, 2, 1, 1), 0, "all"),
        ((1, 2), 0, "all"),
        ((1, 3), 9, "all"),
    ]


def test_brief_shows_only_non_defaults():
    assert brief(MaxPool2d(2)) == "MaxPool2d(kernel_size=2)"
    assert brief(MaxPool2d(3, stride=2)) == "MaxPool2d(kernel_size=3, stride=2)"
    conv = brief(Conv2d(1, 2, 3, bias=False))
    assert conv == "Conv2d(in_channels=1, out_channels=2, kernel_size=3, bias=False)"
    assert brief(ReLU()) == "ReLU()"


def test_summary_errors_name_the_layer():
    with pytest.raises(ValueError, match=r"layer 0 \(Conv2d\(.*\)\) cannot take the input of shape 3x8x8"):
        summarize(build_model("digits-cnn"), (3, 8, 8))


# -- the command -----------------------------------------------------------------------------------


def test_cli_named_architecture(capsys):
    assert main(["summary", "--arch", "digits-cnn"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "digits-cnn: input 1x8x8"
    assert out[1].split() == ["#", "layer", "output", "shape", "params", "receptive", "field"]
    table = out[3:-1]
    assert len(table) == 8
    for line, (layer, shape, params, rf) in zip(table, DIGITS_ROWS):
        assert layer in line
        assert line.split()[-3:] == ["x".join(map(str, shape[1:])), str(params), rf]
    assert out[-1] == "total parameters: 6090"


def test_cli_saved_model(tmp_path, capsys):
    model = build_model("digits-cnn", seed=0)
    path = io.save(model, tmp_path / "m.npz", metadata={"input_shape": [1, 8, 8]})
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: input 1x8x8\n")
    assert "32x2x2" in out and "10x10" in out and out.endswith("total parameters: 6090\n")
    # an input shape given on the command line wins over the stored one
    assert main(["summary", str(path), "--input-shape", "1x16x16"]) == 2
    err = capsys.readouterr().err
    assert "layer 7 (Linear(in_features=128, out_features=10)) cannot take the input of shape 512" in err
    conv_only = Sequential(Conv2d(1, 4, 3, seed=0), GlobalAvgPool(), Flatten())
    path = io.save(conv_only, tmp_path / "c.npz", metadata={"input_shape": [1, 8, 8]})
    assert main(["summary", str(path), "--input-shape", "1x16x16"]) == 0
    out = capsys.readouterr().out
    assert "input 1x16x16" in out and "4x14x14" in out and out.endswith("total parameters: 40\n")


def test_cli_errors(tmp_path, capsys):
    plain = io.save(build_model("digits-cnn"), tmp_path / "plain.npz")  # no input shape stored
    assert main(["summary", str(plain)]) == 2
    assert "does not record an input shape; pass --input-shape" in capsys.readouterr().err
    assert main(["summary"]) == 2
    assert "give a MODEL_FILE or --arch NAME" in capsys.readouterr().err
    assert main(["summary", "--arch", "resnet"]) == 2
    assert "unknown architecture 'resnet'; known: digits-cnn" in capsys.readouterr().err
    assert main(["summary", "--arch", "digits-cnn", "--input-shape", "3,8,8"]) == 2
    assert "layer 0 (Conv2d" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    assert main(["summary", str(bad)]) == 1
    assert "not a readable cnnkit model file" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--input-shape must be positive ints"):
        main(["summary", "--arch", "digits-cnn", "--input-shape", "1,0,8"])
