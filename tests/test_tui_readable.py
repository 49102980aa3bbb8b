"""What a newcomer reads at 80, 100, 120 and 200 columns: the footer's keys each apart from the
next, the landscape's lane key whole, and log axes labelled with the values themselves."""

from __future__ import annotations

import html
import math
import re

import numpy as np
import pytest
from conftest import command, settle, until

import gdstep
from gdstep.script import parse_script
from gdstep.tui.app import make_app
from gdstep.tui.footer import KeyFooter
from gdstep.tui.lesson_app import make_lesson_app


def _screen_lines(app) -> list[str]:
    """The screen as text, one string a line, read from the app's own SVG screenshot (each
    run of text placed at its column: runs of blanks are not written as text)."""
    svg = app.export_screenshot()
    lines = [[" "] * app.size.width for _ in range(app.size.height)]
    for x, length, row, text in re.findall(r'<text [^>]*x="([\d.]+)" y="[\d.]+" textLength="([\d.]+)" '
                                           r'clip-path="url\(#terminal-\d+-line-(\d+)\)">([^<]*)</text>', svg):
        text = html.unescape(text).replace("\xa0", " ")
        column = round(float(x) / (float(length) / len(text)))
        lines[int(row)][column:column + len(text)] = list(text)
    return ["".join(line) for line in lines]


@pytest.mark.parametrize("width", [80, 90, 100, 105, 110, 120, 200])
@pytest.mark.parametrize("lesson", [False, True])
async def test_every_key_in_the_footer_is_apart_from_the_next(width, lesson):
    session = gdstep.open("xor")
    app = make_lesson_app(session, parse_script('say "hi"\nstep 1\n'), "lesson", timestamps=False) if lesson \
        else make_app(session, timestamps=False)
    async with app.run_test(size=(width, 30)) as pilot:
        await settle(pilot)
        footer = app.query_one(KeyFooter)
        line = _screen_lines(app)[-1] + " "
        keys = [k for k in footer.query("FooterKey") if k.description]
        labels = [str(label.render()) for label in footer.query("FooterLabel")]
        # each key and its description whole, then a space: Textual squeezes a footer too wide
        # for the terminal into "to ends step" (the group's label run into the next key)
        for key in keys:
            assert f"{key.key_display} {key.description} " in line, (key.description, line)
        for label in labels:
            assert f"{label} " in line, (label, line)
        shown = {k.description for k in keys}
        assert {"next", "step", "back", "help", "quit"} <= shown
        assert ("lesson" in shown) == lesson
        if width >= 120:
            assert "palette" in shown and "to end" in labels and "gradcheck" in shown


def test_log_ticks_are_round_values_inside_the_range():
    from gdstep.tui.plots import log_ticks, tick_labels

    assert log_ticks(-1.1, 2.2) == pytest.approx([0.1, 1, 10, 100])             # powers of ten
    assert log_ticks(-0.3, 1.7) == pytest.approx([1, 3, 10, 30])                # 2 decades: 1 and 3
    assert log_ticks(-12, 12) == pytest.approx([1e-12, 1e-6, 1, 1e6, 1e12])     # at most 5
    assert tick_labels([0.001, 0.01, 1, 300]) == ["0.001", "0.01", "1", "300"]
    assert tick_labels([1e-6, 1, 1e6]) == ["1e-6", "1", "1e6"]
    assert tick_labels([0.001, 0.01, 1], scientific=True) == ["1e-3", "1e-2", "1"]


def _y_ticks(lines: list[str]) -> list[tuple[int, float]]:
    """(row, value) of each labelled tick of a plotext y axis."""
    return [(row, float(m.group(1))) for row, line in enumerate(lines) if (m := re.match(r"\s*(-?[\d.e+-]+)┤", line))]


def _row_of(value: float, ticks: list[tuple[int, float]]) -> float:
    """The row where `value` sits on a log axis, from two of its labelled ticks."""
    (r0, v0), (r1, v1) = ticks[0], ticks[-1]
    return r0 + (r1 - r0) * (math.log10(value) - math.log10(v0)) / (math.log10(v1) - math.log10(v0))


async def test_a_log_loss_axis_is_labelled_with_the_losses_not_their_logs():
    from gdstep.tui.plots import LinePlot, LossPlot

    session = gdstep.open("overshoot")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await command(pilot, "unbreak 1")
        await command(pilot, "run max 15")                  # the loss grows from 1.5 to about 2700
        await settle(pilot)
        plot = app.query_one(LossPlot)
        losses = list(session.history.losses)
        assert max(losses) / min(losses) > 1000 and "log" in plot.border_title
        lines = plot.render().plain.split("\n")
        ticks = _y_ticks(lines)
        assert len(ticks) >= 3 and all(v > 0 for _, v in ticks)
        assert all(math.log10(v) == pytest.approx(round(math.log10(v))) for _, v in ticks)   # 1, 10, 100, 1000
        # the last loss is drawn (at the right edge) on the row its value has on the labelled axis
        row = next(k for k, line in enumerate(lines) if line.rstrip().endswith("•│"))
        assert abs(row - _row_of(losses[-1], ticks)) <= 1
        await pilot.press("v")                                # the loss along the next update
        await settle(pilot)
        line_plot = app.query_one(LinePlot)
        await until(lambda: line_plot.picture is not None)
        await pilot.pause()
        p = line_plot.picture.line
        ticks = _y_ticks(line_plot.render().plain.split("\n"))
        assert len(ticks) >= 3 and "log" in line_plot.border_title
        lo, hi = float(np.nanmin(p.loss)), float(np.nanmax(p.loss))
        assert lo * 0.5 <= min(v for _, v in ticks) and max(v for _, v in ticks) <= hi * 2


FOUR = "sgd lr=0.1 | sgd lr=0.1 momentum=0.9 | rmsprop lr=0.01 | adam lr=0.01"
SIX = FOUR + " | sgd lr=1 | adam lr=0.1"


@pytest.mark.parametrize("size, specs", [((80, 24), FOUR), ((120, 36), FOUR), ((200, 50), FOUR), ((100, 30), SIX)])
async def test_the_landscape_and_the_loss_plot_name_every_lane_at_every_size(size, specs):
    from rich.text import Text

    from gdstep.tui.landscape_plot import LandscapePlot
    from gdstep.tui.plots import LossPlot

    app = make_app(gdstep.open("spiral"), timestamps=False)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await command(pilot, f"lanes {specs}")
        await command(pilot, "lanes run 10")
        lanes = specs.count("|") + 1
        await settle(pilot)
        if size[0] < 100:
            await pilot.press("p")                      # the plots in place of the centre
        await pilot.press("v")                          # boundary → landscape
        await settle(pilot)
        plot = app.query_one(LandscapePlot)
        await until(lambda: plot.picture is not None and plot.picture.fine and len(plot.picture.lanes) == lanes)
        await pilot.pause()
        title = Text.from_markup(plot.border_title).plain
        screen = "\n".join(_screen_lines(app))
        assert title in screen                          # drawn whole on the border, not cut with "…"
        body = [line.plain for line in plot.render().renderables[1:]]
        for n in range(1, lanes + 1):
            # each lane's mark and number: in the title, else on a line under the picture
            assert f"◆{n}" in title or any(f"◆{n}" in line or line.startswith(f"◆ {n}: ") for line in body), (n, title, body)
        loss = app.query_one(LossPlot)
        title = Text.from_markup(loss.border_title).plain
        assert title in screen
        below = loss.render().plain
        for n in range(1, lanes + 1):
            assert re.search(rf"■ {n}\b", title + "\n" + below), (n, title, below)


DEEP = """\
name = "deep"
description = "Six linear layers, to crowd the health plot's key."
seed = 0

[data]
kind = "xor"
n = 4
noise = 0.0

[model]
layers = [ { linear = 4 }, "tanh", { linear = 4 }, "tanh", { linear = 4 }, "tanh", { linear = 4 }, "tanh",
           { linear = 4 }, "tanh", { linear = 1 }, "sigmoid" ]

[loss]
kind = "bce"

[optimizer]
kind = "sgd"
lr = 0.5

[training]
batch_size = "full"
epochs = 10
"""


async def test_the_health_key_names_the_layers_that_fit_and_counts_the_rest(tmp_path):
    from rich.text import Text

    from gdstep.tui.health_plot import HealthPlot

    scenario = tmp_path / "deep.toml"
    scenario.write_text(DEEP)
    app = make_app(gdstep.open(str(scenario)), timestamps=False)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("s")
        await settle(pilot)
        while app.query_one("#plot-switcher").current != "health-plot":
            await pilot.press("v")
            await settle(pilot)
        plot = app.query_one(HealthPlot)
        await pilot.pause()
        title = Text.from_markup(plot.border_title).plain
        assert title in "\n".join(_screen_lines(app))            # whole on the border
        named = re.findall(r"layer (\d+)", title)
        more = re.search(r"\+(\d+) more", title)
        assert named == [str(k) for k in range(0, 2 * len(named), 2)] and 0 < len(named) < 6
        assert more and int(more.group(1)) == 6 - len(named)
        assert plot.border_subtitle.startswith("1 update ·")


async def test_a_linear_loss_axis_has_no_negative_ticks():
    from gdstep.tui.plots import LossPlot

    session = gdstep.open("xor")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await command(pilot, "run max 60")                  # the loss falls from 0.83 to under 0.01
        await settle(pilot)
        plot = app.query_one(LossPlot)
        ticks = [v for _, v in _y_ticks(plot.render().plain.split("\n"))]
        losses = list(session.history.losses)
        assert "log" not in plot.border_title and min(losses) < 0.02
        assert len(ticks) >= 3 and min(ticks) >= 0 and min(ticks) <= min(losses) and max(ticks) >= 0.9 * max(losses)


@pytest.mark.parametrize("sizes", [[(120, 36), (80, 24)], [(80, 24), (200, 50), (100, 30)]])
async def test_the_event_log_rewraps_when_the_terminal_changes_size(sizes):
    from gdstep.tui.event_log import EventLog

    app = make_lesson_app(gdstep.open("linear"), parse_script('say "hi"\nstep 1\n'), "lesson", timestamps=False)
    async with app.run_test(size=sizes[0]) as pilot:
        await settle(pilot)
        log = app.query_one(EventLog)
        message = log.messages[0][1]                  # the scenario's description, longer than a line at 80
        assert len(message) > 80
        for size in sizes[1:]:
            await pilot.resize_terminal(*size)
            await settle(pilot)
            await pilot.pause()
            # wrapped to the new width: no sideways scrollbar (one line high, it hid the text)
            assert not log.show_horizontal_scrollbar
            assert log.virtual_size.width <= log.scrollable_content_region.width
            text = " ".join(line.text.strip() for line in log.lines)
            assert message in " ".join(text.split())
            last = log.lines[-1].text.strip()
            assert last and last in "\n".join(_screen_lines(app)), last      # the log's last line is on screen


@pytest.mark.parametrize("width", [100, 120, 200])
async def test_the_whole_tensor_statistics_fit_their_line(width):
    from gdstep.tui.tensor_view import TensorView

    session = gdstep.open("spiral")                      # 0.weight is 32×2: windowed, so its statistics show
    app = make_app(session, timestamps=False)
    async with app.run_test(size=(width, 36)) as pilot:
        await settle(pilot)
        await pilot.press("s", "s")
        await settle(pilot)
        before = np.array(session.params["0.weight"])    # W_old of the next update
        await pilot.press("s")
        await settle(pilot)
        view = app.query_one(TensorView)
        lines = view.render().plain.split("\n")
        assert all(len(line) <= view.content_size.width for line in lines), (view.content_size.width, lines)
        header = next(k for k, line in enumerate(lines) if line.startswith("whole"))
        names = lines[header].split()[1:]
        assert {"min", "max"} <= set(names) and (width < 120 or names == ["mean", "std", "min", "max", "norm"])
        row = lines[header + 1].split()
        assert row[0] == "W_old" and len(row) == 1 + len(names)
        values = dict(zip(names, map(float, row[1:])))
        assert values["min"] == pytest.approx(before.min(), abs=1e-4)
        assert values["max"] == pytest.approx(before.max(), abs=1e-4)
        if "mean" in values:
            assert values["mean"] == pytest.approx(before.mean(), abs=1e-4)


def test_a_histogram_of_equal_values_is_labelled_once():
    from gdstep.tui.health_plot import range_ticks

    assert range_ticks(-2.0, 4.0) == ([-2.0, 1.0, 4.0], ["-2", "1", "4"])
    ticks, labels = range_ticks(0.5 - 1e-9, 0.5 + 1e-9)          # two weights both 0.5 (lesson 7)
    assert labels == ["0.5"] and ticks == [pytest.approx(0.5)]
