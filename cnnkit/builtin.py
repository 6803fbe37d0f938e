"""The core's own plugin: its op records, layers and conformance cases, through the public hooks.

As llm's ``default_plugins``: the core registers what it brings exactly as a
third-party plugin would, from this one module (the registry loads it before
any entry point). The backends are not here: ``cnnkit_numpy`` and
``cnnkit_torch`` register themselves through their own entry points.
"""

from __future__ import annotations

from cnnkit.hookspecs import hookimpl


@hookimpl
def cnnkit_register_ops(register):
    from cnnkit.ops import BUILTIN_SPECS

    for spec in BUILTIN_SPECS:
        register(spec)


@hookimpl
def cnnkit_register_layers(register):
    from cnnkit.layers import BUILTIN_LAYERS

    for cls in BUILTIN_LAYERS:
        register(cls)
