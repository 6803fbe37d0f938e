"""cnnkit train refuses a user's mistake in one line (cnnkit: error: ...), exit status 2, before training."""

from __future__ import annotations

import json

import pytest

from cnnkit.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--arch", "bogus"], "unknown --arch 'bogus'; for --task digits: digits-cnn, digits-cnn-wide"),
        (
            ["--task", "timeseries", "--arch", "digits-cnn"],
            "--arch digits-cnn is for --task digits, not timeseries; for timeseries: timeseries-cnn1d",
        ),
        (
            ["--task", "mnist1d", "--arch", "digits-cnn"],
            "--arch digits-cnn is for --task digits, not mnist1d",
        ),
        (["--dtype", "int32"], "--dtype must be one of float32, float64, got 'int32'"),
        (["--lr", "inf"], "argument --lr: expected a finite number > 0, got 'inf'"),
        (["--lr", "nan"], "argument --lr: expected a finite number > 0, got 'nan'"),
        (["--momentum", "nan"], "argument --momentum: expected a finite number >= 0, got 'nan'"),
        (["--weight-decay", "-1"], "argument --weight-decay: expected a finite number >= 0, got '-1'"),
        (["--nproc", "0"], "argument --nproc: expected an integer > 0, got '0'"),
        (["--optimizer", "rmsprop"], "argument --optimizer: invalid choice: 'rmsprop'"),
        (
            ["--device", "cuda"],
            "backend 'numpy' takes options ['dtype'], got ['device'] (choose one with --backend)",
        ),
        (
            ["--backend", "numpy", "--device", "cpu"],
            "backend 'numpy' takes options ['dtype'], got ['device']",
        ),
        (
            ["--optimizer", "adam", "--momentum", "0.5"],
            "--momentum is for --optimizer sgd; digits-cnn-wide trains",
        ),
        (["--shuffle-inputs"], "--shuffle-inputs applies to --task mnist1d, not digits"),
        (["--augment", "2"], "--augment shifts 1-D signals; --task digits has images"),
        (["--nproc", "2", "--backend", "numpy"], "--nproc runs on the torch backend, got --backend numpy"),
        (["--nproc", "2", "--task", "mnist1d"], "--nproc 2 trains with SGD and no augmentation"),
        (
            ["--nproc", "2", "--task", "mnist1d", "--shuffle-inputs"],
            "--nproc 2 does not take --shuffle-inputs",
        ),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(capsys, tmp_path, argv, message):
    with pytest.raises(SystemExit) as info:
        raise SystemExit(main(["train", *argv, "--out", str(tmp_path / "run")]))
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("cnnkit: error: ") and captured.err.count("\n") == 1, captured.err
    assert message in captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert not (tmp_path / "run" / "model.npz").exists()


def test_an_unwritable_out_is_refused_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["train", "--out", str(blocker / "run")]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"cnnkit: error: --out {blocker / 'run'}: cannot write there (Not a directory)\n"
    assert captured.out == ""  # no epoch ran


def test_dtype_without_backend_applies_to_the_active_backend(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CNNKIT_BACKEND", raising=False)
    argv = ["train", "--task", "timeseries", "--epochs", "1", "--dtype", "float64", "--no-plot"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    assert "backend numpy {'dtype': 'float64'}" in capsys.readouterr().out
    record = json.loads((tmp_path / "history.json").read_text())
    assert record["backend"] == "numpy" and record["backend_options"] == {"dtype": "float64"}


def test_an_unknown_backend_is_one_line(tmp_path, capsys):
    assert main(["train", "--backend", "bogus", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("cnnkit: error: unknown backend 'bogus'; installed backends:") and err.count("\n") == 1
    )
