"""A training loop that changes parameters or optimizer state itself between iterations —
WGAN's weight clipping, pruning, max-norm constraints, a reset of the optimizer's averages —
keeps its changes under gdstep: records recomputed on demand, rewinds and the iterations
after them start from the values the loop left, equal to a bare loop's to the bit."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import gdstep
from gdstep.errors import BreakpointHit
from attach_loop import attached_iteration


def clip(model) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.clamp_(-0.05, 0.05)


def shrink_averages(opt) -> None:
    for state in opt.state.values():
        state["square_avg"].mul_(0.5)


def rewind_and_back(model, seen: dict, iterations: int):
    """An on_break function that rewinds (recomputing from a checkpoint), comes back to where
    the loop stands, and notes the parameters it finds there in `seen["params"]`."""
    def look(s, message):
        at = s.position
        s.back(iterations=iterations)
        s.seek(at)
        seen["params"] = {n: p.detach().clone() for n, p in model.named_parameters()}
    return look


def adam_and_its_bare_twin():
    """A small model with Adam, and an unattached copy with its own Adam, to compare with."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    bare = copy.deepcopy(model)
    return model, torch.optim.Adam(model.parameters(), lr=0.05), bare, torch.optim.Adam(bare.parameters(), lr=0.05)


EDITS = {"clip weights": lambda model, opt: clip(model), "shrink RMSprop's averages": lambda model, opt: shrink_averages(opt)}


@pytest.mark.parametrize("edit", list(EDITS))
@pytest.mark.parametrize("mode", ["step", "watch"])
def test_the_loops_own_edits_between_iterations_survive_recomputation_and_rewinds(mode, edit):
    edit = EDITS[edit]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    bare = copy.deepcopy(model)
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.RMSprop(model.parameters(), lr=0.05)      # WGAN's optimizer
    bare_opt = torch.optim.RMSprop(bare.parameters(), lr=0.05)
    outputs = {}
    bare[0].register_forward_hook(lambda m, a, out: outputs.__setitem__("first", out.detach().clone()))
    seen = {}

    def look(s, message):
        pos = s.position
        rec = s.record("forward")                              # lean: recomputed now
        seen["first"] = torch.as_tensor(rec.outputs[0]).clone()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        s.back(iterations=4)
        s.seek(pos)
        seen["after rewind"] = all(torch.equal(p, before[n]) for n, p in model.named_parameters())
        seen["inexact"] = s.replay_inexact
        seen["at"] = s.step_count

    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["step == 9"], on_break=look)
    g = torch.Generator().manual_seed(1)
    for i in range(12):
        x, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
        attached_iteration(mode, dbg, model, opt, loss_fn, x, y)
        edit(model, opt)
        bare_opt.zero_grad()
        loss_fn(bare(x), y).backward()
        bare_opt.step()
        edit(bare, bare_opt)
        if seen.get("at") is not None and "checked" not in seen:
            seen["checked"] = i
            assert torch.equal(seen["first"], outputs["first"]), "the recomputed forward used unedited weights"
            assert seen["after rewind"] and seen["inexact"] is None
    assert seen["checked"] == 8
    for p, q in zip(model.parameters(), bare.parameters()):
        assert torch.equal(p, q)
        assert all(torch.equal(opt.state[p][k], bare_opt.state[q][k]) for k in ("square_avg", "step"))
    assert any("changed" in e.message and "in place" in e.message for e in dbg.session.events)


@pytest.mark.parametrize("mode", ["step", "watch"])
def test_an_edit_through_data_which_torch_does_not_count_is_not_kept_but_said(mode):
    """`p.data.mul_()` moves no version counter: gdstep cannot see the edit, so a
    recomputation that crosses it gives other numbers than the loop's. It says so (an
    inexact event naming `.data`), never shows them as the loop's."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = {}

    def look(s, message):
        seen["recomputed"] = s.record("loss").value           # lean in watch mode: recomputed now
        s.back(iterations=3)
        seen["inexact"] = s.replay_inexact

    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["step == 7"], on_break=look)
    g = torch.Generator().manual_seed(1)
    for i in range(9):
        x, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
        attached_iteration(mode, dbg, model, opt, loss_fn, x, y)
        if i == 4:
            model[0].weight.data.mul_(0.5)                     # unseen: no version moves
    dbg.close()
    assert "inexact" in seen, "the breakpoint did not fire"
    assert seen["inexact"] is not None and ".data" in seen["inexact"]
    assert any(e.kind == "inexact" and ".data" in e.message for e in dbg.session.events)


@pytest.mark.parametrize("edit", [False, True])
@pytest.mark.parametrize("mode", ["step", "watch"])
def test_reading_records_between_the_loops_calls_is_no_edit_of_the_loops(mode, edit):
    """A loop that reads a record between its iterations (a print of the latest update) has
    it recomputed from a checkpoint, which writes the parameters back: gdstep takes that for
    no edit of the loop's. An edit the loop did make before the read is named, alone, and
    kept: the parameters equal a bare loop's with the same edit, after a rewind too."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    bare = copy.deepcopy(model)
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    bare_opt = torch.optim.Adam(bare.parameters(), lr=0.05)
    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["nan"], on_break="raise")
    g = torch.Generator().manual_seed(1)
    read = []
    for i in range(7):
        x, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
        attached_iteration(mode, dbg, model, opt, loss_fn, x, y)
        bare_opt.zero_grad()
        loss_fn(bare(x), y).backward()
        bare_opt.step()
        if i == 3:
            if edit:
                for m in (model, bare):
                    with torch.no_grad():
                        m[0].weight.mul_(0.5)
            read.append(dbg.session.record("update"))        # lean: recomputed from a checkpoint now
    s = dbg.session
    named = [e.message for e in s.events if "in place" in e.message and "changed" in e.message]
    if edit:
        assert len(named) == 1 and "0.weight" in named[0] and "0.bias" not in named[0] and "2.weight" not in named[0]
    else:
        assert named == []
    for p, q in zip(model.parameters(), bare.parameters()):
        assert torch.equal(p, q)
    if mode == "step":               # step mode's rewinds move the model: back to the start and forward again
        at = s.position
        s.seek(0)
        s.seek(at)
        for p, q in zip(model.parameters(), bare.parameters()):
            assert torch.equal(p, q)


def test_a_loop_that_changes_its_weights_between_watch_and_step_has_records_of_what_the_step_ran_on():
    """Weight decay by hand between `watch()` and `optimizer.step()` (or a projection): the
    step runs on the changed weights. The update's records show those (before, the lean
    records were recomputed without the change, and every later recomputation was called
    inexact, blaming random numbers); what the step made is kept as the loop's edit, so the
    iterations after it recompute to the loop's values, and one inexact event says that a
    rewind into such an iteration recomputes its update without the change."""
    model, opt, bare, bare_opt = adam_and_its_bare_twin()
    seen = {}

    look = rewind_and_back(model, seen, iterations=2)
    dbg = gdstep.attach(model, opt, nn.MSELoss(), breakpoints=["step == 6"], on_break=look)
    g = torch.Generator().manual_seed(1)
    for i in range(8):
        x, y = torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)
        for m, o, watched in ((model, opt, True), (bare, bare_opt, False)):
            o.zero_grad()
            loss = nn.functional.mse_loss(m(x), y)
            loss.backward()
            if watched:
                dbg.watch(loss, y)
            with torch.no_grad():
                for p in m.parameters():
                    p.mul_(0.99)
            o.step()
        if i == 5:
            assert all(torch.equal(seen["params"][n], p) for n, p in model.named_parameters())
    s = dbg.session
    update = s.record("update")                    # the last iteration's, lean or not: what the step made
    for name, p in model.named_parameters():
        assert torch.equal(torch.as_tensor(update.params[name].new), p.detach())
        assert torch.equal(p, dict(bare.named_parameters())[name])
    said = [e.message for e in s.events if e.kind == "inexact"]
    assert len(said) == 1 and "between watch() and optimizer.step()" in said[0], said


@pytest.mark.parametrize("around", ["lean", "a break at watch() that rewinds and comes back", "full records",
                                    "a raised break, the records read after the change"])
def test_a_loop_that_changes_optimizer_state_between_watch_and_step_has_records_of_what_the_step_ran_on(around):
    """Adam's first moments halved by hand between `watch()` and `optimizer.step()` in one
    iteration (the 6th): the step runs on the changed state. Its update's records show what
    the step made; the state it made is kept as the loop's edit, so the iterations after it
    recompute to the loop's values (a rewind to before it and back); the one inexact event
    names the state. Before, the change was not seen: lean records were recomputed without
    it, unsaid. Seen too where gdstep restored a checkpoint between watch() and the step (a
    break there that rewinds and comes back; full records after lean ones, recomputed)."""
    model, opt, bare, bare_opt = adam_and_its_bare_twin()
    seen = {}

    look = rewind_and_back(model, seen, iterations=2)
    breakpoints = (["step == 5 and phase == 'backward'"]          # at the 6th iteration's watch()
                   if around.startswith(("a break", "a raised")) else [])
    raised = around.startswith("a raised")
    dbg = gdstep.attach(model, opt, nn.MSELoss(), breakpoints=breakpoints, on_break="raise" if raised else look)
    g = torch.Generator().manual_seed(1)
    made = {}
    for i in range(8):
        x, y = torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)
        dbg.lean_watch = not (around == "full records" and i == 5)
        for m, o, watched in ((model, opt, True), (bare, bare_opt, False)):
            o.zero_grad()
            loss = nn.functional.mse_loss(m(x), y)
            loss.backward()
            if watched:
                try:
                    dbg.watch(loss, y)
                except BreakpointHit:
                    assert raised and i == 5
            if i == 5:
                for state in o.state.values():
                    state["exp_avg"].mul_(0.5)
                if watched and raised:        # the handler reads records (recomputed, the loop's tensors put back)
                    seen["params"] = dbg.session.record("forward")
            o.step()
        if i == 5:
            update = dbg.session.record("update")
            assert all(torch.equal(torch.as_tensor(update.params[n].new), p.detach()) for n, p in model.named_parameters())
        made[i + 1] = {n: p.detach().clone() for n, p in bare.named_parameters()}
    assert ("params" in seen) == bool(breakpoints)         # the break rewound and came back
    s = dbg.session
    for name, p in model.named_parameters():
        assert torch.equal(p, dict(bare.named_parameters())[name])
    s.seek(4 * 4)
    s.seek(4 * 8)                                   # recomputed from before the change, through it
    update = s.record("update")
    for name, p in model.named_parameters():
        assert torch.equal(torch.as_tensor(update.params[name].new), made[8][name])
        assert torch.equal(torch.as_tensor(update.params[name].state_after["exp_avg"]), opt.state[p]["exp_avg"])
    said = [e.message for e in s.events if e.kind == "inexact"]
    assert len(said) == 1 and "iteration 6: the loop changed the optimizer's exp_avg of 0.bias, 0.weight, 2.bias" in said[0], said


def test_a_loop_that_sets_its_lr_between_watch_and_step_has_records_with_the_lr_the_step_used():
    """An lr (and a momentum) set by hand after the backward, before `optimizer.step()`: the
    update's records use the hyperparameters the step ran with (before, those at `watch()`:
    the records differed from the model, and later recomputations were called inexact);
    a change at the iteration's start (the momentum) and one before its step (the lr) are
    both kept for rewinds."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
    seen = {}

    look = rewind_and_back(model, seen, iterations=3)
    dbg = gdstep.attach(model, opt, nn.MSELoss(), breakpoints=["step == 5"], on_break=look)
    g = torch.Generator().manual_seed(1)
    for i in range(7):
        x, y = torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)
        opt.param_groups[0]["momentum"] = 0.5 + 0.05 * i          # at the iteration's start
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        dbg.watch(loss, y)
        opt.param_groups[0]["lr"] = 0.05 * (i + 1)               # between watch() and step()
        opt.step()
        if i == 4:
            assert all(torch.equal(seen["params"][n], p) for n, p in model.named_parameters())
    s = dbg.session
    update = s.record("update")
    assert update.lr == opt.param_groups[0]["lr"]
    for name, p in model.named_parameters():
        assert torch.equal(torch.as_tensor(update.params[name].new), p.detach())
    assert s.replay_inexact is None and not [e for e in s.events if e.kind == "inexact"]
