"""The landscape of the real network and the line along the next update, checked against
losses computed directly (by hand in numpy) at the same weights."""

from __future__ import annotations

import numpy as np
import pytest

import gdstep
from gdstep.errors import GdstepError
from gdstep.scenario import parse_scenario

TWINS = '''
name = "twin features"
seed = 3
[data]
kind = "inline"
x = [[0.1, 0.1], [0.5, 0.5], [-0.4, -0.4], [0.9, 0.9], [0.3, 0.3], [-0.8, -0.8]]
y = [[0.3], [1.0], [-0.5], [2.0], [0.4], [-1.2]]
[model]
layers = [ { linear = 1 } ]
[init]
"0.weight" = [[0.7, -0.2]]
"0.bias" = [0.5]
[loss]
kind = "mse"
[optimizer]
kind = "sgd"
lr = 0.2
[training]
shuffle = false
'''


def mse_by_hand(x, y, w, b):
    return float((((x @ w.T + b) - y) ** 2).mean())


def test_landscape_values_are_the_loss_at_those_weights():
    s = gdstep.open("linear")
    s.step(8)
    x, y = s.backend.x, s.backend.y
    for directions in ("pca", "gradient"):
        land = s.landscape(directions, resolution=(7, 5))
        assert land.loss.shape == (5, 7)
        for i, j in [(0, 0), (2, 3), (4, 6), (1, 5)]:
            w = land.weights_at(land.alphas[j], land.betas[i])
            assert land.loss[i, j] == pytest.approx(mse_by_hand(x, y, w["0.weight"], w["0.bias"]), rel=1e-12)


def test_with_two_trainable_numbers_the_path_is_the_recorded_parameters():
    s = gdstep.open("linear")
    recorded = []
    for _ in range(12):
        recorded.append((s.params["0.weight"][0, 0], s.params["0.bias"][0]))
        s.step()
    recorded.append((s.params["0.weight"][0, 0], s.params["0.bias"][0]))
    land = s.landscape(path=12)
    assert land.directions == "parameters" and land.axes == ("0.weight[0,0]", "0.bias[0]")
    np.testing.assert_array_equal(land.path, np.array(recorded))
    assert land.steps == tuple(range(13))
    lo, hi = land.path.min(axis=0), land.path.max(axis=0)
    assert land.alphas[0] <= lo[0] and land.alphas[-1] >= hi[0] and land.betas[0] <= lo[1] and land.betas[-1] >= hi[1]
    w = land.weights_at(land.alphas[3], land.betas[2])               # the axes are the parameters themselves
    assert w["0.weight"][0, 0] == land.alphas[3] and w["0.bias"][0] == land.betas[2]


def test_a_diverged_path_beyond_the_grid_is_said_off_the_plot():
    """overshoot's lr 1.2 run to its overflow: the weights pass 1e150, where the grid stops,
    so the plot cannot hold them; the landscape says how many points are off it, ◆now
    among them, and where the last one is (before: nothing said so)."""
    s = gdstep.open("overshoot")
    s.breakpoints.dismiss(1)
    s.run()
    w, b = s.params["0.weight"][0, 0], s.params["0.bias"][0]
    land = s.landscape(path=32)
    beyond = int((~((land.path[:, 0] >= land.alphas[0]) & (land.path[:, 0] <= land.alphas[-1])
                    & (land.path[:, 1] >= land.betas[0]) & (land.path[:, 1] <= land.betas[-1]))).sum())
    assert abs(w) > land.alphas[-1] and beyond > 0
    assert land.off_plot == (f"off the plot: {beyond} of {len(land.path)} path points (◆now among them), the "
                             f"last at ({w:.3g}, {b:.3g}) (the grid stops at ±1e150)")
    fine = gdstep.open("overshoot")
    fine.step(5)
    assert fine.landscape().off_plot == ""


def test_pca_directions_reproduce_a_path_that_lies_in_a_plane():
    """Two identical features: w₁ − w₂ never changes, so the path of (w₁, w₂, b) lies in a plane."""
    s = gdstep.open(parse_scenario(TWINS))
    points = []
    for _ in range(15):
        points.append(np.concatenate([s.params["0.weight"].ravel(), s.params["0.bias"]]))
        s.step()
    points.append(np.concatenate([s.params["0.weight"].ravel(), s.params["0.bias"]]))
    land = s.landscape("pca", path=15)
    assert "100.0%" in land.note
    for (a, b), point in zip(land.path, points):
        w = land.weights_at(a, b)
        np.testing.assert_allclose(np.concatenate([w["0.weight"].ravel(), w["0.bias"]]), point, atol=1e-12)


def test_random_directions_are_filter_normalised_and_leave_biases_out():
    s = gdstep.open("spiral")
    s.step(5)
    land = s.landscape("random", resolution=(3, 3), seed=4)
    for name, d in land.d1.items():
        w = s.params[name]
        if w.ndim == 1:
            assert not d.any()
        else:
            np.testing.assert_allclose(np.linalg.norm(d, axis=1), np.linalg.norm(w, axis=1), rtol=1e-12)
    assert land.path.shape == (6, 2)


def test_the_line_at_one_is_the_loss_after_the_actual_update_on_that_batch():
    s = gdstep.open("spiral")
    s.step(7)
    s.run_to("backward")
    ln = s.line(t=(-0.5, 3.0), points=30)
    assert s.phase_due == "update"                 # the session itself did not move
    _, x, y = s.current_batch()
    before = s.backend.loss_value(x, y)
    s.update()
    after = s.backend.loss_value(x, y)
    assert ln.at_zero == before and ln.at_one == after
    assert ln.t[0] == -0.5 and ln.t[-1] == 3.0 and 1.0 in ln.t


def test_the_line_from_an_iteration_boundary_is_the_next_update():
    s = gdstep.open("overshoot")
    s.step(2)
    ln = s.line()
    s.forward(), s.loss(), s.backward()           # phase by phase: overshoot's breakpoint would stop run_to
    _, x, y = s.current_batch()
    s.update()
    assert ln.at_one == s.backend.loss_value(x, y) and ln.step == s.record("update").step


def test_bad_arguments_are_one_line():
    s = gdstep.open("xor")
    for call, message in [(lambda: s.landscape("sideways"), "directions"), (lambda: s.landscape(data="half"), "data"),
                          (lambda: s.landscape("pca"), "fewer than 3"), (lambda: s.landscape(resolution=(1, 9)), "resolution"),
                          (lambda: s.line(t=(2, 3)), "around 1"), (lambda: s.landscape("random", span=float("nan")), "span"),
                          (lambda: s.landscape("random", span=0), "span"), (lambda: s.landscape("random", span=-1), "span")]:
        with pytest.raises(GdstepError, match=message):
            call()


TWO = '''
name = "two numbers"
seed = 0
[data]
kind = "inline"
x = [[1.0], [2.0], [-1.0], [0.5]]
y = [[2.0], [3.5], [-1.0], [1.2]]
[model]
layers = [ { linear = 1 } ]
[init]
"0.weight" = [[3.0]]
"0.bias" = [4.0]
[loss]
kind = "mse"
[optimizer]
kind = "sgd"
lr = LR
[training]
shuffle = false
'''


def test_with_no_path_yet_the_true_surface_spans_the_weights_magnitude():
    s = gdstep.open(parse_scenario(TWO.replace("LR", "0.1")))
    land = s.landscape(resolution=(9, 9))                              # step 0: the path is one point
    assert land.directions == "parameters"
    reach = np.hypot(3.0, 4.0)                                          # ‖W‖ = 5
    assert land.alphas[0] <= 3.0 - reach and land.alphas[-1] >= 3.0 + reach
    assert land.betas[0] <= 4.0 - reach and land.betas[-1] >= 4.0 + reach
    # the least-squares answer (w, b) = solved by hand is inside the plot: the bowl is visible
    x = np.array([1.0, 2.0, -1.0, 0.5])
    y = np.array([2.0, 3.5, -1.0, 1.2])
    w, b = np.linalg.lstsq(np.column_stack([x, np.ones(4)]), y, rcond=None)[0]
    assert land.alphas[0] < w < land.alphas[-1] and land.betas[0] < b < land.betas[-1]
    s.step()                                                            # a short path: still the bowl's scale
    land = s.landscape(resolution=(9, 9))
    assert land.alphas[-1] - land.alphas[0] >= 0.1 * reach and land.betas[-1] - land.betas[0] >= 0.1 * reach


def test_a_diverged_run_still_has_a_finite_landscape_around_its_path():
    s = gdstep.open(parse_scenario(TWO.replace("LR", "40")))
    while abs(s.params["0.bias"][0]) < 1e50 and s.step_count < 300:
        s.step()
    assert abs(s.params["0.bias"][0]) >= 1e50 and np.isfinite(s.params["0.bias"][0])
    land = s.landscape(resolution=(5, 5))
    assert np.isfinite(land.alphas).all() and np.isfinite(land.betas).all()
    assert land.betas[0] <= s.params["0.bias"][0] <= land.betas[-1]
