"""The scripts in examples/ run and print the lecture's numbers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_lecture_examples_print_the_lecture_numbers():
    out = run("lecture_examples.py")
    assert "[numpy] Sobel S =\n[[-13. -20. -17.]\n [-18. -24. -18.]\n [ 13.  20.  17.]]" in out
    assert "[numpy] o[:, :, 0] =\n[[ 7. 10. -1.]\n [ 7. 14.  6.]\n [ 3.  8. -1.]]" in out
    assert "[numpy] o[:, :, 1] =\n[[ 6.  3.  0.]\n [-3. -1. -3.]\n [-5. -7. -3.]]" in out
    assert "N=7, F=3, S=1: 5\nN=7, F=3, S=2: 3\nN=7, F=3, S=3: stride: the filter does not fit" in out
    assert "dE/db = [9. 9.]" in out


def test_custom_layer_plugin_example_passes_its_conformance_cases():
    out = run("custom_layer_plugin.py")
    assert "dE/dx for dE/dy = 1: [[0. 1. 1. 0.]]" in out
    assert "hardtanh-golden {'forward': 'passed', 'backward': 'passed'}" in out
    assert "hardtanh-random {'forward': 'passed', 'backward': 'passed'}" in out
    assert "backend 'torch' has no implementation of op 'hardtanh'" in out


def test_readme_quick_start_runs_and_prints_the_lecture_volume():
    readme = (EXAMPLES.parent / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (
        proc.stdout.split()
        == "[[ 7. 10. -1.] [ 7. 14. 6.] [ 3. 8. -1.]] [[ 6. 3. 0.] [-3. -1. -3.] [-5. -7. -3.]]".split()
    )
