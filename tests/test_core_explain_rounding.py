"""`explain` in float32 says when the dtype's rounding changed or swallowed the step: the
printed arithmetic is in float64, the parameter is not."""

from __future__ import annotations

import numpy as np
import pytest

import gdstep
from gdstep.scenario import parse_scenario

ONE_WEIGHT = '''
name = "one weight"
[data]
kind = "inline"
x = [[1.0]]
y = [[0.0]]
[model]
layers = [ {{ linear = 1, bias = false }} ]
dtype = "{dtype}"
[init]
"0.weight" = [[{w}]]
[loss]
kind = "mse"
[optimizer]
kind = "sgd"
lr = {lr}
'''


def one_step(w: float, lr: float, dtype: str = "float32"):
    s = gdstep.open(parse_scenario(ONE_WEIGHT.format(w=w, lr=lr, dtype=dtype)))
    s.step()
    return s, s.explain("0.weight", (0, 0))


def test_a_step_float32_cannot_represent_is_called_absorbed():
    s, e = one_step(4096.0, 6.1e-10)                  # ΔW = −η·2W = −5e-6, far below half an ulp of 4096
    w32 = np.float32(4096.0)
    assert w32 - np.float32(6.1e-10) * np.float32(8192.0) == w32      # float32 itself: no change
    assert s.params["0.weight"][0, 0] == 4096.0
    assert e.note is not None and "absorbed by float32 rounding" in e.note
    assert e.note in e.lines


def test_a_step_float32_rounds_is_shown_with_the_applied_delta():
    s, e = one_step(4096.0, 3e-4 / 8192.0)           # ΔW = −3e-4; float32 near 4096 is spaced 2.44e-4 below it
    applied = float(np.float32(4096.0) - np.float32(3e-4 / 8192.0) * np.float32(8192.0)) - 4096.0
    assert applied == pytest.approx(-2.44140625e-4)
    assert s.params["0.weight"][0, 0] - 4096.0 == applied
    assert e.note is not None and f"applied ΔW is {applied:.6g}" in e.note and "not -0.0003" in e.note


def test_float64_and_ordinary_float32_steps_carry_no_note():
    assert one_step(0.5, 0.1, "float64")[1].note is None
    assert one_step(0.5, 0.1, "float32")[1].note is None
