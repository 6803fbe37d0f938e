"""A small convolutional autoencoder on the 8x8 digits: Conv, BatchNorm, ConvTranspose, on both backends.

The encoder halves the image twice with strided convolutions (8x8 -> 4x4 -> 2x2); the decoder
doubles it back with transposed convolutions (the conv's input gradient as a layer: the
lecture's duality). Every layer's backward is cnnkit's hand-derived one; the loss is the mean
squared reconstruction error, whose gradient ``dE/dy = 2 (y - x) / |x|`` starts the chain.

Run: ``python examples/autoencoder.py`` (``--backend torch`` for the PyTorch backend).
"""

from __future__ import annotations

import argparse

import numpy as np

from cnnkit.data import digits_split
from cnnkit.layers import BatchNorm2d, Conv2d, ConvTranspose2d, ReLU, Sequential, Sigmoid, backend_of
from cnnkit.optim import Adam


def autoencoder(seed: int = 0, backend: str = "numpy") -> Sequential:
    rng = np.random.default_rng(seed)
    return Sequential(
        Conv2d(1, 8, 3, stride=2, padding=1, rng=rng, backend=backend),  # 8x8 -> 4x4
        BatchNorm2d(8, backend=backend),
        ReLU(),
        Conv2d(8, 16, 3, stride=2, padding=1, rng=rng, backend=backend),  # 4x4 -> 2x2
        BatchNorm2d(16, backend=backend),
        ReLU(),
        ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1, rng=rng, backend=backend),  # 4x4
        BatchNorm2d(8, backend=backend),
        ReLU(),
        ConvTranspose2d(8, 1, 3, stride=2, padding=1, output_padding=1, rng=rng, backend=backend),  # 8x8
        Sigmoid(),
    )


def reconstruction_error(model: Sequential, X: np.ndarray) -> float:
    model.eval()
    y = model.infer(X)
    model.train()
    return float(np.mean((backend_of(y).to_numpy(y) - X) ** 2))


def train(
    epochs: int = 10, backend: str = "numpy", seed: int = 0, batch_size: int = 64
) -> tuple[float, float]:
    """Train on the digits' training split; return the held-out error before and after."""
    split = digits_split(seed=seed)
    X, X_test = split.X_train.astype(np.float32), split.X_test.astype(np.float32)
    model = autoencoder(seed, backend)
    opt = Adam(model.parameters(), lr=1e-2)
    before = reconstruction_error(model, X_test)
    order = np.random.default_rng(seed)
    for _ in range(epochs):
        for idx in np.array_split(order.permutation(len(X)), max(1, len(X) // batch_size)):
            xb = X[idx]
            y = model(xb)
            be = backend_of(y)
            grad = 2.0 * (be.to_numpy(y) - xb) / xb.size  # dE/dy of the mean squared error
            opt.zero_grad()
            model.backward(be.asarray(grad.astype(np.float32)))
            opt.step()
    return before, reconstruction_error(model, X_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    before, after = train(args.epochs, args.backend)
    print(f"{args.backend}: held-out reconstruction error {before:.4f} -> {after:.4f} ({args.epochs} epochs)")


if __name__ == "__main__":
    main()
