"""Compiled against eager against native compiled: one small CNN, forward+backward, CPU.

python -m benchmarks.compiled            # prints one line per variant, median of 20 steps
"""

from __future__ import annotations

import statistics
import time

import torch
from cnnkit_torch import nn as cnn


def _models():
    torch.manual_seed(0)
    ours = torch.nn.Sequential(
        cnn.Conv2d(1, 16, 3, padding=1), cnn.ReLU(), cnn.MaxPool2d(2),
        cnn.Conv2d(16, 32, 3, padding=1), cnn.ReLU(), cnn.MaxPool2d(2),
        cnn.Flatten(), cnn.Linear(32 * 7 * 7, 10),
    )  # fmt: skip
    theirs = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 7 * 7, 10),
    )  # fmt: skip
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _time(model, x, t, steps=20):
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(3):  # warm-up (and compilation)
        loss_fn(model(x), t).backward()
    samples = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss_fn(model(x), t).backward()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e3


def main() -> None:
    torch.set_num_threads(2)
    x, t = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    x.requires_grad_(True)
    ours, theirs = _models()
    rows = {
        "cnnkit eager": _time(ours, x, t),
        "native eager": _time(theirs, x, t),
        "cnnkit compiled": _time(torch.compile(ours, fullgraph=True), x, t),
        "native compiled": _time(torch.compile(theirs, fullgraph=True), x, t),
    }
    base = rows["native eager"]
    for name, ms in rows.items():
        print(f"{name:16s} {ms:8.2f} ms/step  {ms / base:5.2f}x native eager")


if __name__ == "__main__":
    main()
