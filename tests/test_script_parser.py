"""The command language: canonical round trips, error positions, and junk that only ever
gives the clean ScriptError."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gdstep
from gdstep.errors import ScriptError
from gdstep.script import Runner, parse_command, parse_script

CANONICAL = [
    "forward", "loss", "backward", "update", "next", "next 5", "step", "step 10", "epoch 3",
    "run", "run until loss < 0.01", "run max 100", "run until loss < 0.01 and step > 3 max 50",
    "back", "back 3", "back 2 iterations", "set lr 0.1", "set batch_size 8", "set batch_size full",
    "set optimizer adam", "set optimizer adam lr=0.01 betas=0.9,0.99 amsgrad=true", "set momentum 0.9", "set epochs 200",
    "break loss > prev_loss", "unbreak 2", "unbreak all", "watch 2.weight[0,1]", "watch grad_norm(0.weight)",
    "unwatch 2.weight[0,1]", "unwatch all", "print loss", "print 2.weight", "print 2.weight[0,1]",
    "print state 0.weight", "gradcheck 0.weight[1,0]", "expect not nan", "screenshot out.svg",
    "export example.md", "save session.gds",
]


@pytest.mark.parametrize("text", CANONICAL)
def test_canonical_text_round_trips(text):
    command = parse_command(text)
    assert command.text == text
    again = parse_command(command.text)
    assert again.name == command.name and again.text == command.text
    assert repr(again.args) == repr(command.args)


def test_defaults_comments_and_prompt_colon():
    assert parse_command("  step   # ten more\n").args == (1,)
    assert parse_command(":back").args == (1, "phases")
    assert parse_command("back 1 iteration").args == (1, "iterations")
    assert parse_command("# only a comment") is None
    assert parse_command("   ") is None
    assert parse_command('expect phase == "loss"  # a # inside quotes is not a comment').args[0].text == 'phase == "loss"'
    run = parse_command("run max 20 until loss < 0.5")
    assert run.args[1] == 20 and run.args[0].text == "loss < 0.5"


def test_script_keeps_line_numbers():
    commands = parse_script("# header\n\nforward\n  loss\nstep 3 # more\n", file="x.gds")
    assert [(c.name, c.line) for c in commands] == [("forward", 3), ("loss", 4), ("step", 5)]


@pytest.mark.parametrize("line, column, message", [
    ("stepp 3", 1, "did you mean 'step'"),
    ("step x", 6, "whole number"),
    ("step 0", 6, "at least 1"),
    ("step 1 2", 8, "one number"),
    ("forward now", 9, "takes no arguments"),
    ("run until", 10, "until needs a condition"),
    ("run until loss <", 17, "ends too early"),
    ("run forever", 5, "expected 'until"),
    ("break loss >> 1", 13, "expected a number"),
    ("expect loss = 1", 13, "use =="),
    ("set lr -1", 8, "must be >= 0"),
    ("set lr fast", 8, "must be a number"),
    ("set optimizer adamm", 15, "unknown optimizer"),
    ("set optimizer adam lr", 20, "NAME=VALUE"),
    ("set batch_size 0", 16, "at least 1"),
    ("gradcheck 0.weight", 11, "one element"),
    ("watch loss <", 13, "ends too early"),
    ("screenshot out.png", 12, "writes a .svg"),
    ("   back 2 eons", 11, "'phases' or 'iterations'"),
    ("expect loss.__class__ == 1", 8, "no attributes"),
    ('expect __import__("os")', 8, "unknown function"),
])
def test_errors_name_line_and_column(line, column, message):
    with pytest.raises(ScriptError) as info:
        parse_script(f"forward\n{line}\n", file="lesson.gds")
    e = info.value
    assert (e.file, e.line, e.column) == ("lesson.gds", 2, column), str(e)
    assert message in e.message
    assert str(e).startswith(f"lesson.gds:2:{column}: ")


def test_unknown_names_are_refused_before_running():
    s = gdstep.open("textbook")
    runner = Runner(s)
    for text, needle in [("print 9.weight", "no parameter"), ("gradcheck 2.weight[5,0]", "out of range"),
                         ("expect 2.weigth[0,0] > 1", "did you mean '2.weight'"), ("watch grad_norm(x.y)", "no parameter")]:
        outcome = runner.execute_line(text, line=7)
        assert not outcome.ok and outcome.error and needle in outcome.message, outcome.message
    assert s.position == 0 and runner.lines == []


PIECES = list("abcdefghijklmnopqrstuvwxyz_0123456789.,[]()<>=!+-*/ #:\"'\t") + [
    "step ", "run ", "until ", "set ", "lr ", "optimizer ", "break ", "expect ", "max ", "back ", "watch ", "print ",
    "gradcheck ", "0.weight", "2.bias", "[0,0]", "loss", "prev_loss", "nan", " and ", " or ", " not ", "1e-3", "-"]
JUNK_LINE = st.lists(st.sampled_from(PIECES), max_size=14).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(JUNK_LINE, max_size=6))
def test_junk_scripts_only_give_the_clean_error(lines):
    text = "\n".join(lines)
    try:
        parse_script(text, file="junk.gds")
    except ScriptError as e:
        assert str(e).startswith("junk.gds:")
        assert "\n" not in str(e)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(JUNK_LINE)
def test_the_prompt_never_raises_and_leaves_the_session_alone_on_error(text):
    s = gdstep.open("textbook")
    before = s.params
    outcome = Runner(s).execute_line(text)
    if not outcome.ok:
        assert outcome.message and "\n" not in outcome.message
        assert all((before[k] == v).all() for k, v in s.params.items())
