"""Conditions: a table of expressions and their values against a small fake context (values
chosen here, so the expected results are plain Python), `none` semantics, chained
comparisons, errors with their column, refused attempts at attribute access, calls, imports
and lambdas, and the phases after which each condition is checked."""

from __future__ import annotations

import builtins
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdstep.conditions import ALL_PHASES, parse_condition
from gdstep.errors import ConditionError, GdstepError

SHAPES = {"0.weight": (2, 3), "0.bias": (2,), "2.weight": (1, 2)}


class Fake:
    """A context with fixed values; records what the condition read."""

    def __init__(self, **values):
        self.values = {"loss": 0.5, "prev_loss": 0.4, "epoch": 3, "iteration": 2, "step": 10, "phase": "loss",
                       "lr": 0.1, "grad_norm": 2.5, "update_ratio": 0.01, "nan": False}
        self.values.update(values)
        self.params = {("0.weight", (0, 1)): -1.5, ("0.weight", (1, 2)): 2.0, ("0.bias", (1,)): 0.25}
        self.norms = {"0.weight": 3.0, "0.bias": 0.5}
        self.ratios = {"0.weight": 0.02}
        self.reads: list[str] = []

    def value(self, name):
        self.reads.append(name)
        return self.values[name]

    def param(self, name, index):
        self.reads.append(f"{name}{list(index)}")
        return self.params[(name, index)]

    def grad_norm(self, name):
        return self.values["grad_norm"] if name is None else self.norms.get(name)

    def update_ratio(self, name):
        return self.values["update_ratio"] if name is None else self.ratios.get(name)


TABLE = [
    ("loss < 0.6", True),
    ("loss < 0.5", False),
    ("loss <= 0.5", True),
    ("loss > prev_loss", True),
    ("loss >= prev_loss + 0.1", True),
    ("loss > 10 * prev_loss", False),
    ("loss == 0.5", True),
    ("loss != 0.5", False),
    ("epoch == 3 and iteration == 2", True),
    ("epoch == 3 and iteration == 1", False),
    ("epoch == 4 or step >= 10", True),
    ("epoch == 4 or step > 10", False),
    ("not epoch == 4", True),
    ("not not epoch == 4", False),
    ("not (epoch == 3 and lr < 0.2)", False),
    ("true", True),
    ("false or true", True),
    ("true and false", False),
    ("lr * 10 == 1", True),
    ("lr / 2 == 0.05", True),
    ("-loss < 0", True),
    ("- -loss == 0.5", True),
    ("2 - 3 - 4 == -5", True),               # left-associative
    ("2 + 3 * 4 == 14", True),               # precedence
    ("(2 + 3) * 4 == 20", True),
    ("12 / 3 / 2 == 2", True),
    ("1e-3 < 0.01", True),
    (".5 == 0.5", True),
    ("3. == 3", True),
    ("grad_norm > 2", True),
    ("grad_norm(0.weight) == 3", True),
    ("grad_norm(0.bias) > 1", False),
    ("update_ratio > 0.005", True),
    ("update_ratio(0.weight) == 0.02", True),
    ("0.weight[0,1] < -1", True),
    ("0.weight[1,2] == 2", True),
    ("0.bias[1] == 0.25", True),
    ("abs(0.weight[0,1]) == 1.5", True),
    ("abs(loss - 1) == 0.5", True),
    ('phase == "loss"', True),
    ("phase == 'loss'", True),
    ('phase != "update"', True),
    ("nan", False),
    ("not nan", True),
    ("nan or loss > 0.1", True),
    ("1 / 0 > 1e308", True),                 # division by zero is inf, not an error
    ("-1 / 0 < 0", True),
    ("0 / 0 == 0 / 0", False),               # nan compares false, as in Python
    ("0 / 0 != 0 / 0", True),
    ("loss<0.6", True),
    ("  loss   <   0.6  ", True),
    ("(((loss < 0.6)))", True),
    ("loss < 1e309", True),                  # a literal overflows to inf
]


@pytest.mark.parametrize("text, expected", TABLE, ids=[t for t, _ in TABLE])
def test_condition_values(text, expected):
    assert parse_condition(text)(Fake()) is expected


CHAINS = [
    ("0 < loss < 1", True),
    ("0 < loss < 0.5", False),
    ("0.4 <= prev_loss < loss <= 0.5", True),
    ("1 < 3 > 2", True),                     # Python's meaning: 1 < 3 and 3 > 2
    ("3 > 2 > 2", False),
    ("1 == 1 == 1", True),
    ("1 < 2 < 3 < 4 < 5", True),
    ("1 < 2 < 3 < 3 < 5", False),
    ("loss < 0 < 1", False),
]


@pytest.mark.parametrize("text, expected", CHAINS)
def test_chained_comparisons(text, expected):
    # reference: the same chain in Python with the same values
    assert parse_condition(text)(Fake()) is expected
    py = text.replace("prev_loss", "0.4").replace("loss", "0.5")
    assert expected is eval(py)  # noqa: S307 — the test's own independent reference


def test_chain_reads_the_middle_term_once():
    ctx = Fake()
    assert parse_condition("0 < loss < 1")(ctx)
    assert ctx.reads.count("loss") == 1
    ctx = Fake()
    assert not parse_condition("1 < loss < 2")(ctx)
    assert ctx.reads == ["loss"]                          # stops at the first false link


NONE = [
    "loss > 0",
    "loss < 0",
    "loss == loss",
    "loss != 1",
    "loss > prev_loss",
    "prev_loss < loss",
    "loss * 2 > 0",
    "-loss < 0",
    "abs(loss) >= 0",
    "0 < loss < 1",
    "grad_norm(2.weight) > 0",              # a parameter with no gradient (frozen): none
]


@pytest.mark.parametrize("text", NONE)
def test_comparisons_with_missing_values_are_false(text):
    ctx = Fake(loss=None, prev_loss=None)
    assert parse_condition(text)(ctx) is False
    assert parse_condition(f"not ({text})")(ctx) is True


def test_none_in_boolean_context():
    ctx = Fake(loss=None)
    assert parse_condition("loss > 1 or epoch == 3")(ctx) is True
    assert parse_condition("loss > 1 and epoch == 3")(ctx) is False


def test_nan_name_reads_the_context():
    assert parse_condition("nan")(Fake(nan=True)) is True
    assert parse_condition("nan and epoch == 3")(Fake(nan=True)) is True


def test_non_finite_values_compare_as_floats():
    assert parse_condition("loss > 1e300")(Fake(loss=math.inf)) is True
    assert parse_condition("loss > 0")(Fake(loss=math.nan)) is False
    assert parse_condition("loss != loss")(Fake(loss=math.nan)) is True


# -- errors, with the column of what is wrong ----------------------------------------------------

ERRORS = [
    ("loss <", 7, "ends too early"),
    ("loss = 1", 6, "use =="),
    ("loss > > 1", 8, "expected a number"),
    ("", 1, "empty"),
    ("   ", 4, "empty"),
    ("loss", 1, "true or false"),
    ("loss + 1", 1, "true or false"),
    ("loss and epoch > 1", 1, "'and'"),
    ("epoch > 1 or 3", 14, "'or'"),
    ("not loss", 5, "'not'"),
    ("foo > 1", 1, "unknown name 'foo'"),
    ("loss > foo", 8, "unknown name 'foo'"),
    ("0.weight > 1", 1, "element index"),
    ("loss > 0.weight", 8, "element index"),
    ("loss[0] > 1", 5, "cannot be indexed"),
    ("(loss > 1", 10, "expected ')'"),
    ("loss > 1)", 9, "unexpected ')'"),
    ('phase < "loss"', 7, "== and !="),
    ('loss > "a"', 8, "cannot compare a number with a string"),
    ("(loss > 1) > 0", 12, "cannot compare a condition"),
    ("0.weight[0,] > 1", 12, "whole number"),
    ("0.weight[-1,0] > 1", 10, "whole number"),
    ("0.weight[0.5] > 1", 10, "whole number"),
    ("grad_norm(loss) > 1", 11, "takes a parameter name"),
    ("abs() > 1", 5, "expected a number"),
    ("epoch >= 2 and", 15, "ends too early"),
    ("loss > 1 &", 10, "unexpected character '&'"),
    ("loss > 1 and and", 14, "unexpected 'and'"),
    ("10 ** 3 > 1", 5, "expected a number"),
    ("-phase == 1", 2, "'-'"),
]


@pytest.mark.parametrize("text, column, message", ERRORS, ids=[t for t, _, _ in ERRORS])
def test_malformed_conditions_name_the_column(text, column, message):
    with pytest.raises(ConditionError) as info:
        parse_condition(text)
    e = info.value
    assert e.column == column, e
    assert message in e.message
    assert str(e) == f"condition {text!r} at column {column}: {e.message}"
    assert isinstance(e, GdstepError) and e.exit_code == 2
    assert "\n" not in str(e)


def test_unknown_parameters_and_indices_are_refused_with_column():
    with pytest.raises(ConditionError) as info:
        parse_condition("loss < 1 and 1.weight[0,0] > 0").check_names(SHAPES)
    assert info.value.column == 14 and "no parameter '1.weight'; did you mean" in info.value.message
    with pytest.raises(ConditionError) as info:
        parse_condition("0.weight[2,0] > 0").check_names(SHAPES)
    assert info.value.column == 1 and "out of range" in info.value.message and "(2, 3)" in info.value.message
    with pytest.raises(ConditionError) as info:
        parse_condition("0.bias[0,0] > 0").check_names(SHAPES)
    assert "takes 1 index, got 2" in info.value.message
    with pytest.raises(ConditionError) as info:
        parse_condition("grad_norm(3.weight) > 0").check_names(SHAPES)
    assert info.value.column == 11
    parse_condition("0.weight[1,2] > 0 and grad_norm(2.weight) > 0").check_names(SHAPES)
    parse_condition("0.weight[1,2] > 0").check_names(list(SHAPES))


def test_non_text_is_refused():
    with pytest.raises(ConditionError):
        parse_condition(3)  # type: ignore[arg-type]


# -- nothing is evaluated as Python -------------------------------------------------------------

REFUSED = [
    "loss.__class__ == 1",
    "loss.real > 0",
    'open("x")',
    'open("x") == 1',
    '__import__("os")',
    '__import__("os").system("true") == 0',
    "import os",
    "from os import system",
    "lambda: 1",
    "lambda x: x > 1",
    "loss if 1 else 2",
    'eval("1") == 1',
    'exec("x = 1")',
    'getattr(loss, "real") > 0',
    "print(1)",
    "nan[0]",
    "loss[0] > 1",
    "epoch[0] == 1",
    '"abc"[0] == "a"',
    "().__class__",
    "[x for x in y]",
    "{1: 2}",
    "loss > 1; import os",
    "`ls`",
    "__builtins__ > 1",
    "abs(open(\"x\")) > 1",
    "loss.__class__.__bases__[0] > 1",
    "1 < 0.weight.__class__[0,0]",
    "grad_norm(0.weight.__dict__) > 1",
]


@pytest.mark.parametrize("text", REFUSED)
def test_python_constructs_are_refused(text, monkeypatch):
    calls = []
    for name in ("eval", "exec", "compile", "__import__", "open", "getattr"):
        original = getattr(builtins, name)
        monkeypatch.setattr(builtins, name, lambda *a, _o=original, _n=name, **k: (calls.append(_n), _o(*a, **k))[1])
    with pytest.raises(ConditionError):
        parse_condition(text).check_names(SHAPES)
    monkeypatch.undo()
    assert "eval" not in calls and "exec" not in calls and "compile" not in calls and "open" not in calls


def test_evaluation_never_uses_eval(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("eval/exec called")
    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    for text, expected in TABLE:
        assert parse_condition(text)(Fake()) is expected


# -- the phases each condition is checked after --------------------------------------------------

PHASES_OF = [
    ("loss > prev_loss", {"loss"}),
    ("loss < 0.01", {"loss"}),
    ("grad_norm > 5", {"backward"}),
    ("grad_norm(0.weight) > 5", {"backward"}),
    ("update_ratio > 0.1", {"update"}),
    ("update_ratio(0.weight) > 0.1", {"update"}),
    ("0.weight[0,0] > 1", {"update"}),
    ("epoch >= 3", {"update"}),
    ("iteration == 2", {"update"}),
    ("step == 100", {"update"}),
    ("lr < 0.1", {"forward", "update"}),
    ('phase == "backward"', set(ALL_PHASES)),
    ("nan", set(ALL_PHASES)),
    ("true", set(ALL_PHASES)),
    ("1 < 2", set(ALL_PHASES)),
    # records of two phases: checked where the later is made (after the loss phase grad_norm is
    # still the iteration before's), unless `phase` or `nan` asks for the earlier phase itself
    ("loss > 1 or grad_norm > 5", {"backward"}),
    ("update_ratio > 0.1 or loss > 2", {"update"}),
    ("loss > 1 or grad_norm > 5 or phase == 'loss'", set(ALL_PHASES)),
    ("nan or loss > 10", set(ALL_PHASES)),
    ("abs(loss - prev_loss) > 1", {"loss"}),
    # records with the cursor, the lr or a parameter: once an iteration, where the records are
    # made (after the update they would be read again with the next step's count)
    ("step > 3 and loss > 1 and grad_norm > 5", {"backward"}),
    ("step > 3 and loss > prev_loss", {"loss"}),
    ("step > 30 and (loss < 0.69 or grad_norm < 0.01)", {"backward"}),
    ("lr > 0.1 and loss > 2", {"loss"}),
    ("0.weight[0,0] > 1 and loss > 1", {"loss"}),
    ("step > 3 and update_ratio > 0.1", {"update"}),
]


@pytest.mark.parametrize("text, phases", PHASES_OF, ids=[t for t, _ in PHASES_OF])
def test_phases_a_condition_is_checked_after(text, phases):
    assert parse_condition(text).phases == frozenset(phases)


def test_describe_shows_what_was_read():
    c = parse_condition("loss > prev_loss and 0.weight[0,1] < 0")
    text = c.describe(Fake())
    assert "loss = 0.500000" in text and "prev_loss = 0.400000" in text and "0.weight[0,1] = -1.500000" in text
    assert "loss = none" in parse_condition("loss > 1").describe(Fake(loss=None))


# -- fuzz: any text either parses or is a ConditionError ------------------------------------------

PIECES = ["loss", "prev_loss", "epoch", "step", "phase", "lr", "nan", "grad_norm", "update_ratio", "abs", "0.weight",
          "0.bias", "[", "]", "(", ")", ",", "<", "<=", "==", "!=", ">", "-", "+", "*", "/", "and", "or", "not",
          "true", "false", "1", "0.5", "1e3", '"loss"', "'x'", "=", ".", "__class__", "0", " "]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=10).map(" ".join) | st.text(max_size=20))
def test_any_text_parses_or_is_a_condition_error(text):
    try:
        c = parse_condition(text).check_names(SHAPES)
    except ConditionError as e:
        assert e.column is None or 1 <= e.column <= len(text) + 1
        return
    ctx = Fake()
    ctx.params.update({(n, i): 0.0 for n, shape in SHAPES.items() for i in np.ndindex(shape)})
    assert c(ctx) in (True, False)
    assert isinstance(c.describe(ctx), str)


def test_a_breakpoint_on_records_of_two_phases_fires_once_an_iteration_on_fresh_values():
    """`loss > 10 * prev_loss or grad_norm > 0.001` on XOR: it fired after the loss phase on
    the iteration before's gradient norm, then again after backward. Now once an iteration,
    after backward, with this iteration's norm (recomputed here from its backward record)."""
    import gdstep

    s = gdstep.open("xor")
    s.add_breakpoint("loss > 10 * prev_loss or grad_norm > 0.001")
    seen = []
    for _ in range(3):
        result = s.run(max_steps=10)
        assert result.reason == "breakpoint" and s.phase_due == "update"
        grads = s.record("backward").grads
        norm = math.sqrt(sum(float(np.sum(np.square(g))) for g in grads.values()))
        assert f"grad_norm = {norm:.6f}" in result.message
        seen.append(s.step_count)
    assert seen == [0, 1, 2]


def test_a_breakpoint_on_the_step_and_a_record_fires_once_an_iteration_where_the_record_is_made():
    """`step > 3 and loss < 1e9` (the loss always below) on XOR: it fired after the fourth
    update on the fourth iteration's loss, then again after the fifth iteration's loss phase,
    both with step 4. Now once an iteration, after its loss phase, from the first loss made
    once four updates are done (step counts them)."""
    import gdstep

    s = gdstep.open("xor")
    s.add_breakpoint("step > 3 and loss < 1e9")
    seen = []
    for _ in range(3):
        result = s.run(max_steps=10)
        assert result.reason == "breakpoint"
        seen.append((s.step_count, s.last_phase))
    assert seen == [(4, "loss"), (5, "loss"), (6, "loss")]
