"""The conformance suite: the same cases, run against every registered backend."""
