"""``cnnkit experiment mnist1d-table``: the MNIST-1D paper's table, trained on every backend.

Trains every row of :data:`cnnkit.experiments.ROWS` (logistic regression,
the paper's MLP and CNN, cnnkit's CNN; each on the plain and the shuffled
sequences) with its recipe, for each seed and backend, prints one line per
run and then the table (the paper's accuracy beside cnnkit's mean ± spread
over the seeds), and writes it to ``--out`` as ``mnist1d-table.md`` and
``mnist1d-table.json``.
"""

from __future__ import annotations

import argparse
import json
import sys

from cnnkit.cli.common import UsageError, writable_dir

NAME = "experiment"
HELP = "reproduce a published table: mnist1d-table (the MNIST-1D paper's models, on every backend)"

EXPERIMENTS = ("mnist1d-table",)


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return seeds


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer > 0, got {text!r}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    from cnnkit.cli.train import one_line_errors

    one_line_errors(parser)
    parser.add_argument("name", choices=EXPERIMENTS, help="the experiment")
    parser.add_argument("--backends", default="numpy,torch", help="comma-separated (default numpy,torch)")
    parser.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="comma-separated (default 0,1,2)")
    parser.add_argument(
        "--rows", default=None, help="comma-separated architectures to train (default: all, both variants)"
    )
    parser.add_argument(
        "--samples", type=_count, default=5000, help="MNIST-1D signals in all (default 5000, the paper's)"
    )
    parser.add_argument(
        "--epochs", type=_count, default=None, help="override every recipe's epochs (a quick check)"
    )
    parser.add_argument(
        "--torch-threads",
        type=_count,
        default=1,
        help="torch intra-op threads (default 1: tiny tensors, and spinning threads starve a shared machine)",
    )
    parser.add_argument(
        "--out", default="cnnkit-experiment", help="output folder (default ./cnnkit-experiment)"
    )


def run(args: argparse.Namespace) -> int:
    from cnnkit.data import MissingExtraError
    from cnnkit.experiments import ROWS, mnist1d_table, table_markdown
    from cnnkit.registry import get_backend

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    rows = ROWS
    if args.rows:
        wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
        known = list(dict.fromkeys(r.arch for r in ROWS))
        bad = [w for w in wanted if w not in known]
        if bad:
            print(
                f"cnnkit: error: unknown --rows {', '.join(bad)}; known: {', '.join(known)}", file=sys.stderr
            )
            return 2
        rows = tuple(r for r in ROWS if r.arch in wanted)
    for b in backends:
        get_backend(b)  # an unknown or missing backend: one line from cnnkit's main, before any training
    for b in backends:
        get_backend(b).set_threads(args.torch_threads)  # the backends that have a thread pool
    try:
        out = writable_dir(args.out)
    except UsageError as exc:
        print(f"cnnkit: error: {exc}", file=sys.stderr)
        return 2

    def line(row, be, seed, fig):
        print(
            f"{row.label:<24} {be:<6} seed {seed}: {100 * fig['acc']:6.2f}% "
            f"({fig['epochs']} epochs, {fig['seconds']:.1f}s)",
            flush=True,
        )

    try:
        records = mnist1d_table(
            rows=rows,
            backends=backends,
            seeds=args.seeds,
            num_samples=args.samples,
            epochs=args.epochs,
            on_run=line,
        )
    except MissingExtraError as exc:
        print(f"cnnkit: error: {exc}", file=sys.stderr)
        return 2
    table = table_markdown(records)
    seeds = ",".join(map(str, args.seeds))
    note = (
        f"MNIST-1D ({args.samples} signals), held-out accuracy, mean ± std over seeds {seeds}; "
        "s/run: training seconds per run."
    )
    print()
    print(table)
    print()
    print(note)
    cnn = {(r["shuffled"], r["backend"]): r["mean"] for r in records if r["arch"] == "paper-cnn"}
    for be in backends:
        if (False, be) in cnn and (True, be) in cnn:
            print(
                f"{be}: the paper's CNN loses {cnn[(False, be)] - cnn[(True, be)]:.1f} points when the "
                "sequence is shuffled: sparse interactions, parameter sharing and equivariance, as a number"
            )
    (out / "mnist1d-table.md").write_text(table + "\n\n" + note + "\n")
    (out / "mnist1d-table.json").write_text(json.dumps(records, indent=2) + "\n")
    print(f"wrote {out / 'mnist1d-table.md'}, {out / 'mnist1d-table.json'}")
    return 0
