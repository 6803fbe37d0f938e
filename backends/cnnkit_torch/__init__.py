"""cnnkit's PyTorch backend (being written)."""
