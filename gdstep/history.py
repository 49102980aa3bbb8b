"""Snapshots of the training state at iteration boundaries, in bounded memory.

Rewinding restores the nearest snapshot at or before the target and recomputes from there
(the engine is deterministic, so the result is exact to the bit). The timeline keeps every
boundary of the last `recent` steps and every `interval`-th before that; when the bytes
held pass the budget it doubles the interval, then shortens the recent run. Step 0 stays.
"""

from __future__ import annotations

import bisect
from typing import Any, Callable, NamedTuple


class Boundary(NamedTuple):
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
        self._snaps: dict[int, tuple[Boundary, int]] = {}
        self._steps: list[int] = []
        self.nbytes = 0
        self._last_size: int | None = None

    def __len__(self) -> int:
        return len(self._steps)

    def __contains__(self, step: int) -> bool:
        return step in self._snaps

    @property
    def steps(self) -> list[int]:
        return list(self._steps)

    def save(self, boundary: Boundary) -> None:
        step = boundary.step
        if step in self._snaps:
            return
        # Measuring a snapshot costs more than taking one: measure the ones kept for long
        # (on the grid) and the first; a recent one is the size of the last measured.
        if self._last_size is None or step % self.interval == 0:
            self._last_size = self._nbytes(boundary.backend)
        size = self._last_size
        self._snaps[step] = (boundary, size)
        if not self._steps or step > self._steps[-1]:
            self._steps.append(step)
        else:
            bisect.insort(self._steps, step)
        self.nbytes += size
        old = step - self.recent
        if old > 0 and old % self.interval and old in self._snaps:
            self._drop(old)
        if self.nbytes > self.budget:
            self._thin(step)

    def _drop(self, step: int) -> None:
        _, size = self._snaps.pop(step)
        self._steps.remove(step)
        self.nbytes -= size

    def _thin(self, latest: int) -> None:
        while self.nbytes > self.budget:
            grid = [s for s in self._steps if 0 < s <= latest - self.recent and s % (self.interval * 2)]
            if grid:
                self.interval *= 2
                for s in grid:
                    self._drop(s)
                continue
            older = [s for s in self._steps if 0 < s < latest and s % self.interval]
            if older:
                self._drop(older[0])
                self.recent = max(1, min(self.recent, latest - older[0]))
                continue
            grid = [s for s in self._steps if 0 < s < latest]
            if not grid:
                return
            self._drop(grid[0])

    def at_or_before(self, step: int) -> Boundary:
        i = bisect.bisect_right(self._steps, step) - 1
        return self._snaps[self._steps[max(i, 0)]][0]

    def truncate_after(self, step: int) -> None:
        """A new branch starts at `step`: what was computed beyond it no longer holds."""
        while self._steps and self._steps[-1] > step:
            self._drop(self._steps[-1])
        self._last_size = None
