"""The scripts in examples/ run and print the lecture's numbers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


ROOT = EXAMPLES.parent
# no third-party plugin: a cnnkit-hardtanh built from plugins/README.md would clash with these
NO_PLUGINS = {**os.environ, "CNNKIT_DISABLE_PLUGIN_AUTOLOAD": "1"}


def run(script: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def code_blocks(markdown: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", (ROOT / markdown).read_text(), re.S)


def test_lecture_examples_print_the_lecture_numbers():
    out = run("lecture_examples.py")
    assert "[numpy] Sobel S =\n[[-13. -20. -17.]\n [-18. -24. -18.]\n [ 13.  20.  17.]]" in out
    assert "[numpy] o[:, :, 0] =\n[[ 7. 10. -1.]\n [ 7. 14.  6.]\n [ 3.  8. -1.]]" in out
    assert "[numpy] o[:, :, 1] =\n[[ 6.  3.  0.]\n [-3. -1. -3.]\n [-5. -7. -3.]]" in out
    assert "N=7, F=3, S=1: 5\nN=7, F=3, S=2: 3\nN=7, F=3, S=3: stride: the filter does not fit" in out
    assert "dE/db = [9. 9.]" in out


def test_custom_layer_plugin_example_passes_its_conformance_cases():
    out = run("custom_layer_plugin.py", env=NO_PLUGINS)
    assert "dE/dx for dE/dy = 1: [[0. 1. 1. 0.]]" in out
    assert "hardtanh-golden {'forward': 'passed', 'backward': 'passed', 'memory': 'passed'" in out
    assert "hardtanh-random {'forward': 'passed', 'backward': 'passed', 'memory': 'passed'" in out
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


# Registers the documented plugin module in-process, uses it, and runs the cases of the hook
# plugins/README.md adds to it (or says that there are none).
PLUGIN_CHECK = """
import sys, types
import numpy as np
import cnnkit
from cnnkit.conformance import run_case

module = types.ModuleType("cnnkit_hardtanh")
exec(sys.stdin.read(), module.__dict__)
cnnkit.get_registry().register(module, name="hardtanh")
y, pullback = cnnkit.vjp(module.hardtanh, np.array([-3.0, -0.5, 0.25, 2.0]))
print("y", y, "dx", pullback(np.ones_like(y))[0])
print("layer", module.Hardtanh().forward(np.array([2.0, -0.5])))
cases = [c.id for c in cnnkit.get_registry().conformance_cases() if c.op == "hardtanh"]
for case_id in cases:
    print(case_id, {check: o.status for check, o in run_case(case_id, backend="numpy").items()})
print("cases", len(cases))
"""


def run_plugin(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", PLUGIN_CHECK],
        input=code,
        capture_output=True,
        text=True,
        timeout=120,
        env=NO_PLUGINS,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_readme_plugins_define_hardtanh_with_its_gradient_and_entry_point():
    for markdown in ("README.md", "plugins/README.md"):
        (module,) = [c for c in code_blocks(markdown, "python") if c.startswith("# cnnkit_hardtanh.py")]
        out = run_plugin(module)
        assert "y [-1.   -0.5   0.25  1.  ] dx [0. 1. 1. 0.]" in out, markdown
        assert "layer [ 1.  -0.5]" in out, markdown
        assert "cases 0" in out, markdown  # the how-to says it registers none
        (toml,) = [c for c in code_blocks(markdown, "toml") if 'name = "cnnkit-hardtanh"' in c]
        assert '[project.entry-points.cnnkit]\nhardtanh = "cnnkit_hardtanh"' in toml, markdown


def test_plugins_readme_conformance_hook_adds_cases_that_pass():
    blocks = code_blocks("plugins/README.md", "python")
    (module,) = [c for c in blocks if c.startswith("# cnnkit_hardtanh.py")]
    (hook,) = [c for c in blocks if "def cnnkit_conformance_cases" in c]
    out = run_plugin(module + "\n" + hook)
    assert "hardtanh-golden {'forward': 'passed', 'backward': 'passed'" in out
    assert "hardtanh-random {'forward': 'passed', 'backward': 'passed'" in out
    assert "cases 2" in out
