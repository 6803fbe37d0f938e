"""``cnnkit new-plugin NAME``: write a working, tested plugin distribution to start from.

The package has the op's record (formulas, validation, cases, properties,
oracle), a NumPy and a PyTorch kernel with their hand-derived backward, a
layer, tests that run cnnkit's conformance suite on the op, and a README
(templates in :mod:`cnnkit.scaffold`). It passes its tests as generated.

Examples::

    cnnkit new-plugin hardtanh                       # an activation: ./cnnkit-hardtanh/
    cnnkit new-plugin my_pool --kind window --dir plugins
    cnnkit new-plugin my_scale --kind layer

A bad or taken name, an unknown kind or an existing directory is one line on
stderr (``cnnkit: error: new-plugin: ...``), exit status 2, and nothing written.
"""

from __future__ import annotations

import argparse
import os
import sys

NAME = "new-plugin"
HELP = "write a new layer plugin (record, NumPy and PyTorch kernels, layer, tests) that passes its tests"


def configure(parser: argparse.ArgumentParser) -> None:
    from cnnkit.scaffold import KINDS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "kinds:\n" + "\n".join(f"  {k:<11} {t.what}" for k, t in KINDS.items())
    parser.add_argument("name", metavar="NAME", help="the op's name, a lower-case identifier (my_pool)")
    parser.add_argument(
        "--kind",
        default="activation",
        metavar="{" + ",".join(KINDS) + "}",
        help="what the op is (default: activation)",
    )
    parser.add_argument(
        "--dir",
        default=None,
        metavar="DIR",
        help="the folder to create cnnkit-NAME/ in (default: the current directory); "
        "cnnkit-NAME/ must not exist yet",
    )


def run(args: argparse.Namespace) -> int:
    from cnnkit.scaffold import KINDS, ScaffoldError, generate

    try:
        target = generate(args.name, args.kind, args.dir)
    except ScaffoldError as exc:
        print(f"cnnkit: error: {NAME}: {exc} (nothing was written)", file=sys.stderr)
        return 2
    template = KINDS[args.kind]
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    shown = str(target)
    print(f"wrote {shown}{os.sep} ({args.kind}: {template.what}, as the op {args.name!r}):")
    for f in files:
        print(f"  {f}")
    print(
        "next:\n"
        f"  pip install -e {shown}\n"
        f"  cnnkit plugins --no-builtin\n"
        f"  cnnkit conformance --op {args.name}\n"
        f"  cd {shown} && pytest"
    )
    return 0
