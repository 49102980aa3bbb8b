"""A model in shared memory (torch.multiprocessing's Hogwild training, pytorch/examples'
mnist_hogwild): other processes write its parameters while this one's loop is paused at a
break, and no write of theirs moves a version counter here. Such a write is made here
through `.data` on a model after `share_memory()`, which is what gdstep sees of another
process's: the storage changes, the version counter does not. (Found running mnist_hogwild
under attach mode: a break that only looked wrote the paused worker's values back over the
other worker's twenty updates, silently.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gdstep


def make():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    model.share_memory()
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)) for _ in range(5)]
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), batches


def other_process_writes(model):
    """Another worker's update of the shared weights (no version counter moves here)."""
    with torch.no_grad():
        for p in model.parameters():
            p.data.add_(0.01)


def loop(attached: bool, handler=None, capsys=None):
    model, opt, batches = make()
    dbg = gdstep.attach(model, opt, nn.MSELoss(), breakpoints=["step == 3"], on_break=handler) if attached else None
    for i, (x, y) in enumerate(batches):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        if dbg is not None:
            dbg.watch(loss, y)
        opt.step()
        if dbg is None and i == 2:          # the bare loop: the other worker writes as the break would wait
            other_process_writes(model)
    events = [] if dbg is None else [e.message for e in dbg.session.events if e.kind == "info"]
    if dbg is not None:
        dbg.close()
    return [p.detach().clone() for p in model.parameters()], events


def test_a_break_that_only_looks_leaves_another_processs_writes_to_shared_parameters(capsys):
    def handler(s, message):
        for phase in ("forward", "loss", "backward", "update"):
            s.record(phase)                     # records read (recomputed from a checkpoint), as the app does
        other_process_writes(s.backend.model)   # meanwhile, the other worker trains

    attached, events = loop(True, handler)
    bare, _ = loop(False)
    assert all(torch.equal(p, q) for p, q in zip(attached, bare))
    err = capsys.readouterr().err
    assert err.count("4 of the model's parameters are in shared memory") == 1
    assert any(m.startswith("4 of the model's parameters are in shared memory") and "a rewind writes over" in m
               for m in events)


def test_a_model_not_in_shared_memory_is_said_nothing_of_it(capsys):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    dbg = gdstep.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.MSELoss())
    assert dbg.backend.shared_note() is None and "shared memory" not in capsys.readouterr().err
    dbg.close()
