"""Lesson mode in the app: the narration pane at 80×24 and 200×50, space and → stepping,
exploring and coming back exactly, a long step on the worker while keys are answered, the
scenario's description on opening, and the help screen's panels."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import log_text, press, settle, until

import gdstep
from gdstep.script import Runner, parse_script
from gdstep.script.lesson import split_steps
from gdstep.tui.help_screen import HelpScreen
from gdstep.tui.lesson_app import make_lesson_app
from gdstep.tui.narration import Narration
from gdstep.tui.phase_bar import PhaseBar

LESSON = """\
say "The line starts flat: w = {0.weight[0,0]}, b = {0.bias[0]}."
step 2
say "Two steps later the loss is {loss:.4f} and w = {0.weight[0,0]:.3f}."
set lr 0.1
step 3
say "With lr {lr} five steps are done: step {step}."
screenshot never-written.svg
"""
LONG = """\
say "Now a long run."
step 1000000
say "Done: {step} steps."
"""


def _app(script: str = LESSON, scenario: str = "linear"):
    return make_lesson_app(gdstep.open(scenario), parse_script(script), "lesson 1 · the line", timestamps=False)


def _reference(script: str, steps: int):
    runner = Runner(gdstep.open("linear"))
    for step in split_steps([c for c in parse_script(script) if c.name != "screenshot"])[:steps]:
        for command in step:
            assert runner.execute(command).ok
    return runner.session


def _same(a, b) -> bool:
    return (a.cursor == b.cursor and all(a.params[k].tobytes() == b.params[k].tobytes() for k in a.params)
            and np.asarray(a.history.losses).tobytes() == np.asarray(b.history.losses).tobytes()
            and a.optimizer == b.optimizer)


@pytest.mark.parametrize("size", [(80, 24), (120, 36), (200, 50)])
async def test_narration_pane_steps_through_the_lesson(size, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = _app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        pane = app.query_one(Narration)
        assert "The line starts flat: w = 0, b = 0." in str(pane.render())
        assert pane.border_title == "lesson 1 · the line · 1 of 3"
        # the pane and the phase bar fit on the screen, the pane keeps at least one line of text
        assert pane.region.bottom <= size[1] and pane.region.height >= 3
        assert app.query_one(PhaseBar).region.height == 2
        await press(pilot, "space")
        session = app.driver.session
        w = session.params["0.weight"][0, 0]
        assert str(pane.render()).startswith(f"Two steps later the loss is {session.loss_value:.4f} and w = {w:.3f}.")
        assert pane.border_title.endswith("2 of 3")
        await press(pilot, "right")
        assert str(pane.render()).startswith("With lr 0.1 five steps are done: step 5.")
        assert pane.border_title.endswith("end of the lesson") and "end of the lesson" in log_text(app)
        assert _same(session, _reference(LESSON, 3))
        assert not list(tmp_path.iterdir())             # a lesson's screenshot lines are not written in the app
        await press(pilot, "space")                     # past the end: nothing moves
        assert _same(session, _reference(LESSON, 3))


async def test_exploring_then_space_comes_back_exactly():
    app = _app()
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await press(pilot, "space")                     # step 2 of 4
        session = app.driver.session
        await press(pilot, "s", "s", "n", "left", "left", "left")
        await pilot.press("colon")
        app.query_one("#prompt").value = "set lr 0.9"
        await pilot.press("enter")
        await settle(pilot)
        await press(pilot, "e")
        pane = app.query_one(Narration)
        assert "exploring" in pane.border_subtitle and not _same(session, _reference(LESSON, 2))
        await press(pilot, "space")                     # back where the lesson was, to the bit
        assert _same(session, _reference(LESSON, 2)) and pane.border_title.endswith("2 of 3")
        assert "back to the lesson" in log_text(app)
        await press(pilot, "space")                     # and the lesson goes on as written
        assert _same(session, _reference(LESSON, 3))


async def test_long_step_runs_on_the_worker_and_can_be_paused_and_rerun():
    app = _app(LONG)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        session = app.driver.session
        pane = app.query_one(Narration)
        for attempt in range(2):                        # the step, then the step again from its start
            await pilot.press("space")
            await until(lambda: app.driver.running_a_run and session.step_count > 0)
            if attempt == 0:
                await pilot.press("question_mark")      # keys are answered while it trains
                await until(lambda: isinstance(app.screen, HelpScreen))
                assert app.driver.running_a_run
                await pilot.press("escape")
            await pilot.press("r")                      # pause: the step is undone, space runs it whole again
            await settle(pilot)
            assert 0 < session.step_count < 10**6 and log_text(app).count("interrupted") == attempt + 1
            assert pane.border_title.endswith("1 of 2") and app.lesson.done == 1
        await pilot.press("n")                          # explore a phase, then come back: step 0, as the lesson was
        await settle(pilot)
        await press(pilot, "space")
        assert session.step_count == 0 and session.position == 0 and pane.border_title.endswith("1 of 2")


async def test_opening_says_the_scenario_and_help_explains_the_panels():
    app = _app()
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        description = app.driver.session.scenario.description
        assert description and f"{app.driver.session.scenario.name} — {description}" in log_text(app)
        await pilot.press("question_mark")
        await pilot.pause()
        panels = dict(app.screen.panels)
        assert set(panels) == {"phase bar", "model", "tensor", "update / batch", "plots", "events", "lesson"}
        assert any(keys.startswith("space") and "lesson" in what for keys, what in app.screen.rows)


FIRST = ("The first say of a lesson is long enough to wrap over three lines of the narration pane at eighty "
         "columns, and the pane must show every one of its lines on opening, not one line cut mid-sentence "
         "as it did before the height was recomputed.")
WORDY = f"""\
say "{FIRST}"
step 2
gradcheck 0.weight[0,0]
say "Second: the gradient check agrees."
say "Third."
"""


def _wrapped_lines(app, pane) -> int:
    return len(pane.render().wrap(app.console, pane.content_region.width))     # the say, and any hint line


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
async def test_pane_fits_the_first_text_and_the_log_keeps_events_not_says(size):
    app = _app(WORDY)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        pane = app.query_one(Narration)
        assert pane.state.text == FIRST
        lines = _wrapped_lines(app, pane)
        assert lines >= 2 and pane.region.height == lines + 2          # every line, and the border
        await press(pilot, "space")
        log = log_text(app)
        assert "Second" not in log and FIRST[:40] not in log             # the pane has the says
        last = log.splitlines()[-1]                                      # the log's last line is what 80×24 shows
        assert last.startswith("gradcheck 0.weight[0,0]: analytic") and "— ok" in last
        assert log.index("› gradcheck") < log.index(last)


async def test_h_reads_the_earlier_narrations_and_space_returns():
    app = _app(WORDY)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await press(pilot, "space", "space")
        pane = app.query_one(Narration)
        assert pane.state.text == "Third." and app.lesson.done == 3
        await press(pilot, "h")
        assert pane.state.text.startswith("Second") and "said at step 2 of 3" in pane.border_title
        await press(pilot, "h")
        assert pane.state.text == FIRST and pane.region.height == _wrapped_lines(app, pane) + 2
        await press(pilot, "space")                                      # back to the latest, no step run
        assert pane.state.text == "Third." and app.lesson.done == 3
        await press(pilot, "h", "h", "h")                                # past the first: the latest again
        assert pane.state.text == "Third."
        await pilot.press("question_mark")
        await pilot.pause()
        assert any(keys == "h" and "narration before" in what for keys, what in app.screen.rows)


async def test_lesson_3_pause_on_a_non_finite_value_is_the_logs_last_line():
    """Step 11 says "the event log says where": at 80×24 the log shows one line, that one."""
    from gdstep import lessons
    from gdstep.script.replay import read_script
    lesson = lessons.find("3", lessons.load())
    text, file = read_script(lesson.script)
    app = make_lesson_app(gdstep.open(str(lesson.scenario)), parse_script(text, file), "lesson 3", timestamps=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        while app.lesson.done < 11:
            await press(pilot, "space")
        assert "the event log says where" in app.lesson.narration
        last = log_text(app).splitlines()[-1]
        assert last.startswith("paused: non-finite value inf in loss")
        loss = app.driver.session.loss_value                            # the kept state: the last finite one
        assert np.isfinite(loss) and loss > 1e300


def _lesson_app(number: str, size_note: str = ""):
    from gdstep import lessons
    from gdstep.script.replay import read_script
    lesson = lessons.find(number, lessons.load())
    text, file = read_script(lesson.script)
    return make_lesson_app(gdstep.open(str(lesson.scenario)), parse_script(text, file), f"lesson {number}",
                           timestamps=False)


def _visible_log(app) -> list[str]:
    """The event log's lines as the screen shows them (a one-line log shows one)."""
    from gdstep.tui.event_log import EventLog
    log = app.query_one(EventLog)
    top, rows = round(log.scroll_y), log.scrollable_content_region.height
    return [strip.text for strip in log.lines[top:top + rows]]


@pytest.mark.parametrize("size", [(80, 24), (120, 36)])
async def test_opening_shows_the_description_in_the_pane_and_the_log_shows_how_news_begins(size):
    """The log is one line high below 44 rows: a wrapped entry showed only its tail ("wrong the
    line is, and training makes it small." on opening; the end of gradcheck's line, without
    its numbers, where lesson 2 says "its result is the event log's last line")."""
    app = _lesson_app("2")
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        pane = app.query_one(Narration)
        description = app.driver.session.scenario.description
        assert str(pane.render()).startswith(description) and app.lesson.narration in str(pane.render())
        assert app.driver.session.scenario.name in _visible_log(app)[0]
        await press(pilot, "space")                     # step 2: the description has done its job
        assert description not in str(pane.render())
        while app.lesson.done < 7:
            await press(pilot, "space")
        await settle(pilot)
        assert "event log's last line" in app.lesson.narration
        shown = " ".join(_visible_log(app))
        assert "analytic -10.000000" in shown, shown


async def test_a_step_that_draws_the_line_or_the_landscape_shows_it_and_a_huge_loss_draws():
    """Lesson 3 says "the lower plot now draws the loss along the next step" after `line`: it
    must be on screen; then the run to a loss of 1e307 must not break the line plot (plotext
    overflowed rounding ticks on a linear axis near the largest float)."""
    from gdstep.tui.plots import LinePlot
    app = _lesson_app("3")
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        while app.lesson.done < 8:
            await press(pilot, "space")
        assert app.query_one("#plot-switcher").current == "landscape-plot"
        await press(pilot, "v")                         # the learner looks elsewhere; the next step brings it back
        while app.lesson.done < 10:
            await press(pilot, "space")
        assert "lower plot now draws the loss along the next step" in app.lesson.narration
        assert app.query_one("#plot-switcher").current == "line-plot"
        await press(pilot, "space")                     # the run to 1e307, the line plot on screen
        await settle(pilot)
        assert app.lesson.done == 11 and app.is_running
        plot = app.query_one(LinePlot)
        await until(lambda: plot.picture is not None and plot.picture.line is not None
                    and plot.picture.line.at_zero > 1e300)
        await settle(pilot)
        assert "log axis" in str(plot.border_title)
        assert app.is_running and app.return_code is None


async def test_below_100_columns_a_step_that_draws_a_picture_shows_the_plots():
    """At 80 columns the plots are hidden behind p (not in the footer there): lesson 3's
    "the lower plot shows the landscape" showed the learner nothing."""
    app = _lesson_app("3")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert not app.show_plots
        while app.lesson.done < 8:
            await press(pilot, "space")
        assert "lower plot shows the landscape" in app.lesson.narration
        assert app.show_plots and app.query_one("#plot-switcher").current == "landscape-plot"
        assert app.query_one("#plot-switcher").region.height > 0
        await press(pilot, "p")                         # the learner swaps back; the lesson is where it was
        assert not app.show_plots and not app._away
