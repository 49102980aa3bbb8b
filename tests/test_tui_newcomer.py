"""Issue 10: the app as a newcomer meets it. Pilot tests at fixed sizes."""

from __future__ import annotations

import re

import pytest
from conftest import command, log_kinds, log_text, press, select, settle, until

import gdstep
from gdstep.tui.app import make_app
from gdstep.tui.phase_bar import PhaseBar


def _svg_text(path) -> str:
    return path.read_text().replace("&#160;", " ")


async def test_phase_bar_keeps_the_numbers_on_screen_at_80_columns():
    session = gdstep.open("spiral")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, *["s"] * 12)
        bar = app.query_one(PhaseBar)
        lines = str(bar.render()).split("\n")
        width = bar.content_size.width
        assert len(lines) == 2 and all(len(line) <= width for line in lines)
        assert "step 12" in lines[0] and "forward" in lines[0]
        assert lines[1].startswith("loss ") and "lr 0.01" in lines[1] and "adam" in lines[1]
        assert "numpy" in lines[1]


async def test_a_screenshot_from_the_prompt_shows_the_app_paused_with_its_footer(tmp_path):
    session = gdstep.open("xor")
    app = make_app(session, timestamps=False, frame_interval=0.02)
    target = tmp_path / "a.svg"
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        app.simulate_key("r")
        await until(lambda: session.position > 0)
        await until(lambda: not app.running, timeout=30)
        await settle(pilot)
        await command(pilot, f"screenshot {target}")
        await settle(pilot)
    svg = _svg_text(target)
    assert "paused" in svg and "running" not in svg
    footer = "".join(re.findall(r'line-35\)">([^<]*)<', svg))
    assert "step" in footer and "quit" in footer


async def test_a_screenshot_that_cannot_be_written_is_one_line_in_the_log(tmp_path, monkeypatch):
    import errno
    import os

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("gdstep.files.tempfile.mkstemp", full_disk)
    session = gdstep.open("xor")
    app = make_app(session, timestamps=False)
    target = tmp_path / "a.svg"
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await command(pilot, f"screenshot {target}")
        await settle(pilot)
        assert app.is_running
        errors = [m for kind, m in app.query_one("EventLog").messages if kind == "error"]
        assert len(errors) == 1 and "No space left on device" in errors[0] and "\n" not in errors[0]
        await press(pilot, "s")
        assert session.step_count == 1
    assert not target.exists() and not list(tmp_path.iterdir())


def test_paging_a_command_list_before_it_is_laid_out_does_not_raise():
    from textual.command import CommandList
    from textual.widgets.option_list import Option

    import gdstep.tui.app  # noqa: F401  (installs the guard)

    listing = CommandList()
    listing.add_options([Option("a"), Option("b")])
    listing.highlighted = 0
    listing.action_page_down()          # Textual 8.2.8 alone: KeyError: 0
    listing.action_page_up()
    assert listing.highlighted == 0


def test_sigterm_restores_the_terminal(tmp_path):
    """The app in a pseudo-terminal, sent SIGTERM: it leaves the alternate screen and turns
    mouse tracking off before it exits, with exit code 143."""
    import os
    import pty
    import select as select_
    import signal
    import subprocess
    import sys
    import time

    main, child = pty.openpty()
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="80", LINES="24")
    proc = subprocess.Popen([sys.executable, "-m", "gdstep.cli", "xor"], stdin=child, stdout=child, stderr=child,
                            env=env, start_new_session=True)
    os.close(child)
    out = b""

    def read_for(seconds: float) -> None:
        nonlocal out
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select_.select([main], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(main, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                out += chunk
    try:
        deadline = time.monotonic() + 30
        while b"\x1b[?1049h" not in out or b"0.weight" not in out:
            assert time.monotonic() < deadline, "the app did not start"
            read_for(0.2)
        read_for(0.5)
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while proc.poll() is None:          # read while it exits: a full pty would block it
            assert time.monotonic() < deadline, "the app did not exit"
            read_for(0.1)
        read_for(0.3)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
    tail = out[out.rindex(b"\x1b[?1049h"):]
    assert b"\x1b[?1049l" in tail and b"\x1b[?1000l" in tail
    assert proc.returncode == 128 + signal.SIGTERM           # as the command line's own SIGTERM


def test_export_labels_every_table_by_dataset_row_and_puts_y_t_loss_in_one(tmp_path):
    import numpy as np

    from gdstep.script.export import worked_example

    session = gdstep.open("spiral")
    session.step()
    session.forward()
    session.loss()
    text = worked_example(session)
    loss_part = text[text.index("## 3. Loss"):]
    table = [line for line in loss_part.splitlines() if line.startswith("| ")]
    assert table[0] == "| row | y[0] | y[1] | y[2] | t | loss |"
    assert text.count("| row | y") == 1 and "| row | t" not in text
    batch_rows = [line.split("|")[1].strip() for line in text[text.index("## 1."):text.index("## 2.")].splitlines()
                  if line.startswith("| ") and not line.startswith("| row")]
    data = session.scenario.dataset
    for line, batch_row in zip(table[1:], batch_rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == "…":
            break
        row = int(cells[0])
        assert cells[0] == batch_row                          # the same sample as the batch table's row
        y = np.array([float(c) for c in cells[1:4]])
        target = int(data.y[row])
        assert cells[4] == data.class_names[target]            # a class name, not 2.000000
        expected = np.log(np.exp(y).sum()) - y[target]        # cross-entropy of that sample, by hand
        assert abs(float(cells[5]) - expected) < 1e-5


def test_print_state_after_set_optimizer_names_the_optimizer_it_belongs_to():
    from gdstep.script import Runner

    session = gdstep.open("xor")
    runner = Runner(session)
    assert runner.execute_line("set momentum 0.9").ok
    assert runner.execute_line("step 2").ok
    assert runner.execute_line("set optimizer adam").ok
    out = runner.execute_line("print state 0.weight")
    assert out.ok
    assert out.lines[0] == "state 0.weight (sgd):"
    assert "momentum_buffer" in "\n".join(out.lines)
    assert "adam starts at the next iteration" in out.lines[1]
    assert runner.execute_line("step").ok
    out = runner.execute_line("print state 0.weight")
    assert out.lines[0] == "state 0.weight (adam):" and "exp_avg" in "\n".join(out.lines)
    assert "momentum_buffer" not in "\n".join(out.lines)


@pytest.mark.parametrize("scenario", ["xor", "spiral", "overshoot"])
def test_every_completion_after_set_is_a_setting_that_set_accepts(scenario):
    from gdstep.script import Runner, completions

    session = gdstep.open(scenario)
    offered = [line.split()[1] for line in completions(session, "set ")]
    assert "kind" not in offered and "guarded_state" not in offered
    assert {"lr", "optimizer", "batch_size", "epochs"} <= set(offered)
    values = {"optimizer": "adam", "batch_size": "8", "epochs": "5", "stop_when": "none"}
    for key in offered:
        fresh = gdstep.open(scenario)
        current = getattr(fresh.optimizer, key, None)
        value = values.get(key) or ("true" if isinstance(current, bool) and not current else
                                    "false" if isinstance(current, bool) else
                                    ",".join(str(v) for v in current) if isinstance(current, tuple) else
                                    str(current if current else 0.1))
        if key == "nesterov":
            continue                    # needs momentum > 0 first: its error says so
        out = Runner(fresh).execute_line(f"set {key} {value}")
        assert out.ok, (key, out.message)


async def test_completions_are_listed_above_the_prompt_whole_and_go_when_the_line_is_edited():
    from gdstep.tui.prompt import CompletionList

    session = gdstep.open("xor")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("colon", *"set ", "tab")
        await pilot.pause()
        listing = app.query_one(CompletionList)
        prompt = app.query_one("#prompt")
        assert listing.display and listing.has_class("-open")
        assert listing.region.bottom <= prompt.region.y                     # above the input, not over it
        assert listing.region.height >= 1 and listing.region.width >= 60
        text = str(listing.render())
        for word in ("lr", "optimizer", "batch_size", "epochs", "momentum", "nesterov"):
            assert word in text
        assert "kind" not in text.split() and "guarded_state" not in text
        await pilot.press("backspace", "backspace", "backspace", "x")
        await pilot.pause()
        assert not listing.has_class("-open")


async def test_a_command_is_logged_before_the_events_it_causes():
    from gdstep.tui.event_log import EventLog

    session = gdstep.open("xor")
    session.stop_when = None
    app = make_app(session, timestamps=True, frame_interval=0.0)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await command(pilot, "break step == 3")
        await settle(pilot)
        await command(pilot, "run max 6")
        await settle(pilot)
        log = app.query_one(EventLog)
        kinds = [kind for kind, _ in log.messages]
        run = [message for _, message in log.messages].index("› run max 6")
        assert "breakpoint" in kinds[run + 1:]
        assert log.times == sorted(log.times)


def test_the_loss_surface_shows_the_new_branch_after_a_rewind():
    import numpy as np

    from gdstep.script import Runner
    from gdstep.tui.frame import Layout, Selection
    from gdstep.tui.frame_builder import FrameBuilder

    session = gdstep.open("linear")
    runner = Runner(session)
    frames = FrameBuilder(session)
    assert runner.execute_line("set lr 1.5").ok
    for _ in range(6):                               # a diverging branch
        assert runner.execute_line("step").ok
    frames.make_picture("landscape", "pca")
    wide = frames.build(Selection(), Layout()).landscape.landscape
    assert runner.execute_line("back 6 iterations").ok
    assert runner.execute_line("set lr 0.05").ok
    for _ in range(8):
        assert runner.execute_line("step").ok
    while frames.picture_due(frozenset({"landscape"}), "pca"):
        frames.make_picture("landscape", "pca")
    surface = frames.build(Selection(), Layout()).landscape.landscape
    assert surface.directions == "parameters"
    path = surface.path
    assert len(path) == 9                               # steps 0..8 of the new branch only
    assert np.allclose(path[-1], [float(np.ravel(v)[0]) for v in session.params.values()])
    assert np.ptp(surface.alphas) < np.ptp(wide.alphas) or np.ptp(surface.betas) < np.ptp(wide.betas)



async def test_the_batch_view_writes_whole_targets_alike():
    import numpy as np

    from gdstep.tui.batch_view import BatchView

    session = gdstep.open("xor")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await press(pilot, "l")
        text = str(app.query_one(BatchView).render())
        line = next(line for line in text.splitlines() if line.startswith(("target", "t[0]")))
        shown = line.split()[1:]
        z = next(line for line in text.splitlines() if line.startswith("z0[0]")).split()[1:]
        assert all(len(cell.split(".")[-1]) == 4 for cell in z)            # a zero there is 0.0000
        rows = session.record("forward").indices
        expected = [str(int(v)) for v in np.asarray(session.scenario.dataset.y)[np.asarray(rows)].ravel()]
        assert shown == expected[:len(shown)] and set(shown) <= {"0", "1"}


def test_the_run_summary_of_one_sample_says_so():
    from gdstep.run_loop import RunResult
    from gdstep.summary import run_summary

    session = gdstep.open("textbook")
    result = session.run(max_steps=1) if hasattr(session, "run") else None
    text = run_summary(session, result, 0.5)
    assert "on the 1 sample" in text and "all 1 samples" not in text


async def test_a_gradient_check_goes_when_another_element_is_selected():
    from gdstep.tui.arithmetic_view import ArithmeticView

    session = gdstep.open("xor")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await press(pilot, "g")
        view = app.query_one(ArithmeticView)
        assert view.gradcheck is not None and view.gradcheck.label == "0.weight[0,0]"
        await press(pilot, "shift+down")
        assert app.selection.row == 1 and view.gradcheck is None
        await press(pilot, "g")
        assert view.gradcheck.label == "0.weight[1,0]"
        await select(pilot, "2.weight")
        assert view.gradcheck is None


async def test_model_tree_labels_are_cut_at_a_word_not_inside_one(tmp_path):
    from pathlib import Path

    from gdstep.tui.model_tree import ModelTree

    text = (Path(__file__).parent.parent / "scenarios" / "linear.toml").read_text()
    scenario = tmp_path / "nobias.toml"
    scenario.write_text(text.replace("layers = [ { linear = 1 } ]", "layers = [ { linear = 1, bias = false } ]"))
    session = gdstep.open(str(scenario))
    assert session.backend.layers[0].text == "Linear(1 → 1), no bias"
    app = make_app(session, timestamps=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        tree = app.query_one(ModelTree)
        tree.styles.width = 20                  # room for "0 Linear(1 → 1)," but not "no bias"
        await pilot.pause()
        node = tree.root.children[0]
        label = tree.render_label(node, tree.rich_style, tree.rich_style).plain
        assert label.endswith("…") and len(label) <= tree.scrollable_content_region.width
        words = "0 Linear(1 → 1), no bias".split()
        shown = label.rstrip("…").split()
        assert shown == [w.rstrip(",") for w in words[:len(shown)]]     # whole words only


async def test_a_layer_row_shows_that_layer_over_the_batch():
    import numpy as np

    from gdstep.tui.model_tree import ModelTree
    from gdstep.tui.tensor_view import TensorView

    session = gdstep.open("xor")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await press(pilot, "b")                       # forward, loss, backward of iteration 1
        tree = app.query_one(ModelTree)
        await press(pilot, "up")                      # from 0.weight up to the row of layer 0
        assert tree.cursor_node.data is None and app.selection.layer == "0"
        panel = app.query_one(TensorView).panel
        assert panel.name == "layer 0"
        x, z0, delta = panel.grids
        fwd, bwd = session.record("forward"), session.record("backward")
        rows = len(fwd.indices)
        inputs = np.asarray(session.scenario.dataset.x)[np.asarray(fwd.indices)]
        w, b = session.params["0.weight"], session.params["0.bias"]
        assert np.allclose(x.values, inputs[:x.values.shape[0], :x.values.shape[1]])
        z = inputs @ w.T + b                                                # the layer by hand
        assert np.allclose(z0.values, z[:z0.values.shape[0], :z0.values.shape[1]])
        assert delta.values is not None and delta.values.shape[0] == min(rows, z0.values.shape[0])
        assert np.allclose(delta.values, np.asarray(bwd.deltas[0])[:delta.values.shape[0], :delta.values.shape[1]])
        await press(pilot, "down", "down", "down")    # weight, bias, then the Tanh row
        assert app.selection.layer == "1" and app.query_one(TensorView).panel.name == "layer 1"
        tanh = app.query_one(TensorView).panel.grids[1].values
        assert np.allclose(tanh, np.tanh(z)[:tanh.shape[0], :tanh.shape[1]])


async def test_at_80_columns_a_one_row_weight_shows_w_new_and_a_cut_layer_input_says_so():
    """A 1×4 weight after its update shows W_old, ∇W and W_new, each with its row; the row
    of a layer whose input is wider than the window (Linear(4 → 1)) says how many of the
    input's units it shows, and the whole input's statistics follow where there is room."""
    from gdstep.tui.tensor_view import TensorView

    session = gdstep.open("xor")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, "s")
        await select(pilot, "2.weight")
        view = app.query_one(TensorView)
        lines = str(view.render()).split("\n")
        new = session.params["2.weight"]
        labels = [i for i, line in enumerate(lines) if line.strip() in ("W_old", "∇W", "W_new")]
        if labels:                                           # stacked: W_new's own row below its title
            assert len(labels) == 3 and labels[2] + 1 < len(lines)
            shown = lines[labels[2] + 1].split()[1:]
        else:                                                # side by side: the third grid's columns
            shown = lines[2].split()[1 + 2 * view.panel.grids[0].values.shape[1]:]
        assert len(lines) <= view.content_size.height
        assert [float(v) for v in shown] == pytest.approx(list(new[0, :len(shown)]), abs=1e-4) and shown
        await press(pilot, "up")                             # the row of layer 2, Linear(4 → 1)
        assert app.selection.layer == "2"
        await pilot.pause()
        panel = view.panel
        widest = max(g.values.shape[1] for g in panel.grids if g.values is not None)
        assert widest < 4                                    # 80 columns hold 2 of them side by side
        assert not panel.whole and f"input: {widest} of 4 units" in view.border_title
        assert panel.grids[0].stats is not None              # the whole input's statistics


async def test_panels_grow_with_the_terminal():
    from gdstep.tui.tensor_view import TensorView

    session = gdstep.open("spiral")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot)
        await press(pilot, "s")
        assert app.query_one("#plots").size.width >= 60
        view = app.query_one(TensorView)
        values = view.panel.grids[0].values
        assert values.shape == (view.panel.grids[0].values.shape[0], 2) and values.shape[0] >= 12   # of 32×2
        lines = str(view.render()).split("\n")
        assert len(lines) >= view.content_size.height - 1            # no empty lines below
        await select(pilot, "2.weight")
        assert app.query_one(TensorView).panel.grids[0].values.shape == (3, 12)   # 3×32: every row, 12 columns
    session = gdstep.open("spiral")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await select(pilot, "2.weight")
        assert app.query_one(TensorView).panel.grids[0].values.shape[1] >= 6      # not 2 columns of 32
    session = gdstep.open("xor")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        view = app.query_one(TensorView)
        assert view.panel.whole and view.panel.grids[0].values.shape == (4, 2)
        assert app.query_one("#arithmetic-box").size.height >= 6     # the rest goes to the arithmetic
        log = app.query_one("EventLog")
        assert log.virtual_size.width <= log.scrollable_content_region.width   # wraps, no sideways scroll


def test_set_stop_when_replaces_and_drops_the_scenario_condition():
    from gdstep.script import Runner, completions

    session = gdstep.open("xor")
    runner = Runner(session)
    out = runner.execute_line("set stop_when step >= 3")
    assert out.ok and "stop_when → step >= 3" in out.lines[0]
    out = runner.execute_line("run")
    assert out.ok and out.result.reason == "stop_when" and session.step_count == 3
    assert runner.execute_line("set stop_when none").ok and session.stop_when is None
    out = runner.execute_line("run max 5")
    assert out.ok and session.step_count == 8
    bad = runner.execute_line("set stop_when loss <")
    assert not bad.ok and session.stop_when is None
    assert "set stop_when none" in completions(session, "set stop_when n")
    replayed = gdstep.open("xor")
    again = Runner(replayed)
    for line in runner.lines:
        assert again.execute_line(line).ok
    assert replayed.step_count == 8 and replayed.stop_when is None


async def test_q_asks_once_when_the_recording_is_not_saved(tmp_path):
    session = gdstep.open("xor")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await press(pilot, "s", "s")
        await pilot.press("q")
        await pilot.pause()
        assert app.is_running and "2 commands not saved" in log_text(app)
        await command(pilot, f"save {tmp_path / 'a.gds'}")
        await settle(pilot)
        await press(pilot, "s")
        await pilot.press("q")
        await pilot.pause()
        assert app.is_running and "1 command not saved" in log_text(app)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0
    saved = gdstep.open("xor")
    app = make_app(saved, timestamps=False)
    async with app.run_test(size=(120, 36)) as pilot:         # nothing to save: q quits at once
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running


async def test_p_says_why_it_does_nothing_when_the_plots_are_shown():
    session = gdstep.open("xor")
    app = make_app(session, timestamps=False)
    notes = []
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        app.notify = lambda message, **kw: notes.append(message)
        await pilot.press("p")
        await pilot.pause()
        assert app.query_one("#center").display and app.query_one("#plots").display
        assert notes and "already shown" in notes[0]


async def test_the_app_opens_with_the_scenario_name_and_description_and_a_colour_legend():
    from gdstep.tui.tensor_view import TensorView

    session = gdstep.open("xor")
    app = make_app(session, timestamps=False)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        assert session.scenario.description
        assert f"{session.scenario.name} — {session.scenario.description}" in log_text(app)
        subtitle = str(app.query_one(TensorView).border_subtitle)
        assert "−max" in subtitle and "+max" in subtitle


def test_a_mistyped_scenario_name_gets_a_did_you_mean():
    from gdstep.bundled import resolve
    from gdstep.errors import ScenarioError

    with pytest.raises(ScenarioError, match="did you mean 'spiral'"):
        resolve("spirl")
    with pytest.raises(ScenarioError) as e:
        resolve("zzzz")
    assert "did you mean" not in str(e.value) and "xor" in str(e.value)


def test_the_readme_check_example_is_what_the_tool_prints(tmp_path, capsys, monkeypatch):
    """Each `$ gdstep check FILE` in the README, run on the file the README describes."""
    from pathlib import Path

    from gdstep.cli import main

    files = {
        "broken.toml": 'name = "broken"\n[data]\nkind = "xor"\n[model]\nlayers = [ { linear = 4 }, "tahn", '
                       '{ linear = 1 } ]\n[loss]\nkind = "mse"\n[optimizer]\nkind = "sgd"\nlr = 0.1\n',
        "negative-lr.toml": 'name = "negative lr"\n[data]\nkind = "xor"\n[model]\nlayers = [ { linear = 1 } ]\n'
                            '[loss]\nkind = "mse"\n[optimizer]\nkind = "sgd"\nlr = -0.1\n',
        "bad-toml.toml": 'name = "x"\n[data]\nkind = = "xor"\n',
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    readme = (Path(__file__).parent.parent / "README.md").read_text().splitlines()
    shown = [(k, line.strip()) for k, line in enumerate(readme) if line.strip().startswith("$ gdstep check ")]
    assert len(shown) == 3
    for k, line in shown:
        name = line.split()[-1]
        assert main(["check", name]) == 2
        err = capsys.readouterr().err.strip()
        assert err == readme[k + 1].strip()                # one error per file, exactly as printed


def test_the_readme_test_command_installs_the_ci_torch_first():
    """The set-up command works as written: the CPU torch that CI pins is in the command, before
    `.[dev]` (which would otherwise pull the CUDA build), not in a note after it."""
    import re
    from pathlib import Path

    root = Path(__file__).parent.parent
    readme = (root / "README.md").read_text()
    ci = (root / ".ci" / "run").read_text()
    pinned = re.search(r"torch==([0-9.]+)", ci).group(1)
    command = next(line.strip() for line in readme.splitlines() if "pip install -e '.[dev]'" in line)
    assert command.startswith("python3 -m venv .venv && . .venv/bin/activate && ")
    assert command.endswith("pip install -e '.[dev]' && pytest -q")        # what .ci/run runs
    torch = command.index(f"pip install torch=={pinned}")
    assert torch < command.index("pip install -e '.[dev]'")
