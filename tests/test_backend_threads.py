"""Backend.set_threads: a default sized by the machine's idle cores (values only, no times)."""

from __future__ import annotations

import os

import pytest
from cnnkit_numpy.backend import NumpyBackend

from cnnkit.backend import free_cores as np_free_cores


def test_free_cores_is_between_one_and_the_usable_cores(monkeypatch):
    usable = len(os.sched_getaffinity(0))
    assert 1 <= np_free_cores() <= usable
    monkeypatch.setattr(os, "getloadavg", lambda: (50.0, 0.0, 0.0))
    assert np_free_cores() == 1  # a loaded machine: one thread, not a collapsing pool
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert np_free_cores() == usable


def test_numpy_set_threads_runs_with_and_without_a_count():
    be = NumpyBackend()
    be.set_threads(1)
    be.set_threads(None)


def test_torch_set_threads_default_is_the_idle_cores(monkeypatch):
    torch = pytest.importorskip("torch")
    from cnnkit_torch import backend as tb

    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(os, "getloadavg", lambda: (50.0, 0.0, 0.0))
        tb.TorchBackend().set_threads(None)
        assert torch.get_num_threads() == 1
        tb.TorchBackend().set_threads(2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
