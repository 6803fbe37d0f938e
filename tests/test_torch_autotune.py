"""The torch backend's conv backward routes chosen by measurement (values only; no time is asserted)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from cnnkit_torch import autotune, ops  # noqa: E402
from cnnkit_torch.backend import TorchBackend  # noqa: E402

from cnnkit import functional as cf  # noqa: E402

#: (x shape, w shape, stride): small (the fixture times every call, whatever its size)
SHAPES = [
    ((2, 3, 9, 9), (16, 3, 3, 3), 1),  # few channels, many filters: the fixed rule's im2col
    ((2, 8, 7, 7), (8, 8, 3, 3), 1),  # stride 1, C >= 8: gemm
    ((2, 8, 8, 8), (8, 8, 3, 3), 2),  # strided: columns
]


@pytest.fixture
def tuned(monkeypatch):
    """Autotuning on, a fresh cache, every call timed (no size floor)."""
    monkeypatch.delenv("CNNKIT_AUTOTUNE_CACHE", raising=False)
    monkeypatch.setattr(autotune, "MIN_FLOPS", 0)
    autotune.set_enabled(True)
    autotune.clear()
    yield autotune
    autotune.set_enabled(None)
    autotune.clear()


def _grads(x, w, b, stride, native):
    ours = [t.detach().clone().requires_grad_(True) for t in (x, w, b)]
    if native:
        y = F.conv2d(*ours, stride=stride, padding=1)
    else:
        y = cf.conv2d(*ours, stride=stride, padding=1, backend="torch")
    y.backward(torch.ones_like(y) * 0.5 + y.detach() * 0.01)
    return [t.grad for t in ours]


def _inputs(xs, ws, dtype=torch.float64):
    g = torch.Generator().manual_seed(sum(xs) + sum(ws))
    x = torch.randn(xs, generator=g, dtype=dtype)
    w = torch.randn(ws, generator=g, dtype=dtype)
    return x, w, torch.randn(ws[0], generator=g, dtype=dtype)


@pytest.mark.parametrize("xs, ws, stride", SHAPES)
def test_autotuner_picks_among_the_candidates_and_gives_native_gradients(tuned, xs, ws, stride):
    x, w, b = _inputs(xs, ws)
    ours = _grads(x, w, b, stride, native=False)
    ref = _grads(x, w, b, stride, native=True)
    for a, e in zip(ours, ref):
        torch.testing.assert_close(a, e, rtol=1e-7, atol=1e-9)
    made = tuned.decisions()
    kinds = sorted(k.split("|")[0] for k in made)
    assert kinds == ["dw", "dx"]
    for rec in made.values():
        assert rec["route"] in rec["times_ms"] and len(rec["times_ms"]) >= 2
        assert rec["fixed"] in rec["times_ms"] and rec["cost_ms"] >= 0


@pytest.mark.parametrize("xs, ws, stride", SHAPES)
@pytest.mark.parametrize("kind", ["dx", "dw"])
def test_every_candidate_the_autotuner_may_choose_gives_native_gradients(
    tuned, monkeypatch, xs, ws, stride, kind
):
    """Force each candidate in turn (the fastest is whichever the machine says): all are exact."""
    x, w, b = _inputs(xs, ws)
    ref = _grads(x, w, b, stride, native=True)
    _grads(x, w, b, stride, native=False)
    (key,) = [k for k in tuned.decisions() if k.startswith(kind + "|")]
    for route in tuned.decisions()[key]["times_ms"]:
        monkeypatch.setitem(autotune._cache, key, route)
        for a, e in zip(_grads(x, w, b, stride, native=False), ref):
            torch.testing.assert_close(a, e, rtol=1e-7, atol=1e-9)


def test_the_choice_is_cached_per_shape(tuned, monkeypatch):
    x, w, b = _inputs(*SHAPES[1][:2])
    _grads(x, w, b, 1, native=False)
    timed = []
    real = autotune._time_all
    monkeypatch.setattr(autotune, "_time_all", lambda c, sync: timed.append(1) or real(c, sync))
    _grads(x, w, b, 1, native=False)
    assert timed == []  # the same shape again: nothing timed
    x2, w2, b2 = _inputs((3, 8, 7, 7), SHAPES[1][1])
    _grads(x2, w2, b2, 1, native=False)
    assert timed  # a new batch size is a new shape


def test_the_cache_file_is_written_and_read(tuned, monkeypatch, tmp_path):
    path = tmp_path / "routes.json"
    monkeypatch.setenv("CNNKIT_AUTOTUNE_CACHE", str(path))
    x, w, b = _inputs(*SHAPES[2][:2])
    _grads(x, w, b, 2, native=False)
    routes = json.loads(path.read_text())["routes"]
    assert sorted(k.split("|")[0] for k in routes) == ["dw", "dx"]
    # another process (here: a cleared cache) reads the file instead of timing
    key = next(k for k in routes if k.startswith("dw|"))
    routes[key] = "swapped"
    path.write_text(json.dumps({"schema": 1, "routes": routes}))
    autotune.clear()
    taken = []
    real = ops._conv_weight_grad_conv
    monkeypatch.setattr(ops, "_conv_weight_grad_conv", lambda *a, **k: taken.append(1) or real(*a, **k))
    monkeypatch.setattr(autotune, "_time_all", lambda c, sync: pytest.fail("timed a shape the file knows"))
    ref = _grads(x, w, b, 2, native=True)
    for a, e in zip(_grads(x, w, b, 2, native=False), ref):
        torch.testing.assert_close(a, e, rtol=1e-7, atol=1e-9)
    assert taken == [1]


@pytest.mark.parametrize("how", ["env", "backend", "deterministic"])
def test_off_means_the_fixed_rule_and_nothing_timed(tuned, monkeypatch, how):
    autotune.set_enabled(None)
    if how == "env":
        monkeypatch.setenv("CNNKIT_AUTOTUNE", "0")
    elif how == "backend":
        monkeypatch.delenv("CNNKIT_AUTOTUNE", raising=False)
        TorchBackend(autotune=False)
    else:
        monkeypatch.delenv("CNNKIT_AUTOTUNE", raising=False)
        monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    monkeypatch.setattr(autotune, "_time_all", lambda c, sync: pytest.fail("timed with autotuning off"))
    for xs, ws, stride in SHAPES:
        x, w, b = _inputs(xs, ws)
        ref = _grads(x, w, b, stride, native=True)
        for a, e in zip(_grads(x, w, b, stride, native=False), ref):
            torch.testing.assert_close(a, e, rtol=1e-7, atol=1e-9)
    assert autotune.decisions() == {}
    assert autotune.fixed_dw_route(3, 16, (1, 1), 1) == "im2col"
    assert autotune.fixed_dw_route(8, 8, (1, 1), 1) == "gemm"
    assert autotune.fixed_dw_route(8, 8, (2, 2), 1) == "columns"
    assert autotune.fixed_dw_route(8, 8, (1, 1), 2) == "swapped"
    assert autotune.fixed_dx_route(3, 16, 1) == "im2col" and autotune.fixed_dx_route(8, 8, 1) == "rot180"


def test_backend_option_turns_it_back_on(tuned):
    TorchBackend(autotune=False)
    assert not autotune.enabled()
    TorchBackend(autotune=True)
    assert autotune.enabled()


def test_small_calls_are_not_timed(monkeypatch):
    autotune.clear()
    monkeypatch.setattr(autotune, "_time_all", lambda c, sync: pytest.fail("timed a tiny call"))
    x, w, b = _inputs((1, 2, 5, 5), (3, 2, 3, 3))
    _grads(x, w, b, 1, native=False)
    assert autotune.decisions() == {}
