"""Replay: lesson scripts pass, failures and bad scripts give the right exit codes, a
recording replays to the same state bit for bit, export matches explain()."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

import gdstep
from gdstep.bundled import scenarios_dir
from gdstep.cli import main
from gdstep.script import Runner
from gdstep.script.export import worked_example
from gdstep.script.writes import WritePolicy
from gdstep.script.replay import replay

LESSONS = sorted(scenarios_dir().glob("*.gds"))


def test_every_bundled_scenario_has_a_lesson():
    scenarios = {p.stem for p in scenarios_dir().glob("*.toml") if p.name != "lessons.toml"} | \
        {p.stem for p in scenarios_dir().glob("*.py")}          # lessons.toml is the lesson catalogue
    assert scenarios and scenarios <= {p.stem for p in LESSONS}


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lesson_scripts_replay_and_their_expectations_hold(lesson, capsys):
    scenario = next(p for p in (lesson.with_suffix(".toml"), lesson.with_suffix(".py")) if p.exists())
    backend = "torch" if scenario.suffix == ".py" else "numpy"
    assert main(["replay", str(scenario), str(lesson), "--backend", backend]) == 0
    out = capsys.readouterr().out
    assert "FAILED" not in out and out.rstrip().splitlines()[-1].startswith("done:")
    assert out.count("expect ") >= 2


def test_failed_expect_exits_1_naming_the_line_and_values(tmp_path, capsys):
    script = tmp_path / "lesson.gds"
    script.write_text("step\nexpect loss < 0.0001\nstep\n")
    assert main(["replay", "textbook", str(script)]) == 1
    out = capsys.readouterr().out
    assert f"FAILED: {script}:2: expect loss < 0.0001: FAILED (loss = 0.298371)" in out
    assert "   3  step" not in out  # it stopped at the first failure


def test_bad_script_exits_2_with_one_line(tmp_path, capsys):
    script = tmp_path / "bad.gds"
    script.write_text("step\nrun until loss <\n")
    assert main(["replay", "xor", str(script)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"gdstep: {script}:2:17: the condition ends too early"]
    assert main(["replay", "xor", str(tmp_path / "missing.gds")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_command_that_cannot_run_exits_2(tmp_path, capsys):
    script = tmp_path / "order.gds"
    script.write_text("forward\nupdate\n")
    assert main(["replay", "xor", str(script)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{script}:2:1" in err[0] and "loss is due next" in err[0]


def test_json_lines(tmp_path, capsys):
    script = tmp_path / "j.gds"
    script.write_text("watch 2.weight[0,0]\nstep\nprint 2.weight\nexpect loss < 1\n")
    assert main(["replay", "textbook", str(script), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3, 4] and all(r["ok"] for r in rows)
    assert set(rows[0]) >= {"command", "line", "cursor", "loss", "printed", "ok"}
    assert rows[1]["cursor"] == {"epoch": 2, "iteration": 1, "phase": "forward"}
    assert abs(rows[1]["printed"]["2.weight[0,0]"] - 0.35891648) < 1e-8       # the textbook's value
    assert np.allclose(rows[2]["printed"]["2.weight"], gdstep.open("textbook").params["2.weight"] - 0.5 * np.array(
        [[0.082167041, 0.082667628], [-0.022602540, -0.022740242]]), atol=1e-8)


def test_a_recording_replays_to_the_same_state_bit_for_bit(tmp_path):
    live = gdstep.open("spiral")
    runner = Runner(live)
    for line in ["next", "next", "break grad_norm > 1e9", "step 3", "set lr 0.02", "epoch"]:
        assert runner.execute_line(line).ok
    calls = iter(range(10**6))
    paused = runner.run(on_phase=lambda: next(calls) >= 37)         # the TUI's `r`, paused by a key
    assert paused.result.reason == "paused"
    assert runner.run_to("backward").ok                                  # the TUI's `b`
    for line in ["back 5", "set optimizer sgd momentum=0.9", "step 4", "back 2 iterations", "next 3"]:
        assert runner.execute_line(line).ok, line
    path = runner.save(tmp_path / "session.gds")
    assert "next 38" in path.read_text()

    fresh = gdstep.open("spiral")
    assert replay(fresh, path, out=io.StringIO()) == 0
    assert fresh.cursor == live.cursor and fresh.step_count == live.step_count
    for name, value in live.params.items():
        assert np.array_equal(fresh.params[name], value), name
    for name, state in live.optimizer_state.items():
        for key, value in state.items():
            assert np.array_equal(np.asarray(fresh.optimizer_state[name][key]), np.asarray(value)), (name, key)
    assert [bp.text for bp in fresh.breakpoints] == [bp.text for bp in live.breakpoints]


def test_export_numbers_are_explains(tmp_path):
    s = gdstep.open("spiral")
    s.step(3)
    text = worked_example(s)
    for name in s.backend.param_shapes:
        for index in [(0, 0), (0, 1)] if len(s.backend.param_shapes[name]) == 2 else [(0,), (1,)]:
            for line in s.explain(name, index).lines:
                assert "  " + line in text, (name, index, line)
    loss = s.record("loss")
    assert f"**L = {loss.value:.6f}**" in text
    runner = Runner(s, writes=WritePolicy.anywhere())       # a path the user typed
    assert runner.execute_line(f"export {tmp_path / 'worked.md'}").ok
    assert (tmp_path / "worked.md").read_text() == text


def test_export_of_the_textbook_step_shows_the_classic_numbers():
    s = gdstep.open("textbook")
    s.step()
    text = worked_example(s)
    assert "W_new = W_old − η·g = 0.400000 − 0.5 × 0.082167 = 0.358916" in text
    assert "| 0 | 0.751365 | 0.772928 |" in text           # the outputs y before training
    assert "**L = 0.298371**" in text


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_export_writes_the_update_rule_of_the_optimizer_used(kind):
    s = gdstep.open("xor")
    s.set(optimizer=kind, lr=0.01)
    s.step()
    text = worked_example(s)
    signature = {"sgd": r"- \eta\,g", "adam": r"\hat m = \frac{m}{1 - \beta_1^t}", "adamw": r"(1 - \eta\lambda)",
                 "rmsprop": r"v \leftarrow \alpha v", "adagrad": r"s \leftarrow s + g^2"}[kind]
    assert signature in text
    others = [sig for k, sig in {"rmsprop": r"v \leftarrow \alpha v", "adagrad": r"s \leftarrow s + g^2"}.items() if k != kind]
    assert not any(sig in text for sig in others)


def test_screenshots_need_the_function_the_app_or_the_command_line_passes(tmp_path):
    s = gdstep.open("xor")
    outcome = Runner(s).execute_line(f"screenshot {tmp_path / 'a.svg'}")
    assert not outcome.ok and "screenshots need the app" in outcome.message
    shots = []
    runner = Runner(s, screenshot=lambda session, path: shots.append((session, str(path))) or Path(path),
                    writes=WritePolicy.anywhere())
    assert runner.execute_line(f"screenshot {tmp_path / 'b.svg'}").ok
    assert shots == [(s, str(tmp_path / "b.svg"))]
    assert runner.lines == []                       # a picture is not a step to replay


def test_the_script_package_never_imports_the_app():
    import subprocess
    import sys
    code = ("import sys, gdstep, gdstep.script, gdstep.script.replay, gdstep.script.runner\n"
            "s = gdstep.open('xor'); gdstep.script.Runner(s).execute_line('gradcheck 0.weight[0,0]')\n"
            "print(','.join(sorted(m for m in sys.modules if m.startswith('gdstep.tui'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_gradcheck_outcome_carries_the_check():
    s = gdstep.open("textbook")
    s.forward(); s.loss(); s.backward()
    outcome = Runner(s).execute_line("gradcheck 2.weight[0,1]")
    check = outcome.gradcheck
    assert outcome.ok and check is not None and (check.name, check.index) == ("2.weight", (0, 1))
    assert check.analytic == pytest.approx(s.grads["2.weight"][0, 1], rel=1e-12) and check.ok
    assert outcome.values["2.weight[0,1] analytic"] == check.analytic      # --json prints these
    assert Runner(s).execute_line("step").gradcheck is None
