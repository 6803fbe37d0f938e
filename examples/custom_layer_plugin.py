"""A layer plugin in one file, registered in-process, used and checked.

Run: ``python examples/custom_layer_plugin.py``

A real plugin is the same class (or module) exposed through an entry point in
the ``cnnkit`` group of its own ``pyproject.toml`` (``cnnkit new-plugin`` writes one);
here it is registered by hand so the example needs no install. It adds the op
``hardtanh`` (y = min(max(x, -1), 1)) with its spec, a NumPy kernel carrying the
hand-derived gradient, a layer, and two conformance cases, then runs the shared
conformance checks on them. If an installed plugin (``cnnkit-hardtanh``, as
``cnnkit new-plugin hardtanh`` writes it) already registers ``hardtanh``, it stops and says so.
"""

import numpy as np

import cnnkit
from cnnkit import Kernel, hookimpl
from cnnkit.conformance import Case, Random, run_case
from cnnkit.layers import Layer
from cnnkit.ops import ActivationSpec


def hardtanh_forward(x):
    inside = np.abs(x) < 1.0
    return np.clip(x, -1.0, 1.0), inside  # (output, what backward needs)


def hardtanh_backward(inside, grad_output):
    # dE/dx = dE/dy * [|x| < 1]
    return (grad_output * inside,)


def hardtanh(x, *, backend=None):
    """y = min(max(x, -1), 1), elementwise."""
    return cnnkit.call("hardtanh", x, backend=backend, where="hardtanh")


class Hardtanh(Layer):
    """The ``hardtanh`` op as a layer (no parameters)."""

    def function(self, x):
        return hardtanh(x)

    def config(self):
        return {}


class HardtanhPlugin:
    @hookimpl
    def cnnkit_register_ops(self, register):
        register(ActivationSpec("hardtanh"))

    @hookimpl
    def cnnkit_register_kernels(self, backend, register):
        if backend == "numpy":
            register("hardtanh", Kernel(forward=hardtanh_forward, backward=hardtanh_backward))

    @hookimpl
    def cnnkit_register_layers(self, register):
        register(Hardtanh)

    @hookimpl
    def cnnkit_conformance_cases(self, register):
        # away from the kinks at +-1, so finite differences are meaningful
        register(
            Case("hardtanh-golden", "hardtanh", ([-3.0, -0.5, 0.25, 2.0],), expected=[-1.0, -0.5, 0.25, 1.0])
        )
        register(Case("hardtanh-random", "hardtanh", (Random((2, 3, 5, 5), low=-0.9, high=0.9),)))


if "hardtanh" in cnnkit.get_registry().ops():
    raise SystemExit(
        "op 'hardtanh' is already registered by an installed plugin (cnnkit-hardtanh from "
        "cnnkit new-plugin?): pip uninstall it, or run with CNNKIT_DISABLE_PLUGIN_AUTOLOAD=1"
    )
name = cnnkit.get_registry().register(HardtanhPlugin(), name="hardtanh-example")

x = np.array([[-3.0, -0.5, 0.25, 2.0]])
y, pullback = cnnkit.vjp(hardtanh, x)
print("hardtanh(x) =", y, " dE/dx for dE/dy = 1:", pullback(np.ones_like(y))[0])

layer = Hardtanh()
out = layer.forward(x)
print("layer forward:", out, " backward:", layer.backward(np.ones_like(out)))

for case_id in ("hardtanh-golden", "hardtanh-random"):
    outcomes = run_case(case_id, backend="numpy")
    print(case_id, {check: outcome.status for check, outcome in outcomes.items()})
try:
    hardtanh(x, backend="torch")  # the plugin brought no torch kernel
except (cnnkit.OpNotImplementedError, cnnkit.BackendUnavailableError) as exc:
    print("torch:", exc)
cnnkit.get_registry().unregister(name)
