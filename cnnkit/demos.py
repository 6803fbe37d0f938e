"""The lecture's demonstrations on real data: the Sobel kernel on a photograph.

:func:`camera_image` is scikit-image's bundled "camera" photograph (512x512,
gray; shipped inside the scikit-image package, public domain, in the
``data`` extra: ``pip install 'cnnkit[data]'``): nothing is downloaded.
:func:`sobel_edges` applies the lecture's Sobel kernel
``K = [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]`` and its transpose to an image by
true convolution (``flip=True``, the kernel rotated 180°) with padding
``"same"``, on any backend: the first map responds to horizontal edges
(brightness changing from row to row), the second to vertical ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["SOBEL", "camera_image", "sobel_edges"]

#: The lecture's Sobel kernel (the vertical derivative: horizontal edges).
SOBEL = np.array([[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]])


def camera_image() -> np.ndarray:
    """scikit-image's bundled camera photograph as float64 in ``[0, 1]``, shape ``(512, 512)``.

    Raises:
        cnnkit.data.MissingExtraError: scikit-image is not installed (one line: what to install).
    """
    from cnnkit.data import MissingExtraError

    try:
        from skimage import data
    except ImportError as exc:
        raise MissingExtraError(
            "the camera photograph ships with scikit-image: pip install 'cnnkit[data]'"
        ) from exc
    return data.camera().astype(np.float64) / 255.0


def sobel_edges(
    image: Any, *, backend: str | None = None, dtype: str = "float64"
) -> tuple[np.ndarray, np.ndarray]:
    """The two Sobel edge maps of a gray image ``(H, W)`` by true convolution, padding ``"same"``.

    Args:
        image: ``(H, W)`` gray values.
        backend: the backend that convolves (default: the active one).
        dtype: the backend's float dtype.

    Returns:
        ``(S_K, S_Kᵀ)`` as NumPy arrays ``(H, W)``: the image convolved with
        :data:`SOBEL` (horizontal edges) and with its transpose (vertical edges).

    Example:
        >>> s, _ = sobel_edges([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
        >>> s.tolist()   # the lecture's S
        [[-13.0, -20.0, -17.0], [-18.0, -24.0, -18.0], [13.0, 20.0, 17.0]]
    """
    import cnnkit
    from cnnkit import functional as F
    from cnnkit.registry import get_backend

    x = np.asarray(image, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"sobel_edges: image must be (H, W), got shape {x.shape}")
    w = np.stack([SOBEL, SOBEL.T])[:, None]  # (2, 1, 3, 3): both kernels in one call
    be = get_backend(backend, dtype=dtype) if backend else get_backend(get_backend().name, dtype=dtype)
    with cnnkit.use_backend(be.name, **be.options):
        out = F.conv2d(
            be.asarray(x[None, None], dtype=dtype), be.asarray(w, dtype=dtype), padding="same", flip=True
        )
    out = np.asarray(be.to_numpy(out), dtype=np.float64)[0]
    return out[0], out[1]
