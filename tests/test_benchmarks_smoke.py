"""The benchmark harness runs end to end on minuscule workloads and writes a sound report.

It checks structure and arithmetic (FLOP counts, ratios, the summary), never a time.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ["W1", "W2", "W3", "W4", "W5", "conv1d", "maxpool", "avgpool", "convT", "batchnorm", "vgg"]
BACKENDS = ["numpy", "torch", "native"]
REPEAT = 2


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "tiny"
    cmd = [sys.executable, "-m", "benchmarks.run", "--tiny", f"--repeat={REPEAT}", "--warmup=1"]
    cmd += ["--threads=1", "--settle=0.01", f"--backends={','.join(BACKENDS)}", f"--out={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(Path(f"{out}.json").read_text())
    data["_markdown"] = Path(f"{out}.md").read_text()
    data["_stdout"] = proc.stdout
    return data


def _out(n: int, f: int, s: int, p: int) -> int:
    return (n + 2 * p - f) // s + 1


def test_settings_machine_and_processes_are_recorded(report):
    assert report["schema"] == 1
    s = report["settings"]
    assert (s["profile"], s["repeat"], s["warmup"], s["threads"], s["dtype"]) == (
        "tiny",
        REPEAT,
        1,
        1,
        "float32",
    )
    assert s["backends"] == BACKENDS
    assert s["thread_env"] == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    assert report["machine"]["cpu_count"] >= 1
    procs = report["processes"]
    assert set(procs) == set(BACKENDS)
    assert len({p["pid"] for p in procs.values()}) == 3  # each backend in its own process
    assert procs["numpy"]["torch_loaded"] is False  # NumPy's BLAS never shares its process with torch
    assert procs["native"]["torch_threads"] == 1
    assert procs["numpy"]["openblas_threads"] in (None, 1)
    assert report["peak"]["cpu_gflops"] > 0


def test_workloads_and_flop_counts(report):
    wls = {w["name"]: w for w in report["workloads"]}
    assert list(wls) == WORKLOADS
    for w in wls.values():
        if w["op"].startswith("conv_transpose"):  # stride 2, output_padding 1: twice the input
            out = [2 * n for n in w["spatial"]]
            fwd = 2 * w["n"] * w["k"] * w["c"] * w["f"] ** len(out) * math.prod(w["spatial"])
            assert (w["flops_fwd"], w["flops_fwdbwd"]) == (fwd, 3 * fwd)
            assert w["output_shape"] == [w["n"], w["k"], *out]
        elif w["op"] == "batch_norm":
            assert w["flops_fwd"] is None and w["output_shape"] == [w["n"], w["c"], *w["spatial"]]
        elif w["op"].startswith("conv"):
            out = [_out(n, w["f"], w["stride"], w["padding"]) for n in w["spatial"]]
            fwd = 2 * w["n"] * w["k"] * w["c"] * w["f"] ** len(out) * math.prod(out)
            assert (w["flops_fwd"], w["flops_fwdbwd"]) == (fwd, 3 * fwd)
            assert w["output_shape"] == [w["n"], w["k"], *out]
        elif w["op"] == "vgg_step":  # a training step: its convs and linear layer, x3 for fwd+bwd
            assert w["flops_fwdbwd"] == 3 * w["flops_fwd"] > 0 and w["output_shape"] == [w["n"], w["k"]]
        else:
            assert w["flops_fwd"] is None and w["output_shape"][2:] == [n // 2 for n in w["spatial"]]
    assert wls["W5"]["describe"] == "2,4,8x8->8,3,2,1"


def test_every_row_has_samples_or_a_reason(report):
    rows = {(r["workload"], r["mode"], r["backend"]): r for r in report["results"]}
    assert len(rows) == len(report["results"]) == len(WORKLOADS) * 2 * len(BACKENDS)
    for (wl, mode, backend), r in rows.items():
        if backend == "native":
            assert "error" not in r, r
            assert r["ratio_to_native"] == 1.0 and r["matches_native"] is None
        if "error" in r:
            assert backend != "native" and r["error"]
            continue
        assert len(r["samples_ms"]) == REPEAT
        assert r["median_ms"] == pytest.approx(statistics.median(r["samples_ms"]))
        native = rows[(wl, mode, "native")]
        assert r["ratio_to_native"] == pytest.approx(r["median_ms"] / native["median_ms"])
        # the same seeded inputs in every process: a correct backend's outputs agree with native's
        assert r["matches_native"] in (True, None), (
            wl,
            mode,
            backend,
            r["check_norms"],
            native["check_norms"],
        )
        assert len(r["check_norms"]) == (1 if mode == "fwd" else 2 if wl in ("maxpool", "avgpool") else 4)
        if r["peak_fraction"] is not None:
            assert 0 < r["peak_fraction"] <= 1.0  # the peak is what the machine did: no op above it


def test_summary_follows_from_the_rows(report):
    sm = report["summary"]
    rows = [r for r in report["results"] if r["mode"] == "fwdbwd" and "error" not in r]
    np_conv = {r["workload"]: r["ratio_to_native"] for r in rows if r["backend"] == "numpy"}
    np_conv = {
        k: v for k, v in np_conv.items() if k not in ("maxpool", "avgpool", "convT", "batchnorm", "vgg")
    }
    if len(np_conv) == 6:
        expected = math.exp(sum(map(math.log, np_conv.values())) / 6)
        assert sm["numpy_conv_fwdbwd_geomean"] == pytest.approx(expected)
    # the targets' sets are the issue's (convs, pools); the newer layers are reported beside them
    assert list(sm["numpy_pool_fwdbwd_ratio"]) == ["maxpool", "avgpool"]
    assert list(sm["torch_fwdbwd_ratio"]) == WORKLOADS[:8]
    assert (
        list(sm["torch_newer_fwdbwd_ratio"]) == list(sm["numpy_newer_fwdbwd_ratio"]) == ["convT", "batchnorm"]
    )
    for t in sm["targets"]:
        assert t["verdict"] in ("MET", "MISSED", "n/a")
        if t["value"] is not None:
            assert t["verdict"] == ("MET" if t["value"] <= t["target"] else "MISSED")
    mem = report["memory"]
    if "error" not in mem:
        lo, hi = (mem["batches"][n] for n in ("2", "4"))
        assert hi["input_bytes"] == 2 * lo["input_bytes"] == 2 * 2 * 4 * 7 * 7 * 4
        for b in (lo, hi):
            assert b["extra_bytes"] == b["peak_bytes"] - b["result_bytes"]
        assert mem["ratio"] == pytest.approx(hi["extra_bytes"] / lo["extra_bytes"])


def test_markdown_and_printout(report):
    md = report["_markdown"]
    assert (
        "| workload | shape | pass | backend | median ms | min-max ms | GFLOP/s | x native | % peak |" in md
    )
    assert md.count("\n| ") == 1 + len(report["results"])  # header + one row each
    assert "NumPy conv fwd+bwd / native" in md and "target " in md
    assert md in report["_stdout"]
    assert "torch autotune" in md and "first fwd+bwd call" in md


def test_a_run_does_not_overwrite_the_committed_results_unless_asked():
    from benchmarks.run import RESULTS, parse_args

    assert parse_args(["--tiny"]).out == RESULTS / "local" / "latest"
    assert parse_args(["--tiny", "--update"]).out == RESULTS / "latest"
    assert parse_args(["--tiny", "--out", "x/y"]).out == Path("x/y")


# -- the fast routes the benchmarks exercise compute the right gradients ---------------------------

# (id, input shape, weight shape, stride, padding, dilation): each reaches one shape-chosen route of
# the torch backend's conv backward (im2col columns + batched matmuls for few channels and many
# filters; one GEMM over channels-last columns for strided dW; the padded-grid GEMM and the
# rotated-kernel conv for stride 1) and of the NumPy backend (strided windows or the padded grid)
ROUTES = [
    ("few-channels-many-filters", (2, 3, 7, 6), (16, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
    ("few-channels-strided", (2, 1, 9, 8), (16, 1, 3, 2), (2, 3), ((1, 1), (0, 0)), (1, 1)),
    ("strided-many-channels", (2, 8, 9, 8), (4, 8, 3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1)),
    ("strided-dilated-asym", (2, 8, 9, 10), (3, 8, 2, 3), (2, 3), ((2, 0), (1, 2)), (2, 1)),
    ("stride1-many-channels", (2, 8, 6, 7), (5, 8, 3, 2), (1, 1), ((1, 1), (0, 1)), (1, 2)),
    ("conv1d-stride1", (2, 8, 17), (4, 8, 7), (1,), ((3, 3),), (1,)),
]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("route", ROUTES, ids=[r[0] for r in ROUTES])
def test_conv_fast_routes_match_native_autograd(route, backend):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    import cnnkit

    _, x_shape, w_shape, stride, padding, dilation = route
    gen = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(s, generator=gen, dtype=torch.float64) for s in (x_shape, w_shape, w_shape[:1]))
    conv = F.conv1d if len(stride) == 1 else F.conv2d
    flat_pad = [v for lo_hi in reversed(padding) for v in lo_hi]
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    y = conv(F.pad(leaves[0], flat_pad), leaves[1], leaves[2], stride, 0, dilation)
    dy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    y.backward(dy)
    fn = cnnkit.functional.conv1d if len(stride) == 1 else cnnkit.functional.conv2d
    args = (x, w, b) if backend == "torch" else (x.numpy(), w.numpy(), b.numpy())
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "backend": backend}
    ours, pullback = cnnkit.vjp(fn, *args, **attrs)
    grads = pullback(dy if backend == "torch" else dy.numpy())
    np.testing.assert_allclose(np.asarray(ours), y.detach().numpy(), rtol=1e-10, atol=1e-10)
    for got, leaf in zip(grads, leaves):
        np.testing.assert_allclose(np.asarray(got), leaf.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_weight_grad_script_checks_every_route_against_aten_then_times_it(capsys, monkeypatch):
    torch = pytest.importorskip("torch")
    from benchmarks import weight_grad

    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the worker's threads stay as they are
    weight_grad.main(["--tiny", "--rounds", "1", "--threads", "1"])
    lines = capsys.readouterr().out.splitlines()
    rows = [ln for ln in lines if " -> fastest " in ln]
    assert len(rows) == 2 * len(weight_grad.TINY)  # dx and dW of each shape
    for ln in rows:
        route = ln.split(" -> fastest ")[1].split()[0]
        assert route in ("rot180", "im2col", "columns", "swapped", "gemm")
    assert [ln.split(",")[1].split(":")[0] for ln in lines if ln.startswith("all shapes")] == [" dx", " dW"]

    # a route that computes something else stops the run before anything is timed
    monkeypatch.setattr(weight_grad.ops, "_conv_weight_grad_columns", lambda x, dy, *a: 2 * x.new_ones(1))
    with pytest.raises(SystemExit, match="route columns does not give aten's gradient"):
        weight_grad.main(["--tiny", "--rounds", "1", "--threads", "1"])
