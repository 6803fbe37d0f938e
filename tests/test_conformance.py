"""The conformance suite, for every registered backend (see cnnkit/conformance/README.md)."""

from pathlib import Path

from cnnkit.conformance.test_suite import test_conformance  # noqa: F401  (collected here)

#: Known failures: ``pattern  # reason`` per line; an entry that passes now fails the run (stale).
cnnkit_xfail = Path(__file__).with_name("conformance_xfail.txt")
