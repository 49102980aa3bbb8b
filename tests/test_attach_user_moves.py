"""The loop's own code moves `dbg.session` between its calls of gdstep in watch mode (a
`seek` to look back while training goes on). The model's tensors are the session's, so the
move moved the loop's model: its next forward ran on the old weights and training went on
from there, silently (a helper's run of pytorch/examples found it); a seek to where the
batches were gone made the loop's next watch() raise. Now the loop's tensors and torch's
generator are given back at the loop's next call of its model (or of gdstep, or
`dbg.close()`), with the session back where the loop stands, and training is a bare loop's,
bit for bit. In step mode too (the way back recomputed the parameters, but torch's
generator and the param groups were left as the move set them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gdstep


def train(seek_at: int | None = None, target: int = 0, n: int = 24, before_step: bool = False, mode: str = "watch",
          close: bool = True):
    """The loop (dropout, Adam, StepLR), attached where it looks back at iteration `seek_at`
    (`seek_at=-1`: attached, no look back); `close=False` leaves the debugger in seen["dbg"]."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
    loss_fn = nn.CrossEntropyLoss()
    dbg = gdstep.attach(model, opt, loss_fn, on_break="raise") if seek_at is not None else None
    seen = {}
    def look_back():
        try:
            dbg.session.seek(target)
            seen["params"] = {k: v.copy() for k, v in dbg.session.params.items()}
        except gdstep.GdstepError as e:
            seen["refused"] = str(e)

    for i in range(n):
        if dbg is not None and i == seek_at and not before_step:
            look_back()
        x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))    # from torch's generator, as a loop's noise
        if dbg is not None and mode == "step":
            dbg.step(x, y)
        else:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            if dbg is not None:
                dbg.watch(loss, y)
                if i == seek_at and before_step:      # between watch() and the step: the update is the loop's
                    look_back()
            opt.step()
        sched.step()
        seen.setdefault("after", []).append({k: p.detach().clone() for k, p in model.named_parameters()})
    if dbg is not None:
        seen["events"] = [e.message for e in dbg.session.events]
        if close:
            dbg.close()
        seen["dbg"] = dbg
    return model, seen


@pytest.mark.parametrize("mode", ["watch", "step"])
@pytest.mark.parametrize("target", [4 * 18, 4 * 19 + 2])      # an iteration's start; the middle of one
def test_a_seek_between_the_loops_calls_shows_the_past_and_leaves_training_as_a_bare_loops(target, mode):
    bare, kept = train()
    model, seen = train(seek_at=20, target=target, mode=mode)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), bare.parameters()))
    assert not [e for e in seen["events"] if "recomputed" in e or "differ" in e]    # the way back: the loop's own
    step = target // 4 - (target % 4 == 0)          # the parameters the session showed: after that update
    expected = kept["after"][step] if target % 4 == 0 else kept["after"][target // 4 - 1]
    assert all(np.array_equal(seen["params"][k], v.numpy()) for k, v in expected.items())


def test_a_seek_between_watch_and_step_leaves_the_update_the_loops():
    bare, _ = train()
    model, seen = train(seek_at=20, target=4 * 17, before_step=True)
    assert "params" in seen
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), bare.parameters()))


@pytest.mark.parametrize("mode", ["watch", "step"])
def test_a_seek_the_session_cannot_come_back_from_leaves_the_loop_as_bare(mode):
    """seek(0) after 36 iterations: the session cannot come back (the way back recomputes
    from iteration 1, whose batch is gone): the loop goes on unchanged, and gdstep attaches
    afresh from the next iteration, in one line (the loop's next watch() raised)."""
    bare, _ = train(n=40)
    model, seen = train(seek_at=36, target=0, n=40, mode=mode)
    assert "params" in seen
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), bare.parameters()))
    assert any("could not come back from, so gdstep attached afresh" in e for e in seen["events"])


def test_closing_after_a_look_back_gives_the_model_the_loops_weights():
    model, seen = train(seek_at=-1, n=6, close=False)
    final = [p.detach().clone() for p in model.parameters()]
    seen["dbg"].session.seek(8)
    assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), final))    # the model shows the past
    seen["dbg"].close()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), final))        # and is the loop's again


def scaled_loop(seek_where: str | None):
    """A GradScaler loop; the loop's code looks back at `seek_where` of iteration 12."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler("cpu")
    dbg = gdstep.attach(model, opt, loss_fn, on_break="raise", scaler=scaler) if seek_where else None
    for i in range(16):
        x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        if dbg is not None:
            dbg.watch(loss, y)
            if i == 12 and seek_where == "before step":
                dbg.session.seek(4 * 8)
        scaler.step(opt)
        if i == 12 and seek_where == "before update":
            dbg.session.seek(4 * 8)
        scaler.update()
    if dbg is not None:
        dbg.close()
    return model, scaler


@pytest.mark.parametrize("where", ["before step", "before update"])
def test_a_look_back_in_a_scaled_iteration_leaves_the_scaler_the_loops(where):
    """A seek between watch() and scaler.step(), or between scaler.step() and update():
    the restore loaded a checkpoint's scaler state, so the loop's update() died ("No inf
    checks were recorded prior to update"). The scaler's state is the loop's again as soon
    as the move is done."""
    bare, bare_scaler = scaled_loop(None)
    model, scaler = scaled_loop(where)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), bare.parameters()))
    assert scaler.get_scale() == bare_scaler.get_scale()


def test_a_forward_without_gradients_after_a_look_back_uses_the_loops_weights():
    """A DQN's target, `with torch.no_grad(): model(next_state)`, right after the loop's
    look back: it ran on the weights looked at, and trained the next update with them."""
    def dqn(look: bool):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        dbg = gdstep.attach(model, opt, nn.MSELoss(), on_break="raise") if look else None
        for i in range(14):
            s, s2, r = torch.randn(8, 4), torch.randn(8, 4), torch.randn(8, 2)
            if dbg is not None and i == 10:
                dbg.session.seek(4 * 6)
            with torch.no_grad():
                target = r + 0.9 * model(s2)
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(s), target)
            loss.backward()
            if dbg is not None:
                dbg.watch(loss, target)
            opt.step()
        return model
    bare, model = dqn(False), dqn(True)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), bare.parameters()))


def test_a_move_between_the_loops_forward_and_its_watch_is_refused_and_the_loop_goes_on():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    dbg = gdstep.attach(model, opt, loss_fn, on_break="raise")
    for i in range(8):
        x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        if i == 6:
            with pytest.raises(gdstep.GdstepError, match="does not move between your loop's forward and its"):
                dbg.session.seek(4 * 2)
        loss.backward()                  # the graph's weights untouched: no "modified by an inplace operation"
        dbg.watch(loss, y)
        opt.step()
    dbg.close()


def test_an_edit_of_the_loops_while_it_looks_back_is_said_lost():
    """Weight clipping between the loop's look back and its next call is made on the weights
    looked at, which are given back: the change is lost, and an inexact event says so."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    dbg = gdstep.attach(model, opt, loss_fn, on_break="raise")
    for i in range(8):
        x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
        if i == 6:
            dbg.session.seek(4 * 3)
            with torch.no_grad():
                model[0].weight.clamp_(-0.1, 0.1)
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        dbg.watch(loss, y)
        opt.step()
    said = [e.message for e in dbg.session.events if e.kind == "inexact" and "while it looked back" in e.message]
    assert len(said) == 1 and "0.weight" in said[0] and "it is lost" in said[0]
    dbg.close()


@pytest.mark.parametrize("how", ["next_phase", "step", "run_to"])
def test_stepping_through_the_past_after_a_look_back_leaves_training_as_a_bare_loops(how):
    """After a seek, the loop's code steps the session on (next_phase, step(1), run_to): only
    the seek gave torch's generator and the gradients back, so the loop drew otherwise."""
    def loop(look: bool):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2))
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        loss_fn = nn.CrossEntropyLoss()
        dbg = gdstep.attach(model, opt, loss_fn, on_break="raise") if look else None
        for i in range(14):
            if dbg is not None and i == 10:
                s = dbg.session
                s.seek(4 * 5)
                {"next_phase": s.next_phase, "step": lambda: s.step(1), "run_to": lambda: s.run_to("update")}[how]()
            x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            if dbg is not None:
                dbg.watch(loss, y)
            opt.step()
        return model
    bare, model = loop(False), loop(True)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), bare.parameters()))


def test_after_a_look_back_each_of_the_last_keep_iterations_can_still_be_rewound_to():
    """A look back at iteration 12 leaves checkpoints around its target (1–8), and the kept
    batches then started at them; a later rewind dropped those (they are kept only around the
    latest target), so a rewind to iteration 5 after the loop was refused. The timeline now
    keeps the checkpoint the kept batches start from."""
    model, seen = train(seek_at=12, target=4 * 8, n=20, close=False)
    dbg = seen["dbg"]
    s = dbg.session
    for k in (20, 12, 8, 5, 4):             # the last 16 iterations' starts, in an order that rewinds and goes on
        s.seek(4 * k)
        assert all(np.array_equal(s.params[n], v.numpy()) for n, v in seen["after"][k - 1].items()), k
    dbg.close()
