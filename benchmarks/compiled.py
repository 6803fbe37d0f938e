"""Compiled against eager against native compiled: a small VGG-like CNN, forward+backward, CPU.

python -m benchmarks.compiled                      # aot_eager and inductor (where it builds)
python -m benchmarks.compiled --backends aot_eager --steps 10

One line per variant: the median time of a training step (forward, cross-entropy, backward)
over ``--steps`` rounds, the variants taking turns in each round (a machine shared with other
work slows them alike), after compilation and a warm-up; and its ratio to native eager (and,
for cnnkit, to native with the same compiler and to cnnkit eager). ``aot_eager`` traces
forward and backward into one graph and runs it op by op (what the trace costs or saves);
``inductor`` generates C++ for CPU (it needs a C++ compiler; it is
skipped, with the reason, where it fails). "exported" runs ``torch.export``'s module of the
model, whose ``cnnkit::`` operators run cnnkit's Functions (forward and hand-derived backward).
Times, never asserted in tests; the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from cnnkit_torch import nn as cnn


def _layers(lib) -> list:
    return [
        lib.Conv2d(3, 16, 3, padding=1), lib.ReLU(), lib.Conv2d(16, 16, 3, padding=1), lib.ReLU(),
        lib.MaxPool2d(2),
        lib.Conv2d(16, 32, 3, padding=1), lib.ReLU(), lib.Conv2d(32, 32, 3, padding=1), lib.ReLU(),
        lib.MaxPool2d(2),
        lib.Flatten(), lib.Linear(32 * 8 * 8, 64), lib.ReLU(), lib.Linear(64, 10),
    ]  # fmt: skip


def _models():
    torch.manual_seed(0)
    ours = torch.nn.Sequential(*_layers(cnn))
    theirs = torch.nn.Sequential(*_layers(torch.nn))
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _step(model, x, t) -> None:
    torch.nn.functional.cross_entropy(model(x), t).backward()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="*", default=["aot_eager", "inductor"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    x, t = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    x.requires_grad_(True)
    ours, theirs = _models()
    variants = {"cnnkit eager": ours, "native eager": theirs}
    variants["cnnkit exported"] = torch.export.export(ours, (x.detach(),), strict=True).module()
    rows: dict[str, float | str] = {}
    for backend in args.backends:
        for name, model in (("cnnkit", ours), ("native", theirs)):
            compiled = torch.compile(model, fullgraph=True, backend=backend)
            try:
                _step(compiled, x, t)  # compiles now
            except Exception as exc:  # inductor without a working C++ toolchain
                rows[f"{name} {backend}"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
                continue
            variants[f"{name} {backend}"] = compiled
    for model in variants.values():  # warm-up: autotuned routes, caches, allocator
        for _ in range(3):
            _step(model, x, t)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.steps):  # round robin: a busy machine slows every variant alike
        for name, model in variants.items():
            t0 = time.perf_counter()
            _step(model, x, t)
            samples[name].append(time.perf_counter() - t0)
    rows = {**{name: statistics.median(s) * 1e3 for name, s in samples.items()}, **rows}

    base = rows["native eager"]
    assert isinstance(base, float)
    print(f"batch {args.batch}, 3x32x32, {args.threads} threads, median of {args.steps} steps")
    for name, ms in rows.items():
        if isinstance(ms, str):
            print(f"{name:20s} {ms}")
            continue
        line = f"{name:20s} {ms:8.2f} ms/step  {ms / base:5.2f}x native eager"
        backend = name.split(" ", 1)[1]
        mate = rows.get(f"native {backend}") if name.startswith("cnnkit ") else None
        if isinstance(mate, float) and backend != "eager":
            line += f"  {ms / mate:5.2f}x native {backend}"
        eager = rows["cnnkit eager"]
        if name.startswith("cnnkit ") and backend != "eager" and isinstance(eager, float):
            line += f"  {ms / eager:5.2f}x cnnkit eager"
        print(line)


if __name__ == "__main__":
    main()
