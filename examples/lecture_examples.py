"""The lecture's worked examples, on every installed backend.

Run: ``python examples/lecture_examples.py``

1. Sobel, true convolution with "same" padding on a 3x3 image.
2. Two 3x3x3 filters over a 5x5x3 volume, stride 2, padding 1, biases 1 and 0.
3. The output-size table: N = 7, F = 3 with S = 1, 2 and 3 (which does not fit).
Then the hand-derived gradients of example 2 through ``cnnkit.vjp``.
"""

import numpy as np

import cnnkit
from cnnkit import functional as F
from cnnkit import geometry


def digits(*rows: str) -> list[list[float]]:
    return [[float(c) for c in row] for row in rows]


# Example 1: Sobel. flip=True is true convolution (the kernel rotated by 180 degrees).
image = np.array([[[[1.0, 2, 3], [4, 5, 6], [7, 8, 9]]]])  # (N, C, H, W) = (1, 1, 3, 3)
sobel = np.array([[[[-1.0, -2, -1], [0, 0, 0], [1, 2, 1]]]])  # (K, C, F, F) = (1, 1, 3, 3)

# Example 2: the lecture writes the volume as x[:, :, d]; cnnkit (like PyTorch) is NCHW.
x = np.array(
    [
        [
            digits("20000", "22210", "21122", "11122", "00100"),  # x[:, :, 0]
            digits("11121", "12100", "12021", "20111", "11122"),  # x[:, :, 1]
            digits("00020", "21112", "11202", "12120", "00021"),  # x[:, :, 2]
        ]
    ]
)  # (1, 3, 5, 5)
w = np.array(
    [
        [
            [[1.0, -1, 0], [1, 1, 1], [0, 1, 1]],
            [[1, 1, 0], [-1, -1, 1], [1, -1, -1]],
            [[1, -1, 1], [-1, 0, 1], [1, 1, 1]],
        ],
        [
            [[-1.0, 1, 0], [1, -1, -1], [0, 1, 1]],
            [[0, -1, -1], [0, -1, 0], [0, 1, 1]],
            [[0, -1, -1], [0, 0, 0], [-1, 1, 0]],
        ],
    ]
)  # (K, C, F, F) = (2, 3, 3, 3)
b = np.array([1.0, 0.0])

for name in cnnkit.list_backends():
    try:
        with cnnkit.use_backend(name):  # every call in the block runs on this backend
            s = F.conv2d(image, sobel, padding="same", flip=True)
            o = F.conv2d(x, w, b, stride=2, padding=1)
    except (cnnkit.BackendUnavailableError, cnnkit.OpNotImplementedError) as exc:
        print(f"[{name}] skipped: {exc}")
        continue
    print(f"[{name}] Sobel S =\n{cnnkit.get_backend(name).to_numpy(s)[0, 0]}")
    print(f"[{name}] o[:, :, 0] =\n{cnnkit.get_backend(name).to_numpy(o)[0, 0]}")
    print(f"[{name}] o[:, :, 1] =\n{cnnkit.get_backend(name).to_numpy(o)[0, 1]}")

# Example 3: output sizes (N - F + 2P) / S + 1.
for stride in (1, 2, 3):
    try:
        print(f"N=7, F=3, S={stride}: {geometry.conv_output_size(7, 3, stride=stride, strict=True)}")
    except ValueError as exc:
        print(f"N=7, F=3, S={stride}: {exc}")

# The hand-derived backward pass: dE/dx, dE/dW, dE/db for dE/do = 1 everywhere.
o, pullback = cnnkit.vjp(F.conv2d, x, w, b, stride=2, padding=1)
dx, dw, db = pullback(np.ones_like(o))
print("dE/db =", db)  # each bias touches the 9 outputs of its map
print("dE/dx[0, 0] =\n", dx[0, 0])  # how many times each input unit was used, weighted by W
