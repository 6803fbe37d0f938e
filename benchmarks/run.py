"""Time cnnkit's backends against PyTorch's native ops: the one benchmark command.

Run from the repository root::

    python -m benchmarks.run            # full run (a few minutes), writes benchmarks/results/latest.*
    python -m benchmarks.run --quick    # fewer samples (well under a minute)
    python -m benchmarks.run --device cuda --backends torch,native

Every backend runs in its own worker process (:mod:`benchmarks._worker`)
with the same pinned thread count; the workers stay up and are asked for one
sample of every (workload, pass) per round, round after round, the backends
in rotating order, so that a burst of load on a shared machine falls on all
of them alike. The report is printed as a markdown table and saved as JSON
(every sample, machine, versions, thread counts) and markdown. Targets are
printed as information; nothing here fails because of a time.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.workloads import MEMORY_BATCHES, TARGETS, Workload, workloads

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BACKENDS = ("numpy", "torch", "native")
#: Also accepted by --backends: the torch backend with autotuning off (the fixed route rule).
EXTRA_BACKENDS = ("torch-fixed",)
MODES = {"fwd": "fwd", "fwdbwd": "fwd+bwd"}
CHECK_RTOL = 1e-3  # relative difference of output norms that flags a backend as computing something else
#: Pause between one worker's round and the next worker's: OpenBLAS threads spin for ~0.1 s
#: after a BLAS call before they sleep, and would steal the next backend's CPU.
SETTLE_S = 0.2
BUSY_CPUS = 0.25  # other processes' load (in CPUs) above which the report warns
BUSY_WARNING = " (busy machine: timings are disturbed, compare ratios with care)"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# -- workers ----------------------------------------------------------------------------------


class Worker:
    """One backend's worker process, spoken to in JSON lines."""

    def __init__(self, backend: str, args: argparse.Namespace, peak: bool) -> None:
        self.backend = backend
        cmd = [
            sys.executable,
            "-m",
            "benchmarks._worker",
            f"--backend={'torch' if backend == 'torch-fixed' else backend}",
            f"--device={'cpu' if backend == 'numpy' else args.device}",
            f"--threads={args.threads}",
            f"--profile={args.profile}",
            f"--warmup={args.warmup}",
            f"--workloads={','.join(args.workloads or [])}",
        ]
        if peak:
            device = "cpu" if backend == "numpy" else args.device
            cmd.append(f"--peak-sizes={peak_sizes(args.profile, device)}")
            cmd.append("--peak")
        self.stderr: IO[str] = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=worker_env(args.threads, autotune=backend != "torch-fixed" and args.autotune != "off"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )

    def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.stderr.seek(0)
            tail = self.stderr.read()[-2000:]
            raise RuntimeError(f"the {self.backend} worker exited ({self.proc.returncode}):\n{tail}")
        return json.loads(line)

    def ask(self, cmd: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd}) + "\n")
        self.proc.stdin.flush()
        return self.receive()

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.stderr.close()


def peak_sizes(profile: str, device: str) -> str:
    """The matmul sizes whose best GFLOP/s is the peak: cache-friendly on a CPU, large on a GPU."""
    if profile == "tiny":
        return "64"
    return "4096,8192" if device.startswith("cuda") else "1024,2048,3072"


def worker_env(threads: int, autotune: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    env.update(dict.fromkeys(THREAD_VARS, str(threads)))
    env["CNNKIT_AUTOTUNE"] = "1" if autotune else "0"
    env.pop("CNNKIT_AUTOTUNE_CACHE", None)  # every run times its own choices: their cost is reported
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_memory(args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks._worker", "--memory", f"--profile={args.profile}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=worker_env(args.threads), capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip():
        return {"error": f"memory worker exited {proc.returncode}: {proc.stderr[-500:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- statistics ---------------------------------------------------------------------------------


def geomean(values: list[float]) -> float:
    """The geometric mean of positive numbers (``nan`` for none)."""
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def _checks_agree(a: list | None, b: list | None) -> bool | None:
    if a is None or b is None or len(a) != len(b):
        return None
    return all(
        (x is None) == (y is None) and (x is None or abs(x - y) <= CHECK_RTOL * max(abs(y), 1e-12))
        for x, y in zip(a, b)
    )


def build_results(
    wls: tuple[Workload, ...], hellos: dict[str, dict], samples: dict, peaks: dict[str, float]
) -> list[dict[str, Any]]:
    """One row per (workload, pass, backend): samples, medians, GFLOP/s, ratio to native, peak share."""
    rows = []
    for wl in wls:
        for mode in MODES:
            native = samples.get("native", {}).get(wl.name, {}).get(mode)
            native_med = statistics.median(native) if native else None
            native_min = min(native) if native else None
            native_check = hellos.get("native", {}).get("checks", {}).get(wl.name, {}).get(mode)
            for backend, hello in hellos.items():
                row: dict[str, Any] = {"workload": wl.name, "mode": mode, "backend": backend}
                err = hello["errors"].get(wl.name, {}).get(mode)
                if err:
                    row["error"] = err
                    rows.append(row)
                    continue
                s = samples[backend][wl.name][mode]
                med = statistics.median(s)
                flops = wl.flops(mode)
                gflops = flops / med / 1e6 if flops else None
                peak = peaks.get("cpu" if backend == "numpy" else "device")
                if peak and flops:  # the peak is what the machine did: no op above it
                    peak = max(peak, max(flops / m_ / 1e6 for m_ in s))
                check = hello["checks"][wl.name][mode]
                row.update(
                    samples_ms=s,
                    median_ms=med,
                    min_ms=min(s),
                    max_ms=max(s),
                    gflops=gflops,
                    ratio_to_native=med / native_med if native_med else None,
                    min_ratio_to_native=min(s) / native_min if native_min else None,
                    peak_fraction=gflops / peak if gflops and peak else None,
                    check_norms=check,
                    matches_native=_checks_agree(check, native_check) if backend != "native" else None,
                )
                rows.append(row)
    return rows


def _verdict(value: float | None, target: float) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return "MET" if value <= target else "MISSED"


def summarise(
    wls: tuple[Workload, ...], rows: list[dict], memory: dict | None, batches: tuple[int, int]
) -> dict[str, Any]:
    """The issue's summary numbers and their verdicts against :data:`TARGETS`."""

    def ratios(backend: str, pick, key: str = "ratio_to_native") -> dict[str, float | None]:
        return {
            r["workload"]: r.get(key)
            for r in rows
            if r["backend"] == backend and r["mode"] == "fwdbwd" and pick(r["workload"])
        }

    conv = {w.name for w in wls if w.is_conv}
    pools = {w.name for w in wls if w.is_pool}
    models = {w.name for w in wls if w.is_model}
    # the layers past the lecture (transposed conv, batch norm): reported, outside the targets' sets
    newer = {w.name for w in wls if w.is_transpose or w.is_norm}
    np_conv = ratios("numpy", lambda n: n in conv)
    np_pool = ratios("numpy", lambda n: n in pools)
    np_newer = ratios("numpy", lambda n: n in newer)
    torch_all = ratios("torch", lambda n: n in conv or n in pools)
    torch_newer = ratios("torch", lambda n: n in newer)
    torch_vgg = ratios("torch", lambda n: n in models)
    torch_fixed = ratios("torch-fixed", lambda n: True)
    complete = lambda d: bool(d) and all(v is not None for v in d.values())  # noqa: E731
    gm = geomean(list(np_conv.values())) if complete(np_conv) else None
    np_conv_min = ratios("numpy", lambda n: n in conv, "min_ratio_to_native")
    gm_min = geomean(list(np_conv_min.values())) if complete(np_conv_min) else None
    worst = lambda d: max(d.values()) if complete(d) else None  # noqa: E731
    targets = []
    if np_conv:
        targets += [
            ("numpy conv fwd+bwd, each", worst(np_conv), TARGETS["numpy_conv_each"]),
            ("numpy conv fwd+bwd, geo-mean", gm, TARGETS["numpy_conv_geomean"]),
        ]
    if np_pool:
        targets.append(("numpy pool fwd+bwd, each", worst(np_pool), TARGETS["numpy_pool_each"]))
    if torch_all:
        targets += [
            ("torch backend fwd+bwd, each", worst(torch_all), TARGETS["torch_each"]),
            ("torch backend fwd+bwd, goal", worst(torch_all), TARGETS["torch_goal"]),
        ]
    if torch_vgg:
        targets.append(("torch backend VGG training step", worst(torch_vgg), TARGETS["torch_vgg"]))
    mem_ratio = None
    if memory is not None:
        mem_ratio = memory.get("ratio")
        name = f"numpy W3 extra memory N={batches[1]} / N={batches[0]}"
        targets.append((name, mem_ratio, TARGETS["memory_ratio"]))
    mismatched = sorted(
        f"{r['backend']}:{r['workload']}:{r['mode']}" for r in rows if r.get("matches_native") is False
    )
    return {
        "numpy_conv_fwdbwd_ratio": np_conv,
        "numpy_conv_fwdbwd_geomean": gm,
        "numpy_conv_fwdbwd_geomean_of_min": gm_min,
        "numpy_pool_fwdbwd_ratio": np_pool,
        "numpy_newer_fwdbwd_ratio": np_newer,
        "torch_fwdbwd_ratio": torch_all,
        "torch_newer_fwdbwd_ratio": torch_newer,
        "torch_vgg_step_ratio": torch_vgg,
        "torch_fixed_fwdbwd_ratio": torch_fixed,
        "memory_ratio": mem_ratio,
        "mismatched_outputs": mismatched,
        "targets": [{"name": n, "value": v, "target": t, "verdict": _verdict(v, t)} for n, v, t in targets],
    }


# -- the report ------------------------------------------------------------------------------------


def _f(v: float | None, fmt: str, suffix: str = "") -> str:
    return "-" if v is None else f"{v:{fmt}}{suffix}"


def _mb(b: int) -> str:
    return f"{b / 2**20:.1f} MB"


def render(report: dict[str, Any]) -> str:
    """The report as markdown: settings, the table, the summary lines."""
    s, m, peak = report["settings"], report["machine"], report["peak"]
    peaks = ", ".join(f"{k} {v['gflops']:.1f}" for k, v in peak["by_backend"].items())
    lines = [
        f"cnnkit benchmarks, {report['created']} "
        f"(git {m['git_commit']}{', uncommitted changes' if m['git_dirty'] else ''})",
        f"{m['cpu']}, {m['cpu_count']} CPUs ({m['affinity']} usable), load {m['loadavg_start']} -> "
        f"{m['loadavg_end']}; other processes used {_f(m.get('other_cpu_load'), '.2f')} CPUs during the run"
        f"{BUSY_WARNING if (m.get('other_cpu_load') or 0) > BUSY_CPUS else ''}.",
        f"device {s['device']}; {s['threads']} threads per backend; "
        f"{s['repeat']} samples after {s['warmup']} warm-up; float32.",
        f"matmul peak (GFLOP/s, float32 GEMM: BLAS matmul, and a 1x1 oneDNN conv for torch; "
        f"% peak is of this, or of the fastest op sample where one ran faster): {peaks or '-'}.",
        "",
        "| workload | shape | pass | backend | median ms | min-max ms | GFLOP/s | x native | % peak |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    wls = {w["name"]: w for w in report["workloads"]}
    for r in report["results"]:
        head = f"| {r['workload']} | {wls[r['workload']]['describe']} | {MODES[r['mode']]} | {r['backend']} |"
        if "error" in r:
            lines.append(f"{head} n/a: {r['error'][:70]} | | | | |")
            continue
        flag = " (!)" if r["matches_native"] is False else ""
        lines.append(
            f"{head} {r['median_ms']:.2f}{flag} | {r['min_ms']:.2f}-{r['max_ms']:.2f} | "
            f"{_f(r['gflops'], '.1f')} | {_f(r['ratio_to_native'], '.2f', 'x')} | "
            f"{_f(r['peak_fraction'] and 100 * r['peak_fraction'], '.0f', '%')} |"
        )
    lines += ["", *summary_lines(report)]
    return "\n".join(lines) + "\n"


def summary_lines(report: dict[str, Any]) -> list[str]:
    sm = report["summary"]

    def listing(d: dict) -> str:
        return ", ".join(f"{k} {_f(v, '.2f', 'x')}" for k, v in d.items()) or "n/a"

    lines = [
        f"- NumPy conv fwd+bwd / native: {listing(sm['numpy_conv_fwdbwd_ratio'])}; "
        f"geo-mean {_f(sm['numpy_conv_fwdbwd_geomean'], '.2f', 'x')} "
        f"(of fastest samples: {_f(sm['numpy_conv_fwdbwd_geomean_of_min'], '.2f', 'x')})",
        f"- NumPy pool fwd+bwd / native: {listing(sm['numpy_pool_fwdbwd_ratio'])}",
        f"- torch backend fwd+bwd / native: {listing(sm['torch_fwdbwd_ratio'])}",
    ]
    if sm.get("numpy_newer_fwdbwd_ratio") or sm.get("torch_newer_fwdbwd_ratio"):
        lines.append(
            "- transposed conv and batch norm fwd+bwd / native: NumPy "
            f"{listing(sm.get('numpy_newer_fwdbwd_ratio') or {})}; "
            f"torch backend {listing(sm.get('torch_newer_fwdbwd_ratio') or {})}"
        )
    if sm.get("torch_vgg_step_ratio"):
        lines.append(f"- torch backend VGG training step / native: {listing(sm['torch_vgg_step_ratio'])}")
    if sm.get("torch_fixed_fwdbwd_ratio"):
        lines.append(
            f"- torch backend, autotuning off (fixed rule), fwd+bwd / native: "
            f"{listing(sm['torch_fixed_fwdbwd_ratio'])}"
        )
    lines += autotune_lines(report)
    mem = report.get("memory")
    if mem:
        if "error" in mem:
            lines.append(f"- NumPy conv memory: n/a ({mem['error'][:120]})")
        else:
            parts = [
                f"N={n}: extra {_mb(b['extra_bytes'])} (peak {_mb(b['peak_bytes'])}, "
                f"results {_mb(b['result_bytes'])}, input {_mb(b['input_bytes'])})"
                for n, b in mem["batches"].items()
            ]
            lines.append(f"- NumPy W3 fwd+bwd memory: {'; '.join(parts)}; ratio {_f(mem['ratio'], '.2f')}")
    for t in sm["targets"]:
        value = _f(t["value"], ".2f")
        lines.append(f"- target {t['name']} <= {t['target']}: {value} -> {t['verdict']}")
    if sm["mismatched_outputs"]:
        lines.append(f"- (!) outputs differ from native: {', '.join(sm['mismatched_outputs'])}")
    return lines


def autotune_lines(report: dict[str, Any]) -> list[str]:
    """What the torch backend's autotuner chose per workload, what it timed, and the first call's cost."""
    hello = report.get("hellos", {}).get("torch") or {}
    tune = hello.get("autotune")
    if not tune:
        return []
    if not tune.get("enabled"):
        return ["- torch autotune: off (CNNKIT_AUTOTUNE=0): the fixed rule chose every route"]
    first = hello.get("first_ms", {})
    native_first = report.get("hellos", {}).get("native", {}).get("first_ms", {})
    med = {
        (r["workload"], r["backend"]): r.get("median_ms")
        for r in report["results"]
        if r["mode"] == "fwdbwd" and "error" not in r
    }
    shapes = {w["name"]: w for w in report["workloads"]}
    lines = []
    for name, w in shapes.items():
        if not (w["op"].startswith("conv") or w["op"] == "vgg_step"):
            continue
        x_shape = f"x({w['n']}, {w['c']}, " + ", ".join(map(str, w["spatial"]))
        chosen = [
            f"{key.split('|')[0]} {rec['route']} ("
            + ", ".join(f"{r} {t:.2f}" for r, t in sorted(rec["times_ms"].items(), key=lambda kv: kv[1]))
            + f" ms; fixed rule {rec['fixed']}; timing cost {rec['cost_ms']:.1f} ms)"
            for key, rec in tune["decisions"].items()
            if w["op"] != "vgg_step" and f"|{x_shape})|" in key
        ]
        f_ms, n_ms, m_ms = (
            first.get(name, {}).get("fwdbwd"),
            native_first.get(name, {}).get("fwdbwd"),
            med.get((name, "torch")),
        )
        cost = (
            f"first fwd+bwd call {_f(f_ms, '.1f')} ms (native's {_f(n_ms, '.1f')} ms; later calls median "
            f"{_f(m_ms, '.1f')} ms)"
        )
        if w["op"] == "vgg_step":
            lines.append(f"- torch autotune {name}: {cost}")
            continue
        lines.append(
            f"- torch autotune {name}: {'; '.join(chosen) or 'fixed rule (too small to time)'}; {cost}"
        )
    np_tune = report.get("hellos", {}).get("numpy", {}).get("numpy_tuning") or {}
    if np_tune:
        picks = ", ".join(
            f"{rec['chunk_bytes'] // 2**10} KiB x{rec['threads']} ({rec['cost_ms']:.0f} ms)"
            for rec in np_tune.values()
        )
        lines.append(f"- numpy conv chunk size and threads chosen by measurement, per shape: {picks}")
    total = sum(rec["cost_ms"] for rec in tune["decisions"].values())
    lines.append(
        f"- torch autotune: {len(tune['decisions'])} shapes timed, {total:.0f} ms in all, once per process"
    )
    return lines


def update_readme(path: Path, text: str) -> None:
    """Replace what stands between ``<!-- latest -->`` and ``<!-- /latest -->`` in ``path``."""
    start, end = "<!-- latest -->\n", "<!-- /latest -->"
    readme = path.read_text()
    head, rest = readme.split(start, 1)
    path.write_text(head + start + text + end + rest.split(end, 1)[1])


# -- machine ------------------------------------------------------------------------------------------


def _git(*argv: str) -> str:
    try:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "affinity": affinity,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_start": _loadavg(),
        "git_commit": _git("rev-parse", "--short", "HEAD").strip() or "?",
        "git_dirty": bool(_git("status", "--porcelain", "--", "cnnkit", "backends").strip()),
    }


def _cpu_busy_s() -> float | None:
    """Seconds of CPU time the whole machine has spent busy since boot (``/proc/stat``)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(max_s: float) -> float:
    """Wait (up to ``max_s``) for a second in which other processes use under :data:`BUSY_CPUS`."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_s:
        before = _cpu_busy_s()
        time.sleep(1.0)
        after = _cpu_busy_s()
        if before is None or after is None or after - before < BUSY_CPUS:
            break
    return round(time.perf_counter() - t0, 1)


def _own_cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


# -- main ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="5 samples, 1 warm-up (well under a minute)")
    p.add_argument("--repeat", type=int, help="samples per (workload, pass, backend) (default 11, quick 5)")
    p.add_argument("--warmup", type=int, help="warm-up calls before timing (default 2, quick 1)")
    p.add_argument(
        "--out",
        type=Path,
        help="write OUT.json and OUT.md (default benchmarks/results/local/latest: not committed)",
    )
    p.add_argument(
        "--update",
        action="store_true",
        help="write the committed benchmarks/results/latest (latest-cuda) and the README's table",
    )
    p.add_argument(
        "--autotune",
        choices=("on", "off"),
        default="on",
        help="the torch backend's route autotuning (default on; backend torch-fixed is always off)",
    )
    p.add_argument(
        "--backends",
        default=None,
        help="comma-separated, of numpy, torch, native, torch-fixed (the torch backend with autotuning "
        "off) (default numpy,torch,native; torch,native with --device cuda)",
    )
    p.add_argument("--device", default="cpu", help="device of the torch backend and native (cpu, cuda)")
    p.add_argument("--threads", type=int, default=2, help="threads of every backend (default 2)")
    p.add_argument("--workloads", type=lambda s: s.split(","), help="only these, e.g. W1,maxpool")
    p.add_argument(
        "--settle", type=float, default=SETTLE_S, help=f"seconds between workers (default {SETTLE_S})"
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="first wait up to S seconds for the machine to be idle (shared machines)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the NumPy memory measurement")
    p.add_argument("--update-readme", action="store_true", help="the same as --update")
    p.add_argument("--tiny", action="store_true", help="minuscule shapes: tests the harness, not speed")
    args = p.parse_args(argv)
    args.profile = "tiny" if args.tiny else "full"
    args.repeat = args.repeat or (5 if args.quick else 11)
    args.warmup = args.warmup or (1 if args.quick else 2)
    cuda = args.device.startswith("cuda")
    args.backends = args.backends.split(",") if args.backends else (["torch", "native"] if cuda else BACKENDS)
    bad = sorted(set(args.backends) - set(BACKENDS) - set(EXTRA_BACKENDS))
    if bad:
        p.error(f"unknown backend(s) {bad}; choose from {', '.join(BACKENDS + EXTRA_BACKENDS)}")
    if args.repeat < 1 or args.warmup < 1 or args.threads < 1:
        p.error("--repeat, --warmup and --threads must be >= 1")
    args.update = args.update or args.update_readme
    name = "latest-cuda" if cuda else "latest"
    if args.update and args.out is None:
        args.out = RESULTS / name  # the committed results
    args.out = args.out or RESULTS / "local" / name
    args.workloads = list(workloads(args.profile, args.workloads) and (args.workloads or []))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    waited = wait_for_quiet(args.wait_quiet) if args.wait_quiet else 0.0
    t_start = time.perf_counter()
    busy_start, own_start = _cpu_busy_s(), _own_cpu_s()
    wls = workloads(args.profile, args.workloads)
    machine = machine_info()
    machine["waited_for_quiet_s"] = waited
    # The peak is measured once per library: NumPy's BLAS and torch's (native, else the torch backend).
    peak_by = {"numpy", "native" if "native" in args.backends else "torch"}
    hellos: dict[str, dict] = {}
    workers: list[Worker] = []
    skipped: dict[str, str] = {}
    try:
        for backend in args.backends:  # one at a time: warm-ups must not overlap
            w = Worker(backend, args, peak=backend in peak_by)
            hello = w.receive()
            time.sleep(args.settle)
            if "skipped" in hello:
                skipped[backend] = hello["skipped"]
                w.close()
                continue
            workers.append(w)
            hellos[backend] = hello
        if not workers:
            print(f"nothing to run: {'; '.join(f'{b}: {r}' for b, r in skipped.items())}")
            return 0
        samples: dict[str, dict] = {b: {} for b in hellos}
        for r in range(args.repeat):
            for w in workers[r % len(workers) :] + workers[: r % len(workers)]:
                time.sleep(args.settle)
                for name, modes in w.ask("round")["times"].items():
                    for mode, ms in modes.items():
                        samples[w.backend].setdefault(name, {}).setdefault(mode, []).append(ms)
    finally:
        for w in workers:
            w.close()
    memory = run_memory(args) if "numpy" in hellos and not args.no_memory else None
    peaks_by_backend = {b: h["peak"] for b, h in hellos.items() if h["peak"]}
    cpu_peaks = [p["gflops"] for b, p in peaks_by_backend.items() if b == "numpy" or args.device == "cpu"]
    peaks = {
        "cpu": max(cpu_peaks, default=None),
        "device": next((p["gflops"] for b, p in peaks_by_backend.items() if b != "numpy"), None),
    }
    if args.device == "cpu":
        peaks["device"] = peaks["cpu"]
    machine["loadavg_end"] = _loadavg()
    busy_end, wall = _cpu_busy_s(), time.perf_counter() - t_start
    if busy_start is not None and busy_end is not None:
        # CPU the rest of the machine used while we ran, in CPUs: a shared machine's noise, measured.
        others = busy_end - busy_start - (_own_cpu_s() - own_start)
        machine["other_cpu_load"] = round(max(others, 0.0) / wall, 2)
    rows = build_results(wls, hellos, samples, peaks)
    report = {
        "schema": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {
            "profile": args.profile,
            "repeat": args.repeat,
            "warmup": args.warmup,
            "settle_s": args.settle,
            "threads": args.threads,
            "device": args.device,
            "backends": list(hellos),
            "skipped": skipped,
            "dtype": "float32",
            "thread_env": dict.fromkeys(THREAD_VARS, str(args.threads)),
        },
        "machine": machine,
        "processes": {b: h["process"] for b, h in hellos.items()},
        "peak": {
            "by_backend": peaks_by_backend,
            "cpu_gflops": peaks["cpu"],
            "device_gflops": peaks["device"],
        },
        "workloads": [w.to_json() for w in wls],
        "hellos": {
            b: {k: h.get(k) for k in ("first_ms", "autotune", "numpy_tuning") if h.get(k) is not None}
            for b, h in hellos.items()
        },
        "results": rows,
        "memory": memory,
        "summary": summarise(wls, rows, memory, MEMORY_BATCHES[args.profile]),
    }
    report["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    text = render(report)
    print(text, end="")
    print(f"({report['elapsed_s']} s; wrote {args.out}.json and {args.out}.md)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(report, indent=1) + "\n")
    Path(f"{args.out}.md").write_text(text)
    if args.update:
        update_readme(ROOT / "benchmarks" / "README.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
