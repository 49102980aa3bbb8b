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


def train(seek_at: int | None = None, target: int = 0, n: int = 24, before_step: bool = False, mode: str = "watch"):
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
        dbg.close()
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
    torch.manual_seed(0)
    m2 = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2))
    opt = torch.optim.Adam(m2.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    dbg = gdstep.attach(m2, opt, loss_fn, on_break="raise")
    for _ in range(6):
        x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
        opt.zero_grad()
        loss = loss_fn(m2(x), y)
        loss.backward()
        dbg.watch(loss, y)
        opt.step()
    final = [p.detach().clone() for p in m2.parameters()]
    dbg.session.seek(8)
    assert not all(torch.equal(p, q) for p, q in zip(m2.parameters(), final))    # the model shows the past
    dbg.close()
    assert all(torch.equal(p, q) for p, q in zip(m2.parameters(), final))        # and is the loop's again
