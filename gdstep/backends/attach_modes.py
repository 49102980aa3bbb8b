"""Train and eval modes as the loop had them. A loop that validates after each epoch
(`model.eval()`, and `model.train()` as the next one begins) may stand in eval mode when
the debugger opens: an iteration recomputed then would run its dropout off and its
BatchNorm on running statistics, other numbers, and other weights once its update is run
again. So every module's `training` flag is read where the loop hands over an iteration (at
`dbg.step`; in watch mode at its call of the model) and set again around every recompute of
its forward, the loop's own flags put back after. Each flag is set by itself, not through
`train()`, which a module may override."""

from __future__ import annotations

import contextlib
from typing import Sequence


def modes_of(modules: Sequence) -> tuple[bool, ...]:
    """Each module's `training` flag."""
    return tuple([m.training for m in modules])


def entered_modes(modules: Sequence, modes: tuple[bool, ...] | None):
    """A context with the modules' flags as `modes` says; none where they are so already
    (the loop's own iteration) or nothing was read."""
    if modes is None:
        return contextlib.nullcontext()
    now = modes_of(modules)
    if now == modes:
        return contextlib.nullcontext()
    return _Modes(modules, modes, now)


class _Modes:
    def __init__(self, modules: Sequence, modes: tuple[bool, ...], now: tuple[bool, ...]):
        self.modules, self.modes, self.now = modules, modes, now

    def __enter__(self) -> None:
        for m, training in zip(self.modules, self.modes):
            m.training = training

    def __exit__(self, *exc) -> None:
        for m, training in zip(self.modules, self.now):
            m.training = training
