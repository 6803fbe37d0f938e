"""``cnnkit explain``: one output unit of a conv or pool call, as the lecture's sum with the numbers.

``cnnkit explain sobel`` and ``cnnkit explain volume`` write out the lecture's
two worked examples (``--at`` picks another unit); ``cnnkit explain conv`` and
``cnnkit explain max-pool`` / ``avg-pool`` take an input and a kernel as JSON
arrays. Each prints the unit's receptive field, its sum term by term (per
depth slice for a volume), the bias, the result and what
:mod:`cnnkit.functional` computes for it (:mod:`cnnkit.explain`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

NAME = "explain"
HELP = "write out one output unit of a conv or pool as the lecture's sum, with its receptive field"

WHAT = ("sobel", "volume", "conv", "max-pool", "avg-pool")


def _json_array(text: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"expected a JSON array such as [[1,2],[3,4]], got {text!r} ({exc.msg})"
        ) from None
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError(f"expected a JSON array, got {text!r}")
    return value


def _ints(text: str) -> tuple[int, ...]:
    try:
        value = tuple(int(t) for t in text.split(","))
    except ValueError:
        value = ()
    if len(value) not in (2, 3):
        raise argparse.ArgumentTypeError(f"expected ROW,COL or FILTER,ROW,COL, got {text!r}")
    return value


def _padding(text: str) -> Any:
    if text in ("same", "valid"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, 'same' or 'valid', got {text!r}") from None


def configure(parser: argparse.ArgumentParser) -> None:
    from cnnkit.cli.train import one_line_errors

    one_line_errors(parser)
    parser.add_argument(
        "what", choices=WHAT, help="a lecture example (sobel, volume) or an op on your arrays"
    )
    parser.add_argument(
        "--at",
        type=_ints,
        default=None,
        help="the output unit: ROW,COL or FILTER,ROW,COL (default the first)",
    )
    parser.add_argument(
        "--input", type=_json_array, help="conv/pool: the input, (H, W) or (C, H, W), as JSON"
    )
    parser.add_argument(
        "--weight", type=_json_array, help="conv: the kernel(s), (F, F) ... (K, C, F, F), as JSON"
    )
    parser.add_argument("--bias", type=_json_array, default=None, help="conv: the biases (K,), as JSON")
    parser.add_argument("--stride", type=int, default=None, help="stride (default 1; pools: the kernel)")
    parser.add_argument("--padding", type=_padding, default=0, help="an integer, same or valid (default 0)")
    parser.add_argument(
        "--flip", action="store_true", help="conv: true convolution (the kernel rotated 180°)"
    )
    parser.add_argument("--kernel-size", type=int, default=2, help="pools: the window (default 2)")
    parser.add_argument("--backend", default=None, help="the backend that computes the check value")


def run(args: argparse.Namespace) -> int:
    from cnnkit.explain import explain_conv2d, explain_pool2d, lecture_example

    try:
        if args.what in ("sobel", "volume"):
            e = lecture_example(args.what, args.at, backend=args.backend)
        elif args.what == "conv":
            if args.input is None or args.weight is None:
                raise ValueError("explain conv needs --input and --weight")
            e = explain_conv2d(
                args.input,
                args.weight,
                args.bias,
                args.stride or 1,
                args.padding,
                args.flip,
                at=args.at or (0, 0),
                backend=args.backend,
            )
        else:
            if args.input is None:
                raise ValueError(f"explain {args.what} needs --input")
            e = explain_pool2d(
                args.input,
                args.kernel_size,
                args.stride,
                args.padding,
                "max" if args.what == "max-pool" else "avg",
                at=args.at or (0, 0),
                backend=args.backend,
            )
    except (ValueError, TypeError) as exc:
        print(f"cnnkit: error: {exc}", file=sys.stderr)
        return 2
    if args.what == "sobel":
        print("The lecture's Sobel example: true convolution (kernel rotated 180°), padding 'same'")
    elif args.what == "volume":
        print("The lecture's volume: 5x5x3 input, two 3x3x3 filters w0, w1, stride 2, padding 1, biases 1, 0")
    print(e.text())
    return 0
