"""The benchmarked workloads (issue 6) and their arithmetic: shapes, FLOPs, targets.

A workload is one op call in float32. Conv FLOPs count a multiply and an add
per tap: ``2·N·K·C·F^d·O^d`` for the forward pass (``O`` the output size per
spatial axis); forward+backward counts three times that (``dx`` and ``dW`` are
each one more convolution of the same size; the bias and the ReLU-free
gradient bookkeeping are negligible). Pooling has no FLOP count worth the name.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from cnnkit.geometry import conv_output_size

__all__ = [
    "MEMORY_BATCHES",
    "PROFILES",
    "TARGETS",
    "VGG_LAYERS",
    "Workload",
    "memory_workload",
    "workloads",
]


@dataclass(frozen=True)
class Workload:
    """One benchmarked call.

    Attributes:
        name: short id used in tables (``W1``, ``conv1d``, ``maxpool``).
        op: the :mod:`cnnkit.functional` / ``torch.nn.functional`` name.
        n, c, spatial: the input ``(N, C, *spatial)``.
        k: conv filters (``0`` for pooling).
        f: kernel (conv) or window (pooling) size per axis.
        stride, padding: per axis, the same on every axis.
    """

    name: str
    op: str
    n: int
    c: int
    spatial: tuple[int, ...]
    k: int
    f: int
    stride: int
    padding: int

    @property
    def is_transpose(self) -> bool:
        """A transposed convolution (weight ``(C, K, *F)``; output ``stride`` times the input)."""
        return self.op.startswith("conv_transpose")

    @property
    def is_conv(self) -> bool:
        return self.op.startswith("conv") and not self.is_transpose

    @property
    def is_norm(self) -> bool:
        """Batch norm in training mode (``k``, ``f``, ``stride``, ``padding``: 0, 1, 1, 0)."""
        return self.op == "batch_norm"

    @property
    def is_pool(self) -> bool:
        return "pool" in self.op

    @property
    def has_weight(self) -> bool:
        return self.is_conv or self.is_transpose

    @property
    def output_padding(self) -> int:
        """A transposed conv's: ``stride - 1``, so that its output is ``stride`` times its input."""
        return self.stride - 1 if self.is_transpose else 0

    @property
    def is_model(self) -> bool:
        """A whole training step of a small network (:data:`VGG_LAYERS`), not one op."""
        return self.op == "vgg_step"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.n, self.c, *self.spatial)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        kernel = [self.f] * len(self.spatial)
        return (self.c, self.k, *kernel) if self.is_transpose else (self.k, self.c, *kernel)

    @property
    def out_spatial(self) -> tuple[int, ...]:
        if self.is_transpose:
            return tuple(
                (s - 1) * self.stride - 2 * self.padding + self.f + self.output_padding for s in self.spatial
            )
        return tuple(conv_output_size(s, self.f, self.stride, self.padding) for s in self.spatial)

    @property
    def output_shape(self) -> tuple[int, ...]:
        if self.is_model:
            return (self.n, self.k)
        return (self.n, self.k if self.has_weight else self.c, *self.out_spatial)

    def flops(self, mode: str) -> int | None:
        """FLOPs of one call: ``mode`` is ``"fwd"`` or ``"fwdbwd"``; ``None`` for pooling."""
        if self.is_model:
            fwd = vgg_flops(self)
            return fwd if mode == "fwd" else 3 * fwd
        if not self.has_weight:
            return None
        # a transposed conv has the FLOPs of the conv it is the input gradient of: one product
        # per input unit, kernel tap and output channel
        units = math.prod(self.spatial) if self.is_transpose else math.prod(self.out_spatial)
        fwd = 2 * self.n * self.k * self.c * self.f ** len(self.spatial) * units
        return fwd if mode == "fwd" else 3 * fwd

    def describe(self) -> str:
        """The issue's notation: ``N,C,HxW->K,F,stride,padding`` (pools: ``window/stride``)."""
        size = "x".join(map(str, self.spatial)) if len(self.spatial) > 1 else f"L={self.spatial[0]}"
        if self.is_model:
            convs = "-".join(str(a) for kind, a in VGG_LAYERS if kind == "conv")
            return f"{self.n},{self.c},{size} VGG({convs})->{self.k}"
        if self.is_transpose:
            out = "x".join(map(str, self.out_spatial))
            return f"{self.n},{self.c},{size}->{self.k},{self.f},{self.stride},{self.padding} T ({out})"
        if self.is_conv:
            return f"{self.n},{self.c},{size}->{self.k},{self.f},{self.stride},{self.padding}"
        if self.is_norm:
            return f"{self.n},{self.c},{size} training"
        return f"{self.n},{self.c},{size} {self.f}x{self.f}/{self.stride}"

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(
            spatial=list(self.spatial),
            describe=self.describe(),
            output_shape=list(self.output_shape),
            flops_fwd=self.flops("fwd"),
            flops_fwdbwd=self.flops("fwdbwd"),
        )
        return d


def _conv(name, n, c, spatial, k, f, s, p, op="conv2d"):
    return Workload(name, op, n, c, spatial, k, f, s, p)


def _pool(name, op, n, c, spatial):
    return Workload(name, op, n, c, spatial, 0, 2, 2, 0)


#: The small VGG of the ``vgg`` workload, layer by layer: ``("conv", K)`` a 3x3 conv (stride 1,
#: padding 1, bias) then ReLU, ``("maxpool", 2)``, then flatten, one linear layer to ``k``
#: classes and the mean cross-entropy; a training step is forward, backward and an SGD update.
#: HOOK for the layers being written now: add ``("batch_norm", 0)`` after a conv or a
#: ``("conv_transpose", K)``, and teach ``benchmarks._worker.VggCalls._layer`` (one branch per
#: kind, for each backend) to run it; ``vgg_flops`` counts conv and linear FLOPs only.
VGG_LAYERS: tuple[tuple[str, int], ...] = (
    ("conv", 32),
    ("conv", 32),
    ("maxpool", 2),
    ("conv", 64),
    ("conv", 64),
    ("maxpool", 2),
)


def vgg_flops(wl: Workload) -> int:
    """Forward FLOPs of the VGG workload: its convs and its linear layer."""
    c, size, total = wl.c, list(wl.spatial), 0
    for kind, arg in VGG_LAYERS:
        if kind == "conv":
            total += 2 * wl.n * arg * c * 9 * math.prod(size)
            c = arg
        elif kind == "maxpool":
            size = [s // arg for s in size]
    return total + 2 * wl.n * c * math.prod(size) * wl.k


#: Workload lists by profile: ``full`` is issue 6's list; ``tiny`` keeps the
#: same structure at minuscule sizes, to test the harness itself.
PROFILES: dict[str, tuple[Workload, ...]] = {
    "full": (
        _conv("W1", 32, 3, (32, 32), 32, 3, 1, 1),
        _conv("W2", 32, 32, (32, 32), 64, 3, 1, 1),
        _conv("W3", 16, 64, (56, 56), 64, 3, 1, 1),
        _conv("W4", 64, 1, (28, 28), 8, 5, 1, 0),
        _conv("W5", 32, 64, (32, 32), 128, 3, 2, 1),
        _conv("conv1d", 32, 16, (1024,), 32, 7, 1, 3, op="conv1d"),
        _pool("maxpool", "max_pool2d", 32, 64, (32, 32)),
        _pool("avgpool", "avg_pool2d", 32, 64, (32, 32)),
        _conv("convT", 32, 64, (16, 16), 32, 3, 2, 1, op="conv_transpose2d"),
        Workload("batchnorm", "batch_norm", 32, 64, (32, 32), 0, 1, 1, 0),
        Workload("vgg", "vgg_step", 32, 3, (32, 32), 10, 3, 1, 1),
    ),
    "tiny": (
        _conv("W1", 2, 3, (8, 8), 4, 3, 1, 1),
        _conv("W2", 2, 4, (8, 8), 4, 3, 1, 1),
        _conv("W3", 2, 4, (7, 7), 4, 3, 1, 1),
        _conv("W4", 2, 1, (8, 8), 2, 5, 1, 0),
        _conv("W5", 2, 4, (8, 8), 8, 3, 2, 1),
        _conv("conv1d", 2, 2, (16,), 3, 7, 1, 3, op="conv1d"),
        _pool("maxpool", "max_pool2d", 2, 3, (8, 8)),
        _pool("avgpool", "avg_pool2d", 2, 3, (8, 8)),
        _conv("convT", 2, 4, (4, 4), 3, 3, 2, 1, op="conv_transpose2d"),
        Workload("batchnorm", "batch_norm", 2, 3, (4, 4), 0, 1, 1, 0),
        Workload("vgg", "vgg_step", 2, 3, (8, 8), 10, 3, 1, 1),
    ),
}

#: The batch sizes of the memory measurement (W3 at N=16 and N=128), by profile.
MEMORY_BATCHES: dict[str, tuple[int, int]] = {"full": (16, 128), "tiny": (2, 4)}

#: Issue 14's targets (issue 6's before it), printed as information (never asserted).
TARGETS = {
    "numpy_conv_each": 2.5,  # NumPy conv fwd+bwd / native, every conv workload
    "numpy_conv_geomean": 1.75,  # geometric mean of those ratios
    "numpy_pool_each": 1.0,  # NumPy pool fwd+bwd / native: stays faster than native
    "torch_each": 1.10,  # torch backend fwd+bwd / native, every single-op workload
    "torch_vgg": 1.15,  # torch backend VGG training step / native
    "torch_goal": 1.05,  # the torch backend's aim
    "memory_ratio": 2.0,  # NumPy conv fwd+bwd extra memory, N=128 over N=16
}


def workloads(profile: str, names: list[str] | None = None) -> tuple[Workload, ...]:
    """The workloads of ``profile`` (optionally only those named), in table order."""
    found = PROFILES[profile]
    if names:
        unknown = sorted(set(names) - {w.name for w in found})
        if unknown:
            raise ValueError(f"unknown workload(s) {unknown}; known: {[w.name for w in found]}")
        found = tuple(w for w in found if w.name in names)
    return found


def memory_workload(profile: str, n: int) -> Workload:
    """W3 of ``profile`` at batch size ``n``."""
    return replace(next(w for w in PROFILES[profile] if w.name == "W3"), n=n)
