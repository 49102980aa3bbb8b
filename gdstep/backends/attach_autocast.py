"""Autocast as the loop had it: torch's autocast state is per thread, so a recompute in the
app's worker thread (or anywhere outside the loop's `with torch.autocast(...)`, or inside a
caller's) would run in another precision and give other numbers. The state is read where
the loop hands over an iteration and entered again around every recompute of it, with the
casts of the weights that autocast caches dropped (a rewind changes the weights in place):
at `dbg.step`, for all of its phases, which gdstep runs there; in watch mode, where the loop
runs them itself, at the loop's call of the model for its forward and loss (the usual
`with torch.autocast(...): loss = loss_fn(model(x), y)`), and at `watch()` for its backward
(the usual `loss.backward()` outside it). A loss the loop computes in another state than its
forward (after the `with` ends: in the output's precision) is recomputed in its own: the
loss module's hook reads it, or, for a function, the loss computed with autocast off is
found to be the loop's (gdstep.backends.attach_recompute)."""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple


class AutocastState(NamedTuple):
    device_type: str
    enabled: bool
    dtype: Any


def autocast_state(torch, device: str) -> AutocastState:
    """The calling thread's autocast state for the model's device type."""
    kind = str(device).split(":")[0]
    try:
        return AutocastState(kind, bool(torch.is_autocast_enabled(kind)), torch.get_autocast_dtype(kind))
    except (RuntimeError, TypeError, AttributeError):          # a device type autocast does not know
        return AutocastState(kind, False, None)


def loop_states(now: AutocastState, at_forward: AutocastState | None) -> tuple[AutocastState, AutocastState]:
    """(the forward's and the loss's state, the backward's) of an iteration handed over now,
    whose forward the loop ran with `at_forward` (watch mode) or gdstep runs now (None)."""
    return (now if at_forward is None else at_forward), now


def entered(torch, state: AutocastState | None):
    """A context with autocast as `state` says (on or off); none where nothing was read."""
    if state is None or (not state.enabled and state.dtype is None):
        return contextlib.nullcontext()
    if not state.enabled:       # off: nothing to change where it is off already (the loop's own thread)
        if not torch.is_autocast_enabled(state.device_type):
            return contextlib.nullcontext()
        return torch.autocast(state.device_type, enabled=False)
    # Inside the loop's own autocast the casts of the weights are cached until it exits: a
    # rewind writes the weights in place, so the cached casts would be of other values.
    torch.clear_autocast_cache()
    return torch.autocast(state.device_type, dtype=state.dtype)
