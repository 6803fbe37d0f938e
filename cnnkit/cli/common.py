"""What the subcommands share: the usage error and the check that ``--out`` can be written."""

from __future__ import annotations

import tempfile
from pathlib import Path

__all__ = ["UsageError", "writable_dir"]


class UsageError(ValueError):
    """A bad combination of flags: reported as one line ``cnnkit: error: ...``, exit status 2."""


def writable_dir(out: str | Path) -> Path:
    """``out`` created if needed and checked writable, before any work is done.

    Raises:
        UsageError: it cannot be created or written (``--out DIR: cannot write there (...)``).
    """
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".cnnkit-write-test-"):
            pass
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    return out
