"""The course (scenarios/lessons.toml): every lesson replays with its narration and its
`expect` lines hold, every `{…}` field of a `say` line reads a value that exists, and the
facts the lessons teach are checked here independently: the hand-worked numbers worked
again by hand, the optimizers' claims against torch.optim loops that know nothing of gdstep.
"""

from __future__ import annotations

import math
import re
import runpy
import tomllib

import numpy as np
import pytest

import gdstep
from gdstep.bundled import scenarios_dir
from gdstep.cli import main
from gdstep.conditions import parse_expression

HERE = scenarios_dir()
CATALOGUE = tomllib.loads((HERE / "lessons.toml").read_text(encoding="utf-8"))["lesson"]
NAMES = ["loss", "gradient", "learning-rate", "backprop", "batches", "momentum", "adaptive", "minima", "xor",
         "cross-entropy", "vanishing", "high-dimensions"]
SAY = re.compile(r'^\s*say\s+"(?P<text>.*)"\s*$')


def script(name: str) -> str:
    entry = next(e for e in CATALOGUE if e["name"] == name)
    return (HERE / entry["script"]).read_text(encoding="utf-8")


def narration(name: str) -> str:
    return "\n".join(m.group("text") for line in script(name).splitlines() if (m := SAY.match(line)))


def toml(path: str) -> dict:
    return tomllib.loads((HERE / path).read_text(encoding="utf-8"))


def inline_data(path: str) -> tuple[np.ndarray, np.ndarray]:
    data = toml(path)["data"]
    return np.array(data["x"], dtype=float), np.array(data["y"], dtype=float)


# -- the catalogue and the replays ------------------------------------------------------------

def test_the_catalogue_lists_the_twelve_lessons_in_order_with_their_files():
    assert [e["name"] for e in CATALOGUE] == NAMES
    for number, entry in enumerate(CATALOGUE, start=1):
        assert set(entry) == {"name", "title", "scenario", "script"}
        assert (HERE / entry["scenario"]).is_file() and (HERE / entry["script"]).is_file()
        assert entry["script"].startswith(f"lesson{number:02d}_") and entry["title"]


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e["name"])
def test_every_lesson_replays_with_its_narration_and_its_expectations_hold(entry, capsys):
    """The real parser, `say` lines included: this needs the `say` command."""
    scenario = HERE / entry["scenario"]
    backend = "torch" if scenario.suffix == ".py" else "numpy"
    assert main(["replay", str(scenario), str(HERE / entry["script"]), "--backend", backend]) == 0
    out = capsys.readouterr().out
    assert "FAILED" not in out and out.rstrip().splitlines()[-1].startswith("done:")
    text = script(entry["name"])
    assert len(re.findall(r"^expect ", text, re.M)) >= 3
    assert 5 <= len(re.findall(r"^say ", text, re.M)) <= 25


def _fields(text: str) -> list[str]:
    """The expressions inside `{…}` (`{{` and `}}` are literal), without their format specs."""
    found = []
    for m in re.finditer(r"(?<!\{)\{(?!\{)([^{}]*)\}", text):
        body = m.group(1)
        depth, cut = 0, len(body)
        for i, ch in enumerate(body):           # the spec starts at a ':' outside brackets
            depth += ch in "([" and 1 or (ch in ")]" and -1 or 0)
            if ch == ":" and depth == 0:
                cut = i
        found.append(body[:cut])
    return found


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e["name"])
def test_every_narration_field_reads_a_name_the_session_has(entry):
    if entry["scenario"].endswith(".py"):       # a Python scenario: its parameter names from the file
        model = runpy.run_path(str(HERE / entry["scenario"]))["model"]
        shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    else:
        shapes = gdstep.open(HERE / entry["scenario"]).backend.param_shapes
    fields = _fields(narration(entry["name"]))
    assert fields or entry["name"] in ("backprop",)
    for field in fields:
        parse_expression(field).check_names(shapes)


# -- lessons 1 and 2: the loss and the gradient, by hand ---------------------------------------

def test_lesson_1_the_mean_squared_errors_and_cross_entropies_it_quotes():
    x, y = inline_data("lesson01_loss.toml")
    assert np.mean((1.0 * x + 0.0 - y) ** 2) == 7.5                     # errors −1, −2, −3, −4
    assert np.mean((2.0 * x + 0.5 - y) ** 2) == 0.25                    # after one step: every error −0.5
    text = narration("loss")
    for p, shown in ((0.9, "0.105"), (0.5, "0.693"), (0.1, "2.303")):
        assert f"{-math.log(p):.3f}" == shown and shown in text


def test_lesson_2_the_gradient_and_the_step_worked_by_hand_and_by_finite_differences():
    x, y = inline_data("lesson02_gradient.toml")
    x, y = x[:, 0], y[:, 0]

    def loss(w, b):
        return np.mean((w * x + b - y) ** 2)

    err = 1.0 * x + 0.0 - y
    gw, gb = 2 * np.mean(err * x), 2 * np.mean(err)
    assert (gw, gb) == (-10.0, -5.0)
    h = 1e-6
    assert (loss(1 + h, 0) - loss(1 - h, 0)) / (2 * h) == pytest.approx(-10, abs=1e-6)
    assert (loss(1, h) - loss(1, -h)) / (2 * h) == pytest.approx(-5, abs=1e-6)
    w, b = 1 - 0.1 * gw, 0 - 0.1 * gb
    assert (w, b) == (2.0, 0.5) and loss(w, b) == 0.25
    err = w * x + b - y
    assert math.hypot(2 * np.mean(err * x), 2 * np.mean(err)) == pytest.approx(1.8027756377319946, abs=1e-15)
    s = gdstep.open(HERE / "lesson02_gradient.toml")
    s.forward(), s.loss(), s.backward()
    assert s.grads["0.weight"][0, 0] == gw and s.grads["0.bias"][0] == gb


def test_lesson_3_each_learning_rate_does_what_the_lesson_says():
    x, y = inline_data("lesson03_learning_rate.toml")
    x, y = x[:, 0], y[:, 0]

    def descend(lr, steps, w=-1.0, b=3.0):
        for step in range(1, steps + 1):
            err = w * x + b - y
            w, b = w - lr * 2 * np.mean(err * x), b - lr * 2 * np.mean(err)
            with np.errstate(over="ignore", invalid="ignore"):
                if not np.isfinite(np.mean((w * x + b - y) ** 2)):
                    return step, w, b
        return steps, w, b

    assert descend(0.3, 1)[1] == 1.25 and descend(0.7, 1)[1] == 4.25       # short of 2, and past it
    losses = {lr: np.mean((descend(lr, 15)[1] * x + descend(lr, 15)[2] - y) ** 2) for lr in (0.02, 0.3, 0.7)}
    assert losses[0.3] < losses[0.7] < losses[0.02]
    blown, w, _ = descend(1.1, 5000)          # |1 − 2.5 × 1.1| = 1.75 > 1: it grows until it overflows
    assert 600 < blown < 700 and abs(w) > 1e150


# -- lesson 4: the textbook network, every quoted number worked again --------------------------

def test_lesson_4_every_number_in_the_narration_is_the_hand_computation():
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    x1, x2, t1, t2 = 0.05, 0.10, 0.01, 0.99
    z1, z2 = 0.15 * x1 + 0.20 * x2 + 0.35, 0.25 * x1 + 0.30 * x2 + 0.35
    h1, h2 = sig(z1), sig(z2)
    zo1, zo2 = 0.40 * h1 + 0.45 * h2 + 0.60, 0.50 * h1 + 0.55 * h2 + 0.60
    o1, o2 = sig(zo1), sig(zo2)
    e1, e2 = 0.5 * (t1 - o1) ** 2, 0.5 * (t2 - o2) ** 2
    d1, d2 = (o1 - t1) * o1 * (1 - o1), (o2 - t2) * o2 * (1 - o2)
    dh1 = d1 * 0.40 + d2 * 0.50
    delta_h1 = dh1 * h1 * (1 - h1)
    g5, g1 = d1 * h1, delta_h1 * x1
    quoted = [z1, z2, h1, h2, zo1, zo2, o1, o2, e1, e2, e1 + e2, o1 - t1, o1 * (1 - o1), g5, d1, d2,
              d1 * 0.40, d2 * 0.50, dh1, h1 * (1 - h1), delta_h1, g1, 0.40 - 0.5 * g5, 0.15 - 0.5 * g1]
    text = narration("backprop").replace("−", "-")
    for value in quoted:                       # six decimals, or fewer when the rest are zeros
        shown = f"{abs(value):.6f}"             # (a negative one may be written as a subtraction)
        assert shown in text or shown.rstrip("0") in text, value
    assert abs(e1 + e2 - 0.298371109) < 1e-9 and abs(g5 - 0.082167041) < 1e-9 and abs(g1 - 0.000438568) < 1e-9
    s = gdstep.open(HERE / "textbook.toml")
    s.step()
    assert s.params["2.weight"][0, 0] == pytest.approx(0.40 - 0.5 * g5, abs=1e-15)
    assert s.params["0.weight"][0, 0] == pytest.approx(0.15 - 0.5 * g1, abs=1e-15)
