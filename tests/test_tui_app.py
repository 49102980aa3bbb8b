"""Pilot tests of the app: keys drive the session through the script Runner, and the
widgets show what the session holds. Workers are waited for, never slept on."""

from __future__ import annotations

import math

import pytest
from conftest import SIZE, command, log_kinds, log_text, select, settle, until

import gdstep
from gdstep.script import Runner
from gdstep.tui.app import GdstepApp, make_app
from gdstep.tui.arithmetic_view import ArithmeticView
from gdstep.tui.event_log import EventLog
from gdstep.tui.help_screen import HelpScreen
from gdstep.tui.messages import FrameReady, JobDone, Running
from gdstep.tui.model_tree import ModelTree
from gdstep.tui.phase_bar import PhaseBar
from gdstep.tui.tensor_view import TensorView


async def test_mount_renders_a_meaningful_screen_without_input():
    session = gdstep.open("xor")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        svg = app.export_screenshot()
        assert "forward" in svg and "0.weight" in svg
        assert app.query_one(PhaseBar).frame.phase_due == "forward"
        assert app.query_one(TensorView).panel.name == "0.weight"
        assert not app.running
    assert session.position == 0


async def test_n_runs_the_phases_in_order_and_the_bar_follows():
    session = gdstep.open("textbook")
    app = make_app(session, timestamps=False)
    seen = []
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for _ in range(5):
            await pilot.press("n")
            await settle(pilot)
            seen.append((session.last_phase, app.query_one(PhaseBar).frame.phase_due))
        await pilot.press("space")
        await settle(pilot)
    assert seen == [("forward", "loss"), ("loss", "backward"), ("backward", "update"), ("update", "forward"),
                    ("forward", "loss")]
    assert session.last_phase == "loss" and session.step_count == 1
    assert app.runner.lines == ["next"] * 6


async def test_keys_pressed_faster_than_the_worker_all_run_in_order():
    session = gdstep.open("textbook")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n", "n", "n", "n", "n", "n", "n")
        await settle(pilot)
    assert session.position == 7


async def test_arithmetic_panel_is_the_update_of_the_selected_element():
    session = gdstep.open("textbook")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await select(pilot, "2.weight")
        await pilot.press("u")
        await settle(pilot)
        panel = app.query_one(ArithmeticView)
        assert panel.lines == session.explain("2.weight", (0, 0)).lines
        assert panel.lines[-1] == "W_new = W_old − η·g = 0.400000 − 0.5 × 0.082167 = 0.358916"
        assert "0.358916" in str(panel.render())
        await pilot.press("shift+down", "shift+right")
        await settle(pilot)
        assert app.selection.row == 1 and app.selection.col == 1
        assert panel.lines == session.explain("2.weight", (1, 1)).lines
        assert app.query_one(TensorView).panel.index == (1, 1)


async def test_after_backward_the_panel_shows_the_chain_rule():
    session = gdstep.open("textbook")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await select(pilot, "2.weight")
        await pilot.press("b")
        await settle(pilot)
        assert session.last_phase == "backward"
        panel = app.query_one(ArithmeticView)
        assert panel.arithmetic.mode == "chain"
        assert panel.lines == session.chain_rule("2.weight", (0, 0)).lines
        assert "  = 0.082167" in panel.lines
        grids = app.query_one(TensorView).panel.grids
        assert grids[1].values[0, 0] == pytest.approx(0.08216704, abs=1e-8)
        assert grids[2].values is None


async def test_adam_arithmetic_and_state_after_an_epoch():
    session = gdstep.open("spiral")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("e")
        await settle(pilot)
        panel = app.query_one(ArithmeticView)
        assert session.step_count == 10
        assert panel.lines == session.explain("0.weight", (0, 0)).lines
        assert any(line.startswith("  exp_avg_sq:") for line in panel.arithmetic.state)


async def test_left_rewinds_one_phase_and_is_recorded():
    session = gdstep.open("textbook")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n", "n", "n")
        await settle(pilot)
        assert session.cursor.phase == "update"
        await pilot.press("left")
        await settle(pilot)
        assert session.cursor.phase == "backward"
        assert app.query_one(PhaseBar).frame.phase_due == "backward"
        await pilot.press("left", "left", "left", "left")
        await settle(pilot)
    assert session.position == 0
    assert app.runner.lines[:4] == ["next", "next", "next", "back"]


async def test_r_runs_in_a_worker_and_r_pauses_it():
    session = gdstep.open("xor")
    session.epochs = 10**9
    session.stop_when = None
    app = make_app(session, timestamps=False, frame_interval=0.02)
    messages = []
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await settle(pilot)
        del messages[:]
        app.simulate_key("r")      # pilot.press would wait for the busy process to go idle
        await until(lambda: session.position > 0)
        assert app.running
        assert app.query_one(PhaseBar).running
        await until(lambda: any(isinstance(m, FrameReady) for m in messages))   # frames while it runs
        await pilot.press("r")
        await settle(pilot)
        assert not app.running
        assert not app.query_one(PhaseBar).running
        assert [m.running for m in messages if isinstance(m, Running)] == [True, False]
        done = [m for m in messages if isinstance(m, JobDone)]
        assert [m.job.text for m in done] == ["run"] and done[0].outcome.result.reason == "paused"
        assert done[0].frame.position == session.position == app.frame.position
        position = session.position
        assert position > 0
        assert "run: paused" in log_text(app)
        # the recording replays to the same state
        replayed = gdstep.open("xor")
        replayed.epochs, replayed.stop_when = 10**9, None
        runner = Runner(replayed)
        for line in app.runner.lines:
            assert runner.execute_line(line).ok
        assert replayed.position == position
        for name, value in session.params.items():
            assert (replayed.params[name] == value).all()


async def test_overshoot_shows_the_breakpoint_then_the_nonfinite_pause():
    session = gdstep.open("overshoot")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)
        assert "breakpoint" in log_kinds(app)
        assert "breakpoint 1 hit: loss > prev_loss" in log_text(app)
        await command(pilot, "unbreak 1")
        await settle(pilot)
        assert not session.breakpoints
        await pilot.press("r")
        await settle(pilot)
        messages = app.query_one(EventLog).messages
        nonfinite = [m for kind, m in messages if kind == "nonfinite"]
        assert nonfinite and "non-finite value" in nonfinite[-1]
        assert math.isfinite(session.params["0.weight"][0, 0])


async def test_prompt_runs_a_command_and_reports_mistakes_without_changing_the_session():
    session = gdstep.open("xor")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("colon", *"step 3", "enter")            # typed, key by key
        await settle(pilot)
        assert session.step_count == 3
        assert "› step 3" in log_text(app)
        before = session.position
        await command(pilot, "frobnicate 2")
        await settle(pilot)
        assert session.position == before
        errors = [m for kind, m in app.query_one(EventLog).messages if kind == "error"]
        assert errors and "frobnicate" in errors[-1]
        # history: up brings back the last command
        await pilot.press("colon", "up")
        assert app.query_one("#prompt").value == "frobnicate 2"
        await pilot.press("up")
        assert app.query_one("#prompt").value == "step 3"
        await pilot.press("escape")
        assert isinstance(app.focused, ModelTree)


async def test_prompt_tab_completes():
    session = gdstep.open("xor")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("colon", *"grad", "tab")
        assert app.query_one("#prompt").value == "gradcheck "
        await pilot.press(*"2.w", "tab")
        assert app.query_one("#prompt").value == "gradcheck 2.weight "


async def test_save_from_the_prompt_replays_to_the_same_state(tmp_path):
    session = gdstep.open("textbook")
    app = make_app(session, timestamps=False)
    script = tmp_path / "lesson.gds"
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n", "n", "s", "e", "left", "l")
        await command(pilot, "set lr 0.1")
        await pilot.press("s")
        await command(pilot, f"save {script}")
        await settle(pilot)
    assert script.exists()
    replayed = gdstep.open("textbook")
    runner = Runner(replayed)
    for line in script.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert runner.execute_line(line).ok, line
    assert replayed.cursor == session.cursor and replayed.lr == session.lr == 0.1
    for name, value in session.params.items():
        assert (replayed.params[name] == value).all()


async def test_g_checks_the_gradient_of_the_selected_element():
    session = gdstep.open("textbook")
    app = make_app(session, timestamps=False)
    messages = []
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        await settle(pilot)
        await select(pilot, "2.weight")
        await pilot.press("b", "g")
        await settle(pilot)
        checked = [m.outcome.gradcheck for m in messages if isinstance(m, JobDone) and m.job.text.startswith("gradcheck")]
        assert len(checked) == 1 and checked[0] == session.gradcheck("2.weight", (0, 0))
        check = app.query_one(ArithmeticView).gradcheck
        assert check is not None and check.ok and check.label == "2.weight[0,0]"
        assert check.analytic == pytest.approx(0.082167, abs=1e-6)
        assert check.numeric == pytest.approx(check.analytic, rel=1e-6)
        text = str(app.query_one(ArithmeticView).render())
        assert "analytic" in text and "numeric" in text
        assert app.runner.lines[-1] == "gradcheck 2.weight[0,0]"
        await pilot.press("n")
        await settle(pilot)
        assert app.query_one(ArithmeticView).gradcheck is None   # stale after the state moved


async def test_an_exception_in_the_worker_is_logged_and_the_app_stays_usable(monkeypatch):
    session = gdstep.open("xor")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        real = app.runner.execute_line

        def broken(text, on_phase=None, **kw):
            raise ZeroDivisionError("deliberately broken")

        monkeypatch.setattr(app.runner, "execute_line", broken)
        await pilot.press("n")
        await settle(pilot)
        errors = [m for kind, m in app.query_one(EventLog).messages if kind == "error"]
        assert errors and "ZeroDivisionError" in errors[-1]
        assert not app.running
        monkeypatch.setattr(app.runner, "execute_line", real)
        await pilot.press("n")
        await settle(pilot)
        assert session.position == 1


async def test_help_screen_lists_every_key():
    session = gdstep.open("xor")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        rows = dict((description, keys) for keys, description in app.screen.rows)
        for binding in GdstepApp.BINDINGS:
            assert binding.tooltip in rows, binding.key
            for key in binding.key.split(","):
                assert app.get_key_display(binding.with_key(key, None)) in rows[binding.tooltip]
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)


async def test_palette_sets_the_learning_rate_and_switches_the_optimizer():
    session = gdstep.open("xor")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"lr .05")
        await pilot.pause(0.3)          # the palette searches in its own task
        await pilot.press("enter")
        await settle(pilot)
        assert session.lr == 0.05
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"to adam")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(pilot)
        assert session.optimizer.kind == "adam"
        assert app.runner.lines == ["set lr 0.05", "set optimizer adam"]
        assert "setting" in log_kinds(app)


async def test_usable_at_80_by_24():
    session = gdstep.open("xor")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.screen.has_class("-narrow")
        assert not app.query_one("#plots").display
        panel = app.query_one(TensorView).panel
        assert panel.whole and panel.grids[0].values.shape == (4, 2)
        await pilot.press("n", "n", "n", "n")
        await settle(pilot)
        assert app.query_one(ArithmeticView).lines == session.explain("0.weight", (0, 0)).lines
        await pilot.press("p")
        await pilot.pause()
        assert app.query_one("#plots").display and not app.query_one("#center").display
        await pilot.press("p")
        await pilot.pause()
        assert app.query_one("#center").display


async def test_a_million_element_parameter_is_windowed(tmp_path):
    path = tmp_path / "wide.toml"
    path.write_text("""
name = "wide"
seed = 0
[data]
kind = "linear"
n = 8
features = 1000
[model]
layers = [ { linear = 1000 }, "tanh", { linear = 1 } ]
[loss]
kind = "mse"
[optimizer]
kind = "sgd"
lr = 0.01
""")
    session = gdstep.open(path)
    assert session.backend.param_shapes["0.weight"] == (1000, 1000)
    app = make_app(session, timestamps=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await select(pilot, "0.weight")
        await pilot.press("s")
        await settle(pilot)
        panel = app.query_one(TensorView).panel
        assert not panel.whole
        rows, cols = panel.grids[0].values.shape
        assert rows * cols <= 64
        assert panel.grids[0].stats.count == 1_000_000
        await pilot.press("shift+down", "shift+down", "shift+right")
        await settle(pilot)
        assert app.query_one(TensorView).panel.index == (2, 1)
        assert app.query_one(ArithmeticView).lines == session.explain("0.weight", (2, 1)).lines


def test_replay_saves_screenshots_through_the_app(tmp_path, capsys, monkeypatch):
    """The command line hands the Runner the headless app's screenshot."""
    from gdstep.cli import main

    monkeypatch.chdir(tmp_path)             # a replayed script writes inside its working folder
    script, target = tmp_path / "shoot.gds", tmp_path / "xor.svg"
    script.write_text("step 2\nscreenshot xor.svg\n")
    assert main(["replay", "xor", str(script)]) == 0
    svg = target.read_text().replace("&#160;", " ")
    assert "screenshot saved to" in capsys.readouterr().out
    assert "0.weight" in svg and "step 2" in svg


async def test_screenshot_command_saves_an_svg(tmp_path):
    session = gdstep.open("textbook")
    app = make_app(session, timestamps=False)
    target = tmp_path / "shot.svg"
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        await command(pilot, f"screenshot {target}")
        await settle(pilot)
    assert target.exists() and "loss" in target.read_text()


async def test_the_torch_backend_renders_through_the_same_views():
    pytest.importorskip("torch")
    session = gdstep.open("textbook", backend="torch", dtype="float64")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await select(pilot, "2.weight")
        await pilot.press("u")
        await settle(pilot)
        assert app.query_one(ArithmeticView).lines == session.explain("2.weight", (0, 0)).lines
        assert app.query_one(ArithmeticView).lines[-1].endswith("= 0.358916")
        assert app.query_one(PhaseBar).frame.backend == "torch"
        assert not [m for kind, m in app.query_one(EventLog).messages if kind == "error"]


async def test_keys_typed_ahead_of_the_prompt_reach_it():
    """A terminal delivers `:set lr 0.1⏎` in one burst: the keys after `:` must not step."""
    from textual import events

    s = gdstep.open("xor")
    app = make_app(s, timestamps=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        names = {" ": "space", ".": "full_stop", ":": "colon"}
        for ch in ":set lr 0.1":
            app.post_message(events.Key(names.get(ch, ch), ch))
        app.post_message(events.Key("enter", "\r"))
        await pilot.pause(0.3)
        await settle(pilot)
        assert s.lr == 0.1 and s.position == 0
        assert app.runner.lines == ["set lr 0.1"]


async def test_a_prefilled_prompt_is_edited_not_replaced(tmp_path, monkeypatch):
    """`w` fills the prompt with `save NAME.gds`: typing goes on after it, enter saves."""
    monkeypatch.chdir(tmp_path)
    s = gdstep.open("xor")
    app = make_app(s, timestamps=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("s", "w")
        await pilot.pause()
        await pilot.press("backspace", "backspace", "backspace", "backspace", "full_stop", "g", "d", "s", "enter")
        await pilot.pause(0.3)
        await settle(pilot)
        saved = tmp_path / "xor-session.gds"
        assert saved.exists() and saved.read_text().splitlines()[-1] == "step"
        assert oct(saved.stat().st_mode & 0o777) != oct(0o600)


async def test_frames_arriving_under_the_help_screen_are_drawn_on_the_main_screen():
    session = gdstep.open("xor")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        app.run_command("step 3")
        await settle(pilot)
        await pilot.press("escape")
        await pilot.pause()
        assert session.step_count == 3 and app.query_one(PhaseBar).frame.step == 3
        assert "› step 3" in log_text(app)
