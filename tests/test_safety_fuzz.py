"""Issue 16's fuzzers: scenario mutations, the script language and the condition language end
in success or one line — never a traceback, never a hang, never a write outside the folder.
Bounded (a few hundred examples in all, no deadline) so the suite stays fast."""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

import gdstep
from gdstep.conditions import parse_condition, parse_expression
from gdstep.errors import GdstepError
from gdstep.scenario import parse_scenario
from gdstep.script import Runner
from gdstep.text import unsafe_character

def fuzz(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))
HOSTILE = ["\x1b[2J", "\u2028", "\x85", "\r", "\x0c", "\x00", "\u202e", "\ufeff", "\n"]


class Bounded:
    """on_phase that pauses any run after a few phases: a fuzzed `step 99999` cannot hang."""

    def __init__(self, limit: int = 40):
        self.limit, self.n = limit, 0

    def __call__(self) -> bool:
        self.n += 1
        return self.n >= self.limit


_SESSION = {}


def session():
    if "s" not in _SESSION:
        s = gdstep.open("xor")
        s.step(1)
        _SESSION["s"] = s
    return _SESSION["s"]


# -- conditions ----------------------------------------------------------------------------------

TOKENS = ["loss", "prev_loss", "lr", "step", "epoch", "phase", "nan", "grad_norm", "update_ratio", "(", ")", "not",
          "and", "or", "-", "+", "*", "/", "<", "<=", ">", "==", "!=", "1", "0.5", "1e999", "0", "0.weight[0,0]",
          "2.weight[0,3]", "0.weight[9,9]", "grad_norm(0.weight)", "abs(", "[", "]", ",", "'forward'", '"x',
          "9" * 60, "true", "__class__", "0.weight.__dict__"] + HOSTILE


@fuzz(200)
@given(st.one_of(st.lists(st.sampled_from(TOKENS), max_size=80).map(" ".join),
                 st.lists(st.sampled_from(TOKENS), max_size=300).map("".join), st.text(max_size=200)))
def test_conditions_parse_or_fail_in_one_line(text):
    s = session()
    for parse in (parse_condition, parse_expression):
        try:
            cond = parse(text).check_names(s.backend.param_shapes)
        except GdstepError as e:
            assert "\n" not in str(e) and unsafe_character(str(e)) is None
            continue
        cond(s)
        cond.describe(s)


# -- scripts -------------------------------------------------------------------------------------

WORDS = ["forward", "loss", "backward", "update", "next", "step", "epoch", "run", "back", "set", "break", "unbreak",
         "watch", "unwatch", "print", "gradcheck", "expect", "screenshot", "export", "save", "until", "max", "lr",
         "optimizer", "adam", "sgd", "momentum", "betas", "batch_size", "epochs", "full", "all", "state",
         "iterations", "0.weight", "0.weight[0,0]", "2.weight[0,1]", "loss < 1", "nan", "inf", "-1", "0", "3",
         "1e308", "99999999", "9" * 5000, "lr=0.1", "momentum=nan", "betas=0.9,0.99", "../x.md", "/tmp/x.md",
         "a.md", "a.gds", "--force", "#", "'q w.md'", ":"] + HOSTILE


@fuzz(250)
@given(st.lists(st.one_of(st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join),
                          st.text(max_size=60)), min_size=1, max_size=6))
def test_script_lines_run_or_fail_in_one_line(tmp_path_factory, lines):
    work = tmp_path_factory.getbasetemp() / "fuzz-work"
    work.mkdir(exist_ok=True)
    before = set(work.parent.iterdir())
    cwd = os.getcwd()
    os.chdir(work)
    try:
        s = session()
        runner = Runner(s)
        for line in lines:
            outcome = runner.execute_line(line, on_phase=Bounded())
            assert unsafe_character(outcome.message) is None
            for printed in outcome.lines:
                assert unsafe_character(printed) is None
    finally:
        os.chdir(cwd)
    assert set(work.parent.iterdir()) == before          # nothing written beside the working folder


# -- scenario mutations --------------------------------------------------------------------------

BASE = {
    "name": "fuzz", "description": "d", "seed": 0,
    "data": {"kind": "xor", "n": 8, "noise": 0.1},
    "model": {"layers": [{"linear": 3}, "tanh", {"linear": 1}, "sigmoid"], "init": "xavier"},
    "loss": {"kind": "bce"},
    "optimizer": {"kind": "sgd", "lr": 0.1, "momentum": 0.9},
    "training": {"batch_size": 4, "epochs": 3, "stop_when": "loss < 0.01"},
    "breakpoints": [{"when": "loss > prev_loss"}],
}
PATHS = [("name",), ("description",), ("seed",), ("data",), ("data", "kind"), ("data", "n"), ("data", "noise"),
         ("data", "x"), ("data", "y"), ("data", "path"), ("data", "classes"), ("data", "features"),
         ("model", "layers"), ("model", "layers", 0), ("model", "layers", 0, "linear"), ("model", "layers", 1),
         ("model", "init"), ("model", "frozen"), ("init",), ("loss", "kind"), ("loss", "delta"),
         ("optimizer", "kind"), ("optimizer", "lr"), ("optimizer", "momentum"), ("optimizer", "betas"),
         ("training", "batch_size"), ("training", "epochs"), ("training", "stop_when"), ("breakpoints",),
         ("breakpoints", 0, "when"), ("unknown\x1b[2J",)]
VALUES = st.one_of(
    st.integers(min_value=-2**63, max_value=2**63 - 1), st.sampled_from([0, 1, -1, 10**30, 10**9, 2**62]),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.text(max_size=30), st.sampled_from(["xor", "csv", "inline", "blobs", "adam", "mse", "cross_entropy", "full",
                                           "../../etc/passwd", "/etc/passwd", "/dev/zero", "loss <", "(" * 200 + "1",
                                           "relu", "sigmoid", "0.weight"] + HOSTILE),
    st.lists(st.integers(min_value=-3, max_value=3), max_size=4), st.just([]), st.just({}),
    st.just([[0.0, 1.0], [1.0, 0.0]]), st.just({"linear": 0}), st.just({"linear": 10**30}))


def toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value == math.inf else ("-inf" if value == -math.inf else repr(value)))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)} = {toml(v)}" for k, v in value.items()) + "}"


def mutate(doc, path, value, delete: bool):
    where = doc
    for key in path[:-1]:
        if isinstance(where, dict):
            where = where.setdefault(key, {})
        elif isinstance(where, list) and isinstance(key, int) and key < len(where):
            where = where[key]
        else:
            return
    last = path[-1]
    if isinstance(where, dict):
        if delete:
            where.pop(last, None)
        else:
            where[last] = value
    elif isinstance(where, list) and isinstance(last, int) and last < len(where):
        where[last] = value


@fuzz(120)
@given(st.lists(st.tuples(st.sampled_from(PATHS), VALUES, st.booleans()), min_size=1, max_size=3))
def test_scenario_mutations_load_or_fail_in_one_line(tmp_path_factory, mutations):
    doc = copy.deepcopy(BASE)
    for path, value, delete in mutations:
        mutate(doc, path, value, delete and len(path) > 1)
    text = "\n".join(f"{json.dumps(k, ensure_ascii=False)} = {toml(v)}" for k, v in doc.items()) + "\n"
    folder = tmp_path_factory.getbasetemp() / "fuzz-scenarios"
    folder.mkdir(exist_ok=True)
    try:
        scenario = parse_scenario(text, Path(folder / "s.toml"))
    except GdstepError as e:
        assert "\n" not in str(e) and unsafe_character(str(e)) is None
        return
    from gdstep.summary import describe_scenario
    try:
        s = gdstep.open(scenario)
        s.run(max_steps=3, on_phase=Bounded(20))
    except GdstepError as e:
        assert "\n" not in str(e)
        return
    shown = describe_scenario(s) + s.describe()
    assert all(unsafe_character(line) is None for line in shown.splitlines())
