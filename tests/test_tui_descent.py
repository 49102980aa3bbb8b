"""The descent pictures in the app: the half-block landscape, its colour bar and marks,
the lanes' curves, the line plot, and keys answered while a landscape computes."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from conftest import command, settle, until

import gdstep
from gdstep.landscape_grid import never, stop_if_asked
from gdstep.tui.app import make_app
from gdstep.tui.heatmap import Mark, Scale, cell_of, colour_bar, picture


def _styles(text):
    """A (line, col) → (glyph, fg hex, bg hex) map read from the Text's spans."""
    out = {}
    starts = {}
    line = col = 0
    for k, ch in enumerate(text.plain):
        if ch == "\n":
            line, col = line + 1, 0
            continue
        starts[k] = (line, col, ch)
        col += 1
    for span in text.spans:
        for k in range(span.start, span.end):
            if k in starts:
                line, col, ch = starts[k]
                out[(line, col)] = (ch, span.style.color.name if span.style.color else None,
                                    span.style.bgcolor.name if span.style.bgcolor else None)
    return out


def _hex(rgb):
    return "#%02x%02x%02x" % tuple(rgb)


def test_half_blocks_show_the_upper_cell_in_front_and_the_lower_behind():
    # four rows of β, increasing loss with β: the top of the picture is the largest β
    loss = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    scale = Scale((0.0, 0.5, 1.5, 2.5, 3.0), False)             # bands 0, 1, 2, 3 for the rows
    text = picture(loss, np.array([0.0, 1.0]), np.array([0.0, 1.0, 2.0, 3.0]), 2, 2, scale, contours=False)
    cells = _styles(text)
    assert text.plain == "▀▀\n▀▀"
    for col in range(2):
        assert cells[(0, col)][1:] == (_hex(scale.colour(3)), _hex(scale.colour(2)))     # β = 3 over β = 2
        assert cells[(1, col)][1:] == (_hex(scale.colour(1)), _hex(scale.colour(0)))     # β = 1 over β = 0
    assert scale.colour(0) != scale.colour(3)


def test_contours_lighten_the_cells_where_the_band_changes():
    loss = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 3.0], [3.0, 3.0]])
    scale = Scale.of(loss, bands=2)
    plain = _styles(picture(loss, np.arange(2.0), np.arange(4.0), 2, 2, scale, contours=False))
    drawn = _styles(picture(loss, np.arange(2.0), np.arange(4.0), 2, 2, scale))
    # half-rows from the top: β = 3, 2 (band 1), β = 1, 0 (band 0); β = 2 borders band 0 below it
    assert drawn[(0, 0)][1] == plain[(0, 0)][1]                  # β = 3: inside its band, unchanged
    assert drawn[(0, 0)][2] != plain[(0, 0)][2]                  # β = 2: the contour, lightened
    assert drawn[(1, 0)] == plain[(1, 0)]                        # β = 1, 0: inside band 0


def test_levels_and_colour_bar_run_from_the_grids_min_to_its_max():
    rng = np.random.default_rng(0)
    loss = rng.uniform(0.3, 7.0, size=(9, 11))
    scale = Scale.of(loss)
    assert scale.levels[0] == loss.min() and scale.levels[-1] == loss.max()
    assert list(scale.levels) == sorted(scale.levels) and len(scale.levels) == 9
    bar = colour_bar(scale, 30).plain
    assert bar.startswith(f"{loss.min():.3g} ") and bar.endswith(f" {loss.max():.3g}")
    wide = Scale.of(np.array([[1e-3, 1.0], [10.0, 100.0]]))       # five decades: log levels
    assert wide.log and wide.levels[0] == 1e-3 and wide.levels[-1] == 100.0
    assert np.allclose(np.diff(np.log10(wide.levels)), 5 / 8)


def test_path_marks_sit_at_the_cells_of_their_coordinates():
    loss = np.zeros((5, 5))
    alphas = betas = np.linspace(0.0, 1.0, 5)
    path = np.array([[0.0, 0.0], [0.5, 1.0], [1.0, 0.25]])
    text = picture(loss, alphas, betas, 2, 5, Scale.of(loss), (Mark(path, (255, 255, 255), "•", "◆"),))
    rows = text.plain.split("\n")
    # 4 half-rows over β from 1 (top) to 0 (bottom); 5 columns over α from 0 to 1
    assert rows[1][0] == "•"                   # (0, 0): bottom half-row 3, line 1, column 0
    assert rows[0][2] == "•"                   # (0.5, 1): half-row 0, line 0, column 2
    assert rows[1][4] == "◆"                   # now (1, 0.25): half-row round(2.25) = 2, line 1, column 4
    assert sum(row.count("•") + row.count("◆") for row in rows) == 3
    assert rows[0][1] == "·" or rows[1][1] == "·"    # the segments between the points are dotted
    assert cell_of((2.0, 0.0), alphas, betas, 4, 5) is None     # off the map: not drawn


def test_lanes_curves_in_the_frame_are_the_lanes_losses():
    from gdstep.tui.frame import Selection
    from gdstep.tui.frame_builder import FrameBuilder

    s = gdstep.open("spiral")
    for _ in range(5):
        s.step()
    lanes = s.lanes(["sgd lr=0.1", "adam lr=0.01"])
    lanes.run(7)
    frame = FrameBuilder(s).build(Selection())
    assert [c.label for c in frame.curves.lanes] == ["1: sgd lr=0.1", "2: adam lr=0.01"]
    for curve, lane in zip(frame.curves.lanes, lanes.lanes):
        losses = lane.session.history.losses
        assert len(losses) == 12
        assert curve.loss == tuple(losses[4:])           # from the session's last loss before the fork
        assert curve.x == tuple(float(i) for i in range(5, 13))
    assert frame.curves.loss == tuple(s.history.losses)
    s.open_lanes.close()
    assert FrameBuilder(s).build(Selection()).curves.lanes == ()


def test_lanes_paths_lie_on_their_landscape():
    from gdstep.tui.descent_data import FINE, make_landscape

    s = gdstep.open("spiral")
    for _ in range(4):
        s.step()
    lanes = s.lanes(["sgd lr=0.5", "adam lr=0.05"])
    lanes.run(6)
    p = make_landscape(s, "pca", FINE)
    assert p.landscape.note.startswith("PCA of the lanes' paths") and len(p.lanes) == 2
    for lane_path, lane in zip(p.lanes, lanes.lanes):
        assert lane_path.points.shape == (7, 2)           # the fork and 6 steps
        assert np.allclose(lane_path.points[0], 0.0, atol=1e-9)     # each starts at the fork point
        # the plane holds both lanes' paths: the weights at the projected point are the lane's
        a, b = lane_path.points[-1]
        w = p.landscape.weights_at(a, b)
        assert p.landscape.loss.shape == (40, 40)
        assert np.linalg.norm(np.concatenate([(w[n] - lane.session.params[n]).ravel() for n in w])) < \
            0.5 * np.linalg.norm(np.concatenate([(p.landscape.origin[n] - lane.session.params[n]).ravel() for n in w]))


async def test_the_landscape_plot_draws_the_true_surface_and_cycles_directions():
    from gdstep.tui.landscape_plot import LandscapePlot

    s = gdstep.open("linear")
    app = make_app(s, timestamps=False)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        for _ in range(5):
            await pilot.press("s")
            await settle(pilot)
        plot = app.query_one(LandscapePlot)
        await until(lambda: plot.picture is not None and plot.picture.fine and plot.picture.landscape.steps[-1] == 5)
        ls = plot.picture.landscape
        assert ls.directions == "parameters" and "loss surface" in str(plot.border_title)
        assert np.allclose(ls.path[-1], [s.params["0.weight"][0, 0], s.params["0.bias"][0]])
        rendered = plot.render()
        assert "▀" in rendered.renderables[0].plain and "◆" in rendered.renderables[0].plain
        await command(pilot, "landscape random")
        await settle(pilot)
        assert app.driver.directions == "random"
        spiral = make_app(gdstep.open("spiral"), timestamps=False)
    async with spiral.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("v")                       # boundary → landscape
        await settle(pilot)
        plot = spiral.query_one(LandscapePlot)
        await until(lambda: plot.picture is not None and plot.picture.fine)
        assert plot.picture.landscape.directions == "random" and plot.picture.fallback == "pca"
        await pilot.press("d")                       # pca → random
        await settle(pilot)
        await pilot.press("d")                       # random → gradient
        await settle(pilot)
        await until(lambda: plot.picture.landscape.directions == "gradient" and plot.picture.fine)
        assert "landscape gradient" in str(plot.border_title)


async def _line_plot(pilot):
    """The lower plot switched from the landscape to the line, once it has drawn."""
    from gdstep.tui.plots import LinePlot

    await settle(pilot)
    await pilot.press("v")                          # landscape → line
    await settle(pilot)
    plot = pilot.app.query_one(LinePlot)
    await until(lambda: plot.picture is not None)
    return plot


async def test_the_line_plot_marks_the_step():
    s = gdstep.open("overshoot")
    app = make_app(s, timestamps=False)
    async with app.run_test(size=(120, 36)) as pilot:
        plot = await _line_plot(pilot)
        line = plot.picture.line
        assert line.t.min() == -0.5 and line.t.max() == 3.0 and 1.0 in line.t
        twin = s.fork()
        twin.step()
        assert line.at_one == pytest.approx(twin.backend.loss_at(*s.current_batch()[1:], twin.params)) or \
            line.at_one == pytest.approx(line.loss[line.t == 1.0][0])
        assert "→" in str(plot.border_subtitle) and "t=1" in str(plot.border_title)


async def test_the_line_plot_of_an_overflowing_update_says_where_its_loss_is_finite():
    """overshoot near its overflow: the line along the next update is inf for most t. The
    plot keeps the whole t axis, and its subtitle says where the loss is finite (before: a
    finite curve drawn over 0…1 alone under "inf → inf (nan)")."""
    import numpy as np

    from gdstep.landscape import Line
    from gdstep.tui.descent_data import LinePicture

    app = make_app(gdstep.open("overshoot"), timestamps=False)
    async with app.run_test(size=(120, 36)) as pilot:
        plot = await _line_plot(pilot)
        t = np.linspace(-0.5, 3.0, 36)
        loss = np.where((t > 0.05) & (t < 0.65), 1e300, np.inf)
        plot.picture = LinePicture(Line(t, loss, 631, float("inf"), float("inf")))
        await pilot.pause()
        finite = t[np.isfinite(loss)]
        assert f"finite only for t in [{finite[0]:.3g}, {finite[-1]:.3g}]" in str(plot.border_subtitle)
        loss[20] = 1e300                            # finite in two stretches: counted
        plot.picture = LinePicture(Line(t, loss.copy(), 631, float("inf"), float("inf")))
        await pilot.pause()
        assert f"finite at {int(np.isfinite(loss).sum())} of 36 points" in str(plot.border_subtitle)


async def test_a_session_that_cannot_be_copied_opens_on_the_gradient_norms_not_an_unavailable_landscape():
    """A Python scenario (lesson 12's) has no copies for the landscape and the line: the
    lower plot opens on the gradient norms, and the landscape, switched to, says why it is
    not drawn in its first words (before: the app opened on that message)."""
    from gdstep.tui.health_plot import HealthPlot

    s = gdstep.open("scenarios/lesson12_high_dimensions.py")
    app = make_app(s, timestamps=False)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        assert app.query_one("#plot-switcher").current == "health-plot"
        assert app._plot_ids[-2:] == ["landscape-plot", "line-plot"]
        assert isinstance(app.query_one("#health-plot"), HealthPlot)
        with pytest.raises(gdstep.GdstepError, match="^landscape: not drawn for a Python scenario"):
            s.landscape()


async def test_keys_are_answered_while_a_landscape_computes():
    """The landscape is held on the worker until the keys are answered: no clock, so a busy
    machine cannot make it pass or fail."""
    import threading

    s = gdstep.open("linear")
    real = s.landscape
    started, release, waited = threading.Event(), threading.Event(), threading.Event()

    def held(*args, **kwargs):
        started.set()
        release.wait(60)
        waited.set()
        return real(*args, **kwargs)

    s.landscape = held
    app = make_app(s, timestamps=False)
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await until(started.is_set)                  # the landscape is the plot shown: it computes
            switcher = app.query_one("#plot-switcher")
            await pilot.press("v")
            assert switcher.current == "line-plot"
            await pilot.press("question_mark")
            assert app.screen.__class__.__name__ == "HelpScreen"
            # both keys answered while the landscape still computes on the worker
            assert not waited.is_set()
            assert app.driver.current is not None and app.driver.current.kind == "picture"
            release.set()
            await pilot.press("escape")
            await settle(pilot)
    finally:
        release.set()


async def test_a_key_that_needs_the_worker_gives_up_a_landscape_computing_and_it_is_made_after():
    """shift+down needs a new frame from the worker, which is computing a landscape: the
    landscape is given up at its next grid point (here it would never end), the key is
    answered, and the landscape is computed again once the worker is free."""
    from gdstep.tui.landscape_plot import LandscapePlot
    from gdstep.tui.tensor_view import TensorView

    import threading

    s = gdstep.open("spiral")
    s.step(5)
    real = s.landscape
    started = []
    pressed, gave_up = threading.Event(), threading.Event()

    def slow(*args, stop=None, **kwargs):
        started.append(True)
        if not pressed.is_set():                   # a grid that ends only when given up, asking between points
            end = time.monotonic() + 60
            while time.monotonic() < end:
                try:
                    stop_if_asked(stop or never)
                except BaseException:
                    if pressed.is_set():
                        gave_up.set()
                    raise
                time.sleep(0.002)
        return real(*args, stop=stop, **kwargs)

    s.landscape = slow
    app = make_app(s, timestamps=False)
    async with app.run_test(size=(120, 36)) as pilot:
        while app.query_one("#plot-switcher").current != "landscape-plot":
            await pilot.press("v")
        await until(lambda: app.driver.current is not None and app.driver.current.kind == "picture")
        tensor = app.query_one(TensorView)
        row = tensor.panel.index[0]
        pressed.set()
        app.simulate_key("shift+down")
        await until(lambda: tensor.panel.index[0] == row + 1, timeout=30)
        assert gave_up.is_set()                        # answered by giving the landscape up, not after it
        plot = app.query_one(LandscapePlot)
        await until(lambda: plot.picture is not None and plot.picture.landscape is not None, timeout=30)
        assert len(started) >= 2                       # computed again after the key


async def test_usable_at_80_by_24_with_the_landscape():
    from gdstep.tui.landscape_plot import LandscapePlot

    s = gdstep.open("linear")
    app = make_app(s, timestamps=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("s", "s", "s")
        await settle(pilot)
        await pilot.press("p")                       # the plots in place of the centre
        await settle(pilot)
        plot = app.query_one(LandscapePlot)
        await until(lambda: plot.picture is not None and plot.picture.fine)
        await pilot.pause()
        assert plot.region.width > 30 and plot.region.height >= 8
        heat = plot.render().renderables[0].plain.split("\n")
        assert len(heat) >= 2 and all(len(line) == plot.content_size.width for line in heat)
        await pilot.press("v", "v", "v")               # line, gradient norm, back to the landscape
        await settle(pilot)
        assert app.query_one("#plot-switcher").current == "landscape-plot"


def _braille(line: str) -> int:
    return sum(0x2800 <= ord(ch) <= 0x28FF for ch in line)


@pytest.mark.asyncio
async def test_the_lanes_legend_sits_above_the_curves_and_lanes_at_the_start_draw():
    from gdstep.tui.plots import LossPlot

    app = make_app(gdstep.open("spiral"), timestamps=False)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot)
        await command(pilot, "run max 40")
        await command(pilot, "lanes sgd lr=0.1 | sgd lr=0.1 momentum=0.9 | rmsprop lr=0.01 | adam lr=0.01")
        await command(pilot, "lanes run 60")
        await settle(pilot)
        plot = app.query_one(LossPlot)
        lines = plot.render().plain.split("\n")
        # 5 legend rows would push the curves into the lower third of a 14-line canvas: the
        # legend goes under the plot instead, each lane's settings in full, and the axis fits the data
        assert "session" in plot.border_title
        legend = [k for k, line in enumerate(lines) if any(key in line for key in ("1: sgd", ": rmsprop", ": adam"))]
        assert legend and min(legend) > max(k for k, line in enumerate(lines) if "┘" in line)
        text = "\n".join(lines)
        for key in ("1: sgd lr=0.1", "2: sgd lr=0.1 mom=0.9", "3: rmsprop lr=0.01", "4: adam lr=0.01"):
            assert key in text
        ticks = [float(m.group(1)) for line in lines if (m := re.match(r"\s*(-?[\d.]+)┤", line))]
        values = list(plot.curves.loss) + [v for lane in plot.curves.lanes for v in lane.loss]
        span = max(values) - min(values)
        assert max(values) <= max(ticks) + 0.01 <= max(values) + 0.15 * span, (ticks, max(values))
        assert "4 lanes at 100 iterations · session at 40" == plot.border_subtitle
        assert sum(_braille(line) for line in lines) > 40                 # the curves are drawn
    app = make_app(gdstep.open("two_minima"), timestamps=False)
    async with app.run_test(size=(120, 36)) as pilot:              # lanes forked at step 0: no session curve
        await settle(pilot)
        await command(pilot, "lanes seed=0 | seed=1")
        await command(pilot, "lanes run 5")
        await settle(pilot)
        plot = app.query_one(LossPlot)
        text = plot.render().plain
        assert "1: seed=0" in text and "2: seed=1" in text
        assert plot.border_subtitle.startswith("2 lanes at 5 iterations")
        assert sum(_braille(line) for line in plot.render().plain.split("\n")) > 5


def test_resample_interpolates_between_grid_points_and_keeps_non_finite_ones():
    from gdstep.tui.heatmap import resample

    a, b = np.linspace(-1, 2, 5), np.linspace(0, 1, 4)
    grid = 3 * a[None, :] - 2 * b[:, None] + 0.5             # a plane: interpolation reproduces it
    out = resample(grid, 7, 9)
    aa, bb = np.linspace(-1, 2, 9), np.linspace(1, 0, 7)     # row 0 is the top (the largest β)
    np.testing.assert_allclose(out, 3 * aa[None, :] - 2 * bb[:, None] + 0.5, atol=1e-12)
    grid[1, 2] = np.inf
    out = resample(grid, 7, 9)
    assert np.isinf(out).any() and not np.isnan(out).any()
    assert np.isfinite(out[0]).all() and np.isfinite(out[:, 0]).all()     # far from the bad point: finite


def test_a_landscape_axis_too_long_for_its_line_keeps_its_numbers_whole():
    from gdstep.tui.landscape_plot import axis_text

    assert axis_text("→", "0.weight[0,0]", -1.2, 3.4, 40) == "→ 0.weight[0,0] -1.2 … 3.4"
    text = axis_text("→", "0.weight[0,0]", -1.2234e50, 1.2234e50, 30)
    assert text[:30].startswith("→ -1.22e+50 … 1.22e+50")           # what shows in 30 columns
