"""cnnkit's benchmark harness: ``python -m benchmarks.run`` (see benchmarks/README.md).

Not part of the installed library; it is run from the repository root.
"""
