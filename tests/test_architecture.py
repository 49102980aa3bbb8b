"""The core never imports Textual, and nothing in the package evaluates text as Python."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gdstep"
CORE = ["gdstep", "gdstep.scenario", "gdstep.data", "gdstep.session", "gdstep.conditions", "gdstep.history",
        "gdstep.explain", "gdstep.gradcheck", "gdstep.script", "gdstep.script.export", "gdstep.script.replay",
        "gdstep.backends.numpy_backend", "gdstep.backends.torch_backend", "gdstep.cli", "gdstep.summary"]


def test_the_core_never_imports_textual():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in CORE) +
            "import gdstep; s = gdstep.open('xor'); s.step(2); s.explain('0.weight', (0, 0))\n"
            "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
            "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"the core imported {out}"


def test_no_module_outside_the_tui_imports_textual():
    for path in PACKAGE.rglob("*.py"):
        if "tui" in path.relative_to(PACKAGE).parts:
            continue
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(import|from)\s+textual", text, re.M), path


def test_nothing_evaluates_text_as_python():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        hits = re.findall(r"(?<![\w.])(eval|exec|compile)\(", text)
        if path.name == "python_scenario.py":     # the one place that runs code: a .py scenario the user named
            continue
        assert not hits, f"{path}: {hits}"
