"""Checkpoints of the training state at iteration boundaries, in bounded memory.

Rewinding restores the nearest checkpoint at or before the target and recomputes from there
(the engine is deterministic, so the result is exact to the bit). The timeline keeps:

- step 0;
- a grid: every `interval`-th step;
- the last `recent` steps behind the frontier (the furthest step computed), so stepping
  back a little is instant;
- up to `recent` steps just before the latest rewind target, so that stepping back again
  from there is instant too.

When the bytes held pass the budget, the grid's interval doubles (dropping every other
grid checkpoint); the recent runs shrink only if they alone exceed it.
"""

from __future__ import annotations

import bisect
from typing import Any, Callable, NamedTuple


class Checkpoint(NamedTuple):
    """Everything needed to resume at the start of iteration `step`, exactly."""

    step: int
    epoch: int
    iteration: int
    offset: int
    batch_size: int | None
    backend: Any          # the backend's own capture: parameters, optimizer state and config


class Timeline:
    def __init__(self, nbytes: Callable[[Any], int], budget: int = 64 * 2**20, recent: int = 16, interval: int = 16):
        self._nbytes = nbytes
        self.budget, self.recent, self.interval = budget, recent, interval
        self._kept_at: dict[int, tuple[Checkpoint, int]] = {}
        self._steps: list[int] = []
        self._near: list[int] = []        # steps saved around the latest rewind target
        self.frontier = -1
        self.nbytes = 0
        self._last_size: int | None = None
        # step -> parameters the training loop itself changed in place at that boundary (weight
        # clipping, pruning), as it left them: a recomputation crossing the boundary applies them
        self.edits: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._steps)

    def __contains__(self, step: int) -> bool:
        return step in self._kept_at

    @property
    def steps(self) -> list[int]:
        return list(self._steps)

    @property
    def checkpoint_size(self) -> int | None:
        """Bytes of the latest checkpoint measured (None before the first)."""
        return self._last_size

    floor: int | None = None
    """Attach mode: the latest checkpoint at or before this step stays, whatever the policy
    (the loop's kept batches start there, so each of its last iterations can be rewound to)."""

    def _floor_step(self) -> int | None:
        i = bisect.bisect_right(self._steps, self.floor) - 1 if self.floor is not None else -1
        return self._steps[i] if i >= 0 else None

    def _kept(self, step: int) -> bool:
        return (step == 0 or step % self.interval == 0 or step > self.frontier - self.recent or step in self._near
                or step == self._floor_step())

    def save(self, checkpoint: Checkpoint, near: bool = False) -> None:
        """Keep `checkpoint` if the policy wants it: at the frontier, on the grid, or (`near`)
        just before a rewind target."""
        step = checkpoint.step
        if step in self._kept_at:
            return
        if step > self.frontier:
            old = self.frontier - self.recent + 1
            self.frontier = step
            if old > 0 and old in self._kept_at and not self._kept(old):
                self._drop(old)
        elif near:
            self._near.append(step)
            if len(self._near) > self.recent:
                dropped = self._near.pop(0)
                if dropped in self._kept_at and not self._kept(dropped):
                    self._drop(dropped)
        elif step % self.interval:
            return
        # Measuring a checkpoint costs more than taking one: measure the grid's and the first;
        # the others are the size of the last measured (sizes change only with the optimizer).
        if self._last_size is None or step % self.interval == 0:
            self._last_size = self._nbytes(checkpoint.backend)
        self._kept_at[step] = (checkpoint, self._last_size)
        if not self._steps or step > self._steps[-1]:
            self._steps.append(step)
        else:
            bisect.insort(self._steps, step)
        self.nbytes += self._last_size
        if self.nbytes > self.budget:
            self._thin()

    def coarsen(self) -> None:
        """Double the grid's interval, dropping what was kept only for the old grid (as a
        full budget does): a run whose iterations are quick asks for fewer checkpoints."""
        self.interval *= 2
        for s in [s for s in self._steps if not self._kept(s)]:
            self._drop(s)

    def make_room(self) -> None:
        """Before a run takes a checkpoint at the frontier: thin as if it were kept already,
        so memory never holds the whole budget plus the one being taken."""
        size = self._last_size
        if size is None or self.nbytes + size <= self.budget:
            return
        self.nbytes += size
        try:
            self._thin()
        finally:
            self.nbytes -= size

    def start_near(self) -> None:
        """A new rewind: the checkpoints kept around the previous target may go."""
        old, self._near = self._near, []
        for step in old:
            if step in self._kept_at and not self._kept(step):
                self._drop(step)

    def _drop(self, step: int) -> None:
        _, size = self._kept_at.pop(step)
        del self._steps[bisect.bisect_left(self._steps, step)]
        self.nbytes -= size

    def _thin(self) -> None:
        floor = self._floor_step()
        while self.nbytes > self.budget:
            grid = [s for s in self._steps if s % self.interval == 0 and s % (2 * self.interval)
                    and s <= self.frontier - self.recent and s not in self._near and s != 0 and s != floor]
            if grid and self.interval < 2**40:
                self.interval *= 2
                for s in grid:
                    self._drop(s)
                continue
            if self._near:                       # then the checkpoints around the last rewind
                self.start_near()
                continue
            extra = [s for s in self._steps if 0 < s < self.frontier and not (s % self.interval == 0) and s != floor]
            if extra:                            # then the recent run, oldest first
                self._drop(extra[0])
                self.recent = max(1, self.frontier - (extra[1] if len(extra) > 1 else self.frontier))
                continue
            grid = [s for s in self._steps if 0 < s < self.frontier and s != floor]
            if not grid:
                return
            self._drop(grid[0])

    def edit(self, checkpoint: Checkpoint, values: dict[str, Any], horizon: int) -> None:
        """The loop changed parameters at `checkpoint.step` (`values`, as it left them): a
        checkpoint kept there is replaced by `checkpoint` (the state after the change); edits
        more than `horizon` steps back, which no recomputation can cross any longer, go."""
        step = checkpoint.step
        self.edits[step] = values
        kept = self._kept_at.get(step)
        if kept is not None:
            self._kept_at[step] = (checkpoint, kept[1])
        for old in [s for s in self.edits if s < step - horizon]:
            del self.edits[old]

    def at_or_before(self, step: int) -> Checkpoint:
        i = bisect.bisect_right(self._steps, step) - 1
        return self._kept_at[self._steps[max(i, 0)]][0]

    def truncate_after(self, step: int) -> None:
        """A new branch starts at `step`: what was computed beyond it no longer holds."""
        while self._steps and self._steps[-1] > step:
            self._drop(self._steps[-1])
        self._near = [s for s in self._near if s <= step]
        self.edits = {s: v for s, v in self.edits.items() if s <= step}
        self.frontier = self._steps[-1] if self._steps else -1
        self._last_size = None
