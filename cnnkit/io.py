"""Saving and loading models as data: one ``.npz`` file, never a pickle.

The file is a NumPy ``.npz`` archive (written with :func:`numpy.savez`, read
with ``allow_pickle=False``) holding

- ``__architecture__``: a 0-d string array with the architecture as JSON::

      {"format": "cnnkit-model", "version": 1,
       "model": {"class": "Sequential", "config": {},
                 "layers": [{"class": "Conv2d", "config": {"in_channels": 1, ...}}, ...]}}

  Layer classes are found by class name in the registry
  (:meth:`cnnkit.registry.Registry.layers`), so layers added by plugins save
  and load like the built-in ones.
- one array per parameter, named as :meth:`cnnkit.layers.Layer.named_parameters`
  names them (``"0.weight"``, ``"0.bias"``, ``"7.weight"``, ...), stored as
  NumPy arrays whatever backend they came from; and one per buffer (a batch
  norm's ``"1.running_mean"``, ``"1.running_var"``, ``"1.num_batches_tracked"``,
  torch's state-dict keys).

A model saved from one backend loads on any other and computes the same
outputs. Any file that is not such a model (truncated, corrupted, a weight
missing or of the wrong shape, an unknown layer) raises a ``ValueError``
naming the file and the problem.
"""

from __future__ import annotations

import inspect
import io as _io
import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.backend import Backend
from cnnkit.layer import Parameter, describe_only
from cnnkit.layers import Layer, Sequential, backend_of
from cnnkit.registry import get_backend, get_registry, use_backend

__all__ = ["FORMAT", "VERSION", "load", "save"]

FORMAT = "cnnkit-model"
VERSION = 1
_ARCH_KEY = "__architecture__"


def _describe(layer: Layer) -> dict[str, Any]:
    node: dict[str, Any] = {"class": type(layer).__name__, "config": layer.config()}
    if isinstance(layer, Sequential):
        node["layers"] = [_describe(child) for child in layer.layers]
    return node


def save(model: Layer, path: str | os.PathLike, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (architecture and weights) to ``path``, a single ``.npz`` file.

    Args:
        model: a layer or :class:`cnnkit.layers.Sequential`, on any backend.
        path: the file to write (the name is kept as given; ``.npz`` is customary).
        metadata: JSON-serialisable facts stored beside the architecture
            (``cnnkit train`` stores the architecture name and ``input_shape``);
            :func:`load` puts them in ``model.metadata``.

    Returns:
        The path written.

    Raises:
        ValueError: a layer's ``config()`` is not JSON-serialisable.

    Example:
        >>> import tempfile, os
        >>> from cnnkit.models import build_model
        >>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
        >>> _ = save(build_model("digits-cnn", seed=0), path)
        >>> type(load(path)).__name__
        'Sequential'
    """
    path = Path(path)
    try:
        arch = json.dumps(
            {"format": FORMAT, "version": VERSION, "model": _describe(model), "metadata": metadata or {}}
        )
    except TypeError as exc:
        raise ValueError(f"save {path}: a layer's config() or the metadata is not JSON ({exc})") from exc
    state = [*model.named_parameters(), *model.named_buffers()]  # buffers: running statistics
    arrays = {name: np.asarray(backend_of(p.data).to_numpy(p.data)) for name, p in state}
    with open(path, "wb") as f:
        np.savez(f, **{_ARCH_KEY: np.array(arch)}, **arrays)
    return path


#: How far nested ``Sequential`` blocks may go in a file (a deeper one is refused, not recursed).
MAX_DEPTH = 64
#: The uncompressed entries of a file may hold at most this many times the file's own size (plus
#: :data:`SLACK_BYTES`): what a file declares is allocated only when the file can justify it.
#: cnnkit writes uncompressed archives (factor 1); ``numpy.savez_compressed`` of float weights
#: compresses far less than 16 times.
MAX_EXPANSION = 16
SLACK_BYTES = 2**20


class _ShapeOnly(np.random.Generator):
    """A generator whose "random" arrays are zero-stride views of one 0: a layer built with it
    has parameters of the right shape that take no memory, whatever its config declares."""

    def uniform(self, low: Any = 0.0, high: Any = 1.0, size: Any = None) -> Any:
        return np.broadcast_to(np.float64(0), () if size is None else size)

    def normal(self, loc: Any = 0.0, scale: Any = 1.0, size: Any = None) -> Any:
        return self.uniform(size=size)

    def standard_normal(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> Any:
        return self.uniform(size=size)

    def random(self, size: Any = None, dtype: Any = np.float64, out: Any = None) -> Any:
        return self.uniform(size=size)


def _takes_rng(cls: type) -> bool:
    try:
        return "rng" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def _build(node: Any, where: str, layers: dict[str, type], trail: str, depth: int = 0) -> Layer:
    """The layer (tree) ``node`` describes, its parameters shape-only views where the class takes ``rng``."""
    at = f"layer {trail.rstrip('.')}" if trail else "the top"
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: the architecture nests Sequential blocks deeper than {MAX_DEPTH} at {at}")
    if not isinstance(node, dict) or not isinstance(node.get("class"), str):
        raise ValueError(f"{where}: the architecture entry at {at} is not a layer description")
    name = node["class"]
    if name not in layers:
        raise ValueError(
            f"{where}: unknown layer class {name!r} at {at}; registered layers: "
            f"{', '.join(sorted(layers))} (is the plugin that provides it installed?)"
        )
    cls = layers[name]
    if issubclass(cls, Sequential):
        children = node.get("layers")
        if not isinstance(children, list):
            raise ValueError(f"{where}: Sequential at {at} has no list of layers")
        return cls(*(_build(c, where, layers, f"{trail}{i}.", depth + 1) for i, c in enumerate(children)))
    config = node.get("config", {})
    if not isinstance(config, dict):
        raise ValueError(f"{where}: the config of {name} at {at} is not an object")
    takes_rng = _takes_rng(cls)
    extra = {"rng": _ShapeOnly(np.random.PCG64(0))} if takes_rng and "rng" not in config else {}
    try:
        if takes_rng:
            return cls(**config, **extra)
        with describe_only():  # parameters and buffers that are not drawn (a batch norm's): shapes only
            layer = cls(**config)
        _shape_only(layer)
        return layer
    except Exception as exc:  # whatever a hostile config makes a constructor raise, named
        raise ValueError(
            f"{where}: cannot build {name} at {at} from {_brief(config)}: {type(exc).__name__}: {exc}"
        ) from exc


def _shape_only(layer: Layer) -> None:
    """Give a layer built by :func:`describe_only` zero-stride parameters and buffers of its shapes
    (the file's arrays replace them once their shapes are held against these)."""
    for name, spec in layer.param_specs().items():
        value = None if spec is None else np.broadcast_to(np.float64(0), spec.shape)
        setattr(layer, name, None if value is None else Parameter(value, name))
    for name, bspec in layer.buffer_specs().items():
        zero = np.int64(0) if bspec is not None and bspec.integer else np.float64(0)
        setattr(layer, name, None if bspec is None else Parameter(np.broadcast_to(zero, bspec.shape), name))


def _brief(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _not_an_archive(data: bytes) -> str:
    """What a file that is not a zip archive looks like, for the message."""
    head = data[:64].lstrip()
    if not data:
        return "the file is empty; it may be truncated"
    if data.startswith(b"\x93NUMPY"):
        return "a single .npy array, not an .npz archive"
    if head[:1] in (b"{", b"["):
        return "JSON text, not an .npz archive (cnnkit keeps the architecture inside the .npz)"
    if data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        return "a Python pickle, not an .npz archive (cnnkit never unpickles)"
    return "not an .npz (zip) archive; it may be truncated or corrupted"


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, where: str) -> np.ndarray:
    """One ``.npy`` entry, its header checked against its size before anything is allocated."""
    fmt = np.lib.format
    with zf.open(info) as fp:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fp)
        else:
            raise ValueError(f"{where}: entry {key!r} is a .npy array of format version {version}")
        if dtype.hasobject:
            raise ValueError(
                f"{where}: entry {key!r} is a pickled object array; cnnkit model files hold only "
                "plain arrays and cnnkit never unpickles"
            )
        nbytes = math.prod(shape) * dtype.itemsize
        held = info.file_size - fp.tell()
        if nbytes != held:
            raise ValueError(
                f"{where}: entry {key!r} declares shape {shape} of {dtype} ({nbytes} bytes) but holds "
                f"{held} bytes; the file is corrupted or was not written by cnnkit.io.save"
            )
        buf = bytearray(fp.read(nbytes))
    if len(buf) != nbytes:
        raise ValueError(f"{where}: entry {key!r} is truncated")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _read_arrays(data: bytes, where: str) -> dict[str, np.ndarray]:
    """Every entry of the ``.npz`` archive in ``data``, refusing pickles and sizes the file cannot hold.

    Raises:
        ValueError: naming the file and, where one is at fault, the entry.
    """
    if not zipfile.is_zipfile(_io.BytesIO(data)):
        raise ValueError(f"{where}: not a readable cnnkit model file (.npz archive): {_not_an_archive(data)}")
    try:
        zf = zipfile.ZipFile(_io.BytesIO(data))
        infos = zf.infolist()
        declared = sum(i.file_size for i in infos)
        if declared > MAX_EXPANSION * len(data) + SLACK_BYTES:
            raise ValueError(
                f"{where}: the archive declares {declared} bytes of entries in a file of {len(data)} "
                f"bytes (more than {MAX_EXPANSION}x); refused before decompressing"
            )
        arrays = {}
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise ValueError(
                    f"{where}: not a readable cnnkit model file (.npz archive): entry "
                    f"{info.filename!r} is not a .npy array"
                )
            key = info.filename[: -len(".npy")]
            arrays[key] = _read_entry(zf, info, key, where)
    except ValueError as exc:
        if str(exc).startswith(where):
            raise
        raise ValueError(
            f"{where}: not a readable cnnkit model file (.npz archive); it may be truncated or "
            f"corrupted ({type(exc).__name__}: {exc})"
        ) from exc
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        OSError,
        NotImplementedError,
        KeyError,
    ) as exc:
        raise ValueError(
            f"{where}: not a readable cnnkit model file (.npz archive); it may be truncated or "
            f"corrupted ({type(exc).__name__}: {exc})"
        ) from exc
    return arrays


def load(path: str | os.PathLike, backend: str | Backend | None = None, **options: Any) -> Layer:
    """Read a model written by :func:`save`, with its parameters on ``backend``.

    Args:
        path: the ``.npz`` file.
        backend: where the parameters go (a name or instance; default: the active backend).
        options: backend options when ``backend`` is a name (``device``, ``dtype``).

    Returns:
        The model, ready for ``forward`` (a :class:`cnnkit.layers.Sequential`
        for the named architectures), its parameters in the backend's default
        dtype, with the saved metadata in ``model.metadata``.

    Raises:
        ValueError: the file cannot be read as a cnnkit model: not an ``.npz``
            archive (JSON, a lone ``.npy``, truncated, corrupted), an entry whose
            header declares more than it holds, no or bad architecture, an unknown
            layer class or a config its constructor refuses, a missing, extra or
            wrongly shaped weight. The message names the file and the entry.
        FileNotFoundError: there is no such file (other ``OSError`` s as the OS raises them).
        TypeError: ``path`` is not a file name.

    Nothing is allocated beyond what the file's own size justifies: each entry's header is
    checked against the bytes it holds before it is read, and the architecture is built
    with shape-only parameters (for layers that take ``rng``) before any weight is compared.

    Example:
        See :func:`save`.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load: path must be a file name (str or os.PathLike), got {type(path).__name__}")
    where = f"load {os.fspath(path)}"
    be = get_backend(backend, **options)
    data = Path(path).read_bytes()
    arrays = _read_arrays(data, where)
    if _ARCH_KEY not in arrays:
        raise ValueError(f"{where}: no {_ARCH_KEY!r} entry; this .npz was not written by cnnkit.io.save")
    text = arrays.pop(_ARCH_KEY)
    if text.ndim != 0 or text.dtype.kind not in "US":
        raise ValueError(
            f"{where}: the {_ARCH_KEY!r} entry must be a string, got an array of {text.dtype}, "
            f"shape {text.shape}"
        )
    try:
        value = text[()]
        arch = json.loads(value.decode() if isinstance(value, bytes) else str(value))
    except (ValueError, RecursionError) as exc:
        raise ValueError(
            f"{where}: the architecture is not valid JSON ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(arch, dict) or arch.get("format") != FORMAT:
        raise ValueError(f"{where}: the architecture is not a {FORMAT!r} description")
    if arch.get("version") != VERSION:
        raise ValueError(
            f"{where}: format version {_brief(arch.get('version'))} is not supported "
            f"(this cnnkit reads {VERSION})"
        )
    # built shape-only on NumPy: the parameters are zero-stride views, so a config declaring a
    # Conv2d(10**7, 10**7) allocates nothing before its weights are held against the file's
    with use_backend("numpy", dtype="float64"):
        model = _build(arch.get("model"), where, get_registry().layers(), "")
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    missing = [name for name in [*params, *buffers] if name not in arrays]
    if missing:
        raise ValueError(f"{where}: missing weight(s) {missing} for the saved architecture")
    extra = [name for name in arrays if name not in params and name not in buffers]
    if extra:
        raise ValueError(f"{where}: weight(s) {extra} belong to no parameter of the saved architecture")
    for name, p in params.items():
        value = arrays[name]
        if tuple(value.shape) != p.shape:
            raise ValueError(
                f"{where}: weight {name!r} has shape {tuple(value.shape)} but the architecture "
                f"needs {p.shape}"
            )
        if not np.issubdtype(value.dtype, np.floating):
            raise ValueError(f"{where}: weight {name!r} has dtype {value.dtype}, expected a floating dtype")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{where}: weight {name!r} holds NaN or infinite values")
        p.data = value
    for name, b in buffers.items():
        value = arrays[name]
        if tuple(value.shape) != b.shape:
            raise ValueError(
                f"{where}: buffer {name!r} has shape {tuple(value.shape)} but the architecture "
                f"needs {b.shape}"
            )
        want_int = np.asarray(b.data).dtype.kind in "iu"
        if want_int != (value.dtype.kind in "iu") or value.dtype.kind not in "iuf":
            kind = "an integer" if want_int else "a floating"
            raise ValueError(f"{where}: buffer {name!r} has dtype {value.dtype}, expected {kind} dtype")
        if not want_int and not np.all(np.isfinite(value)):
            raise ValueError(f"{where}: buffer {name!r} holds NaN or infinite values")
        b.data = value.astype(np.int64) if want_int else value
    model.to(be)
    metadata = arch.get("metadata", {})
    model.metadata = metadata if isinstance(metadata, dict) else {}
    return model
