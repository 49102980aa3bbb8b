"""`say "text"`: narration whose fields are read from the session, checked against the
classic hand-worked 2-2-2 sigmoid example (Mazur's: E_total = 0.298371109 after the first
forward pass, w5 = 0.35891648 and w6 = 0.408666186 after one update with η = 0.5,
∂E/∂w5 = 0.082167041), and parse errors that name the line and column."""

from __future__ import annotations

import io
import json

import pytest

import gdstep
from gdstep.errors import ScriptError
from gdstep.script import Runner, parse_command, parse_script
from gdstep.script.replay import replay
from gdstep.script.say import format_value, parse_say


def _say(runner, text):
    outcome = runner.execute_line(text)
    assert outcome.ok, outcome.message
    return outcome.lines[0]


@pytest.fixture
def textbook():
    return Runner(gdstep.open("textbook"))


def test_fields_read_the_hand_worked_numbers(textbook):
    r = textbook
    assert _say(r, 'say "before: loss {loss:.4f}, step {step}, lr {lr}"') == "before: loss none, step 0, lr 0.5"
    r.execute_line("forward")
    r.execute_line("loss")
    assert _say(r, 'say "E_total = {loss:.9f} ({loss:>12.3e})"') == "E_total = 0.298371109 (   2.984e-01)"
    r.execute_line("backward")
    r.execute_line("update")
    assert _say(r, 'say "w5 {2.weight[0,0]:.8f}, w6 {2.weight[0,1]:.9f}, w7 {2.weight[1,0]:.9f}"') == \
        "w5 0.35891648, w6 0.408666186, w7 0.511301270"
    # one sample, the full batch: every update ends an epoch
    assert _say(r, 'say "step {step}, epoch {epoch}, phase {phase:>8}|, {{literal}} {nan}"') == \
        "step 1, epoch 2, phase   update|, {literal} false"
    assert _say(r, 'say "{lr:.1%} of the gradient"') == "50.0% of the gradient"
    assert _say(r, 'say "below 0.3: {loss < 0.3}; Δ {loss - prev_loss:+.2f}"') == "below 0.3: true; Δ none"


def test_lane_fields(textbook):
    r = textbook
    assert r.execute_line("lanes sgd lr=0.5 | sgd lr=0.1").ok
    assert r.execute_line("lanes run 1").ok
    # lane 2: w5 = 0.40 − 0.1 · 0.082167041 = 0.3917832959
    assert _say(r, 'say "{lane(1).loss:.9f} {lane(1).2.weight[0,0]:.8f} {lane(2).2.weight[0,0]:.8f} {lane(3).loss}"') \
        == "0.298371109 0.35891648 0.39178330 none"


def test_default_formats():
    assert format_value(0.1) == "0.1"
    assert format_value(0.358916479) == "0.358916"
    assert format_value(1e-8) == "1e-08"
    assert format_value(3) == "3"
    assert format_value(3, ">4") == "   3"
    assert format_value(3, ".2f") == "3.00"
    assert format_value(float("nan"), ".3f") == "nan"
    assert format_value(float("-inf")) == "-inf"
    assert format_value(None, ".4f") == "none"
    assert format_value(True) == "true"
    assert format_value(1234567.0, ",.1f") == "1,234,567.0"


def test_say_is_recorded_and_replays(tmp_path, textbook):
    r = textbook
    r.execute_line('say "hello {step}"')
    r.execute_line("step")
    assert r.lines == ['say "hello {step}"', "step"]
    script = tmp_path / "s.gds"
    script.write_text('forward\nloss\nsay "loss {loss:.6f}"  # a # in a comment\nsay "it\'s # not a comment"\n')
    out = io.StringIO()
    assert replay(gdstep.open("textbook"), script, out=out) == 0
    assert "      loss 0.298371\n" in out.getvalue()
    assert "      it's # not a comment\n" in out.getvalue()
    out = io.StringIO()
    assert replay(gdstep.open("textbook"), script, json_lines=True, out=out) == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert rows[2]["printed"] == {"say": "loss 0.298371"}


def test_canonical_text():
    assert parse_command('say "a {loss:.3f} b"').text == 'say "a {loss:.3f} b"'
    assert [type(p).__name__ for p in parse_say("a {loss:.3f} b {{c}}").parts] == ["str", "Field", "str"]


@pytest.mark.parametrize("line, column, message", [
    ('say "x {los}"', 9, "unknown name 'los'"),
    ('say "x {loss:.4q}"', 14, "format spec '.4q'"),
    ('say "x {loss:999f}"', 14, "format spec"),
    ('say "a } b"', 8, "single '}'"),
    ('say "a { b"', 8, "without its '}'"),
    ('say "{phase:.2f}"', 13, "only a width"),
    ('say "{nan:+}"', 11, "only a width"),
    ('say "{}"', 7, "empty field"),
    ("say hello", 5, "double quotes"),
    ('say "a "b" c"', 8, "double quote"),
])
def test_parse_errors_name_line_and_column(line, column, message):
    with pytest.raises(ScriptError) as e:
        parse_script(f"step\n{line}\n", file="lesson.gds")
    assert (e.value.line, e.value.column) == (2, column)
    assert str(e.value).startswith(f"lesson.gds:2:{column}: ")
    if message:
        assert message in e.value.message


@pytest.mark.parametrize("line, column, message", [
    ('say "x {9.weight[0,0]}"', 9, "no parameter '9.weight'"),
    ('say "x { 0.weight[3,0]}"', 10, "out of range"),
])
def test_unknown_parameters_are_refused_before_anything_runs(tmp_path, line, column, message):
    script = tmp_path / "bad.gds"
    script.write_text(f"step\n{line}\n")
    session = gdstep.open("linear")
    with pytest.raises(ScriptError) as e:
        replay(session, script, out=io.StringIO())
    assert (e.value.line, e.value.column) == (2, column) and message in e.value.message
    assert session.step_count == 0
