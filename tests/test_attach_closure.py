"""A loop that steps with `optimizer.step(closure)` and calls `dbg.watch` inside the closure
(pytorch/examples' time_sequence_prediction, with an optimizer other than LBFGS): torch runs
the step's pre-hook before the closure, so the watched iteration ends inside the step. Each
iteration is recorded with its update, as the loop computed it, and nothing is called a
change of the loop's (the step's pre-hook, before the closure's watch(), once stored the
last iteration's versions as an edit: the fourth iteration raised AttributeError into the
loop, and every one said the loop had not stepped)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gdstep


def run(opt_kind: str, debug: bool, breakpoints=(), on_break=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = (torch.optim.Adam(model.parameters(), lr=0.01) if opt_kind == "adam"
           else torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    crit = nn.MSELoss()
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 3, generator=g), torch.randn(8, 1, generator=g)) for _ in range(8)]
    dbg = gdstep.attach(model, opt, crit, breakpoints=list(breakpoints), on_break=on_break) if debug else None
    seen = []
    for x, y in batches:
        def closure():
            opt.zero_grad()
            loss = crit(model(x), y)
            loss.backward()
            seen.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()},
                         {n: p.detach().clone() for n, p in model.named_parameters()}))
            if dbg is not None:
                dbg.watch(loss, y)
            return loss
        opt.step(closure)
    return model, dbg, seen


@pytest.mark.parametrize("opt_kind", ["adam", "sgd momentum"])
def test_a_watch_inside_the_optimizers_closure_records_each_iteration_with_its_update(opt_kind):
    looked = []

    def look(s, message):
        rec = s.record("update")
        looked.append((s.step_count, s.record("loss").value,
                       {n: u.old.clone() for n, u in rec.params.items()},
                       {n: u.new.clone() for n, u in rec.params.items()}))
        s.back(iterations=1)
        looked.append((s.step_count, s.record("loss").value, dict(s.record("backward").grads)))

    model, dbg, seen = run(opt_kind, True, ["step == 4"], look)
    bare, _, bare_seen = run(opt_kind, False)
    for (n, p), q in zip(model.named_parameters(), bare.parameters()):
        assert torch.equal(p, q), n
    s = dbg.session
    assert s.step_count == 8 and list(s.history.losses) == [loss for loss, _, _ in bare_seen]
    kinds = [(e.kind, e.message) for e in s.events]
    assert not [m for _, m in kinds if "did not call optimizer.step()" in m or "changed" in m], kinds
    # the break, after the fourth iteration's update: its values before and after it; one
    # iteration back, the third's records (recomputed), as the loop computed them
    (step, loss, old, new), (back_step, back_loss, grads) = looked
    assert (step, back_step) == (4, 3) and loss == bare_seen[3][0]
    assert all(torch.equal(old[n], bare_seen[3][2][n]) for n in old)
    assert all(torch.equal(new[n], bare_seen[4][2][n]) for n in new)      # what the step made
    assert back_loss == bare_seen[2][0] and all(torch.equal(grads[n], bare_seen[2][1][n]) for n in grads)
    dbg.close()


def test_a_loop_that_steps_before_any_watch_and_then_watches_in_closures():
    """Steps without a watch() first (gdstep's hooks on the optimizer from attach on), then
    closures that watch: the session starts with the first watched iteration, each one with
    its update."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    crit = nn.MSELoss()
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    dbg = gdstep.attach(model, opt, crit)
    for k in range(6):
        def closure():
            opt.zero_grad()
            loss = crit(model(x), y)
            loss.backward()
            if k >= 2:
                dbg.watch(loss, y)
            return loss
        opt.step(closure)
    s = dbg.session
    assert s.step_count == 4 and s.phase_due == "forward"
    assert not [e.message for e in s.events if "did not call" in e.message]
    dbg.close()


def test_a_break_raised_inside_the_closures_step_comes_out_of_it_after_the_update():
    """on_break="raise" with watch() in the closure: the hit leaves optimizer.step() once its
    update is made (raised from watch() it left the closure, and torch made no update: the
    loop caught it and trained otherwise than a bare loop, and the next watch() said the
    loop had not stepped)."""
    def train(debug: bool):
        torch.manual_seed(0)
        model = nn.Linear(4, 2)
        opt = torch.optim.Adam(model.parameters(), 1e-2)
        crit = nn.MSELoss()
        dbg = gdstep.attach(model, opt, crit, breakpoints=["update_ratio > 0 and step == 3", "grad_norm > 0 and step == 3"],
                             on_break="raise") if debug else None
        g = torch.Generator().manual_seed(1)
        caught = []
        for _ in range(6):
            x, y = torch.randn(8, 4, generator=g), torch.randn(8, 2, generator=g)

            def closure():
                opt.zero_grad()
                loss = crit(model(x), y)
                loss.backward()
                if dbg is not None:
                    dbg.watch(loss, y)
                return loss
            try:
                opt.step(closure)
            except gdstep.BreakpointHit as hit:
                caught.append((str(hit), dbg.session.step_count))
        return model, dbg, caught

    model, dbg, caught = train(True)
    bare, _, _ = train(False)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), bare.parameters()))
    assert [step for _, step in caught] == [3, 4]       # (at the third's update, step 3; at the fourth's backward)
    assert not [e.message for e in dbg.session.events if "did not call" in e.message]
    dbg.close()


def test_steps_of_iterations_not_watched_count_no_forward_of_the_next():
    """A loop that watches every third iteration: each watched one ran forward once since
    the step before it (it said "ran forward 3 times" and refused a rewind into it)."""
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    crit = nn.MSELoss()
    dbg = gdstep.attach(model, opt, crit)
    lean = []
    for k in range(9):
        x, y = torch.randn(8, 3), torch.randn(8, 1)
        opt.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        if k % 3 == 2:
            dbg.watch(loss, y)
            lean.append(dbg._lean_now)
        opt.step()
    assert lean == [True] * 3 and not [e for e in dbg.session.events if "ran forward" in e.message]
    dbg.close()


def test_a_closure_that_raised_before_its_watch_leaves_no_step_begun_behind():
    """The closure raised before its watch() (the loop caught it and went on without
    closures): torch ran the step's pre-hook but not its post-hook. The next watch() took the
    step as still running: it did the step's work at once, and so missed what the loop
    changed between watch() and step() — here a weight decay by hand — whose update the
    records then showed without it (a rewind recomputed it so: silently not the loop's)."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    crit = nn.MSELoss()
    dbg = gdstep.attach(model, opt, crit)
    g = torch.Generator().manual_seed(1)
    after = []
    for i in range(5):
        x, y = torch.randn(8, 3, generator=g), torch.randn(8, 2, generator=g)
        if i == 1:
            def closure():
                raise ValueError("the loop's own error, before its watch()")
            with pytest.raises(ValueError):
                opt.step(closure)
        opt.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        dbg.watch(loss, y)
        with torch.no_grad():
            model.weight.mul_(0.9)              # weight decay by hand, between watch() and step()
        opt.step()
        after.append(model.weight.detach().clone())
    s = dbg.session
    assert any("between watch() and optimizer.step()" in e.message for e in s.events)
    for step in range(1, 5):                    # each update as the loop made it, read back by a rewind
        s.seek(4 * step)
        assert np.array_equal(s.params["weight"], after[step - 1].numpy()), step
    dbg.close()
