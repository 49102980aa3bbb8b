"""Issue 16: hostile inputs, faults and lesson scripts from strangers. Each test failed before."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import gdstep
from gdstep.cli import main
from gdstep.conditions import parse_condition
from gdstep.errors import ConditionError, GdstepError, ScenarioError, ScriptError
from gdstep.scenario import load_scenario, parse_scenario
from gdstep.script import Runner
from gdstep.script.parser import parse_command, parse_script
from gdstep.script.replay import replay
from gdstep.script.writes import WritePolicy

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))

SCENARIO = """name = "NAME"
description = "DESCRIPTION"
[data]
DATA
[model]
layers = [ { linear = 4 }, "tanh", { linear = 1 }, "sigmoid" ]
[loss]
kind = "bce"
[optimizer]
kind = "sgd"
lr = 0.5
"""


def scenario(tmp_path: Path, data: str = 'kind = "xor"\nn = 8', name: str = "t", description: str = "",
             file: str = "t.toml") -> Path:
    path = tmp_path / file
    path.write_text(SCENARIO.replace("NAME", name).replace("DESCRIPTION", description).replace("DATA", data),
                    encoding="utf-8")
    return path


def cli(args, cwd=None, **kw):
    return subprocess.run([sys.executable, "-m", "gdstep.cli", *args], capture_output=True, text=True, env=ENV,
                          cwd=cwd, timeout=120, **kw)


# -- a replayed script writes only inside its working folder ------------------------------------

@pytest.fixture
def lesson(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def run_script(text: str, writes: WritePolicy | None = None) -> tuple[int | None, str]:
    Path("lesson.gds").write_text(text)
    out = io.StringIO()
    try:
        code = replay(gdstep.open("xor"), "lesson.gds", out=out, writes=writes)
    except GdstepError as e:
        return None, str(e)
    return code, out.getvalue()


@pytest.mark.parametrize("target", ["../escaped.md", "sub/../../escaped.md", "ABS"])
def test_a_script_cannot_write_outside_its_folder(lesson, target):
    target = str(lesson.parent / "escaped.md") if target == "ABS" else target
    code, message = run_script(f"step\nexport {target}\n")
    assert code is None and "lesson.gds:2" in message
    assert not (lesson.parent / "escaped.md").exists()


def test_a_script_never_writes_through_a_symlink(lesson):
    outside = lesson.parent / "outside"
    outside.mkdir()
    (lesson / "link").symlink_to(outside)
    (lesson / "file.md").symlink_to(outside / "victim.md")
    for target in ("link/x.md", "file.md"):
        code, message = run_script(f"step\nexport {target}\n")
        assert code is None and "symbolic link" in message
    assert list(outside.iterdir()) == []


def test_a_script_overwrites_only_with_force(lesson):
    (lesson / "x.md").write_text("mine")
    code, message = run_script("step\nexport x.md\n")
    assert code is None and "--force" in message and (lesson / "x.md").read_text() == "mine"
    code, _ = run_script("step\nexport x.md --force\nsave r.gds\n")
    assert code == 0 and "Worked example" in (lesson / "x.md").read_text() and (lesson / "r.gds").exists()


def test_allow_writes_widens_the_policy(lesson, tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    Path("s.gds").write_text(f"step\nexport {extra / 'x.md'}\n")
    assert main(["replay", "xor", "s.gds"]) == 2
    assert main(["replay", "xor", "s.gds", "--allow-writes", str(extra)]) == 0
    assert (extra / "x.md").exists()


def test_at_the_prompt_any_path_and_overwrite_asks(tmp_path):
    asked = []
    runner = Runner(gdstep.open("xor"), writes=WritePolicy.anywhere(confirm=lambda p: asked.append(p) or False))
    assert runner.execute_line(f"save {tmp_path / 'a.gds'}").ok
    outcome = runner.execute_line(f"save {tmp_path / 'a.gds'}")
    assert not outcome.ok and asked and "--force" in outcome.message
    yes = Runner(gdstep.open("xor"), writes=WritePolicy.anywhere(confirm=lambda p: True))
    assert yes.execute_line(f"save {tmp_path / 'a.gds'}").ok


def test_a_write_over_a_symlink_to_a_device_does_not_make_a_world_writable_file(tmp_path):
    from gdstep.files import atomic_write
    link = tmp_path / "x.md"
    link.symlink_to("/dev/null")
    atomic_write(link, "text")
    assert not link.is_symlink() and link.stat().st_mode & 0o002 == 0


@pytest.mark.parametrize("separator", ["\u2028", "\u0085", "\x0c", "\r", "\x1b"])
def test_lines_split_on_newline_only_and_control_characters_are_refused(separator):
    with pytest.raises(ScriptError, match="control character"):
        parse_script(f"# a comment{separator}export ../../x.md\n")
    assert [c.text for c in parse_script("step\r\nprint loss\r\n")] == ["step", "print loss"]


# -- names cannot plant commands or terminal escapes ---------------------------------------------

def test_a_scenario_name_cannot_plant_commands_in_a_recording(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = scenario(tmp_path, name="x\\nexport ../pwned.md\\u2028step")
    runner = Runner(gdstep.open(str(path)))
    runner.execute_line("step")
    assert runner.execute_line("save r.gds").ok
    commands = parse_script((tmp_path / "r.gds").read_text())
    assert [c.text for c in commands] == ["step"]


def test_escapes_in_names_descriptions_headers_and_keys_are_not_printed(tmp_path):
    evil = "\\u001b]0;pwned\\u0007\\u001b[2J"
    (tmp_path / "d.csv").write_text("a\x1b[2J,b,label\n1,2,0\n2,3,1\n3,1,0\n0,1,1\n")
    path = scenario(tmp_path, 'kind = "csv"\npath = "d.csv"', name=f"n{evil}", description=f"d{evil}")
    result = cli(["check", str(path)])
    assert result.returncode == 0 and "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "a[2J" in result.stdout or "a" in result.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(path.read_text() + f'"k{evil}" = 1\n')
    result = cli(["check", str(bad)])
    assert result.returncode == 2 and "\x1b" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_names_are_escaped_in_markdown(tmp_path):
    from gdstep.script.export import worked_example
    s = gdstep.open(str(scenario(tmp_path, name="<img src=x onerror=alert(1)> [a](http://x)")))
    s.step()
    text = worked_example(s)
    assert "<img" not in text and "](http" not in text


# -- data files ----------------------------------------------------------------------------------

def data_error(tmp_path, path_text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        load_scenario(scenario(tmp_path, f'kind = "csv"\npath = "{path_text}"\ntarget = "x"'))
    return info.value


def test_a_data_path_cannot_leak_another_file(tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n" * 3)
    inner = tmp_path / "lesson"
    inner.mkdir()
    for text in (str(secret), "../secret.csv"):
        e = data_error(inner, text)
        assert e.where == "data.path" and "root:x" not in str(e)
    (inner / "link.csv").symlink_to(secret)
    assert "symbolic link" in str(data_error(inner, "link.csv"))
    (inner / "long.csv").write_text("root:x:0:0:" + "y" * 500 + "\n1\n")
    assert len(str(data_error(inner, "long.csv"))) < 300


def test_a_fifo_is_refused_at_once(tmp_path):
    os.mkfifo(tmp_path / "fifo.csv")
    started = time.monotonic()
    assert "not a regular file" in str(data_error(tmp_path, "fifo.csv"))
    assert time.monotonic() - started < 5


def test_csv_traps(tmp_path):
    def load(body: bytes, extra: str = ""):
        (tmp_path / "d.csv").write_bytes(body)
        return load_scenario(scenario(tmp_path, f'kind = "csv"\npath = "d.csv"{extra}'))
    with pytest.raises(ScenarioError, match="twice"):
        load(b"a,a,label\n1,2,0\n2,1,1\n")
    s = load(b"a,b,label\n1,2,0\n2,1,1e300\n3,1,0\n")
    assert s.dataset.y.dtype.kind == "f" and s.dataset.y.max() == 1e300
    with pytest.raises(ScenarioError, match="no feature"):
        load(b"a,b,label\n1,2,0\n2,1,1\n", "\nfeatures = []")
    s = load(b"\xef\xbb\xbfa,b,label\n1,2,0\n2,1,1\n3,1,0\n4,4,1\n")
    assert s.dataset.feature_names == ("a", "b")
    with pytest.raises(ScenarioError, match="data.path"):
        load(b"a,b,label\n1,2," + b"9" * 200_000 + b"\n")


def test_a_bom_is_accepted_in_toml_and_scripts(tmp_path, monkeypatch):
    path = scenario(tmp_path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_scenario(path).name == "t"
    assert [c.text for c in parse_script("\ufeffstep\n")] == ["step"]


# -- limits --------------------------------------------------------------------------------------

@pytest.mark.parametrize("condition", ["(" * 150 + "loss" + ")" * 150 + " < 1", "-" * 1000 + "loss < 1",
                                       "not " * 2000 + "nan", " + ".join(["loss"] * 5000) + " < 1",
                                       "loss < 1" + "0" * 5000, "0.weight[" + "9" * 5000 + ",0] < 1"],
                         ids=["parentheses", "minus", "not", "sum", "long number", "long index"])
def test_conditions_cannot_overflow_the_stack(condition):
    with pytest.raises(ConditionError) as info:
        parse_condition(condition)
    assert len(str(info.value)) < 300


def test_a_long_sum_that_fits_evaluates():
    s = gdstep.open("xor")
    s.step()
    assert parse_condition(" + ".join(["loss"] * 100) + " > 0")(s)


@pytest.mark.parametrize("command", ["next N", "back N", "set epochs N", "step N", "gradcheck 0.weight[N,0]",
                                     "run max N"])
def test_numbers_over_4300_digits_are_one_error(command):
    with pytest.raises(ScriptError):
        parse_command(command.replace("N", "9" * 5000))


def test_a_script_over_the_length_limit_is_refused():
    with pytest.raises(ScriptError, match="characters long"):
        parse_script("step\n" * 300_000)


@pytest.mark.parametrize("data,model,where", [
    ('kind = "xor"', "1000000000000000000000000000000", "model.layers[0]"),
    ('kind = "xor"', "10000 }, { linear = 10000", "model.layers"),
    ('kind = "xor"\nn = 1000000000', "4", "data.n"),
    ('kind = "blobs"\nclasses = 1000000000000', "4", "data.classes"),
    ('kind = "inline"\nx = [[1.0], [2.0]]\ny = [0, 100000000000000000000000000000]', "4", "data.y"),
])
def test_sizes_fail_early_in_one_line(tmp_path, data, model, where):
    path = scenario(tmp_path, data)
    path.write_text(path.read_text().replace("linear = 4", f"linear = {model}"))
    started = time.monotonic()
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert info.value.where == where and time.monotonic() - started < 5


def test_a_huge_integer_label_is_not_a_class(tmp_path):
    (tmp_path / "d.csv").write_text("a,label\n1,0\n2,1000000000000\n3,0\n4,0\n5,0\n")
    s = load_scenario(scenario(tmp_path, 'kind = "csv"\npath = "d.csv"'))
    assert s.dataset.y.dtype.kind == "f"


def test_toml_nested_deep_is_one_error():
    with pytest.raises(ScenarioError, match="TOML"):
        parse_scenario("x = " + "[" * 5000 + "]" * 5000)


# -- settings ------------------------------------------------------------------------------------

@pytest.mark.parametrize("line", ["set momentum nan", "set optimizer sgd lr=inf", "set betas nan,0.9"])
def test_non_finite_settings_are_refused_at_the_prompt(line):
    s = gdstep.open("xor")
    outcome = Runner(s).execute_line(line)
    assert not outcome.ok and "finite" in outcome.message
    with pytest.raises(GdstepError, match="finite"):
        s.set(momentum=float("nan"))


# -- provenance ----------------------------------------------------------------------------------

def test_a_recording_says_when_the_scenario_changed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = scenario(tmp_path)
    runner = Runner(gdstep.open(str(path)))
    runner.execute_line("step 2")
    runner.execute_line("save r.gds")
    text = (tmp_path / "r.gds").read_text()
    for key in ("sha256=", "gdstep=", "numpy=", "torch=", "backend=numpy", "device=cpu", "dtype=float64"):
        assert key in text
    assert main(["replay", str(path), "r.gds"]) == 0
    assert "recorded elsewhere" not in capsys.readouterr().err
    path.write_text(path.read_text().replace("lr = 0.5", "lr = 0.25"))
    assert main(["replay", str(path), "r.gds"]) == 0
    err = capsys.readouterr().err
    assert "the scenario or its data changed" in err
    assert main(["replay", str(path), "r.gds", "--dtype", "float32"]) == 0
    assert "dtype float64 → float32" in capsys.readouterr().err


# -- faults --------------------------------------------------------------------------------------

def test_a_closed_stdout_exits_quietly_with_its_own_code(tmp_path):
    script = tmp_path / "s.gds"
    script.write_text("step\nprint 0.weight\n" * 200)
    proc = subprocess.Popen([sys.executable, "-m", "gdstep.cli", "replay", "xor", str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV)
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 3 and err == ""


def test_a_full_stdout_is_one_line(tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "gdstep.cli", "replay", "xor", str(ROOT / "scenarios" / "xor.gds")
                                 if (ROOT / "scenarios" / "xor.gds").exists() else "/dev/null"],
                                stdout=full, stderr=subprocess.PIPE, text=True, env=ENV, timeout=60)
    assert result.returncode == 3 and len(result.stderr.splitlines()) == 1


def test_sigint_during_replay_says_which_line_it_reached(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("s.gds").write_text("step\nstep\nstep\n")
    calls = []
    real = Runner.execute

    def execute(self, command, on_phase=None):
        calls.append(command)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, command, on_phase)
    monkeypatch.setattr(Runner, "execute", execute)
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        replay(gdstep.open("xor"), "s.gds", out=out)
    assert "interrupted at s.gds:2 (step)" in out.getvalue()


def test_sigterm_says_where_training_got_to(tmp_path):
    path = scenario(tmp_path, 'kind = "xor"\nn = 2000')
    proc = subprocess.Popen([sys.executable, "-m", "gdstep.cli", "run", str(path), "--epochs", "100000", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "interrupted (SIGTERM)" in out and "Traceback" not in err


def test_an_interrupted_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    from gdstep.cli import Terminated
    from gdstep.files import atomic_write

    def fsync(fd):
        raise Terminated()
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(Terminated):
        atomic_write(tmp_path / "x.md", "text")
    assert list(tmp_path.iterdir()) == []


def test_runtime_warnings_are_not_printed(tmp_path):
    path = tmp_path / "nan.toml"
    path.write_text(NAN_SCENARIO)
    result = cli(["run", str(path), "--quiet"])
    assert result.returncode == 0 and result.stderr == ""


NAN_SCENARIO = """name = "nan"
[data]
kind = "inline"
x = [[1.0, -1.0], [2.0, 1.0]]
y = [1, 0]
[model]
layers = [ { linear = 1 }, "sigmoid" ]
[init]
"0.weight" = [[1e308, 1e308]]
"0.bias" = [0.0]
[loss]
kind = "bce"
[optimizer]
kind = "sgd"
lr = 0.1
"""


# -- the torch backend ---------------------------------------------------------------------------

torch = pytest.importorskip("torch")


def test_torch_with_every_parameter_frozen(tmp_path):
    path = scenario(tmp_path)
    path.write_text(path.read_text().replace("[loss]", 'frozen = ["0.weight", "0.bias", "2.weight", "2.bias"]\n[loss]'))
    s = gdstep.open(str(path), backend="torch")
    before = s.params["0.weight"].copy()
    s.step(2)
    np.testing.assert_array_equal(s.params["0.weight"], before)


def test_torch_a_nan_reaching_bce_pauses(tmp_path):
    path = tmp_path / "nan.toml"
    path.write_text(NAN_SCENARIO)
    s = gdstep.open(str(path), backend="torch")
    result = s.run(max_steps=3)
    assert "non-finite" in result.message
    s.compare_backends()


def test_torch_lr_float32_cannot_hold_is_one_line(tmp_path):
    s = gdstep.open(str(scenario(tmp_path)), backend="torch")
    runner = Runner(s)
    assert runner.execute_line("set lr 1e308").ok
    outcome = runner.execute_line("step")
    assert not outcome.ok and "float32" in outcome.message
    assert runner.execute_line("set lr 0.1").ok and runner.execute_line("step").ok


def test_a_python_scenarios_name_and_description_lose_their_control_characters(tmp_path):
    path = tmp_path / "evil.py"
    path.write_text('"""Doc \\x1b]0;pwned\\x07 here."""\nimport torch\nname = "evil\\x1b[2J\\nstep"\n'
                    "model = torch.nn.Linear(1, 1)\nloss_fn = torch.nn.MSELoss()\n"
                    "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
                    "data = (torch.zeros(4, 1), torch.zeros(4, 1))\n")
    s = gdstep.open(path)
    assert "\x1b" not in s.scenario.name and "\n" not in s.scenario.name and s.scenario.name.startswith("evil")
    assert "\x1b" not in s.scenario.description and "\x07" not in s.scenario.description
