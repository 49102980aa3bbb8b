"""The optimizer state the loop holds stays the loop's own objects through gdstep's breaks:
a debugger that rewinds and comes back writes the state's values back into the very tensors
(and state dicts) the loop's optimizer had, so a reference the loop keeps (a logger's, a
captured CUDA graph's, a compiled step's guards) still sees the state the optimizer uses."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import gdstep
from attach_loop import attached_iteration

OPTIMIZERS = {
    "Adam": lambda params: torch.optim.Adam(params, lr=0.01),
    "SGD momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
}


def rewind_and_back(s, message):
    """An on_break function: two iterations back (recomputed from a checkpoint), then forward
    to where the loop stands."""
    at = s.position
    s.back(iterations=2)
    s.seek(at)


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("mode", ["step", "watch"])
def test_after_breaks_that_rewind_the_loops_optimizer_state_is_the_same_objects_with_a_bare_loops_values(mode, optimizer):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    bare = copy.deepcopy(model)
    loss_fn = nn.CrossEntropyLoss()
    opt, bare_opt = OPTIMIZERS[optimizer](model.parameters()), OPTIMIZERS[optimizer](bare.parameters())
    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["step >= 4"], on_break=rewind_and_back)
    g = torch.Generator().manual_seed(1)
    held = None
    for i in range(8):
        x, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
        attached_iteration(mode, dbg, model, opt, loss_fn, x, y)
        attached_iteration("bare", None, bare, bare_opt, loss_fn, x, y)
        if i == 1:       # what a loop (or a logger) holds of the optimizer's state, before any break
            held = {p: (opt.state[p], dict(opt.state[p])) for p in model.parameters()}
    breaks = [e for e in dbg.session.events if e.kind == "breakpoint"]
    assert len(breaks) >= 3
    for (p, (state, tensors)), q in zip(held.items(), bare.parameters()):
        assert opt.state[p] is state, "the parameter's state dict was replaced"
        for k, t in tensors.items():
            assert opt.state[p][k] is t, f"the state tensor {k} was replaced"
            assert torch.equal(t, bare_opt.state[q][k]), f"{k} differs from a bare loop's"
        assert torch.equal(p, q)
