"""Registers the PyTorch backend (being written); importing this must not import torch."""
