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
  NumPy arrays whatever backend they came from.

A model saved from one backend loads on any other and computes the same
outputs. Any file that is not such a model (truncated, corrupted, a weight
missing or of the wrong shape, an unknown layer) raises a ``ValueError``
naming the file and the problem.
"""

from __future__ import annotations

import io as _io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.backend import Backend
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
    arrays = {name: np.asarray(backend_of(p.data).to_numpy(p.data)) for name, p in model.named_parameters()}
    with open(path, "wb") as f:
        np.savez(f, **{_ARCH_KEY: np.array(arch)}, **arrays)
    return path


def _build(node: Any, where: str, layers: dict[str, type], trail: str) -> Layer:
    at = f"layer {trail.rstrip('.')}" if trail else "the top"
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
        return cls(*(_build(c, where, layers, f"{trail}{i}.") for i, c in enumerate(children)))
    config = node.get("config", {})
    if not isinstance(config, dict):
        raise ValueError(f"{where}: the config of {name} at {at} is not an object")
    try:
        return cls(**config)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: cannot build {name} at {at} from {config}: {exc}") from exc


def _read_arrays(data: bytes, where: str) -> dict[str, np.ndarray]:
    """Every entry of the ``.npz`` archive in ``data``, refusing pickles."""
    f = np.load(_io.BytesIO(data), allow_pickle=False)
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError("a single .npy array, not an .npz archive")
    arrays = {}
    with f:
        for key in f.files:
            try:
                arrays[key] = f[key]
            except ValueError as exc:
                if "allow_pickle" not in str(exc):
                    raise
                raise ValueError(
                    f"{where}: entry {key!r} is a pickled object array; cnnkit model files hold only "
                    "plain arrays and cnnkit never unpickles"
                ) from None
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
            archive (truncated, corrupted), no or bad architecture, an unknown
            layer class, a missing, extra or wrongly shaped weight. The
            message names the file and the problem.
        FileNotFoundError: there is no such file.

    Example:
        See :func:`save`.
    """
    where = f"load {os.fspath(path)}"
    be = get_backend(backend, **options)
    data = Path(path).read_bytes()
    try:
        arrays = _read_arrays(data, where)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        if str(exc).startswith(where):
            raise
        raise ValueError(
            f"{where}: not a readable cnnkit model file (.npz archive); it may be truncated or "
            f"corrupted ({type(exc).__name__}: {exc})"
        ) from exc
    if _ARCH_KEY not in arrays:
        raise ValueError(f"{where}: no {_ARCH_KEY!r} entry; this .npz was not written by cnnkit.io.save")
    try:
        arch = json.loads(str(arrays.pop(_ARCH_KEY)))
    except ValueError as exc:
        raise ValueError(f"{where}: the architecture is not valid JSON ({exc})") from exc
    if not isinstance(arch, dict) or arch.get("format") != FORMAT:
        raise ValueError(f"{where}: the architecture is not a {FORMAT!r} description")
    if arch.get("version") != VERSION:
        raise ValueError(
            f"{where}: format version {arch.get('version')!r} is not supported (this cnnkit reads {VERSION})"
        )
    with use_backend(be.name, **be.options):
        model = _build(arch.get("model"), where, get_registry().layers(), "")
    model.to(be)
    params = dict(model.named_parameters())
    missing = [name for name in params if name not in arrays]
    if missing:
        raise ValueError(f"{where}: missing weight(s) {missing} for the saved architecture")
    extra = [name for name in arrays if name not in params]
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
        p.data = be.asarray(value, dtype=be.default_dtype)
    metadata = arch.get("metadata", {})
    model.metadata = metadata if isinstance(metadata, dict) else {}
    return model
