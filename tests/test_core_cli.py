"""The command line: `gdstep list`, `check` on every bundled scenario, `run`, and bad input —
exit 2 with exactly one line on stderr and never a traceback."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import tomllib

import pytest

from gdstep.bundled import DEFAULT, bundled, scenarios_dir
from gdstep.cli import main

BUNDLED = [name for name, path, _ in bundled() if path.suffix == ".toml"]
PYTHON_BUNDLED = [name for name, path, _ in bundled() if path.suffix == ".py"]

# parameter counts worked out from each file's layer list: Σ (in·out + out)
PARAMETERS = {"xor": 2 * 4 + 4 + 4 * 1 + 1, "linear": 1 + 1, "overshoot": 1 + 1,
              "spiral": 2 * 32 + 32 + 32 * 3 + 3, "textbook": 2 * 2 + 2 + 2 * 2 + 2}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_bundled_scenarios_include_the_required_ones():
    assert {"xor", "linear", "spiral", "textbook"} <= set(BUNDLED)
    assert DEFAULT in BUNDLED


def test_list(capsys):
    code, out, err = run_cli(capsys, "list")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == len(BUNDLED) + len(PYTHON_BUNDLED)
    python_lines = [line for line in lines if line.split()[0] in PYTHON_BUNDLED]
    assert all(line.endswith("(Python scenario, torch backend)") for line in python_lines)
    lines = [line for line in lines if line not in python_lines]
    for line, name in zip(lines, BUNDLED):
        description = tomllib.loads((scenarios_dir() / f"{name}.toml").read_text())["description"]
        assert line.split()[0] == name
        assert description in line
        assert line.endswith("(default)") == (name == DEFAULT)


@pytest.mark.parametrize("name", BUNDLED)
def test_check_every_bundled_scenario(capsys, name):
    code, out, err = run_cli(capsys, "check", name)
    assert code == 0 and err == ""
    lines = out.splitlines()
    path = scenarios_dir() / f"{name}.toml"
    assert lines[0] == f"{path}: ok"
    raw = tomllib.loads(path.read_text())
    assert raw["name"] in lines[1]
    body = "\n".join(lines)
    for key in ("data", "model", "parameters", "loss", "optimizer", "training", "backend"):
        assert re.search(rf"^  {key}\s", body, re.M), key
    assert f"loss       {raw['loss']['kind']}" in body
    assert f"optimizer  {raw['optimizer']['kind']}(" in body
    if name in PARAMETERS:
        assert f"parameters {PARAMETERS[name]} (" in body
    assert "numpy on cpu, float64" in body


def test_check_by_path(capsys, tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text((scenarios_dir() / "xor.toml").read_text())
    code, out, _ = run_cli(capsys, "check", str(path))
    assert code == 0 and out.startswith(f"{path}: ok")


def summary_fields(out: str) -> dict[str, str]:
    fields = {}
    for line in out.splitlines()[1:]:
        key, _, value = line.strip().partition(" ")
        fields[key] = value.strip()
    return fields


def test_run_xor(capsys):
    code, out, err = run_cli(capsys, "run", "xor")
    assert code == 0
    assert "Traceback" not in err
    lines = out.splitlines()
    assert lines[0].startswith("XOR, 2-4-1 tanh MLP — numpy on cpu, float64")
    f = summary_fields(out)
    assert f["stopped"].startswith("stop_when loss < 0.01")
    iterations = int(re.search(r"— (\d+) iterations in", f["at"]).group(1))
    assert 1 <= iterations < 500
    final = float(re.match(r"([0-9.e+-]+) on all 4 samples", f["loss"]).group(1))
    assert final < 0.01
    assert f["accuracy"] == "100.0%"


def test_run_with_epochs_max_steps_and_until(capsys):
    code, out, _ = run_cli(capsys, "run", "spiral", "--epochs", "2")
    assert code == 0
    f = summary_fields(out)
    assert f["stopped"] == "reached the epoch limit (2)"
    assert "— 20 iterations in" in f["at"]                 # 300 samples in batches of 32: 10 per epoch
    assert f["accuracy"].endswith("%")
    code, out, _ = run_cli(capsys, "run", "spiral", "--max-steps", "3")
    assert code == 0 and summary_fields(out)["stopped"] == "reached max_steps" and "— 3 iterations" in out
    code, out, _ = run_cli(capsys, "run", "linear", "--until", "step >= 4")
    assert code == 0 and summary_fields(out)["stopped"].startswith("until step >= 4") and "— 4 iterations" in out
    assert "accuracy" not in out                           # a regression has none


@pytest.mark.parametrize("argv, needles", [
    (["run", "nope"], ["nope", "no such file"]),
    (["run", "missing/file.toml"], ["missing/file.toml", "no such file"]),
    (["check", "nope.toml"], ["nope.toml", "no such file"]),
    (["run"], ["gdstep run", "scenario"]),
    (["check"], ["gdstep check", "scenario"]),
    (["run", "xor", "--epochs", "x"], ["--epochs", "'x'"]),
    (["run", "xor", "--epochs", "0"], ["--epochs", "at least 1"]),
    (["run", "xor", "--max-steps", "0"], ["--max-steps"]),
    (["run", "xor", "--backend", "jax"], ["--backend", "jax"]),
    (["run", "xor", "--bogus"], ["--bogus"]),
    (["list", "extra"], ["extra"]),
    (["check", "xor", "--dtype", "float16"], ["--dtype"]),
    (["run", "xor", "--until", "loss <"], ["loss <", "column 7"]),
    (["run", "xor", "--until", "7.weight[0,0] > 1"], ["7.weight"]),
    (["check", "xor", "--device", "cuda"], ["numpy", "cpu"]),
])
def test_bad_arguments_exit_2_with_one_line(capsys, argv, needles):
    assert_one_line_error(*run_cli(capsys, *argv), *needles)


def test_run_on_a_bad_scenario_file(capsys, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text((scenarios_dir() / "xor.toml").read_text().replace("lr = 0.5", "lr = -0.5"))
    assert_one_line_error(*run_cli(capsys, "run", str(path)), str(path), "optimizer.lr", "learning rate")
    path.write_text("[data\n")
    assert_one_line_error(*run_cli(capsys, "check", str(path)), str(path), "line 1")
    assert_one_line_error(*run_cli(capsys, "check", str(tmp_path)), str(tmp_path), "directory")


def test_real_processes(tmp_path):
    """The same through `python -m gdstep.cli`: exit codes, one line, no traceback."""
    def cli(*argv):
        return subprocess.run([sys.executable, "-m", "gdstep.cli", *argv], capture_output=True, text=True, timeout=120)

    p = cli("list")
    assert p.returncode == 0 and len(p.stdout.splitlines()) == len(BUNDLED) + len(PYTHON_BUNDLED) and p.stderr == ""
    p = cli("run", "xor", "--quiet")
    assert p.returncode == 0 and "accuracy   100.0%" in p.stdout and "Traceback" not in p.stderr
    p = cli("run", str(tmp_path / "missing.toml"))
    assert p.returncode == 2 and p.stdout == "" and len(p.stderr.splitlines()) == 1
    assert "missing.toml" in p.stderr and "no such file" in p.stderr and "Traceback" not in p.stderr
    p = cli("run", "xor", "--epochs")
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1 and "--epochs" in p.stderr
