"""cnnkit_torch.distributed: N processes take the steps one process takes.

The tests that start processes are marked ``slow``: each starts Python and
torch two or three times over (a few seconds of start-up per process on two
cores), which is what they test.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from cnnkit_torch import distributed  # noqa: E402
from cnnkit_torch.nn import from_cnnkit  # noqa: E402

from cnnkit import io  # noqa: E402
from cnnkit.cli import main  # noqa: E402
from cnnkit.data import digits_split  # noqa: E402
from cnnkit.models import build_model  # noqa: E402
from cnnkit.training import predict  # noqa: E402

BATCH = np.array([5, 17, 3, 99, 42, 8, 61, 23, 70, 11, 2])  # 11: shares of 6 and 5


def _net_and_data():
    split = digits_split(seed=0)
    net = from_cnnkit(build_model("digits-cnn", seed=0, backend="numpy"), dtype=torch.float64)
    X = torch.from_numpy(split.X_train[:128]).double()
    y = torch.from_numpy(split.y_train[:128].astype(np.int64))
    return net, X, y


def _two_steps(net, world, rank):
    X, y = _net_and_data()[1:]
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    out = [distributed.train_step(net, opt, X, y, BATCH, rank, world) for _ in range(2)]
    plain = getattr(net, "module", net)  # DistributedDataParallel holds the model as .module
    return out, {k: v.detach().numpy().copy() for k, v in plain.state_dict().items()}


def _step_worker(rank, world, device, path):  # runs in each spawned process
    from torch.nn.parallel import DistributedDataParallel

    net = _net_and_data()[0]
    out, params = _two_steps(DistributedDataParallel(net), world, rank)
    if rank == 0:
        np.savez(path, losses=np.array([o[0] for o in out]), **params)


def test_shard_splits_the_global_batch_without_loss_or_overlap():
    parts = [distributed.shard(BATCH, r, 2) for r in range(2)]
    assert [len(p) for p in parts] == [6, 5]
    assert np.concatenate(parts).tolist() == BATCH.tolist()
    assert [len(distributed.shard(np.arange(32), r, 4)) for r in range(4)] == [8, 8, 8, 8]


def test_one_process_step_is_the_plain_mean_loss_step():
    net, X, y = _net_and_data()
    ref = from_cnnkit(build_model("digits-cnn", seed=0, backend="numpy"), dtype=torch.float64)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    loss_sum, correct = distributed.train_step(net, opt, X, y, BATCH, 0, 1)
    idx = torch.from_numpy(BATCH)
    ref_opt.zero_grad()
    logits = ref(X[idx])
    loss = torch.nn.functional.cross_entropy(logits, y[idx])
    loss.backward()
    ref_opt.step()
    assert loss_sum == pytest.approx(loss.item() * len(BATCH), rel=1e-12)
    assert correct == int((logits.argmax(1) == y[idx]).sum())
    for a, b in zip(net.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_two_process_gradient_averaging_takes_the_one_process_step(tmp_path):
    path = tmp_path / "two.npz"
    distributed.launch(_step_worker, 2, str(path))
    out, want = _two_steps(_net_and_data()[0], 1, 0)
    with np.load(path) as got:
        assert set(got.files) == {"losses", *want}
        for key, value in want.items():
            np.testing.assert_allclose(got[key], value, rtol=0, atol=1e-6, err_msg=key)
        # rank 0 saw its share (6 of 11 examples) of the same loss
        assert 0 < got["losses"][0] < out[0][0]
    start = {k: v.numpy() for k, v in _net_and_data()[0].state_dict().items()}
    assert not np.allclose(want["0.weight"], start["0.weight"])  # the step moved the weights


def _final(stdout: str) -> float:
    m = re.search(r"final test accuracy: ([\d.]+)%", stdout)
    assert m, stdout
    return float(m.group(1))


@pytest.mark.slow
def test_two_processes_reach_the_one_process_accuracy_and_save_a_loadable_model(tmp_path, capsys):
    common = [
        "train",
        "--backend",
        "torch",
        "--arch",
        "digits-cnn",
        "--epochs",
        "4",
        "--no-plot",
        "--seed",
        "0",
    ]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    one = capsys.readouterr().out
    proc = subprocess.run(
        [sys.executable, "-m", "cnnkit", *common, "--nproc", "2", "--out", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    two = proc.stdout
    assert "2 processes (gloo" in two and "warn" not in proc.stderr.lower(), proc.stderr
    epochs = [line for line in two.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 4
    assert abs(_final(one) - _final(two)) <= 1.5
    # the same steps: the first epoch's train loss agrees to the printed digits; later epochs drift
    # apart only by float32 summation order (DDP's gradient all-reduce), within 1%
    loss = re.compile(r"train loss ([\d.]+)")
    one_losses = [float(loss.search(x).group(1)) for x in one.splitlines() if x.startswith("epoch ")]
    two_losses = [float(loss.search(x).group(1)) for x in epochs]
    assert two_losses[0] == pytest.approx(one_losses[0], abs=2e-4)
    assert two_losses == pytest.approx(one_losses, rel=1e-2)
    record = json.loads((tmp_path / "two" / "history.json").read_text())
    assert record["nproc"] == 2 and record["lr_schedule"] == "cosine"
    assert record["final_test_acc"] == pytest.approx(_final(two) / 100, abs=1e-4)
    model = io.load(tmp_path / "two" / "model.npz", backend="numpy")
    assert model.metadata["arch"] == "digits-cnn"
    split = digits_split(seed=0)
    acc = float((predict(model, split.X_test).argmax(1) == split.y_test).mean())
    assert acc * 100 == pytest.approx(_final(two), abs=100 / len(split.y_test) + 1e-9)  # within 1 example
    assert main(["summary", str(tmp_path / "two" / "model.npz")]) == 0
    assert "6090" in capsys.readouterr().out.replace(",", "")


def test_run_cli_refuses_other_backends_and_tiny_batches(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    args = argparse.Namespace(backend="numpy", nproc=2, batch_size=32, device=None)
    with pytest.raises(ValueError, match="--backend numpy"):
        distributed.run_cli(args)
    args = argparse.Namespace(backend="torch", nproc=4, batch_size=2, device=None)
    with pytest.raises(ValueError, match="--batch-size 2"):
        distributed.run_cli(args)


def test_launch_checks_nproc():
    with pytest.raises(ValueError, match="nproc"):
        distributed.launch(_step_worker, 0, "unused")
