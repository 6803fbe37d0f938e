"""``cnnkit summary``: a model's layers, output shapes, parameter counts and receptive fields."""

from __future__ import annotations

import argparse
import inspect
import sys
from typing import Any

import numpy as np

NAME = "summary"
HELP = "show a model's layers: output shape, parameters and receptive field"
#: The most units one example may have: the summary runs every layer on a batch of one.
MAX_INPUT_ELEMENTS = 2**24


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", nargs="?", default=None, help="a model file written by cnnkit train / io.save"
    )
    parser.add_argument("--arch", default=None, help="a named architecture instead of a file")
    parser.add_argument(
        "--input-shape",
        default=None,
        help="one example's shape, e.g. 1,8,8 (default: stored in the file or the architecture's)",
    )


def brief(layer: Any) -> str:
    """``Conv2d(1, 16, kernel_size=3, padding=1)``: a layer with only its non-default arguments.

    Example:
        >>> from cnnkit.layers import MaxPool2d
        >>> brief(MaxPool2d(2))
        'MaxPool2d(kernel_size=2)'
    """
    try:
        defaults = {
            name: p.default
            for name, p in inspect.signature(type(layer).__init__).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
    except (TypeError, ValueError):
        defaults = {}
    config = {}
    for key, value in layer.config().items():
        if isinstance(value, (tuple, list)) and value and all(v == value[0] for v in value):
            value = value[0] if not isinstance(value[0], (tuple, list)) else value
        config[key] = value
    parts = []
    for key, value in config.items():
        if key in defaults and value == defaults[key]:
            continue
        if key == "stride" and defaults.get(key, 0) is None and value == config.get("kernel_size"):
            continue
        parts.append(f"{key}={value}")
    return f"{type(layer).__name__}({', '.join(parts)})"


def summarize(model: Any, input_shape: tuple[int, ...]) -> list[dict[str, Any]]:
    """One row per layer of a :class:`cnnkit.layers.Sequential` for an input of ``input_shape``.

    Each row: ``index``, ``layer`` (:func:`brief`), ``output_shape`` (batch of 1),
    ``params`` and ``receptive_field`` (per spatial axis, from
    :func:`cnnkit.geometry.receptive_field`, like ``"10x10"``; ``"all"`` once a layer
    mixes the whole input).

    Raises:
        ValueError: ``input_shape`` does not fit a layer (naming the layer).

    Example:
        >>> from cnnkit.models import build_model
        >>> rows = summarize(build_model("digits-cnn"), (1, 8, 8))
        >>> [(r["output_shape"], r["receptive_field"]) for r in rows[:3]]
        [((1, 16, 8, 8), '3x3'), ((1, 16, 8, 8), '3x3'), ((1, 16, 4, 4), '4x4')]
    """
    from cnnkit.geometry import receptive_field
    from cnnkit.layers import backend_of

    layers = list(getattr(model, "layers", [model]))
    params0 = model.parameters()
    be = backend_of(params0[0].data) if params0 else None
    dtype = be.dtype_name(params0[0].data) if be else "float32"
    x: Any = np.zeros((1, *input_shape), dtype=dtype)
    if be is not None:
        x = be.asarray(x)
    dims = max(len(input_shape) - 1, 1)
    stack: list[list[tuple[int, int, int, int]]] = [[] for _ in range(dims)]
    whole = False
    rows = []
    for i, layer in enumerate(layers):
        try:
            x = layer.infer(x)
        except (ValueError, TypeError) as exc:
            got = _shape(tuple(int(s) for s in x.shape[1:]))
            raise ValueError(
                f"layer {i} ({brief(layer)}) cannot take the input of shape {got} it gets from "
                f"input {_shape(input_shape)}: {exc}"
            ) from exc
        window = layer.window()
        if window == ():
            whole = True
        elif window is not None and not whole:
            for axis, w in enumerate(window[:dims]):
                stack[axis].append(w)
        if whole:
            rf = "all"
        elif any(stack):
            rf = "x".join(str(receptive_field(s)[-1].size) if s else "1" for s in stack)
        else:
            rf = "x".join("1" for _ in stack)
        rows.append(
            {
                "index": i,
                "layer": brief(layer),
                "output_shape": tuple(int(s) for s in x.shape),
                "params": sum(p.size for p in layer.parameters()),
                "receptive_field": rf,
            }
        )
    return rows


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise SystemExit(f"cnnkit summary: --input-shape must be positive ints like 1,8,8, got {text!r}")
    problem = _shape_problem(shape)
    if problem:
        raise SystemExit(f"cnnkit summary: --input-shape {text!r} {problem}")
    return shape


def _shape_problem(shape: tuple[int, ...]) -> str:
    """Why ``shape`` cannot be summarised (too many units to run), or ``""``."""
    if len(shape) > 4:
        return f"has {len(shape)} axes; an example is (C, *spatial) with 1 to 3 spatial axes"
    units = 1
    for n in shape:
        units *= n
    if units > MAX_INPUT_ELEMENTS:
        return f"is {units} units per example, more than cnnkit summary runs ({MAX_INPUT_ELEMENTS})"
    return ""


def run(args: argparse.Namespace) -> int:
    from cnnkit.cli import format_table
    from cnnkit.models import ARCHITECTURES, build_model

    if (args.model is None) == (args.arch is None):
        print("cnnkit summary: give a MODEL_FILE or --arch NAME (one of them)", file=sys.stderr)
        print("architectures: " + ", ".join(sorted(ARCHITECTURES)), file=sys.stderr)
        return 2
    shape = _parse_shape(args.input_shape) if args.input_shape else None
    if args.arch is not None:
        if args.arch not in ARCHITECTURES:
            known = ", ".join(sorted(ARCHITECTURES))
            print(f"cnnkit summary: unknown architecture {args.arch!r}; known: {known}", file=sys.stderr)
            return 2
        model = build_model(args.arch, seed=0)
        shape = shape or ARCHITECTURES[args.arch].input_shape
        title = args.arch
    else:
        from cnnkit import io

        try:
            model = io.load(args.model)
        except (ValueError, FileNotFoundError) as exc:
            print(f"cnnkit summary: {exc}", file=sys.stderr)
            return 1
        stored = getattr(model, "metadata", {}).get("input_shape")
        if shape is None and stored is not None:
            ok = isinstance(stored, list) and stored and all(type(n) is int and n >= 1 for n in stored)
            problem = _shape_problem(tuple(stored)) if ok else "is not a list of positive ints"
            if problem:
                print(
                    f"cnnkit summary: the input_shape the file records, {str(stored)[:80]}, {problem}; "
                    "pass --input-shape, e.g. 1,8,8",
                    file=sys.stderr,
                )
                return 2
            shape = tuple(stored)
        if shape is None:
            print(
                "cnnkit summary: the file does not record an input shape; pass --input-shape, e.g. 1,8,8",
                file=sys.stderr,
            )
            return 2
        title = args.model
    try:
        rows = summarize(model, shape)
    except ValueError as exc:
        print(f"cnnkit summary: {exc}", file=sys.stderr)
        return 2
    table = format_table(
        ["#", "layer", "output shape", "params", "receptive field"],
        [
            [
                r["index"],
                r["layer"],
                "x".join(map(str, r["output_shape"][1:])),
                r["params"],
                r["receptive_field"],
            ]
            for r in rows
        ],
    )
    total = sum(r["params"] for r in rows)
    print(f"{title}: input {_shape(shape)}")
    print(table)
    print(f"total parameters: {total}")
    return 0
