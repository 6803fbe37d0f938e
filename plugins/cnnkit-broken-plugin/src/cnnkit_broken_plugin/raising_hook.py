"""Entry point ``broken_hook``: imports fine, but its ``cnnkit_register_ops`` hook raises."""

from cnnkit import hookimpl


@hookimpl
def cnnkit_register_ops(register):
    raise RuntimeError("cnnkit-broken-plugin fails in cnnkit_register_ops on purpose")
