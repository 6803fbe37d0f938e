"""The ``cnnkit`` command: CNN layers as the lecture's math, on NumPy or PyTorch.

Each subcommand is a module of this package with ``NAME``, ``HELP``,
``configure(parser)`` and ``run(args) -> int``, listed in :data:`SUBCOMMANDS`.

A subcommand whose module cannot be imported is still listed, and running it
prints why; the other subcommands keep working. A user's mistake never ends in a
traceback: a cnnkit error (a plugin failing under ``CNNKIT_STRICT_PLUGINS=1``, an
unknown backend), a ``ValueError`` or ``TypeError`` (a bad value reaching the
library) or an ``OSError`` (a file that cannot be read or written) ends the
command with one line ``cnnkit: error: ...`` on stderr and exit status 1
(``CNNKIT_DEBUG=1`` shows the traceback instead). Output cut short by a closed
pipe (``cnnkit backends --json | head``) ends quietly.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from cnnkit.errors import (
    BackendNotFoundError,
    BackendUnavailableError,
    OpNotImplementedError,
    PluginError,
)

__all__ = ["SUBCOMMANDS", "build_parser", "format_table", "main"]

#: Subcommand modules, in the order ``cnnkit --help`` lists them.
SUBCOMMANDS: tuple[str, ...] = (
    "backends",
    "plugins",
    "conformance",
    "train",
    "summary",
    "experiment",
    "explain",
    "demo",
    "new_plugin",
)

#: Errors shown as one line (``cnnkit: error: ...``) with exit status 1: cnnkit's own, and
#: what bad user input makes the library raise (values, types, files).
CLI_ERRORS = (
    PluginError,
    BackendNotFoundError,
    BackendUnavailableError,
    OpNotImplementedError,
    ValueError,
    TypeError,
    OSError,
)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows as an aligned plain-text table under a header line and a rule.

    Example:
        >>> print(format_table(["name", "n"], [["numpy", 12], ["torch", 3]]))
        name   n
        -----  --
        numpy  12
        torch  3
    """
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _broken_subcommand(modname: str, exc: BaseException) -> Any:
    def run(args: argparse.Namespace) -> int:
        print(
            f"cnnkit: error: the {modname!r} command cannot load: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return 1

    return run


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-parser per module in :data:`SUBCOMMANDS`."""
    from cnnkit import __version__

    parser = argparse.ArgumentParser(
        prog="cnnkit",
        description=__doc__.splitlines()[0].replace("``", ""),
        epilog="Run 'cnnkit COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"cnnkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for modname in SUBCOMMANDS:
        try:
            mod = importlib.import_module(f"cnnkit.cli.{modname}")
        except Exception as exc:  # one broken subcommand must not take the others down
            p = sub.add_parser(modname, help=f"(cannot load: {exc})", add_help=True)
            p.set_defaults(_run=_broken_subcommand(modname, exc))
            continue
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.configure(p)
        p.set_defaults(_run=mod.run)
    from cnnkit.cli.plugin_commands import add_plugin_commands  # plugins' subcommands, after ours

    add_plugin_commands(sub, builtin=set(sub.choices))
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.strerror}: {exc.filename!r}"
    return text


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at devnull so the interpreter's last flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (a test's capture)
        pass


def main(argv: list[str] | None = None) -> int:
    """Run the ``cnnkit`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    A usage error exits through argparse (status 2); a cnnkit error, ``ValueError``,
    ``TypeError`` or ``OSError`` prints ``cnnkit: error: ...`` and returns 1; a closed
    stdout pipe returns 1 without a word; Ctrl-C returns 130.
    """
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "_run", None):
            parser.print_help()
            return 2
        status = int(args._run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return status
    except BrokenPipeError:
        _silence_stdout()
        return 1
    except KeyboardInterrupt:
        print("cnnkit: interrupted", file=sys.stderr)
        return 130
    except CLI_ERRORS as exc:
        if os.environ.get("CNNKIT_DEBUG", "").strip() not in ("", "0"):
            raise
        print(f"cnnkit: error: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
