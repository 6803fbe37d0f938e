"""``cnnkit demo sobel``: the lecture's Sobel kernel on a real photograph, on every backend.

Convolves scikit-image's bundled camera photograph (the ``data`` extra) with
the Sobel kernel and its transpose, by true convolution with padding
``"same"`` (:func:`cnnkit.demos.sobel_edges`), on each backend asked for,
prints how far the backends' maps are apart, and writes to ``--out``
``sobel.png`` (the input and both edge maps, with matplotlib) and
``sobel.npz`` (the maps of every backend, as data).
"""

from __future__ import annotations

import argparse
import sys

from cnnkit.cli.common import UsageError, writable_dir

NAME = "demo"
HELP = "the lecture on real data: sobel (the Sobel kernel on a photograph, on every backend)"

DEMOS = ("sobel",)


def configure(parser: argparse.ArgumentParser) -> None:
    from cnnkit.cli.train import one_line_errors

    one_line_errors(parser)
    parser.add_argument("name", choices=DEMOS, help="the demonstration")
    parser.add_argument(
        "--backends", default=None, help="comma-separated backends (default: numpy, and torch when installed)"
    )
    parser.add_argument("--out", default="cnnkit-demo", help="output folder (default ./cnnkit-demo)")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from cnnkit import plots
    from cnnkit.data import MissingExtraError
    from cnnkit.demos import camera_image, sobel_edges
    from cnnkit.registry import get_backend

    if args.backends:
        backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    else:
        backends = ["numpy"]
        try:
            get_backend("torch")
            backends.append("torch")
        except Exception:  # torch not installed: the NumPy reference alone
            pass
    try:
        image = camera_image()
    except MissingExtraError as exc:
        print(f"cnnkit: error: {exc}", file=sys.stderr)
        return 2
    try:
        out = writable_dir(args.out)
    except UsageError as exc:
        print(f"cnnkit: error: {exc}", file=sys.stderr)
        return 2
    maps = {}
    for be in backends:
        maps[be] = sobel_edges(image, backend=be)
        gy, gx = maps[be]
        print(
            f"{be}: camera {image.shape[0]}x{image.shape[1]}, S = I * K (horizontal edges) in "
            f"[{gy.min():.3f}, {gy.max():.3f}], S = I * Kᵀ (vertical edges) in "
            f"[{gx.min():.3f}, {gx.max():.3f}]"
        )
    ref = backends[0]
    for be in backends[1:]:
        diff = max(float(np.abs(a - b).max()) for a, b in zip(maps[be], maps[ref]))
        print(f"{be} vs {ref}: largest difference {diff:.3g}")
    np.savez(
        out / "sobel.npz", image=image, **{f"{be}_{k}": m for be in backends for k, m in zip("yx", maps[be])}
    )
    written = [str(out / "sobel.npz")]
    gy, gx = maps[ref]
    note = plots.plot_images(
        [image, gy, gx],
        ["input: camera (scikit-image)", "I * K: horizontal edges", "I * Kᵀ: vertical edges"],
        out / "sobel.png",
        title=f"Sobel, true convolution, padding 'same' ({ref} backend)",
    )
    if note:
        print(f"note: {note}")
    else:
        written.append(str(out / "sobel.png"))
    print("wrote " + ", ".join(written))
    return 0
