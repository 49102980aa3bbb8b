"""The health plot: its numbers (‖ΔW‖/‖W‖ per layer, histograms) checked against numpy on
recorded parameters, and the plot in the app's cycle with the 1e-3 rule of thumb drawn."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import command, settle

import gdstep
from gdstep.tui.app import make_app
from gdstep.tui.health_data import health, ratios


def test_layer_ratios_equal_numpy_on_recorded_params():
    s = gdstep.open("spiral")
    points = [s.params]
    for _ in range(30):
        s.step()
        points.append(s.params)
    got = {name.split()[0]: (xs, ys) for name, xs, ys in ratios(s.history, s.backend.layers)}
    assert set(got) == {"0", "2"}
    for layer in ("0", "2"):
        names = (f"{layer}.weight", f"{layer}.bias")
        want = [np.sqrt(sum(np.sum((b[n] - a[n]) ** 2) for n in names) / sum(np.sum(a[n] ** 2) for n in names))
                for a, b in zip(points, points[1:])]
        xs, ys = got[layer]
        assert xs == tuple(float(i) for i in range(1, 31))
        np.testing.assert_allclose(ys, want, rtol=1e-12)


def test_histograms_count_every_value_of_the_selected_parameter_and_its_gradient():
    s = gdstep.open("spiral")
    s.step(3)
    s.run_to("backward")
    h = health(s, "2.weight")
    w, g = s.params["2.weight"], s.grads["2.weight"]
    assert h.name == "2.weight" and h.weights.size == w.size == int(h.weights.counts.sum())
    assert h.weights.edges[0] == w.min() and h.weights.edges[-1] == w.max()
    assert int(h.grads.counts.sum()) == g.size and h.grads.edges[-1] == g.max()
    below = int(np.sum(w < h.weights.edges[1]))                 # the first bin, counted here
    assert h.weights.counts[0] == below
    assert health(s, None, layer="2").name == "2.weight"       # a selected layer: its weight
    fresh = health(gdstep.open("spiral"), "0.bias")
    assert fresh.grads is None and fresh.note == "no gradient yet" and fresh.updates == 0


@pytest.mark.asyncio
async def test_health_plot_is_in_the_plot_cycle_with_the_rule_of_thumb():
    from gdstep.tui.health_plot import HealthPlot

    app = make_app(gdstep.open("spiral"), timestamps=False)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot)
        await command(pilot, "run max 60")
        await settle(pilot)
        for _ in range(3):                       # boundary → landscape → line → health
            await pilot.press("v")
            await settle(pilot)
        assert app.query_one("#plot-switcher").current == "health-plot"
        plot = app.query_one(HealthPlot)
        assert plot.health is not None and plot.health.updates == 60
        assert [name for name, _, _ in plot.health.ratios] == ["0 linear", "2 linear"]
        text = plot.render().plain if hasattr(plot.render(), "plain") else str(plot.render())
        assert "rule of thumb" in text and "1e-3" in text and "‖ΔW‖/‖W‖" in text
        assert plot.health.weights is not None and plot.health.grads is not None


def test_histograms_of_values_alike_or_near_the_float_limits_still_bin():
    from gdstep.tui.health_data import histogram

    for values in ([1e150, 1e150], [1.7e308, -1.7e308, 0.0], [5.0] * 7, [np.inf, 2.0, np.nan, 2.0]):
        h = histogram("W", np.array(values))
        finite = [v for v in values if np.isfinite(v)]
        assert int(h.counts.sum()) == len(finite) and np.isfinite(h.edges).all()
        assert h.edges[0] <= min(finite) <= max(finite) <= h.edges[-1]
    assert histogram("W", np.array([np.nan])) is None


def test_health_after_the_overshoot_overflows_is_drawn_not_raised():
    s = gdstep.open("overshoot")
    s.remove_breakpoint(1)
    s.run()                                             # to the non-finite pause, weights near 1e150
    h = health(s, "0.weight")
    assert h.weights is not None and h.updates == s.step_count and not h.note


def test_a_long_runs_unmeasured_updates_are_left_out_of_the_plot_and_counted():
    s = gdstep.open("spiral")
    s.run(max_steps=35)                     # measures updates 1-10, then 11, 21, 31 (update_norms.EVERY)
    got = ratios(s.history, s.backend.layers)
    assert len(got) == 2
    for _, xs, ys in got:
        assert xs == tuple(float(i) for i in [*range(1, 11), 11, 21, 31])
        assert np.isfinite(ys).all()
    h = health(s, None)                     # its histograms replay the last iteration from a checkpoint,
    assert h.updates == 35                  # and that replay measures the updates it makes again
    assert 13 <= h.measured == sum(1 for x in h.ratios[0][1]) <= 35


@pytest.mark.asyncio
async def test_the_health_plot_says_how_many_updates_a_long_run_measured():
    from gdstep.tui.health_plot import HealthPlot

    s = gdstep.open("spiral")
    # a checkpoint every 16 steps, however quick they are: with the grid coarsened by the
    # clock (to 512 when a step takes under ~0.1 ms), the frame's replay of the last
    # iteration ran from step 0 and measured every update again, now and then
    s.checkpoint_seconds = 0
    s.run(max_steps=400)                         # one run: its first ten updates, then every tenth
    app = make_app(s, timestamps=False)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot)
        for _ in range(3):                       # boundary → landscape → line → health
            await pilot.press("v")
            await settle(pilot)
        plot = app.query_one(HealthPlot)
        assert plot.health.updates == 400 and 49 <= plot.health.measured < 400   # and those the frame replayed
        assert f"‖ΔW‖ of {plot.health.measured} (a run measures every 10th)" in str(plot.border_subtitle)
