"""The scripts in examples/ run and print the lecture's numbers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


ROOT = EXAMPLES.parent
# no third-party plugin: a cnnkit-hardtanh written by `cnnkit new-plugin hardtanh` would clash with these
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


#: Blocks whose first line is a path are excerpts: ``# cnnkit-<dist>/...`` of what ``cnnkit new-plugin``
#: writes under the template's own name, ``# plugins/...`` of a file of this tree.
EXCERPT = re.compile(r"```(?:python|toml)\n# ((?:cnnkit-[\w-]+|plugins)/[^\s]+)\n(.*?)```", re.S)


def test_documented_plugin_code_is_what_the_generator_writes():
    from cnnkit.scaffold import KINDS, render

    generated = {
        f"{t.names.dist}/{path}": text for kind, t in KINDS.items() for path, text in render(kind, t.op)
    }
    counts = {}
    for markdown in ("README.md", "plugins/README.md", "docs/plugins.md"):
        blocks = EXCERPT.findall((ROOT / markdown).read_text())
        counts[markdown] = len(blocks)
        for path, body in blocks:
            if path.startswith("plugins/"):
                text = (ROOT / path).read_text()
            else:
                assert path in generated, (markdown, path, sorted(generated))
                text = generated[path]
            assert body in text, f"{markdown}: the block of {path} is not an excerpt of it:\n{body}"
    assert counts["README.md"] >= 4 and counts["docs/plugins.md"] >= 10, counts
    readme = (ROOT / "README.md").read_text()
    assert "cnnkit new-plugin hardtanh" in readme
    assert "def cnnkit_register_ops" not in readme  # the generator's output, not a second copy


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_autoencoder_example_trains_on_both_backends(backend):
    if backend == "torch":
        pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import autoencoder
    finally:
        sys.path.pop(0)
    before, after = autoencoder.train(epochs=3, backend=backend)
    assert after < before / 4, (before, after)  # Conv, BatchNorm and ConvTranspose all learn
