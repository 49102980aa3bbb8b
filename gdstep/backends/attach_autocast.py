"""Autocast as the loop had it: torch's autocast state is per thread, so a recompute in the
app's worker thread (or anywhere outside the loop's `with torch.autocast(...)`) would run
in another precision and give other numbers. The state is read when the loop hands over an
iteration and entered again around every recompute of it, with the casts of the weights
that autocast caches dropped (a rewind changes the weights in place)."""

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


def entered(torch, state: AutocastState | None):
    """A context with autocast as `state` says (on or off); none where nothing was read."""
    if state is None or (not state.enabled and state.dtype is None):
        return contextlib.nullcontext()
    if not state.enabled:
        return torch.autocast(state.device_type, enabled=False)
    # Inside the loop's own autocast the casts of the weights are cached until it exits: a
    # rewind writes the weights in place, so the cached casts would be of other values.
    torch.clear_autocast_cache()
    return torch.autocast(state.device_type, dtype=state.dtype)
