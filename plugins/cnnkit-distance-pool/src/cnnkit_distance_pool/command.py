"""``cnnkit distance-weights``: the window weights ``w_m`` of distance-weighted pooling, printed.

A subcommand this plugin adds to ``cnnkit`` through the
``cnnkit_register_commands`` hook (``plugin.py``)::

    $ cnnkit distance-weights 3 --sigma 1
    distance_pool weights w_m, kernel_size (3, 3), sigma 1.0 (they sum to 1):
    0.0751  0.1238  0.0751
    0.1238  0.2042  0.1238
    0.0751  0.1238  0.0751

The arguments are validated by the op's own record, so a bad kernel size or
sigma reads as it would in ``distance_pool2d``.
"""

from __future__ import annotations

import argparse
import json
import sys

from cnnkit.registry import Command

__all__ = ["COMMAND", "configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "kernel_size", type=int, nargs="+", metavar="F", help="the window: one size, or one per axis"
    )
    parser.add_argument("--sigma", type=float, default=1.0, help="the Gaussian's width (default 1)")
    parser.add_argument("--digits", type=int, default=4, help="decimals shown (default 4)")
    parser.add_argument("--json", action="store_true", help="print the weights as JSON (nested lists)")


def run(args: argparse.Namespace) -> int:
    from cnnkit import TensorInfo
    from cnnkit_distance_pool.spec import DistancePoolSpec, distance_weights

    where = "distance-weights"
    sizes = args.kernel_size * 2 if len(args.kernel_size) == 1 else args.kernel_size
    if len(sizes) > 3:
        print(f"cnnkit: error: {where}: give 1 to 3 kernel sizes, got {len(sizes)}", file=sys.stderr)
        return 2
    x = TensorInfo((1, 1, *[max(f, 1) for f in sizes]), "float64")  # an input the window just fits
    try:  # the record's own validation: the same messages as distance_pool2d
        attrs = DistancePoolSpec().bind(where, [x], {"kernel_size": tuple(sizes), "sigma": args.sigma})
    except (TypeError, ValueError) as exc:
        print(f"cnnkit: error: {exc}", file=sys.stderr)
        return 2
    w = distance_weights(attrs["kernel_size"], attrs["sigma"])
    if args.json:
        print(json.dumps(w.tolist()))
        return 0
    print(
        f"distance_pool weights w_m, kernel_size {attrs['kernel_size']}, sigma {attrs['sigma']} "
        "(they sum to 1):"
    )
    rows = w.reshape(-1, w.shape[-1])
    for i, row in enumerate(rows):
        if w.ndim == 3 and i and i % w.shape[1] == 0:
            print()
        print("  ".join(f"{v:.{args.digits}f}" for v in row))
    return 0


COMMAND = Command(
    name="distance-weights",
    run=run,
    help="print the window weights of distance-weighted pooling for a kernel size and sigma",
    configure=configure,
)
