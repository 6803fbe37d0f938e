"""Where the torch backend's conv backward stands against aten's, one gradient at a time.

python -m benchmarks.weight_grad                  # the VGG step's convs, W2, W5 and conv1d
python -m benchmarks.weight_grad --threads 1 --rounds 30
python -m benchmarks.weight_grad --tiny           # minuscule shapes: tests the script, not speed

For each conv shape, every exact route cnnkit's torch backend has for the input gradient
(``dx``) and for the weight gradient (``dW``), the very functions ``cnnkit_torch.autotune``
times, against aten's ``convolution_backward`` asked for that gradient alone (oneDNN's
backward-data and backward-weights kernels: the reference here, never a route of the
backend, whose gradients are hand-derived). The candidates take turns in each round, so a
burst of load from elsewhere falls on all of them alike; the median of ``--rounds`` is kept.
One line per gradient: each route's ms, the fastest route's ratio to aten and its GFLOP/s.
Before timing, every route's gradient is checked against aten's (a wrong route is an error).
Times, never asserted in tests; the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from cnnkit_torch import ops

#: (name, N, C, spatial, K, kernel, stride, padding): the convs of the ``vgg`` workload's
#: training step (:data:`benchmarks.workloads.VGG_LAYERS`), then W2, W5 and conv1d.
SHAPES: tuple[tuple[str, int, int, tuple[int, ...], int, int, int, int], ...] = (
    ("vgg conv1", 32, 3, (32, 32), 32, 3, 1, 1),
    ("vgg conv2", 32, 32, (32, 32), 32, 3, 1, 1),
    ("vgg conv3", 32, 32, (16, 16), 64, 3, 1, 1),
    ("vgg conv4", 32, 64, (16, 16), 64, 3, 1, 1),
    ("W2", 32, 32, (32, 32), 64, 3, 1, 1),
    ("W5", 32, 64, (32, 32), 128, 3, 2, 1),
    ("conv1d", 32, 16, (1024,), 32, 7, 1, 3),
)
#: The same kinds of shape, minuscule (``--tiny``).
TINY: tuple[tuple[str, int, int, tuple[int, ...], int, int, int, int], ...] = (
    ("tiny conv", 2, 3, (6, 5), 4, 3, 1, 1),
    ("tiny stride", 2, 4, (7, 6), 3, 3, 2, 1),
    ("tiny conv1d", 2, 3, (9,), 2, 5, 1, 2),
)


def _routes(x, w, dy, stride, pads, dilation) -> dict[str, dict[str, Callable[[], Any]]]:
    """Every route of each gradient, as ``autotune`` would time them (groups = 1)."""
    kernel, shape = tuple(w.shape[2:]), x.shape
    dx = {
        "rot180": lambda: ops._conv_input_grad(dy, w, shape, stride, pads, dilation, 1),
        "im2col": lambda: ops._conv_grads_im2col(x, w, dy, stride, pads, dilation, True, False),
    }
    dw = {
        "columns": lambda: ops._conv_weight_grad_columns(x, dy, kernel, stride, pads, dilation),
        "swapped": lambda: ops._conv_weight_grad_conv(x, dy, kernel, stride, pads, dilation, 1),
        "im2col": lambda: ops._conv_grads_im2col(x, w, dy, stride, pads, dilation, False, True),
    }
    if all(s == 1 for s in stride):
        dw["gemm"] = lambda: ops._conv_weight_grad_gemm(x, dy, kernel, 1, pads, dilation)
    return {"dx": dx, "dW": dw}


def _aten(x, w, dy, stride, padding, mask) -> Callable[[], Any]:
    d = x.dim() - 2
    return lambda: torch.ops.aten.convolution_backward(
        dy, x, w, None, stride, padding, (1,) * d, False, (0,) * d, 1, mask
    )


def _result(grad: str, out: Any) -> torch.Tensor:
    """The gradient a route or aten returned (routes return a tensor or ``(dx, dW)``)."""
    if isinstance(out, torch.Tensor):
        return out
    return out[0] if grad == "dx" else out[1]


def _check(name: str, grad: str, candidates: dict[str, Callable[[], Any]]) -> None:
    """Every route's gradient equals aten's (float32 rounding), or the run stops."""
    with torch.no_grad():
        ref = _result(grad, candidates["aten"]())
        for route, fn in candidates.items():
            got = _result(grad, fn())
            if got.shape != ref.shape or not torch.allclose(got, ref, rtol=1e-3, atol=1e-3 * ref.abs().max()):
                raise SystemExit(f"{name} {grad}: route {route} does not give aten's gradient")


def _medians(candidates: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    with torch.no_grad():
        for fn in candidates.values():
            fn()  # warm-up: allocations, oneDNN primitives
        times: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(rounds):
            for name, fn in candidates.items():
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="minuscule shapes: tests the script, not speed")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.rounds} rounds, float32, ms")
    totals = {"dx": [0.0, 0.0], "dW": [0.0, 0.0]}
    for name, n, c, size, k, f, s, p in TINY if args.tiny else SHAPES:
        d = len(size)
        x = torch.randn(n, c, *size)
        w = torch.randn(k, c, *(f,) * d)
        stride, padding = (s,) * d, (p,) * d
        out = [(m + 2 * p - f) // s + 1 for m in size]
        dy = torch.randn(n, k, *out)
        pads, dilation = tuple((p, p) for _ in size), (1,) * d
        flops = 2 * n * k * c * f**d * math.prod(out)  # of one gradient
        for grad, routes in _routes(x, w, dy, stride, pads, dilation).items():
            mask = (grad == "dx", grad == "dW", False)
            candidates = {**routes, "aten": _aten(x, w, dy, stride, padding, mask)}
            _check(name, grad, candidates)
            times = _medians(candidates, args.rounds)
            aten = times.pop("aten")
            best = min(times, key=times.__getitem__)
            totals[grad][0] += times[best]
            totals[grad][1] += aten
            listed = ", ".join(f"{r} {t:.2f}" for r, t in sorted(times.items(), key=lambda kv: kv[1]))
            print(
                f"{name:9s} {grad:2s}: {listed}; aten {aten:.2f} -> fastest {best}"
                f" {times[best] / aten:.2f}x aten ({flops / times[best] / 1e6:.0f} against"
                f" {flops / aten / 1e6:.0f} GFLOP/s)"
            )
    for grad, (ours, aten) in totals.items():
        print(f"all shapes, {grad}: fastest routes {ours:.2f} ms, aten {aten:.2f} ms ({ours / aten:.2f}x)")


if __name__ == "__main__":
    main()
