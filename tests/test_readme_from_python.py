"""The README's "From Python" block runs after a cnnkit train, in a fresh interpreter."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_from_python_loads_predicts_and_fits(tmp_path):
    (code,) = [
        c
        for c in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
        if c.startswith("# From Python")
    ]
    from cnnkit.cli import main

    assert main(["train", "--epochs", "2", "--no-plot", "--out", str(tmp_path / "cnnkit-run")]) == 0
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    predicted, held_out = proc.stdout.splitlines()
    assert re.fullmatch(r"predicted \d true \d", predicted)
    acc = float(re.fullmatch(r"held-out accuracy (\d+\.\d)%", held_out).group(1))
    assert acc > 90


@pytest.mark.parametrize("name", ["lp_pool2d", "max_pool2d", "avg_pool2d", "conv2d", "global_lp_pool"])
def test_readme_api_table_shows_the_real_argument_order(name):
    import inspect

    from cnnkit import functional as F

    params = [p for p in inspect.signature(getattr(F, name)).parameters.values() if p.name != "backend"]
    shown = ", ".join(
        p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}" for p in params
    )
    shown = shown.replace("'", '"')
    stem = re.sub(r"[123]d$", "", name)
    row = next(line for line in README.read_text().splitlines() if line.startswith("| `cnnkit.functional` |"))
    forms = [f"`{name}({shown})`", f"`{stem}1d/2d/3d({shown})`"]
    assert any(f in row for f in forms), (forms, row)
