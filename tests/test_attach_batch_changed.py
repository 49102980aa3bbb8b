"""A batch the loop changes in place after the model ran on it — the input normalised after
the forward (pytorch/examples' fast_neural_style divides its batch by 255 after the
transformer ran), or a target a loss_fn divides in place — cannot be recomputed as the loop
computed it (gdstep holds the tensor, not a copy): a rewind across it names that cause for
each such iteration, in watch mode too (its version was taken at watch(), after the change,
so the events named the generic causes), and beside another event of the same iteration
(events of one iteration were told apart by their "iteration N" alone: a reused activation's
note silenced it)."""

from __future__ import annotations

import torch
from torch import nn

import gdstep

CHANGED = "its batch was changed in place since the loop used it"


def changed_at(dbg) -> list[str]:
    return sorted(e.message.split(":")[0] for e in dbg.session.events if e.kind == "inexact" and CHANGED in e.message)


def test_watch_mode_names_an_input_normalised_in_place_after_the_forward():
    torch.manual_seed(0)
    model = nn.Sequential(nn.ZeroPad1d(1), nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), 0.1)
    loss_fn = nn.MSELoss()
    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["step == 3"], on_break=lambda s, m: s.back(iterations=2))
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        x, y = torch.randn(5, 4, generator=g), torch.randn(5, 1, generator=g)
        opt.zero_grad()
        out = model(x)
        x.div_(255)                   # the loop's normalisation, after the forward
        loss = loss_fn(out, y)
        loss.backward()
        dbg.watch(loss, y)
        opt.step()
    assert {"iteration 2", "iteration 3"} <= set(changed_at(dbg))     # (the two the rewind recomputed, or more)
    dbg.close()


class Reused(nn.Module):
    """One Tanh module called twice: an info event for iteration 1 says so."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.act = nn.Linear(4, 8), nn.Linear(8, 4), nn.Tanh()

    def forward(self, x):
        return self.act(self.l2(self.act(self.l1(x))))


def test_a_target_a_loss_changes_in_place_is_named_beside_another_event_of_its_iteration():
    torch.manual_seed(0)
    model = Reused()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    loss_fn = lambda out, y: ((out - y.div_(2)) ** 2).mean()        # noqa: E731  (halves its target in place)
    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["step == 3"], on_break=lambda s, m: s.back(iterations=3))
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        x = torch.randn(5, 4, generator=g)
        dbg.step(x, x.clone())
    assert [e.message.split(":")[0] for e in dbg.session.events if "more than once" in e.message] == ["iteration 1"]
    assert changed_at(dbg) == ["iteration 1", "iteration 2", "iteration 3"]
    dbg.close()


def test_watch_mode_says_when_the_loop_changes_the_models_output_in_place():
    """fast_neural_style normalises the transformer's output in place before its loss: the
    forward's record, which holds the loop's tensor, shows the changed values. Said once, at
    the first such iteration (it was silent, and its loss check compared loss_fn on the
    changed output)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    dbg = gdstep.attach(model, opt, lambda o, y: ((o.div(255) - y) ** 2).mean())
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x, y = torch.randn(5, 4, generator=g), torch.randn(5, 3, generator=g) / 255
        opt.zero_grad()
        out = model(x).div_(255)          # in place on the model's output
        loss = ((out - y) ** 2).mean()
        loss.backward()
        dbg.watch(loss, y)
        assert not dbg._lean_now
        opt.step()
    said = [e.message for e in dbg.session.events if "changed the model's output in place" in e.message]
    assert len(said) == 1 and said[0].startswith("iteration 1:") and "not as the model made it" in said[0]
    assert not [e for e in dbg.session.events if "is not loss_fn(output, y)" in e.message]
    dbg.close()


def test_a_model_that_changes_its_own_input_in_place_is_not_called_a_changed_batch():
    """A first row ReLU(inplace=True) writes the model's input: that is the model's own doing,
    which a recomputation repeats (the input's version is taken at the forward's end), so a
    rewind is exact and names no changed batch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), 0.1)
    dbg = gdstep.attach(model, opt, nn.MSELoss(), breakpoints=["step == 3"], on_break=lambda s, m: s.back(iterations=2))
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        x, y = torch.randn(5, 4, generator=g), torch.randn(5, 1, generator=g)
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        dbg.watch(loss, y)
        opt.step()
    assert not [e.message for e in dbg.session.events if e.kind == "inexact"]
    dbg.close()
