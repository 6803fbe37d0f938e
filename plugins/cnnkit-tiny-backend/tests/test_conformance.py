"""cnnkit's shared conformance suite, run against ``tiny``: this import is the whole test.

``pytest tests`` (from this directory) runs every case of every op on tiny;
ops tiny lacks get no items (its coverage line names them), known failures are listed with
their reasons in ``known_failures.txt``.
"""

from pathlib import Path

from cnnkit.conformance.test_suite import test_conformance  # noqa: F401

cnnkit_xfail = str(Path(__file__).resolve().parent.parent / "known_failures.txt")
