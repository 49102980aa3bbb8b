"""The TUI's pure parts, without an app: what a Frame holds in each phase, the plot data,
the cell format, the tensor-view fit, the prompt history."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gdstep
from gdstep.tui.cells import WIDTH, cell
from gdstep.tui.plot_data import BoundaryMaker, curves, two_numbers
from gdstep.tui.prompt import PromptHistory, _common_prefix
from gdstep.tui.frame import Selection, as_matrix_shape, element_index
from gdstep.tui.frame_builder import FrameBuilder
from gdstep.tui.tensor_view import fit


@pytest.mark.parametrize("value, text", [
    (0.358916, "0.3589"), (-0.0226, "-0.0226"), (12.3456, "12.346"), (-99999.4, "-99999"), (0.0, "0"),
    (1.234e-4, "1.2e-4"), (-3.2e150, "-3e150"), (123456.0, "1.2e5"), (math.nan, "nan"), (-math.inf, "-inf"),
])
def test_cells_fit_in_seven_characters(value, text):
    assert cell(value) == text
    assert len(cell(value)) <= WIDTH


def test_cells_keep_the_value_to_their_precision():
    rng = np.random.default_rng(0)
    for v in rng.standard_normal(200) * 10.0 ** rng.integers(-6, 8, 200):
        assert float(cell(v)) == pytest.approx(v, rel=0.05)


def test_fit_shows_small_tensors_whole_and_windows_large_ones():
    assert fit((2, 2), 56, 8).rows >= 2 and fit((2, 2), 56, 8).cols >= 2
    whole = fit((4, 2), 56, 6)
    assert (whole.rows, whole.cols) >= (4, 2) and not whole.stacked
    wide = fit((3, 32), 56, 16)
    assert wide.stacked and wide.cols > 2            # a wide tensor stacks W, ∇W, W_new to show more columns
    big = fit((1000, 1000), 56, 10)
    assert big.rows * big.cols < 100


def test_fit_stacks_only_where_three_grids_and_their_titles_fit():
    """Stacked, W, ∇W and W_new take a title line each and a row each at least: a height
    that holds fewer lines keeps them side by side (before: a 1×4 weight at 80×24 was
    stacked in 5 lines, and its W_new row fell off the panel)."""
    for height in range(3, 12):
        for shape in [(1, 4), (1, 12), (2, 9), (3, 32), (4,)]:
            f = fit(shape, 56, height)
            rows = min(f.rows, as_matrix_shape(shape)[0])
            if f.stacked:
                assert 3 + 3 * rows <= height, (shape, height, f)
            else:
                assert 2 + rows <= height or rows == 1, (shape, height, f)


def test_matrix_view_of_any_shape():
    assert as_matrix_shape(()) == (1, 1)
    assert as_matrix_shape((4,)) == (4, 1)
    assert as_matrix_shape((8, 3, 2, 2)) == (8, 12)
    assert element_index((8, 3, 2, 2), 5, 7) == (5, 1, 1, 1)
    assert element_index((4,), 3, 0) == (3,)


def test_the_three_grids_follow_the_phases():
    s = gdstep.open("textbook")
    frames = FrameBuilder(s)
    sel = Selection("2.weight", 0, 1)
    w0 = s.params["2.weight"]
    panel = frames.build(sel).tensor
    assert [g.label for g in panel.grids] == ["W", "∇W", "W_new"]
    assert (panel.grids[0].values == w0).all() and panel.grids[1].values is None and panel.grids[2].values is None
    s.forward(); s.loss(); s.backward()
    panel = frames.build(sel).tensor
    assert (panel.grids[1].values == s.grads["2.weight"]).all() and panel.grids[2].values is None
    s.update()
    panel = frames.build(sel).tensor
    assert [g.label for g in panel.grids] == ["W_old", "∇W", "W_new"]
    assert (panel.grids[0].values == w0).all()
    assert (panel.grids[2].values == s.params["2.weight"]).all()
    assert panel.index == (0, 1) and panel.whole
    s.forward()                                       # a new iteration: the gradient is the old one's, not shown
    panel = frames.build(sel).tensor
    assert panel.grids[1].values is None


def test_arithmetic_and_batch_follow_the_phases():
    s = gdstep.open("textbook")
    frames = FrameBuilder(s)
    sel = Selection("2.weight", 0, 0)
    assert frames.build(sel).arithmetic.mode == "none"
    s.forward()
    batch = frames.build(sel).batch
    assert batch is not None and batch.phase == "forward"
    labels = [row.label for row in batch.rows]
    assert labels[:2] == ["x[0]", "x[1]"] and "a3[1]" in labels
    out = dict((row.label, row.values) for row in batch.rows)
    assert out["a3[0]"][0] == pytest.approx(0.75136507, abs=1e-8)    # the textbook's out_o1
    s.loss()
    batch = frames.build(sel).batch
    assert [row.label for row in batch.rows][-1] == "loss"
    assert batch.rows[-1].values[0] == pytest.approx(0.298371109, abs=1e-9)
    s.backward()
    a = frames.build(sel).arithmetic
    assert a.mode == "chain" and a.lines == s.chain_rule("2.weight", (0, 0)).lines
    s.update()
    a = frames.build(sel).arithmetic
    assert a.mode == "update" and a.lines == s.explain("2.weight", (0, 0)).lines


def test_events_are_reported_once():
    s = gdstep.open("overshoot")
    frames = FrameBuilder(s)
    assert frames.build(Selection()).events == ()
    s.run()
    first = frames.build(Selection()).events
    assert [e.kind for e in first] == ["breakpoint"]
    assert frames.build(Selection()).events == ()


def test_curves_epoch_means_match_the_history_incrementally():
    s = gdstep.open("spiral")
    cache: dict = {}
    for _ in range(3):
        s.step(7)
        c = curves(s.history, s.backend.layers, cache)
        expected = s.history.epoch_losses()
        assert len(c.epoch_loss) == len(expected)
        assert c.epoch_loss == pytest.approx([loss for _, loss in expected])
    assert c.x == tuple(float(i + 1) for i in range(21)) and c.loss == pytest.approx(s.history.losses)
    layers = dict((name, ys) for name, _, ys in c.grad_norms)
    norms = s.history.grad_norms[-1]
    assert layers["0 linear"][-1] == pytest.approx(math.hypot(norms["0.weight"], norms["0.bias"]))
    s.back(iterations=10)                             # a rewind shortens the history: recomputed
    c = curves(s.history, s.backend.layers, cache)
    assert c.epoch_loss == pytest.approx([loss for _, loss in s.history.epoch_losses()])


def test_long_histories_are_downsampled():
    s = gdstep.open("xor")
    s.stop_when = None
    s.step(1000)
    c = curves(s.history, s.backend.layers, {})
    assert c.n == 1000 and len(c.x) <= 401 and c.x[-1] == 1000.0


def test_decision_boundary_agrees_with_the_model():
    s = gdstep.open("spiral")
    s.epoch(5)
    maker = BoundaryMaker(s)
    b = maker.compute(20, 10)
    assert b.grid_class.shape == (200,) and b.classes == 3
    predicted = s.backend.predict(np.column_stack([b.grid_x, b.grid_y])).argmax(axis=1)
    assert (predicted == b.grid_class).all()
    assert maker.compute(20, 10) is b                  # nothing changed: the same object
    assert not BoundaryMaker.supported(gdstep.open("linear"))


def test_two_numbers_names_the_two_trainable_numbers():
    assert two_numbers(gdstep.open("linear")) == (("0.weight", (0, 0)), ("0.bias", (0,)))
    assert two_numbers(gdstep.open("xor")) is None


def test_prompt_history_moves_back_and_forward():
    h = PromptHistory()
    assert not h.back("draft")
    h.add("step 3")
    h.add("run until loss < 0.1")
    h.add("run until loss < 0.1")
    assert h.lines == ["step 3", "run until loss < 0.1"]
    assert h.back("typing") and h.current == "run until loss < 0.1"
    assert h.back("") and h.current == "step 3"
    assert not h.back("")
    assert h.forward() and h.forward() and h.current == "typing"
    assert not h.forward()
    assert _common_prefix(["set lr", "set optimizer"]) == "set "


def test_frames_are_built_without_textual():
    """What the screen shows is plain data: building it needs no UI."""
    import subprocess
    import sys
    code = ("import sys, gdstep\n"
            "from gdstep.tui.frame_builder import FrameBuilder\n"
            "from gdstep.tui.frame import Selection\n"
            "s = gdstep.open('spiral'); s.step(3)\n"
            "frame = FrameBuilder(s).build(Selection('0.weight', 1, 1))\n"
            "assert frame.tensor.index == (1, 1) and frame.boundary is not None and frame.curves.n == 3\n"
            "print(','.join(sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
