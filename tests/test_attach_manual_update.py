"""Watch mode in a loop that updates the parameters itself through `.data` and never steps
the optimizer it attached (pytorch/examples' regression). Each iteration is recorded with
no update, as the loop's own; a rewind's recomputations differ (`.data` moves no version
counter, so gdstep cannot keep the change), and their lines say why. Before: every other
iteration lost its gradients' notes to the update of the one before (which runs at the next
watch()), so it was not lean, said its δ were let go, and its rewind line blamed an edit of
the gradients; after a break the next watch() compared the loss with gdstep's own
recomputed output, not the loop's, and said the loss was not loss_fn's; and a break showed
records recomputed without the loop's updates, not the loop's own."""

from __future__ import annotations

import torch
import torch.nn.functional as F

import gdstep


def regression(debug: bool):
    torch.manual_seed(0)
    w, b = torch.randn(4, 1) * 5, torch.randn(1) * 5
    fc = torch.nn.Linear(4, 1)
    looked, losses = [], []

    def look(s, message):
        s.back(iterations=1)
        looked.append((s.record("loss").step, s.record("loss").value))

    dbg = (gdstep.attach(fc, torch.optim.SGD(fc.parameters(), lr=0.1), F.smooth_l1_loss, breakpoints=["step == 5"],
                         on_break=look) if debug else None)
    lean = []
    for _ in range(8):
        r = torch.randn(32).unsqueeze(1)
        x = torch.cat([r ** i for i in range(1, 5)], 1)
        y = x.mm(w) + b.item()
        fc.zero_grad()
        loss = F.smooth_l1_loss(fc(x), y)
        loss.backward()
        losses.append(loss.item())
        if dbg is not None:
            dbg.watch(loss, y)
            lean.append(dbg._lean_now)
        for p in fc.parameters():
            p.data.add_(-0.1 * p.grad)
    return fc, dbg, lean, looked, losses


def test_a_loop_that_updates_through_data_is_recorded_and_its_rewinds_say_why_they_differ(capsys):
    fc, dbg, lean, looked, losses = regression(True)
    bare, _, _, _, _ = regression(False)
    assert all(torch.equal(p, q) for p, q in zip(fc.parameters(), bare.parameters()))
    events = [(e.kind, e.message) for e in dbg.session.events]
    # after an iteration the loop did not step, none is lean: their records are the loop's own
    assert lean == [True] + [False] * 7
    (step, value), = looked
    assert step == 3 and value == losses[3]          # the fourth iteration's, as the loop computed it
    assert not [m for _, m in events if "changed its gradients" in m]
    assert len([m for _, m in events if "let go as the loop ran" in m]) <= 1      # (the second, expected lean)
    assert not [m for _, m in events if "is not loss_fn(output, y)" in m]
    differ = [m for k, m in events if k == "inexact" and "recomputed is not what was first computed" in m]
    assert differ and all("did not call optimizer.step()" in m and ".data" in m for m in differ)
    dbg.close()
