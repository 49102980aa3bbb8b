"""The app on training loops as people write them: a plain-function loss (no per-sample
values), watch mode, tied weights, a bfloat16 model. Each opens where the loop broke and is
driven through every phase with the pilot; what is shown is checked against torch."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gdstep
from gdstep.script.runner import Runner
from conftest import SIZE, log_text, press, select, settle
from gdstep.tui.app import make_app
from gdstep.tui.batch_view import BatchView
from gdstep.tui.model_tree import ModelTree
from gdstep.tui.phase_bar import PhaseBar
from gdstep.tui.tensor_view import TensorView


def drive(session, script):
    """Open the app on `session` (where the loop broke) and run `script(pilot, app)`."""
    async def go():
        app = make_app(session, timestamps=False)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await script(pilot, app)
        return app
    return asyncio.run(go())


async def every_phase(pilot, app, seen: list) -> None:
    """From the break: back to the start of the iteration, then each phase forward again."""
    while app.query_one(PhaseBar).frame.last_phase not in (None, "update") and app.query_one(PhaseBar).frame.position % 4:
        await press(pilot, "left")
    for _ in range(4):
        await press(pilot, "n")
        frame = app.query_one(PhaseBar).frame
        seen.append((frame.last_phase, app.query_one(BatchView).panel, app.query_one(TensorView).panel))


def classifier(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 4))
    x, y = torch.randn(6, 3), torch.randint(0, 4, (6,))
    return model, torch.optim.SGD(model.parameters(), lr=0.1), x, y


@pytest.mark.parametrize("loss_fn", [F.cross_entropy, lambda out, y: F.nll_loss(F.log_softmax(out, 1), y)],
                         ids=["cross_entropy", "lambda"])
def test_a_plain_function_loss_opens_after_the_loss_and_says_what_it_lacks(loss_fn):
    model, opt, x, y = classifier()
    with torch.no_grad():
        output = model(x)
    expected = F.cross_entropy(output, y).item()
    at_open, seen = [], []

    def look(session, message):
        async def script(pilot, app):
            at_open.append(app.query_one(BatchView).panel)
            await every_phase(pilot, app, seen)
        drive(session, script)

    gdstep.attach(model, opt, loss_fn, breakpoints=["loss > 0"], on_break=look).step(x, y)
    panel = at_open[0]                                   # it opened after the loss phase
    assert panel.phase == "loss" and f"{expected:.4f}"[:5] in panel.title
    rows = {row.label: row.values for row in panel.rows}
    shown = len(panel.samples)
    np.testing.assert_array_equal(rows["target"], y[:shown].numpy().astype(float))
    assert "loss" not in rows
    assert any("per-sample loss: not available" in note for note in panel.notes)
    np.testing.assert_allclose(rows["z2[0]"], output[:shown, 0].numpy(), rtol=1e-6)
    assert [phase for phase, _, _ in seen] == ["forward", "loss", "backward", "update"]
    assert seen[1][1].phase == "loss" and seen[2][1] is None        # the batch view after forward and loss only
    assert [g.label for g in seen[3][2].grids] == ["W_old", "∇W", "W_new"]


def test_watch_mode_opens_on_every_phase_with_or_without_targets():
    model, opt, x, y = classifier(1)
    seen, notes = [], []

    def look(session, message):
        async def script(pilot, app):
            panel = app.query_one(BatchView).panel
            if panel is not None:
                notes.extend(panel.notes)
            if session.record("loss").target is not None:     # without targets the loss cannot be recomputed
                await every_phase(pilot, app, seen)
        drive(session, script)

    dbg = gdstep.attach(model, opt, F.cross_entropy, breakpoints=["loss > 0"], on_break=look)
    for given in (y, None):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        dbg.watch(loss, given)
        opt.step()
    assert any("per-sample loss: not available" in n for n in notes)
    assert any("target: not given" in n for n in notes)
    assert [phase for phase, _, _ in seen][:4] == ["forward", "loss", "backward", "update"]


class TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Embedding(10, 6)
        self.hidden = nn.Linear(6, 6)
        self.decoder = nn.Linear(6, 10)
        self.decoder.weight = self.encoder.weight          # weight tying

    def forward(self, tokens):
        return self.decoder(torch.tanh(self.hidden(self.encoder(tokens))))


def test_tied_weights_are_shown_once_marked_shared():
    torch.manual_seed(0)
    model = TiedLM()
    tokens, targets = torch.randint(0, 10, (8,)), torch.randint(0, 10, (8,))
    twin = TiedLM()
    twin.load_state_dict(model.state_dict())
    F.cross_entropy(twin(tokens), targets).backward()
    labels, seen, grads = [], [], []

    def look(session, message):
        async def script(pilot, app):
            tree = app.query_one(ModelTree)
            labels.extend(str(leaf.label) for layer in tree.root.children for leaf in layer.children)
            await every_phase(pilot, app, seen)
            await select(pilot, "encoder.weight")
            grads.append(app.query_one(TensorView).panel)
        drive(session, script)

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gdstep.attach(model, opt, nn.CrossEntropyLoss(), breakpoints=["loss > 0"], on_break=look).step(tokens, targets)
    assert sum(label.startswith("weight 10×6") for label in labels) == 1
    assert any("shared with decoder" in label for label in labels)
    assert any(label.startswith("encoder.weight") and "shared" in label for label in labels)
    assert [phase for phase, _, _ in seen] == ["forward", "loss", "backward", "update"]
    # the gradient shown is the sum over both uses, as autograd makes it
    grad = grads[0].grids[1]
    np.testing.assert_allclose(grad.values, twin.encoder.weight.grad.numpy()[:grad.values.shape[0], :grad.values.shape[1]],
                               rtol=1e-5, atol=1e-7)


def test_a_bfloat16_model_opens_with_its_values_and_says_its_dtype():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 4)).to(torch.bfloat16)
    x, y = torch.randn(6, 3, dtype=torch.bfloat16), torch.randint(0, 4, (6,))
    weight = model[0].weight.detach().float().numpy().copy()
    seen, shown = [], []

    def look(session, message):
        async def script(pilot, app):
            await select(pilot, "0.weight")
            panel = app.query_one(TensorView).panel
            shown.append((panel, app.query_one(PhaseBar).frame.dtype, app.query_one(TensorView).border_subtitle))
            await every_phase(pilot, app, seen)
        drive(session, script)

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gdstep.attach(model, opt, nn.CrossEntropyLoss(), breakpoints=["loss > 0"], on_break=look).step(x, y)
    panel, dtype, subtitle = shown[0]
    assert dtype == "bfloat16" and "bfloat16" in panel.caption and "bfloat16" in str(subtitle)
    r0, c0 = panel.origin
    rows, cols = panel.grids[0].values.shape
    np.testing.assert_array_equal(panel.grids[0].values, weight[r0:r0 + rows, c0:c0 + cols])      # exact
    assert [phase for phase, _, _ in seen] == ["forward", "loss", "backward", "update"]
    assert any("bfloat16" in note for note in seen[0][1].notes)


def test_x_dismisses_non_finite_breaks_for_the_rest_of_the_loop():
    """Once the loss is NaN every iteration would break (twice in watch mode): `x` at the
    first pause stops that; the loop runs on, its records still kept."""
    model, opt, x, y = classifier(2)
    opened, logs = [], []

    def look(session, message):
        async def script(pilot, app):
            await press(pilot, "x")
            logs.append(log_text(app))
        opened.append(message)
        drive(session, script)

    dbg = gdstep.attach(model, opt, F.cross_entropy, on_break=look)
    for i in range(5):
        opt.zero_grad()
        bad = x.clone()
        if i >= 1:
            bad[0, 0] = float("nan")
        loss = F.cross_entropy(model(bad), y)
        loss.backward()
        dbg.watch(loss, y)
        opt.step()
    assert len(opened) == 1 and "non-finite" in opened[0]
    assert "no longer opens the debugger" in logs[0]
    assert dbg.session.step_count == 5 and dbg.session.breakpoints.nonfinite_dismissed


def test_x_disables_the_breakpoint_that_paused():
    model, opt, x, y = classifier(3)
    opened, logs, footers, counted = [], [], [], []

    def look(session, message):
        async def script(pilot, app):
            svg = app.export_screenshot()
            footers.append("".join(re.findall(r'line-35\)">([^<]*)<', svg)).replace("&#160;", " "))
            counted.append("1 breakpoint" in svg.replace("&#160;", " "))
            await press(pilot, "x")
            await settle(pilot)
            counted.append("1 breakpoint" in app.export_screenshot().replace("&#160;", " "))
            logs.append(log_text(app))
        opened.append(message)
        drive(session, script)

    dbg = gdstep.attach(model, opt, F.cross_entropy, breakpoints=["loss > 0"], on_break=look)
    for _ in range(3):
        dbg.step(x, y)
    assert len(opened) == 1 and "breakpoint 1 disabled" in logs[0]
    assert counted == [True, False]          # the phase bar counts the breakpoints that fire
    assert "x mute" in footers[0] and "quit" in footers[0]
    assert not dbg.session.breakpoints[0].enabled


def test_attach_mode_names_the_loops_iterations_not_epochs_in_its_messages():
    """The loop's data is one batch an iteration, so "epoch 6 · iteration 1" would be an
    epoch of one batch: a rewind says which loop iteration it left and reached."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    dbg = gdstep.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), F.cross_entropy)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    for _ in range(5):
        dbg.step(x, y)
    s = dbg.session
    s.back(iterations=2)
    assert s.events[-1].message == "back from loop iteration 6 · forward next to loop iteration 4 · forward next"
    s.back(phases=1)
    assert s.events[-1].message == "back from loop iteration 4 · forward next to loop iteration 3 · update next"
    assert s.describe().endswith("loop iteration 3 · update next")       # (before: "epoch 3 · iteration 1")
    check = s.gradcheck("weight", (0, 0))
    assert check.batch == "this iteration's batch, loop iteration 3, at the current parameters"
    assert "epoch" not in s.events[-1].message


@pytest.mark.parametrize("condition", ["iteration == 10", "epoch > 3 and loss > 1"])
def test_attach_mode_refuses_conditions_on_epochs_and_iterations_in_one_line(condition):
    """The loop's data is one batch an iteration: `iteration` would stay 1 (a breakpoint on
    it never fires, unsaid) and `epoch` would count the updates. Refused, naming `step`."""
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(gdstep.GdstepError, match="a scenario's data; in attach mode the loop's iterations are "
                                                 "counted by step"):
        gdstep.attach(model, opt, F.cross_entropy, breakpoints=[condition])
    dbg = gdstep.attach(model, opt, F.cross_entropy)
    dbg.step(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(gdstep.GdstepError, match="counted by step"):
        dbg.session.run(until=condition)
    runner = Runner(dbg.session)         # the app's prompt and a script: refused in one line too
    for command in (f"expect {condition}", f"break {condition}", f"run until {condition}", f'say "{{{condition}}}"'):
        outcome = runner.execute_line(command)
        assert not outcome.ok and outcome.error and "counted by step" in outcome.message, (command, outcome)
    assert runner.execute_line("expect step == 1").ok


def test_gradcheck_between_two_loop_iterations_names_the_batch_it_used():
    """Between two dbg.step calls the loop has not given the next batch: gradcheck checks
    on its latest and says so (before: "the next iteration's batch, loop iteration 3" of a
    check made on iteration 2's batch)."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dbg = gdstep.attach(model, opt, F.cross_entropy)
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randn(4, 3, generator=g).double(), torch.tensor([0, 1, 0, 1])) for _ in range(2)]
    for x, y in batches:
        dbg.step(x, y)
    check = dbg.session.gradcheck("weight", (0, 0))
    assert check.batch == "the loop's latest batch, loop iteration 2, at the current parameters"
    dbg.session.back(iterations=1)                 # at the boundary before iteration 2: its batch is kept
    assert dbg.session.gradcheck("weight", (0, 0)).batch == "the next iteration's batch, loop iteration 2, at the current parameters"
    dbg.session.seek(8)
    model.zero_grad()
    F.cross_entropy(model(batches[1][0]), batches[1][1]).backward()
    assert check.analytic == pytest.approx(model.weight.grad[0, 0].item(), rel=1e-12)


def test_a_script_run_until_an_epoch_or_iteration_is_refused_in_attach_mode_too():
    """The app's and scripts' `run until …` hand a parsed condition to the session: it is
    checked as a text one is (before: it ran to the loop's latest iteration, never firing)."""
    from gdstep.script import Runner

    model = nn.Linear(3, 2)
    dbg = gdstep.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), F.cross_entropy)
    dbg.step(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))
    outcome = Runner(dbg.session).execute_line("run until iteration == 3")
    assert not outcome.ok and "counted by step" in outcome.message
