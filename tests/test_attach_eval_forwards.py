"""Watch mode, evaluations between steps with gradients on (pytorch/examples'
language_translation runs validate() in eval mode outside torch.no_grad()): a forward in
eval mode is not counted as the next iteration's where that iteration's own forward runs in
train mode, so the iteration stays recomputable (it said "ran forward 3 times" and refused
a rewind into it). A loop that trains in eval mode throughout (BatchNorm frozen) counts its
forwards as before."""

from __future__ import annotations

import torch
from torch import nn

import gdstep


def loop(debug: bool, train_mode: bool = True):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    crit = nn.MSELoss()
    seen, lean, looked = [], [], []

    def look(s, message):
        try:
            s.back(iterations=1)
        except gdstep.GdstepError as e:
            looked.append(str(e))
            return
        looked.append((s.step_count, s.record("loss").value, {n: g.clone() for n, g in s.record("backward").grads.items()}))

    dbg = gdstep.attach(model, opt, crit, breakpoints=["step == 5"], on_break=look) if debug else None
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(5, 4, generator=g), torch.randn(5, 1, generator=g)) for _ in range(3)]
    torch.manual_seed(3)
    for _ in range(2):
        model.train(train_mode)
        for x, y in data:
            opt.zero_grad()
            loss = crit(model(x), y)
            loss.backward()
            seen.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}))
            if dbg is not None:
                dbg.watch(loss, y)
                lean.append(dbg._lean_now)
            opt.step()
        model.eval()
        for x, y in data[:2]:
            crit(model(x), y).item()          # validation, gradients on
    return model, dbg, seen, lean, looked


def test_an_evaluation_with_gradients_on_is_no_part_of_the_next_iteration():
    model, dbg, seen, lean, looked = loop(True)
    bare, _, bare_seen, _, _ = loop(False)
    for (n, p), q in zip(model.named_parameters(), bare.parameters()):
        assert torch.equal(p, q), n
    assert lean == [True] * 6
    assert not [e.message for e in dbg.session.events if e.kind == "inexact" or "ran forward" in e.message]
    # the break after the fifth iteration's update; one back, the fourth's records (the first after the
    # evaluation), recomputed from a checkpoint before it as the loop ran it
    (step, loss, grads), = looked
    assert step == 4 and loss == bare_seen[3][0]
    assert all(torch.equal(grads[n], bare_seen[3][1][n]) for n in grads)
    dbg.close()


def test_a_loop_that_trains_in_eval_mode_counts_every_forward():
    """Every forward in eval mode: the evaluation's cannot be told from the iteration's own,
    so the iteration after it ran forward three times, as before (said once, not lean)."""
    model, dbg, seen, lean, looked = loop(True, train_mode=False)
    assert lean == [True, True, True, False, True, True]
    said = [e.message for e in dbg.session.events if "ran forward 3 times" in e.message]
    assert len(said) == 1 and said[0].startswith("iteration 4:")
    assert len(looked) == 1 and looked[0].startswith("cannot recompute iteration 4: the loop ran the model forward 3 times")
    dbg.close()


def test_a_forward_in_eval_mode_that_a_backward_reaches_is_counted():
    """A target made by the same model in eval mode, its graph kept: the loss's backward
    reaches it, so the iteration ran forward twice and its rewind is refused in one line (a
    recomputation of one forward would backpropagate through a freed graph)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Tanh(), nn.Linear(8, 4))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    crit = nn.MSELoss()
    refused = []

    def look(s, message):
        try:
            s.back(iterations=1)
        except gdstep.GdstepError as e:
            refused.append(str(e))

    dbg = gdstep.attach(model, opt, crit, breakpoints=["step == 5"], on_break=look)
    lean = []
    for _ in range(8):
        x, x2 = torch.randn(6, 4), torch.randn(6, 4)
        opt.zero_grad()
        model.eval()
        target = model(x2)               # gradients on, not detached
        model.train()
        loss = crit(model(x), target)
        loss.backward()
        dbg.watch(loss, target)
        lean.append(dbg._lean_now)
        opt.step()
    assert not any(lean)
    assert len(refused) == 1 and "the loop ran the model forward 2 times" in refused[0]
    dbg.close()


def test_a_forward_in_eval_mode_after_the_iterations_own_is_counted():
    """An evaluation with gradients on between backward() and watch(): the latest forward is
    it, not the iteration's, so the iteration counts both forwards (not lean)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), 0.1)
    crit = nn.MSELoss()
    dbg = gdstep.attach(model, opt, crit)
    lean = []
    for _ in range(4):
        x, y = torch.randn(6, 4), torch.randn(6, 1)
        opt.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        model.eval()
        crit(model(x), y).item()          # a metric, gradients on
        model.train()
        dbg.watch(loss, y)
        lean.append(dbg._lean_now)
        opt.step()
    assert not any(lean)
    assert [e.message for e in dbg.session.events if "ran forward 2 times" in e.message]
    dbg.close()
