"""One iteration of a training loop under attach mode, written the two ways a user writes it."""

from __future__ import annotations


def attached_iteration(mode: str, dbg, model, opt, loss_fn, x, y) -> None:
    """`dbg.step(x, y)` ("step"), or the loop's own forward, backward and optimizer step
    with `dbg.watch(loss, y)` between the backward and the step ("watch"), or without
    gdstep ("bare")."""
    if mode == "step":
        dbg.step(x, y)
        return
    opt.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    if mode != "bare":
        dbg.watch(loss, y)
    opt.step()
